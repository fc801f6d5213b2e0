"""One exception type for a user's mistake.

Library code raises `UserError` (or a subclass) when what the user gave cannot be used: a missing or
unreadable file, an option that does not fit, data in the wrong layout. Its message names the file or
option and says what was expected. Entry points turn it into one line, `prog: error: message`, and a
non-zero exit status; any other exception is a bug and keeps its traceback.
"""
import sys
from typing import NoReturn


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
