"""The error type the command line reports as one line (``snnrun: error: ...``, exit 2)."""


class SnnrunError(Exception):
    """Bad input a user can fix: the message says what was wrong and how to fix it."""
