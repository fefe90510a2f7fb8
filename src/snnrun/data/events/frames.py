"""Integration: events → frames ``[T, P, H, W]`` and spikes → bins ``[T, channels]``; no event
is dropped.

Events are put in time order and cut into T contiguous slices (bounds ``b[0] = 0 <= ... <=
b[T] = N``); a ``bincount`` over ``(p, y, x)`` per slice counts its events per polarity and
pixel, so ``frames.sum() == len(events)`` always.

- ``split_by='number'``: event ``i`` of ``N`` (in time order) goes to ``j = floor(i T / N)``:
  T slices of ``floor(N/T)`` or ``ceil(N/T)`` events (SpikingJelly's ``split_by_number`` puts
  the whole remainder into the last slice instead). With ``N < T`` some slices stay empty.
- ``split_by='time'``: T equal windows over ``[t_0, t_{N-1}]``:
  ``j = floor((t - t_0) T / (t_{N-1} - t_0 + 1))`` in integer microseconds, so the last event
  falls into the last window and equal timestamps always share a slice.
- spike bins (SHD): T windows of ``duration / T`` from ``t = 0``; later spikes go to the last.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("number", "time")


def number_bounds(n: int, T: int) -> np.ndarray:
    """Slice ``j`` of ``n`` time-ordered events is ``[b[j], b[j+1])``, ``b[j] = ceil(j n / T)``
    (exactly the events with ``floor(i T / n) = j``); int64 ``[T + 1]``."""
    return (np.arange(T + 1, dtype=np.int64) * n + T - 1) // T


def time_bounds(t: np.ndarray, T: int) -> np.ndarray:
    """Slice bounds of sorted ``t`` in T equal windows over ``[t_0, t_last]``: ``b[j]`` is the
    first event with ``(t - t_0) T // span >= j``, i.e. ``t >= t_0 + ceil(j span / T)``."""
    if len(t) == 0:
        return np.zeros(T + 1, dtype=np.int64)
    start, span = int(t[0]), int(t[-1]) - int(t[0]) + 1
    edges = start + (np.arange(T + 1, dtype=np.int64) * span + T - 1) // T
    return np.searchsorted(t, edges, side="left").astype(np.int64)


def bounds(t: np.ndarray, T: int, split_by: str) -> np.ndarray:
    """Slice bounds ``[T + 1]`` of sorted ``t`` for ``split_by`` in :data:`SPLITS`."""
    if split_by == "number":
        return number_bounds(len(t), T)
    if split_by == "time":
        return time_bounds(t, T)
    raise ValueError(f"split_by must be one of {', '.join(SPLITS)}, got {split_by!r}")


def time_ordered(events: np.ndarray) -> np.ndarray:
    """The events sorted by ``t`` (stable); already sorted input is returned as is."""
    t = np.ascontiguousarray(events["t"])
    if len(t) < 2 or bool(np.all(t[1:] >= t[:-1])):
        return events
    return events[np.argsort(t, kind="stable")]


def to_frames(events: np.ndarray, size: tuple[int, int, int], T: int, split_by: str) -> np.ndarray:
    """Event counts per slice, polarity and pixel: int64 ``[T, P, H, W]`` for ``size=(P, H, W)``.

    ``frames[j, p, y, x] = #{events i in slice j with (p_i > 0, y_i, x_i) = (p, y, x)}``.
    """
    P, H, W = size
    events = time_ordered(events)
    x, pixel = events["x"].astype(np.intp), events["y"].astype(np.intp)  # contiguous copies
    _check_range(x, W, "x")
    _check_range(pixel, H, "y")
    pixel *= W
    pixel += x
    if P == 2:
        pixel += (events["p"] > 0) * (H * W)
    b = bounds(events["t"], T, split_by)
    out = np.empty((T, P * H * W), dtype=np.int64)
    for j in range(T):  # one bincount per slice: slices are contiguous runs of events
        out[j] = np.bincount(pixel[b[j] : b[j + 1]], minlength=P * H * W)
    return out.reshape(T, P, H, W)


def to_bins(times_us: np.ndarray, units: np.ndarray, channels: int, T: int, duration_us: int):
    """Spike counts per window and channel: int64 ``[T, channels]``.

    ``bins[j, c] = #{spikes i of unit c with floor(t_i T / duration) = j}``, spikes at or after
    ``duration`` counted in the last window.
    """
    _check_range(units, channels, "unit")
    j = np.minimum(times_us.astype(np.int64) * T // duration_us, T - 1)
    flat = j * channels + units.astype(np.int64)
    return np.bincount(flat, minlength=T * channels).reshape(T, channels)


def _check_range(values: np.ndarray, size: int, name: str) -> None:
    if len(values) and (values.min() < 0 or values.max() >= size):
        span = f"{values.min()}..{values.max()}"
        raise ValueError(f"{name} values span {span}, outside the sensor's 0..{size - 1}")
