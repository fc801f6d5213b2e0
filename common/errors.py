"""One exception type for a user's mistake.

Library code raises `UserError` (or a subclass) when what the user gave cannot be used: a missing or
unreadable file, an option that does not fit, data in the wrong layout. Its message names the file or
option and says what was expected. Entry points turn it into one line, `prog: error: message`, and a
non-zero exit status; any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with what the user gave (a file, a folder, an option), described in one line."""
