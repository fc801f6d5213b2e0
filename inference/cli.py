"""What the inference command lines share: a user's mistake as one line and an exit status, Ctrl-C and
SIGTERM as a clean interruption, warnings beside a progress bar, and argument types."""
import argparse
import re
import signal
import sys
import threading
from fractions import Fraction
from typing import Callable, Optional, Sequence, Tuple

import av
from tqdm import tqdm

from common.errors import UserError, exit_with_error


# A problem with what the user gave (a file, a folder, an option). The scripts print its message and exit
# with status 1, without a traceback. The name inference code has always used for `UserError`.
InputError = UserError


# What the scripts report as a message rather than a traceback: our own checks, the file system
# (missing, unwritable, full disk) and media files FFmpeg cannot read.
USER_ERRORS = (UserError, OSError, av.FFmpegError)


def warn(message: str) -> None:
    """Prints a warning on stderr without breaking a tqdm progress bar."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `kill`, Slurm and job time limits send), raised as an interruption so that it
    unwinds like Ctrl-C: the writers remove their unfinished files on the way out."""


def _raise_terminated(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise Terminated()


def exit_on_user_error(prog: str, run: Callable[[], None]) -> None:
    """Calls `run()`; a user error ends the script with 'prog: error: message' and exit status 1, an
    interruption with status 130 (Ctrl-C, SIGINT) or 143 (SIGTERM, which is handled like SIGINT
    while `run` runs). Writers have removed their partial files by then."""
    previous = None
    if threading.current_thread() is threading.main_thread():  # where Python runs signal handlers
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        run()
    except USER_ERRORS as error:
        exit_with_error(prog, error)
    except KeyboardInterrupt as interruption:
        terminated = isinstance(interruption, Terminated)
        print(f"{prog}: {'terminated' if terminated else 'interrupted'}; unfinished output files were removed",
              file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def parse_size(values: Optional[Sequence[int]], option: str) -> Optional[Tuple[int, int]]:
    """(W, H) from a '--option W H' pair, checked to be positive."""
    if values is None:
        return None
    width, height = values
    if width <= 0 or height <= 0:
        raise InputError(f"{option} {width} {height}: expected a positive width and height")
    return int(width), int(height)


def parse_frame_rate(text: str) -> Fraction:
    """argparse type for an exact frame rate: '25', '30000/1001', '29.97'."""
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a frame rate (expected e.g. 25 or 30000/1001)")
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the frame rate must be positive")
    return rate


def parse_bit_rate(text: str) -> int:
    """argparse type for a bit rate in bits per second: '4000000', '4M', '800k'."""
    match = re.fullmatch(r'\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*', text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a bit rate (expected e.g. 4M, 800k or 4000000)")
    return int(float(match.group(1)) * {'': 1, 'k': 1e3, 'm': 1e6}[match.group(2).lower()])
