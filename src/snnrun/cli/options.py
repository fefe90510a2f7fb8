"""What every verb shares: ``<run dir> [key=value ...]`` parsing and the one-line error for an
output folder that cannot be written."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from snnrun.core.errors import SnnrunError

T = TypeVar("T")


def verb_options(
    verb: str,
    args: list[str],
    usage: str,
    options: Callable[[Path], T],
    set_option: Callable[[T, str, str], None],
) -> T:
    """A verb's ``<run dir> [key=value ...]``: ``options(run dir)``, then ``set_option`` for
    each pair in order; anything else is one line with the verb's usage."""
    paths = [a for a in args if "=" not in a]
    if len(paths) != 1 or paths[0].startswith("-"):
        raise SnnrunError(f"{verb} needs one run dir; usage: {usage}")
    opts = options(Path(paths[0]).expanduser())
    for key, value in (a.split("=", 1) for a in args if "=" in a):
        set_option(opts, key, value)
    return opts


def os_error(e: OSError) -> SnnrunError:
    """A failed file operation as one line naming the file and the fix."""
    where = f" {e.filename}" if e.filename else ""
    if e.errno == errno.ENOSPC:
        fix = "free disk space, then continue the run with resume=<run dir>"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make that folder writable, or choose another one with hydra.run.dir=..."
    else:
        fix = "check the path and the disk"
    return SnnrunError(f"cannot write{where}: {e.strerror or e}; {fix} (nothing was half-written)")


def cannot_write(e: OSError, folder: Path, what: str) -> SnnrunError:
    """A tool's failed write into its output ``folder`` as one line: the fix is that folder
    (or another one, ``out=<dir>``), not the run's ``hydra.run.dir``."""
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {folder} writable"
    else:
        fix = "free disk space" if e.errno == errno.ENOSPC else f"check {folder}"
    return SnnrunError(
        f"cannot write {e.filename or folder}: {e.strerror or e}; {fix}, or pass out=<dir> to "
        f"write {what} elsewhere (the run's own files are untouched)"
    )
