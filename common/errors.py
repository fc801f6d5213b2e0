"""One exception type for a user's mistake.

Library code raises `UserError` (or a subclass) when what the user gave cannot be used: a missing or
unreadable file, an option that does not fit, data in the wrong layout. Its message names the file or
option and says what was expected. Entry points turn it into one line, `prog: error: message`, and a
non-zero exit status; any other exception is a bug and keeps its traceback.

A batch script goes on past the files it cannot read (`--on-error skip`, its default) and counts them
(`Skips`): it names each, does the rest, and exits non-zero at the end.
"""
import sys
from typing import Callable, List, NoReturn, Optional, Tuple


class UserError(Exception):
    """A problem with what the user gave (a file, a folder, an option), described in one line."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message (libraries add paragraphs of advice after it)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def exit_with_error(prog: str, message: object, status: int = 1) -> NoReturn:
    """Ends a script with `prog: error: message` on stderr, one line, and `status`
    (1 for a file or data at fault; argparse uses 2 for the command line itself)."""
    text = ' '.join(str(message).split('\n'))
    print(f"{prog}: error: {text}", file=sys.stderr)
    sys.exit(status)


ON_ERROR = ('skip', 'stop')


def add_on_error_argument(parser, items: str = 'files') -> None:
    """The `--on-error` option of a batch script (default 'skip'): see `Skips`."""
    parser.add_argument('--on-error', choices=ON_ERROR, default='skip',
                        help=f"what a file that cannot be read does to the run: 'skip' (default) names it and why "
                             f"on stderr, goes on with the other {items}, prints how many were done and which were "
                             "skipped, and exits with status 1 at the end; 'stop' ends the run at the first, with "
                             "status 1")


class Skips:
    """The items a batch run skipped because a file of theirs cannot be used, with why.

    With `on_error='skip'` a run goes on past such an item (`skip` prints one line naming it, through
    `warn`); with 'stop' `skip` raises the error instead, ending the run at the first. `finish` ends
    a run that skipped any with a UserError: 'N of M <done>; K skipped: a, b, ...'.
    """

    def __init__(self, on_error: str = 'skip', warn: Optional[Callable[[str], None]] = None):
        self.stop = on_error == 'stop'
        self.items: List[Tuple[str, str]] = []  # (name, reason)
        self._warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))

    def skip(self, name: str, error: BaseException) -> None:
        if self.stop:
            raise error
        reason = first_line(error)
        self.items.append((name, reason))
        self._warn(f"skipped {name}: {reason}")

    def __len__(self) -> int:
        return len(self.items)

    def finish(self, total: int, done: str) -> None:
        """Raises UserError if any was skipped: '<total - skipped> of <total> <done>; K skipped: ...'."""
        if self.items:
            names = sorted(name for name, _ in self.items)
            shown = ', '.join(names[:10]) + (f', ... ({len(names) - 10} more)' if len(names) > 10 else '')
            raise UserError(f"{total - len(names)} of {total} {done}; {len(names)} skipped (named above): {shown}")
