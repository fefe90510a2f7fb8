"""File formats → events: structured arrays ``(t int64 µs, x, y int16, p int8)``.

One reader per format, registered in :data:`READERS` by name so a :class:`Recording` (which
names its reader) can be sent to a worker process. tonic's maintained readers are used where
they work (N-MNIST ``.bin``, AEDAT4); the IBM AEDAT 3.1 and CIFAR10-DVS AEDAT 2.0 readers are
small numpy ones (tonic's ``read_dvs_ibm`` unpacks its header reader wrongly and ignores packet
types and timestamp overflow; SpikingJelly's loops over events in Python).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

EVENT = np.dtype([("t", np.int64), ("x", np.int16), ("y", np.int16), ("p", np.int8)])


@dataclass(frozen=True)
class Recording:
    """One sample: the file its events come from, how to read it, its label.

    ``start``/``end``: a cut ``[start, end)`` in µs (IBM gestures) or the row of a packed file
    (SHD); None when the file is the sample.
    """

    reader: str
    path: str
    label: int
    start: int | None = None
    end: int | None = None

    def read(self) -> np.ndarray:
        return READERS[self.reader](self)


def events(t, x, y, p) -> np.ndarray:
    """Columns → one structured array of :data:`EVENT`."""
    out = np.empty(len(t), dtype=EVENT)
    out["t"], out["x"], out["y"], out["p"] = t, x, y, p
    return out


def nmnist_bin(rec: Recording) -> np.ndarray:
    """N-MNIST / N-Caltech101 ``.bin``: 5 bytes per event (x, y, p|t23), tonic's reader."""
    from tonic.io import read_mnist_file

    raw = read_mnist_file(rec.path, dtype=np.dtype([(k, np.int64) for k in "xytp"]))
    return events(raw["t"], raw["x"], raw["y"], raw["p"])


def tonic_gesture_npy(rec: Recording) -> np.ndarray:
    """tonic's DVSGesture ``.npy``: rows ``(x, y, p, t in ms)``."""
    raw = np.load(rec.path)
    return events(raw[:, 3].astype(np.int64) * 1000, raw[:, 0], raw[:, 1], raw[:, 2])


def ibm_gesture_cut(rec: Recording) -> np.ndarray:
    """The events of an IBM ``.aedat`` recording with ``start <= t < end`` (one gesture)."""
    ev = read_aedat3(rec.path)
    lo, hi = np.searchsorted(ev["t"], [rec.start, rec.end], side="left")
    return ev[lo:hi]


@lru_cache(maxsize=1)  # consecutive cuts of one recording parse it once per process
def read_aedat3(path: str) -> np.ndarray:
    """AEDAT 3.1 polarity events (IBM DvsGesture), sorted by time.

    Packet header (28 bytes, little endian): type i16, source i16, size i32, ts offset i32,
    ts overflow i32, capacity i32, number i32, valid i32. Polarity events (type 1, 8 bytes):
    ``data`` u32 with ``x = data >> 17 & 0x7FFF``, ``y = data >> 2 & 0x7FFF``,
    ``p = data >> 1 & 1``, then ``t = ts | overflow << 31``.
    """
    raw = _skip_header(Path(path).read_bytes())
    chunks, pos = [], 0
    while pos + 28 <= len(raw):
        kind, _, size, _, overflow, capacity = struct.unpack_from("<hhiiii", raw, pos)
        body = raw[pos + 28 : pos + 28 + capacity * size]
        pos += 28 + capacity * size
        if kind == 1 and size == 8:
            chunk = np.frombuffer(body, dtype="<u4", count=len(body) // 4).reshape(-1, 2)
            chunks.append((chunk, overflow))
    if not chunks:
        return events([], [], [], [])
    data = np.concatenate([c[:, 0] for c, _ in chunks])
    t = np.concatenate([c[:, 1].astype(np.int64) | (o << 31) for c, o in chunks])
    ev = events(t, data >> 17 & 0x7FFF, data >> 2 & 0x7FFF, data >> 1 & 1)
    return ev[np.argsort(ev["t"], kind="stable")]


def cifar10dvs_aedat2(rec: Recording) -> np.ndarray:
    """CIFAR10-DVS original ``.aedat`` (AEDAT 2.0, big endian ``(address, t)`` u32 pairs).

    Orientation as SpikingJelly reads it: ``x = 127 - (a >> 8 & 0x7F)``,
    ``y = 127 - (a >> 1 & 0x7F)``, ``p = 1 - (a & 1)``.
    """
    words = np.frombuffer(_skip_header(Path(rec.path).read_bytes()), dtype=">u4")
    if len(words) % 2:
        raise ValueError("truncated AEDAT 2.0 file (odd number of 32-bit words)")
    a, t = words[0::2], words[1::2]
    return events(t.astype(np.int64), 127 - (a >> 8 & 0x7F), 127 - (a >> 1 & 0x7F), 1 - (a & 1))


def cifar10dvs_aedat4(rec: Recording) -> np.ndarray:
    """tonic's CIFAR10-DVS ``.aedat4`` through ``tonic.io.read_aedat4`` (needs ``aedat``)."""
    from tonic.io import read_aedat4

    raw = read_aedat4(rec.path)
    names = raw.dtype.names
    return events(raw[names[0]], raw[names[1]], raw[names[2]], raw[names[3]].astype(np.int8))


def shd_row(rec: Recording) -> np.ndarray:
    """Row ``start`` of an SHD ``.h5``: spike times (s → µs) as ``t``, units as ``x``."""
    spikes = _h5(rec.path)["spikes"]
    times, units = spikes["times"][rec.start], spikes["units"][rec.start]
    t = np.round(times.astype(np.float64) * 1e6).astype(np.int64)
    return events(t, units, np.zeros_like(units), np.ones_like(units))


@lru_cache(maxsize=2)
def _h5(path: str):
    import h5py

    return h5py.File(path, "r")


def _skip_header(raw: bytes) -> bytes:
    """The body after the ``#``-comment header lines of an AEDAT file."""
    pos = 0
    while raw.startswith(b"#", pos):
        end = raw.find(b"\n", pos)
        pos = len(raw) if end < 0 else end + 1
        if raw[:pos].endswith(b"#!END-HEADER\r\n"):
            break
    return raw[pos:]


READERS: dict[str, Callable[[Recording], np.ndarray]] = {
    "nmnist_bin": nmnist_bin,
    "tonic_gesture_npy": tonic_gesture_npy,
    "ibm_gesture_cut": ibm_gesture_cut,
    "cifar10dvs_aedat2": cifar10dvs_aedat2,
    "cifar10dvs_aedat4": cifar10dvs_aedat4,
    "shd_row": shd_row,
}


def forget_open_files() -> None:
    """Drop per-process caches (parsed recordings, open HDF5 files)."""
    read_aedat3.cache_clear()
    _h5.cache_clear()
