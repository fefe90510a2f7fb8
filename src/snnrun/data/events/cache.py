"""The on-disk frame cache: one verified ``.npy`` per split, keyed by every parameter.

An entry lives in ``<cache>/<name>-<key>/`` (``cache``: ``dataset.cache_dir``, by default
``<root>/.snnrun-frames``): ``frames.npy`` (uint16 counts ``[N, T, ...]``) and
``manifest.json`` (the key's inputs, shape, labels and one CRC-32 per sample). ``key`` hashes
the integration parameters and the list of recordings (path relative to the root, size, label,
cut), so a change to any of them makes a new entry, wherever the cache is. Writes go to
``*.<pid>.partial`` files renamed into place, the manifest last; on open every sample's CRC is
checked and the labels compared with the recordings', and a missing, half-written, corrupt or
edited entry is rebuilt (with a one-line notice), never used. A build holds its folder's
``build.lock`` (shared) and ends between recordings on a stop request (SIGTERM, Ctrl-C),
removing its partial files; those of builds that were killed are removed at the next open.
An empty (0-byte) recording is refused: it is a broken download, not a sample without events.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import signal
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnrun.core.errors import SnnrunError, one_line
from snnrun.core.progress import console, progress_bar
from snnrun.core.stop import check_stop
from snnrun.data.events.readers import Recording, forget_open_files

FORMAT = 1
FOLDER = ".snnrun-frames"  # under dataset.root, unless dataset.cache_dir names another folder
LOCK = "build.lock"
DTYPE = np.uint16
CHUNK = 4  # recordings per task of a worker process: a stop request waits for one chunk

Make = Callable[[Recording], np.ndarray]


class CacheError(SnnrunError, RuntimeError):
    """A recording that cannot be read or integrated, or a cache that cannot be written."""


@dataclass(frozen=True)
class Entry:
    """A verified cache entry: the frames file and its labels."""

    path: Path
    labels: torch.Tensor


def cached(
    cache: Path,
    root: Path,
    name: str,
    params: dict[str, Any],
    recordings: Sequence[Recording],
    make: Make,
    shape: tuple[int, ...],
    workers: int = 0,
) -> Entry:
    """The frames of ``recordings`` under ``root`` (``make`` applied to each, giving
    ``shape``), from their entry in ``cache`` or built into it."""
    text = json.dumps(
        {"format": FORMAT, "params": params, "recordings": _describe(root, recordings)},
        sort_keys=True,
    )
    inputs = json.loads(text)  # as the manifest will read back (tuples become lists)
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = cache / f"{name}-{key}"
    sweep(cache)
    problem = check(folder, inputs)
    if problem is None:
        return _entry(folder, recordings)
    if problem != "not built yet":
        console.print(f"frame cache {folder}: {problem}; rebuilding", highlight=False)
    try:
        build(folder, inputs, recordings, make, (len(recordings), *shape), workers, name)
    except OSError as e:  # reading a recording raises CacheError: this is a write
        raise _write_error(cache, e) from None
    problem = check(folder, inputs)
    if problem is not None:  # pragma: no cover - a disk that loses writes
        raise CacheError(f"frame cache {folder} is still invalid after a rebuild ({problem}); "
                         "check the disk or delete the folder")  # fmt: skip
    return _entry(folder, recordings)


def check(folder: Path, inputs: dict[str, Any]) -> str | None:
    """None when ``folder`` holds a complete entry for ``inputs``, else what is wrong."""
    manifest_path, frames_path = folder / "manifest.json", folder / "frames.npy"
    if not manifest_path.is_file():
        return "not built yet"
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest["inputs"] != inputs:
            return "manifest is for other parameters"
        frames = np.load(frames_path, mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable ({type(e).__name__}: {one_line(e, 80)})"
    if list(frames.shape) != manifest["shape"] or frames.dtype != np.dtype(manifest["dtype"]):
        return f"frames are {list(frames.shape)} {frames.dtype}, manifest says otherwise"
    if manifest.get("labels") != [row[2] for row in inputs["recordings"]]:
        return "its labels differ from the recordings' (an edited manifest)"
    bad = _corrupt(frames, manifest["crc32"])
    if bad:
        return f"{len(bad)} corrupt sample(s), first #{bad[0]}"
    return None


def _corrupt(frames: np.ndarray, crcs: list[int]) -> list[int]:
    """The indices of the samples whose CRC differs from ``crcs``; a stop request ends the
    check between samples (it reads the whole entry: minutes for a large one)."""
    bad = []
    for i, crc in enumerate(crcs):
        check_stop()
        if _crc(frames[i]) != crc:
            bad.append(i)
    return bad


def build(
    folder: Path,
    inputs: dict[str, Any],
    recordings: Sequence[Recording],
    make: Make,
    shape: tuple[int, ...],
    workers: int,
    name: str,
) -> None:
    """Integrate every recording (``workers`` processes) into ``shape``; write it atomically.

    The folder's ``build.lock`` is held shared meanwhile, so that :func:`sweep` leaves this
    build's partial files alone; they are removed when the build fails or is stopped.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock(fd, fcntl.LOCK_SH)
        crcs = _write_frames(folder, recordings, make, shape, workers, name)
        manifest = {"inputs": inputs, "shape": list(shape), "dtype": np.dtype(DTYPE).str,
                    "labels": [r.label for r in recordings], "crc32": crcs}  # fmt: skip
        _write_atomic(folder / "manifest.json", json.dumps(manifest))
    except BaseException:
        with contextlib.suppress(OSError):
            for partial in folder.glob(f"*.{os.getpid()}.partial"):
                partial.unlink()
        raise
    finally:
        os.close(fd)


def sweep(cache: Path) -> None:
    """Remove the partial files of builds killed midway: those in entry folders whose
    ``build.lock`` no running build holds (the kernel drops a dead process's lock)."""
    for folder in {p.parent for p in cache.glob("*/*.partial")}:
        with contextlib.suppress(OSError):  # a read-only cache: nothing can be removed
            fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB):
                    for partial in folder.glob("*.partial"):
                        partial.unlink()
            finally:
                os.close(fd)


def _flock(fd: int, how: int) -> bool:
    """``flock(fd, how)``; False when another process holds it or the file system has no locks
    (then a sweep removes nothing)."""
    try:
        fcntl.flock(fd, how)
    except OSError:
        return False
    return True


def _write_frames(
    folder: Path,
    recordings: Sequence[Recording],
    make: Make,
    shape: tuple[int, ...],
    workers: int,
    name: str,
) -> list[int]:
    """``frames.npy``, written through a partial file; each sample's CRC. A stop request ends
    it between recordings."""
    tmp = folder / f"frames.npy.{os.getpid()}.partial"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=DTYPE, shape=shape)
    crcs = []
    with progress_bar() as bar, contextlib.closing(_integrate(make, recordings, workers)) as made:
        task = bar.add_task(f"frames {name}", total=len(recordings), loss="")
        for i, frames in enumerate(made):
            out[i] = _narrow(frames, recordings[i])
            crcs.append(_crc(out[i]))
            bar.update(task, advance=1)
            check_stop()
    out.flush()
    del out
    os.replace(tmp, folder / "frames.npy")
    return crcs


def _integrate(make: Make, recordings: Sequence[Recording], workers: int) -> Iterator[np.ndarray]:
    """``make(r)`` for each recording, in order; in ``workers`` processes when > 0 (closing
    the generator cancels the tasks not started)."""
    if workers <= 0 or len(recordings) < 2:
        try:
            yield from (_make_one(make, r) for r in recordings)
        finally:
            forget_open_files()
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_leave_signals_to_parent) as pool:
        try:
            yield from pool.map(_make_one, [make] * len(recordings), recordings, chunksize=CHUNK)
        except BrokenProcessPool:  # a worker killed by the signal (before it could ignore it)
            check_stop()
            raise


def _leave_signals_to_parent() -> None:
    """In a worker: ignore SIGTERM/SIGINT (SLURM and Ctrl-C signal the whole process group);
    the parent stops the build, and a worker killed by one would break the pool."""
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)


def _make_one(make: Make, rec: Recording) -> np.ndarray:
    try:
        return make(rec)
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise CacheError(f"cannot read {rec.path}: {one_line(e, 120)}; "
                         "delete it and extract the dataset again") from None  # fmt: skip


def _narrow(frames: np.ndarray, rec: Recording) -> np.ndarray:
    """int64 counts → uint16; a count that does not fit is an error, never clipped."""
    if frames.size and frames.max() > np.iinfo(DTYPE).max:
        raise CacheError(f"{rec.path}: {frames.max()} events in one pixel of one frame exceed "
                         "the cache's uint16; use a larger T")  # fmt: skip
    return frames.astype(DTYPE)


def _write_error(cache: Path, e: OSError) -> CacheError:
    """A failed write into the cache: the folder, and how to put the cache elsewhere."""
    where = "a folder with free space" if e.errno == errno.ENOSPC else "a writable folder"
    return CacheError(f"cannot write the frame cache in {cache} ({e.strerror or e}); set "
                      f"dataset.cache_dir=<{where}> (dataset.root is only read)")  # fmt: skip


def _describe(root: Path, recordings: Sequence[Recording]) -> list[list[Any]]:
    """What identifies each recording: path relative to the root, size, label, cut, reader.
    An empty file is refused (a broken download or extraction, not a sample)."""
    sizes: dict[str, int] = {}
    rows = []
    for r in recordings:
        if r.path not in sizes:
            sizes[r.path] = os.stat(r.path).st_size
            if not sizes[r.path]:
                raise CacheError(f"{r.path} is empty (0 bytes); extract the dataset again, or "
                                 "delete the file to train without it")  # fmt: skip
        rel = os.path.relpath(r.path, root)
        rows.append([rel, sizes[r.path], r.label, r.start, r.end, r.reader])
    return rows


def _entry(folder: Path, recordings: Sequence[Recording]) -> Entry:
    """The entry's frames file with the recordings' labels (the manifest's were checked equal)."""
    labels = torch.tensor([r.label for r in recordings], dtype=torch.long)
    return Entry(folder / "frames.npy", labels)


def _crc(sample: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(sample).data)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)
