"""Devices and precisions, named the same way by every script: `--device auto|cpu|cuda|cuda:N` and
`--precision fp32|fp16|bf16` (training adds `auto`: fp16 on CUDA, fp32 on the CPU)."""
import contextlib
import os
import re
import warnings
from typing import Optional

import torch

from .errors import UserError

PRECISIONS = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
DEVICE_NAMES = 'auto, cpu, cuda, cuda:N'


def check_device_name(name: str) -> str:
    """argparse type of --device: one of DEVICE_NAMES (its existence is checked when it is used)."""
    if name not in ('auto', 'cpu', 'cuda') and not re.fullmatch(r'cuda:\d+', name):
        raise ValueError(name)
    return name


def local_task(env=os.environ) -> Optional[int]:
    """This process's index among the tasks of its node: torchrun's LOCAL_RANK, or SLURM_LOCALID inside a
    job step (srun); None elsewhere."""
    for name in ('LOCAL_RANK', 'SLURM_LOCALID'):
        if name in env and (name == 'LOCAL_RANK' or 'SLURM_STEP_ID' in env) and env[name].isdigit():
            return int(env[name])
    return None


def resolve_device(name: str, option: str = '--device', env=os.environ) -> torch.device:
    """'auto' picks CUDA when present (a task of several on a node with several visible GPUs takes its
    own: cuda:LOCAL_RANK, or cuda:SLURM_LOCALID in a job step); a device that does not exist here is a
    UserError."""
    if name == 'auto':
        if not torch.cuda.is_available():
            return torch.device('cpu')
        local, count = local_task(env), torch.cuda.device_count()
        return torch.device('cuda', local % count) if local is not None and count > 1 else torch.device('cuda')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"{option} {name!r} is not a device name (expected {DEVICE_NAMES})") from None
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise UserError(f"{option} {name}: CUDA is not available on this machine (use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"{option} {name}: there is no such GPU ({torch.cuda.device_count()} visible)")
    elif device.type != 'cpu':
        raise UserError(f"{option} {name!r}: expected {DEVICE_NAMES}")
    return device


def inference_dtype(name: str, device: torch.device, slow_fallback: bool = True) -> torch.dtype:
    """The dtype inference runs in: the requested one if a convolution works in it on `device`, else
    float32 with a warning. With `slow_fallback`, fp16 on the CPU (which works, but very slowly) also
    runs in float32."""
    dtype = PRECISIONS[name]
    if dtype == torch.float32:
        return dtype
    if slow_fallback and dtype == torch.float16 and device.type == 'cpu':
        # It runs, but on slow paths (depthwise convolutions take seconds even at small sizes).
        warnings.warn('--precision fp16 is very slow on CPU in PyTorch; running in fp32 (bf16 is the fast '
                      'reduced precision there)')
        return torch.float32
    try:
        conv = torch.nn.Conv2d(3, 4, 3, padding=1).to(device, dtype)
        with torch.no_grad():
            conv(torch.rand(1, 3, 8, 8, device=device, dtype=dtype))
    except (RuntimeError, TypeError) as error:
        warnings.warn(f"--precision {name} is not supported on {device} ({error}); running in fp32")
        return torch.float32
    return dtype


def autocast_precision(name: str, device: torch.device) -> str:
    """The autocast precision training runs in: 'auto' is fp16 on CUDA and fp32 on the CPU; fp16 on the
    CPU is a UserError (its GradScaler needs CUDA)."""
    if name == 'auto':
        return 'fp16' if device.type == 'cuda' else 'fp32'
    if name == 'fp16' and device.type != 'cuda':
        raise UserError('--precision fp16 needs CUDA; on CPU use fp32 (default) or bf16')
    return name


@contextlib.contextmanager
def cudnn_autotuning(device: torch.device):
    """cuDNN's autotuning (`torch.backends.cudnn.benchmark`) inside the block when `device` is CUDA: for
    a stream of inputs of one size (a clip, a camera), where the fastest algorithms are found once and
    kept; restored after. Inputs whose size changes from call to call would be autotuned at each new size."""
    if torch.device(device).type != 'cuda':
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
