"""--shard auto takes one shard per task: Slurm job arrays, the tasks of a job step (srun --ntasks),
torchrun, and arrays of multi-task jobs; shards stay disjoint and complete. Each task takes its own GPU
(common.devices.local_task). The real Slurm runs are in tests/test_slurm.py."""
import itertools
import os
import subprocess
import sys

import pytest

from common.devices import local_task
from common.errors import UserError
from common.shards import Shard, parse_shard
from test_inference_utils import image_pair_folders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = [f'clip{n // 50}/{n:05d}' for n in range(400)]


def array_env(task, count, first=0):
    return {'SLURM_ARRAY_TASK_ID': str(first + task), 'SLURM_ARRAY_TASK_MIN': str(first),
            'SLURM_ARRAY_TASK_MAX': str(first + count - 1), 'SLURM_ARRAY_TASK_COUNT': str(count)}


def step_env(task, count):
    """What srun gives each task of a job step."""
    return {'SLURM_PROCID': str(task), 'SLURM_STEP_NUM_TASKS': str(count), 'SLURM_NTASKS': str(count),
            'SLURM_STEP_ID': '0', 'SLURM_LOCALID': str(task)}


def torchrun_env(task, count):
    return {'RANK': str(task), 'WORLD_SIZE': str(count), 'LOCAL_RANK': str(task)}


def check_disjoint_and_complete(shards):
    taken = [shard.select(NAMES) for shard in shards]
    assert sorted(itertools.chain(*taken)) == sorted(NAMES)
    assert all(taken), [len(t) for t in taken]


@pytest.mark.parametrize('env_of', [step_env, torchrun_env])
def test_each_task_takes_its_own_shard(env_of):
    shards = [parse_shard('auto', env_of(task, 4)) for task in range(4)]
    assert shards == [Shard(index, 4) for index in (1, 2, 3, 4)]
    check_disjoint_and_complete(shards)


def test_an_array_of_multi_task_jobs_combines_both():
    shards = [parse_shard('auto', {**array_env(a, 3, first=5), **step_env(r, 2)}) for a in range(3) for r in range(2)]
    assert shards == [Shard(index, 6) for index in range(1, 7)]
    check_disjoint_and_complete(shards)
    assert parse_shard('auto', array_env(1, 3)) == Shard(2, 3)  # a one-task array job, as before


def test_outside_arrays_steps_and_torchrun_auto_is_an_error():
    batch_script = {'SLURM_PROCID': '0', 'SLURM_NTASKS': '4', 'SLURM_LOCALID': '0', 'SLURM_JOB_ID': '7'}
    for env in ({}, batch_script):  # the batch script runs once: not a task of a step
        with pytest.raises(UserError, match=r'--shard auto: not inside a Slurm job array .* srun --ntasks'):
            parse_shard('auto', env)
    with pytest.raises(UserError, match='RANK=4 is not a task of WORLD_SIZE=4'):
        parse_shard('auto', torchrun_env(4, 4))


def test_each_task_knows_its_gpu_on_the_node():
    assert local_task(torchrun_env(3, 4)) == 3 and local_task(step_env(2, 4)) == 2
    assert local_task({'SLURM_LOCALID': '0', 'SLURM_NTASKS': '4'}) is None  # the batch script
    assert local_task({}) is None


def test_torchrun_tasks_matte_disjoint_shards_that_cover_every_pair(tmp_path):
    """Two processes of torchrun on the CPU, each its own shard, together every pair."""
    names = [f'take/{n:03d}' for n in range(8)]
    checkpoint = image_pair_folders(tmp_path, names, spread=0.03)
    out = tmp_path / 'out'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    result = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2',
         os.path.join(ROOT, 'inference_images.py'), '--src', str(tmp_path / 'src'), '--bgr', str(tmp_path / 'bgr'),
         '--output-dir', str(out), '--output-types', 'pha', '--device', 'cpu', '--shard', 'auto',
         '--model-checkpoint', checkpoint, '--model-backbone-scale', '0.5', '--model-refine-sample-pixels', '800',
         '--disable-progress'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'shard 1/2:' in result.stdout and 'shard 2/2:' in result.stdout, result.stdout
    written = sorted(os.path.splitext(os.path.relpath(os.path.join(root, f), out / 'pha'))[0]
                     for root, _, files in os.walk(out / 'pha') for f in files)
    assert written == names
