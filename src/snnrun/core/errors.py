"""The error type the command line reports as one line (``snnrun: error: ...``, exit 2)."""


class SnnrunError(Exception):
    """Bad input a user can fix: the message says what was wrong and how to fix it."""


def one_line(error: BaseException, limit: int | None = None) -> str:
    """An exception's message on one line (at most ``limit`` characters), without Hydra's
    search-path appendix; the exception's type name when it has no message."""
    text = " ".join(str(error).split("Config search path")[0].split())
    return text[:limit] if text else type(error).__name__
