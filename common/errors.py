"""The one exception type a user is meant to read.

Stages catch ``FatalError`` at their entry point and print its message as a single line
(``<stage>: error: <message>``) with a non-zero exit code, so bad input never ends in a traceback.
"""


class FatalError(Exception):
    """An error the user can fix (bad path, missing model, bad flag); the message says how."""

    exit_code = 2
