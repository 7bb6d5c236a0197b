"""The one exception type that means "the user gave us something wrong".

The CLI turns it into ``error: <message>`` and exit code 2, without a traceback, so every
message must name the file or option at fault.
"""


class UserError(Exception):
    """Bad input from the user: a path, a file, an option value."""
