"""Splitting a batch of work over the tasks of a job array: `--shard I/N`.

Item `name` belongs to shard `1 + hash(name) mod N`, the hash being SHA-1 of the name: shards are
disjoint and together cover everything, and an item stays in its shard across runs, whatever else
is added to or removed from the input, so a requeued or re-run task (with --skip-existing) finds its
own earlier outputs. With thousands of items the shards hold about the same number each.

`--shard auto` reads Slurm's job array variables (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN,
SLURM_ARRAY_TASK_COUNT); it is only ever read when asked for, so a script run inside an array job
without `--shard auto` does all the work.
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
        return shard_of_slurm_array(env, option)
    try:
        index, count = (int(part) for part in text.split('/'))
    except ValueError:
        raise UserError(f"{option} {text}: expected I/N, e.g. 2/8 for the second of 8 shards, or auto") from None
    if not 1 <= index <= count:
        raise UserError(f"{option} {text}: the shard index must be between 1 and {max(count, 1)}")
    return Shard(index, count)


def shard_of_slurm_array(env: Mapping[str, str], option: str = '--shard') -> Shard:
    """This array task's shard: task ids MIN ... MIN + COUNT - 1 are shards 1 ... COUNT."""
    names = ('SLURM_ARRAY_TASK_ID', 'SLURM_ARRAY_TASK_MIN', 'SLURM_ARRAY_TASK_MAX', 'SLURM_ARRAY_TASK_COUNT')
    if any(name not in env for name in names):
        raise UserError(f"{option} auto: not inside a Slurm job array (SLURM_ARRAY_TASK_ID is not set); "
                        "give the shard as I/N, or submit with sbatch --array")
    task, first, last, count = (int(env[name]) for name in names)
    if last - first + 1 != count:
        raise UserError(f"{option} auto: the job array's task ids ({first} to {last}, {count} tasks) are not "
                        "consecutive; submit with --array=FIRST-LAST, or give the shard as I/N")
    return Shard(task - first + 1, count)
