"""The on-disk frame cache: one verified ``.npy`` per split, keyed by every parameter.

An entry lives in ``<root>/.snnrun-frames/<name>-<key>/``: ``frames.npy`` (uint16 counts
``[N, T, ...]``) and ``manifest.json`` (the key's inputs, shape, labels and one CRC-32 per
sample). ``key`` hashes the integration parameters and the list of recordings (path relative
to the root, size, label, cut), so a change to any of them makes a new entry. Writes go to
temporary files renamed into place, the manifest last; on open every sample's CRC is checked,
and a missing, half-written or corrupt entry is rebuilt (with a one-line notice), never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnrun.errors import SnnrunError
from snnrun.events.readers import Recording, forget_open_files
from snnrun.progress import console, progress_bar

FORMAT = 1
FOLDER = ".snnrun-frames"
DTYPE = np.uint16

Make = Callable[[Recording], np.ndarray]


class CacheError(SnnrunError, RuntimeError):
    """A recording that cannot be read or integrated."""


@dataclass(frozen=True)
class Entry:
    """A verified cache entry: the frames file and its labels."""

    path: Path
    labels: torch.Tensor


def cached(
    root: Path,
    name: str,
    params: dict[str, Any],
    recordings: Sequence[Recording],
    make: Make,
    shape: tuple[int, ...],
    workers: int = 0,
) -> Entry:
    """The frames of ``recordings`` (``make`` applied to each, giving ``shape``), from the cache
    or built into it."""
    text = json.dumps(
        {"format": FORMAT, "params": params, "recordings": _describe(root, recordings)},
        sort_keys=True,
    )
    inputs = json.loads(text)  # as the manifest will read back (tuples become lists)
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = root / FOLDER / f"{name}-{key}"
    problem = check(folder, inputs)
    if problem is None:
        return _entry(folder)
    if problem != "not built yet":
        console.print(f"frame cache {folder}: {problem}; rebuilding", highlight=False)
    build(folder, inputs, recordings, make, (len(recordings), *shape), workers, name)
    problem = check(folder, inputs)
    if problem is not None:  # pragma: no cover - a disk that loses writes
        raise CacheError(f"frame cache {folder} is still invalid after a rebuild ({problem}); "
                         "check the disk or delete the folder")  # fmt: skip
    return _entry(folder)


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
        return f"unreadable ({type(e).__name__}: {' '.join(str(e).split())[:80]})"
    if list(frames.shape) != manifest["shape"] or frames.dtype != np.dtype(manifest["dtype"]):
        return f"frames are {list(frames.shape)} {frames.dtype}, manifest says otherwise"
    bad = [i for i, crc in enumerate(manifest["crc32"]) if _crc(frames[i]) != crc]
    if bad:
        return f"{len(bad)} corrupt sample(s), first #{bad[0]}"
    return None


def build(
    folder: Path,
    inputs: dict[str, Any],
    recordings: Sequence[Recording],
    make: Make,
    shape: tuple[int, ...],
    workers: int,
    name: str,
) -> None:
    """Integrate every recording (``workers`` processes) into ``shape``; write it atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)
    tmp = folder / f"frames.npy.{os.getpid()}.partial"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=DTYPE, shape=shape)
    crcs = []
    with progress_bar() as bar:
        task = bar.add_task(f"frames {name}", total=len(recordings), loss="")
        for i, frames in enumerate(_integrate(make, recordings, workers)):
            out[i] = _narrow(frames, recordings[i])
            crcs.append(_crc(out[i]))
            bar.update(task, advance=1)
    out.flush()
    del out
    os.replace(tmp, folder / "frames.npy")
    labels = [r.label for r in recordings]
    manifest = {"inputs": inputs, "shape": list(shape), "dtype": np.dtype(DTYPE).str,
                "labels": labels, "crc32": crcs}  # fmt: skip
    _write_atomic(folder / "manifest.json", json.dumps(manifest))


def _integrate(make: Make, recordings: Sequence[Recording], workers: int) -> Iterator[np.ndarray]:
    """``make(r)`` for each recording, in order; in ``workers`` processes when > 0."""
    if workers <= 0 or len(recordings) < 2:
        yield from (_make_one(make, r) for r in recordings)
        forget_open_files()
        return
    chunk = max(1, len(recordings) // (workers * 8))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_make_one, [make] * len(recordings), recordings, chunksize=chunk)


def _make_one(make: Make, rec: Recording) -> np.ndarray:
    try:
        return make(rec)
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise CacheError(f"cannot read {rec.path}: {' '.join(str(e).split())[:120]}; "
                         "delete it and extract the dataset again") from None  # fmt: skip


def _narrow(frames: np.ndarray, rec: Recording) -> np.ndarray:
    """int64 counts → uint16; a count that does not fit is an error, never clipped."""
    if frames.size and frames.max() > np.iinfo(DTYPE).max:
        raise CacheError(f"{rec.path}: {frames.max()} events in one pixel of one frame exceed "
                         "the cache's uint16; use a larger T")  # fmt: skip
    return frames.astype(DTYPE)


def _describe(root: Path, recordings: Sequence[Recording]) -> list[list[Any]]:
    """What identifies each recording: path relative to the root, size, label, cut, reader."""
    sizes: dict[str, int] = {}
    rows = []
    for r in recordings:
        if r.path not in sizes:
            sizes[r.path] = os.stat(r.path).st_size
        rel = os.path.relpath(r.path, root)
        rows.append([rel, sizes[r.path], r.label, r.start, r.end, r.reader])
    return rows


def _entry(folder: Path) -> Entry:
    labels = json.loads((folder / "manifest.json").read_text())["labels"]
    return Entry(folder / "frames.npy", torch.tensor(labels, dtype=torch.long))


def _crc(sample: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(sample).data)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)
