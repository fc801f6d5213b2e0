"""Splitting a batch of work over the tasks of a job array: `--shard I/N`.

Item `name` belongs to shard `1 + hash(name) mod N`, the hash being SHA-1 of the name: shards are
disjoint and together cover everything, and an item stays in its shard across runs, whatever else
is added to or removed from the input, so a requeued or re-run task (with --skip-existing) finds its
own earlier outputs. With thousands of items the shards hold about the same number each.

`--shard auto` takes the shard from where the process runs, combining both when both are set:
- a Slurm job array (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN/MAX, SLURM_ARRAY_TASK_COUNT): one shard
  per array task;
- the tasks of a job step (`srun --ntasks 4`: SLURM_PROCID of SLURM_STEP_NUM_TASKS; the batch script
  itself, which runs once, is not a step) or of torchrun (RANK of WORLD_SIZE): one shard per task, so
  array task a of A, task r of R takes shard (a - 1) * R + r + 1 of A * R.
It is only ever read when asked for, so a script run inside an array job without `--shard auto` does
all the work.
"""
import hashlib
import os
from typing import Iterable, List, Mapping, NamedTuple, Optional, TypeVar

from .errors import UserError

T = TypeVar('T')


class Shard(NamedTuple):
    index: int  # 1 ~ count
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, name: str) -> bool:
        digest = hashlib.sha1(name.encode('utf-8')).digest()
        return int.from_bytes(digest[:8], 'big') % self.count == self.index - 1

    def select(self, items: Iterable[T], name=lambda item: item) -> List[T]:
        """The items whose `name(item)` belongs to this shard, in their order."""
        return [item for item in items if self.holds(name(item))]


def parse_shard(text: Optional[str], env: Mapping[str, str] = os.environ, option: str = '--shard'
                ) -> Optional[Shard]:
    """'I/N' (1 <= I <= N), 'auto' (from a Slurm job array), or None for all the work."""
    if text is None:
        return None
    if text == 'auto':
        return shard_of_this_process(env, option)
    form = "expected I/N with 1 <= I <= N, e.g. 2/8 for the second of 8 shards, or auto"
    try:
        index, count = (int(part) for part in text.split('/'))
    except ValueError:
        raise UserError(f"{option} {text}: {form}") from None
    if count < 1:
        raise UserError(f"{option} {text}: the shard count N must be at least 1; {form}")
    if not 1 <= index <= count:
        raise UserError(f"{option} {text}: the shard index I must be between 1 and {count}; {form}")
    return Shard(index, count)


def shard_of_this_process(env: Mapping[str, str], option: str = '--shard') -> Shard:
    """The shard of `--shard auto` (see the module's docstring)."""
    array, tasks = shard_of_slurm_array(env, option), shard_of_task(env, option)
    if array is None and tasks is None:
        raise UserError(f"{option} auto: not inside a Slurm job array (SLURM_ARRAY_TASK_ID), a job step of "
                        "several tasks (srun: SLURM_PROCID, SLURM_STEP_NUM_TASKS) or torchrun (RANK, WORLD_SIZE); "
                        "give the shard as I/N, or submit with sbatch --array or srun --ntasks")
    array, tasks = array or Shard(1, 1), tasks or Shard(1, 1)
    return Shard((array.index - 1) * tasks.count + tasks.index, array.count * tasks.count)


def shard_of_task(env: Mapping[str, str], option: str = '--shard') -> Optional[Shard]:
    """This task's shard among the tasks of torchrun (RANK, WORLD_SIZE) or of a Slurm job step (SLURM_PROCID,
    SLURM_STEP_NUM_TASKS), or None outside both."""
    for rank, size in (('RANK', 'WORLD_SIZE'), ('SLURM_PROCID', 'SLURM_STEP_NUM_TASKS')):
        if rank in env and size in env:
            try:
                index, count = int(env[rank]), int(env[size])
            except ValueError:
                raise UserError(f"{option} auto: {rank}={env[rank]!r} and {size}={env[size]!r} are not whole "
                                "numbers") from None
            if not 0 <= index < count:
                raise UserError(f"{option} auto: {rank}={index} is not a task of {size}={count}")
            return Shard(index + 1, count)
    return None


def shard_of_slurm_array(env: Mapping[str, str], option: str = '--shard') -> Optional[Shard]:
    """This array task's shard (task ids MIN ... MIN + COUNT - 1 are shards 1 ... COUNT), or None outside
    a job array."""
    names = ('SLURM_ARRAY_TASK_ID', 'SLURM_ARRAY_TASK_MIN', 'SLURM_ARRAY_TASK_MAX', 'SLURM_ARRAY_TASK_COUNT')
    if any(name not in env for name in names):
        return None
    task, first, last, count = (int(env[name]) for name in names)
    if last - first + 1 != count:
        raise UserError(f"{option} auto: the job array's task ids ({first} to {last}, {count} tasks) are not "
                        "consecutive; submit with --array=FIRST-LAST, or give the shard as I/N")
    return Shard(task - first + 1, count)
