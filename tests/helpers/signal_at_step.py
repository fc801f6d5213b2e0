"""Run by tests/test_training.py: train_base.py, whose process receives SIGNAL while it computes its
STEP-th training step in this process (counted from 1), so that a stop falls on a chosen step.

    PYTHONPATH=. python tests/helpers/signal_at_step.py STEP SIGNAL <train_base.py arguments>

The signal is a real one, sent to the process by itself (os.kill); validation must not run before
that step (it computes losses too).
"""
import os
import signal
import sys


import train_base


def main():
    step, name, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    losses, calls = train_base.STAGE.losses, 0

    def losses_then_signal(*inputs):
        nonlocal calls
        calls += 1
        if calls == step:
            os.kill(os.getpid(), signal.Signals[name])
        return losses(*inputs)

    train_base.STAGE.losses = losses_then_signal
    train_base.main(argv)


if __name__ == '__main__':
    main()
