"""What every verb shares: ``<run dir> [key=value ...]`` parsed through a table of typed
:class:`Option` entries (an unknown key or a bad value is one line), and the one-line errors for
a failed write."""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from snnrun.core.errors import SnnrunError

T = TypeVar("T")


@dataclass(frozen=True)
class Option:
    """One ``key=value`` a verb takes: ``parse`` turns the text into the value (a
    ``ValueError`` is a bad value: one line saying ``use <use>``), stored as the attribute
    ``into`` of the options (``overrides.<key>``: into their ``overrides`` dict)."""

    into: str
    parse: Callable[[str], Any] = str
    use: str = "a value"


def choice(into: str, *names: str) -> Option:
    """An option taking one of ``names``."""

    def parse(value: str) -> str:
        if value not in names:
            raise ValueError(value)
        return value

    return Option(into, parse, " or ".join(names))


def text(value: str) -> str:
    """A non-empty string."""
    if not value:
        raise ValueError(value)
    return value


def folder(value: str) -> Path:
    return Path(text(value)).expanduser()


def index(value: str) -> int:
    """0, 1, 2, ..."""
    if not value.isdigit():
        raise ValueError(value)
    return int(value)


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(value)
    return int(value)


def positive_float(value: str) -> float:
    if float(value) <= 0:  # float() raises ValueError on words
        raise ValueError(value)
    return float(value)


def boolean(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError(value)
    return value.lower() == "true"


def verb_options(
    verb: str,
    args: list[str],
    usage: str,
    options: Callable[[Path], T],
    table: dict[str, Option],
    prefixed: Callable[[T, str, str], bool] | None = None,
) -> T:
    """A verb's ``<run dir> [key=value ...]``: ``options(run dir)``, then each pair through
    ``table`` (``prefixed`` takes keys no table names, e.g. ``dataset.<key>``, and says whether
    it did). A second path, an unknown key or a bad value is one line with the verb's usage."""
    paths = [a for a in args if "=" not in a]
    if len(paths) != 1 or paths[0].startswith("-"):
        raise SnnrunError(f"{verb} needs one run dir; usage: {usage}")
    opts = options(Path(paths[0]).expanduser())
    for key, value in (a.split("=", 1) for a in args if "=" in a):
        option = table.get(key)
        if option is None:
            if prefixed is None or not prefixed(opts, key, value):
                raise SnnrunError(f"{verb} has no key {key!r}; usage: {usage}")
            continue
        try:
            parsed = option.parse(value)
        except ValueError:
            raise SnnrunError(f"{verb} {key}={value!r}; use {option.use}") from None
        if option.into.startswith("overrides."):
            opts.overrides[option.into.split(".", 1)[1]] = parsed  # type: ignore[attr-defined]
        else:
            setattr(opts, option.into, parsed)
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
