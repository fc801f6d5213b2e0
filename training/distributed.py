"""One distributed set-up for 1 GPU, N GPUs and N nodes.

Where the rank comes from, in order:
    1. torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`);
    2. Slurm (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`; the master is the first host of
       `SLURM_JOB_NODELIST`, the port `MASTER_PORT` or one derived from the job id);
    3. neither: a plain `python train_*.py` spawns one process per requested device itself
       (`--nproc`, default: every visible GPU on CUDA, one process on CPU).
NCCL on CUDA, gloo on CPU. Each rank works on its own GPU (`cuda:LOCAL_RANK`). A process started by
a launcher always joins a process group, even alone (`torchrun --nproc_per_node 1`), so that one GPU
runs the code path of many: DDP, SyncBatchNorm, the collectives.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tqdm import tqdm

from common.errors import UserError
from common.memory import retain_freed_memory
from .stopping import INTERRUPT_EXIT, forward_stop_signals, own_process_group


USER_ERROR_EXIT = 1  # what a spawned process that met a UserError exits with


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')
    launched: bool = False  # started by torchrun or Slurm

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether the process belongs to a process group: several processes, or one a launcher started."""
        return self.world_size > 1 or self.launched


def first_slurm_host(nodelist: str) -> str:
    """First host name of a Slurm node list such as 'gpu[07-09,12],cpu3' -> 'gpu07'."""
    match = re.match(r'([^,\[]+)(\[([^\]]+)\])?', nodelist.strip())
    if match is None:
        raise ValueError(f"cannot read the Slurm node list {nodelist!r}")
    prefix, ranges = match.group(1), match.group(3)
    if ranges is None:
        return prefix
    return prefix + ranges.split(',')[0].split('-')[0]


def launcher_environment(env=os.environ) -> Optional[dict]:
    """The rank variables set by torchrun or Slurm, or None for a plain start."""
    if 'RANK' in env and 'WORLD_SIZE' in env:
        return dict(rank=int(env['RANK']), world_size=int(env['WORLD_SIZE']),
                    local_rank=int(env.get('LOCAL_RANK', 0)),
                    master_addr=env.get('MASTER_ADDR', '127.0.0.1'), master_port=env.get('MASTER_PORT', '29500'))
    # Only inside an srun step: a plain `python` in the batch script of a job with several tasks
    # also sees SLURM_PROCID=0 and SLURM_NTASKS>1, but it is one process and must not wait for others.
    if 'SLURM_PROCID' in env and 'SLURM_STEP_ID' in env and int(env.get('SLURM_NTASKS', '1')) > 1:
        job_id = int(env.get('SLURM_JOB_ID', '0'))
        return dict(rank=int(env['SLURM_PROCID']), world_size=int(env['SLURM_NTASKS']),
                    local_rank=int(env.get('SLURM_LOCALID', 0)),
                    master_addr=env.get('MASTER_ADDR') or first_slurm_host(env.get('SLURM_JOB_NODELIST', '127.0.0.1')),
                    master_port=env.get('MASTER_PORT') or str(15000 + job_id % 20000))
    return None


def launch_problem(env=os.environ) -> Optional[str]:
    """A Slurm start that will not do what the user expects, or None.

    - A plain `python train_*.py` in the batch script of a job of several tasks runs as one process
      (srun starts one per task).
    - torchrun inside a Slurm job: the time-limit warning the sbatch examples ask for (SIGUSR1) reaches
      torchrun's agent too, which does not handle it and dies before its workers can save; and Slurm
      already is a launcher. One srun task per GPU is the way (scripts/slurm/).
    """
    if 'SLURM_JOB_ID' not in env:
        return None
    tasks = int(env.get('SLURM_NTASKS', '1'))
    if 'SLURM_STEP_ID' not in env and tasks > 1 and 'RANK' not in env:
        return (f'this Slurm job has {tasks} tasks, but this process was started without srun, so training runs '
                f'as one process on one device; start it with `srun python ...` for {tasks} processes')
    if 'TORCHELASTIC_RUN_ID' in env:
        return ('torchrun inside a Slurm job: the SIGUSR1 that sbatch --signal sends before the time limit '
                "kills torchrun's agent before its workers can save; use one srun task per GPU instead "
                '(see scripts/slurm/)')
    return None


def warn_about_the_launch(env=os.environ) -> None:
    problem = launch_problem(env)
    if problem and int(env.get('RANK', env.get('SLURM_PROCID', '0'))) == 0:
        print(f'warning: {problem}', file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def launch(main: Callable, args, device: torch.device, nproc: Optional[int], prog: str) -> Optional[int]:
    """Runs `main(args, context)` in every process of the job, spawning them for a plain start. Returns what
    `main` returns in this process; for spawned ones, INTERRUPT_EXIT if a Ctrl-C came (which they took as a
    stop), else None.

    `main` must pickle (a module-level function, or a functools.partial of one) where processes are
    spawned. A UserError is raised to the caller, except in spawned processes: only a traceback would
    cross back to the launcher, so there the process prints it as `prog: error: message` and the
    launcher exits with status 1. The launcher passes SIGINT and SIGTERM on to the processes it spawned
    (in process groups of their own, as torchrun's workers are, so that they hear a Ctrl-C once).
    """
    warn_about_the_launch()
    env = launcher_environment()
    if env is not None:
        return main(args, setup(env, device, launched=True))
    if nproc is None:
        nproc = torch.cuda.device_count() if device.type == 'cuda' and device.index is None else 1
    if nproc <= 1:
        return main(args, setup(dict(rank=0, world_size=1, local_rank=0), device))
    port = free_port()
    processes = mp.spawn(_spawned, args=(main, args, device, nproc, port, prog), nprocs=nproc, join=False)
    with forward_stop_signals([process.pid for process in processes.processes]) as received:
        try:
            while not processes.join():
                pass
        except mp.ProcessExitedException as error:
            if error.exit_code != USER_ERROR_EXIT:
                raise
            raise SystemExit(USER_ERROR_EXIT) from None  # the message is printed already
    return INTERRUPT_EXIT if received['interrupted'] else None


def _spawned(local_rank: int, main, args, device: torch.device, nproc: int, port: int, prog: str) -> None:
    own_process_group()
    env = dict(rank=local_rank, world_size=nproc, local_rank=local_rank, master_addr='127.0.0.1', master_port=str(port))
    retain_freed_memory()  # as the command that spawned it (a fresh interpreter does not inherit the setting)
    try:
        main(args, setup(env, device))
    except UserError as error:
        print(f'{prog}: error: {error}', file=sys.stderr, flush=True)
        sys.exit(USER_ERROR_EXIT)


def setup(env: dict, device: torch.device, launched: bool = False) -> DistributedContext:
    """Selects this rank's device and joins the process group (see `DistributedContext.distributed`).

    `device`: where to train; on CUDA each rank takes the GPU of its local rank, unless a single process
    was given one by its index (`--device cuda:1`)."""
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise UserError('--device cuda: CUDA is not available on this machine (use --device cpu)')
        if device.index is not None and env['world_size'] > 1:
            raise UserError(f"--device {device} names one GPU, but the job has {env['world_size']} processes, each on "
                            "the GPU of its local rank: give --device cuda")
        if device.index is None and env['local_rank'] >= torch.cuda.device_count():
            raise UserError(f"local rank {env['local_rank']} has no GPU: only {torch.cuda.device_count()} visible")
        device = torch.device('cuda', env['local_rank'] if device.index is None else device.index)
        torch.cuda.set_device(device)
    context = DistributedContext(env['rank'], env['world_size'], env['local_rank'], device, launched)
    if context.distributed:
        # env:// rendezvous: under torchrun it reuses the launcher's store instead of opening a second one.
        os.environ.setdefault('MASTER_ADDR', env['master_addr'])
        os.environ.setdefault('MASTER_PORT', str(env['master_port']))
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo', init_method='env://',
                                rank=context.rank, world_size=context.world_size,
                                device_id=device if device.type == 'cuda' else None)
    return context


def cpus_per_process(context: DistributedContext, available: int, env=os.environ) -> int:
    """The CPUs each process of the job may use on this machine: the `available` ones of this process (its
    affinity) shared among the job's processes here, or what srun gave each task (--cpus-per-task)."""
    if 'SLURM_STEP_ID' in env and env.get('SLURM_CPUS_PER_TASK', '').isdigit():
        return max(1, min(available, int(env['SLURM_CPUS_PER_TASK'])))
    if env.get('LOCAL_WORLD_SIZE', '').isdigit():  # torchrun
        local = int(env['LOCAL_WORLD_SIZE'])
    else:  # processes of a plain start share this machine; a Slurm task has its own CPUs
        local = context.world_size if not context.launched else 1
    return max(1, available // max(local, 1))


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def agree(flags: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Element-wise maximum of a small flag vector over all ranks (so that every rank agrees), left on the
    device: with NCCL the host does not wait for it."""
    if context.distributed:
        flags = flags.to(context.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def any_rank(flags: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """`agree`, read on the host (which waits for the device)."""
    return agree(flags, context).cpu()


def requeue_slurm_job(context: DistributedContext) -> Optional[str]:
    """Under Slurm, rank 0 puts the job back in the queue (sbatch --requeue allows it), so that it resumes
    with --resume auto; Slurm ends the running job and starts it again after its requeue delay. Set
    BGM_SLURM_REQUEUE=0 to leave the job ended. Returns the job id requeued, or None."""
    job = os.environ.get('SLURM_JOB_ID')  # an array task's own id
    if not job or not context.is_main or os.environ.get('BGM_SLURM_REQUEUE', '1') != '1' \
            or shutil.which('scontrol') is None:
        return None
    result = subprocess.run(['scontrol', 'requeue', job], capture_output=True, text=True)
    if result.returncode != 0:
        tqdm.write(f'warning: scontrol requeue {job} failed ({result.stderr.strip()}); resubmit the job to resume')
        return None
    return job
