"""The progress of a whole training run on one tqdm bar: step k of N, elapsed and remaining time, steps per
second, the epoch, the last logged loss and images per second.

In a terminal it is a live bar. Anywhere else (a log file, Slurm's output) a bar redrawn with carriage
returns is unreadable, so the same facts are written as a plain line of their own every LINE_INTERVAL_S
seconds and at the end, as tqdm's `mininterval` allows:

    epoch 1/7:  12% 1234/10000 [05:02<35:48, 4.08step/s, img_s=32.6, loss=0.0412]
"""
import sys
from typing import Optional, TextIO

from tqdm import tqdm

LINE_INTERVAL_S = 30.0
PLAIN_FORMAT = '{desc}{percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]'


class Lines:
    """A file for tqdm that makes each of its redraws a line of its own (no carriage returns)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace('\r', '').replace('\x1b[A', '').strip()
        if text:
            self.stream.write(text + '\n')

    def flush(self) -> None:
        self.stream.flush()


def run_steps(epoch_start: int, epoch_end: int, steps_per_epoch: int, max_steps: Optional[int]) -> int:
    """The optimizer steps of the whole run (counted from --epoch-start), as --max-steps may shorten it."""
    steps = (epoch_end - epoch_start) * steps_per_epoch
    return steps if max_steps is None else min(steps, max_steps)


def progress_bar(total: int, initial: int, desc: str, disable: bool = False,
                 stream: Optional[TextIO] = None) -> tqdm:
    """The bar of a run of `total` steps, `initial` of them done (a resumed run), on `stream` (stderr); `desc`
    names where it is (change it with set_description)."""
    stream = stream or sys.stderr
    # The description ends in ': ', as set_description makes it.
    options = dict(total=total, initial=initial, desc=f'{desc}: ', unit='step', disable=disable)
    if stream.isatty():
        return tqdm(**options, dynamic_ncols=True, file=stream)
    # miniters=1: every step may draw, mininterval keeps it to one line per interval (tqdm's own adaptive
    # miniters would stretch the interval when the speed changes).
    return tqdm(**options, file=Lines(stream), mininterval=LINE_INTERVAL_S, miniters=1, bar_format=PLAIN_FORMAT)
