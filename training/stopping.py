"""Stop signals: what asks a training run to save and stop, and how every process of the job hears it.

    SIGTERM  a user's `kill` or `scancel`, a preemption, the end of a time limit
    SIGUSR1  the warning before the time limit that the sbatch examples ask for (--signal=USR1@180)
    SIGINT   Ctrl-C

Each one makes the run stop at the next step where the ranks read their flags (at most FLAG_INTERVAL - 1
steps later), write a checkpoint that resumes exactly (`--resume auto`) and end; only SIGUSR1 requeues
the job (`distributed.requeue_slurm_job`). A second Ctrl-C aborts at once without saving, as most tools
do: the way out of a run that is stuck or slow to reach its next step. The command line exits with status
130 (128 + SIGINT, the shell's code for Ctrl-C) after a Ctrl-C, so that `train_base.py ... &&
train_refine.py ...` does not go on; SIGTERM and SIGUSR1 end it with status 0, as before.

Who hears a Ctrl-C: in a terminal, every process of its foreground group. A plain start's DataLoader
workers ignore it; the processes it spawns live in groups of their own and hear it from the launcher,
once (`forward_stop_signals`). torchrun starts its workers in sessions of their own and passes it on, but
kills them 30 s later: a run whose flags are read rarely (FLAG_INTERVAL slow steps) may not save in time.
"""
import contextlib
import os
import signal
from typing import Iterator, List, Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
REQUEUE_SIGNAL = signal.SIGUSR1
INTERRUPT_EXIT = 128 + signal.SIGINT


class StopRequest:
    """Remembers a stop signal while active (a context manager); a second SIGINT raises KeyboardInterrupt.

    `signal`: the signal to stop for, or None. A SIGINT does not replace a SIGTERM or SIGUSR1 that came
    first (the job's requeue on SIGUSR1 must not be lost to a Ctrl-C), and the ranks agree on the largest
    number (SIGTERM 15 over SIGUSR1 10 over SIGINT 2). The handler only records: the training loop says so
    (a handler that printed could meet a write to the same stream that it interrupted)."""

    def __init__(self):
        self.signal: Optional[int] = None
        self.interrupts = 0
        self.announced = False  # whether the loop has said what a Ctrl-C does
        self.previous = {}

    def __enter__(self) -> 'StopRequest':
        self.previous = {sig: signal.signal(sig, self.handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def handle(self, signum: int, frame) -> None:
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1:
                raise KeyboardInterrupt
            self.signal = self.signal or signum
        else:
            self.signal = signum


def ignore_stop_signals(worker_id: int) -> None:
    """worker_init_fn of the DataLoaders: workers get the signals of the trainer's process group (a Ctrl-C in
    the terminal reaches them all) and must not die before the trainer has saved."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def own_process_group() -> None:
    """In a process that a plain start spawned: out of the terminal's process group, so that a Ctrl-C reaches
    it once, from the launcher (`forward_stop_signals`), as torchrun starts its workers in sessions of their
    own. A second copy, straight from the terminal, would be taken for a second Ctrl-C."""
    with contextlib.suppress(PermissionError):  # a session leader keeps its group
        os.setpgid(0, 0)


@contextlib.contextmanager
def forward_stop_signals(pids: List[int]) -> Iterator[dict]:
    """In the launcher of spawned processes: SIGINT and SIGTERM passed on to `pids`, which stop and save;
    the launcher waits for them. A second SIGINT also raises KeyboardInterrupt here. Yields a dict whose
    'interrupted' is True once a SIGINT came."""
    received = {'interrupted': False}

    def forward(signum, frame):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        if signum == signal.SIGINT:
            if received['interrupted']:
                raise KeyboardInterrupt
            received['interrupted'] = True

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
