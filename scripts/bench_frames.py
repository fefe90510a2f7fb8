"""Frames/s building T frames from one 10^6-event DVS128 recording on the CPU.

Ours (``snnrun.data.events.frames.to_frames``) beside SpikingJelly's
``integrate_events_by_fixed_frames_number`` and tonic's ``ToFrame(n_event_bins / n_time_bins)``
on the same events, for both split methods; also how many events each one kept.

    .venv/bin/python scripts/bench_frames.py [--T 16] [--repeats 5]

The recording is the 10 DVS128 Gesture samples of ``../shared/data/dvsgesture-samples`` played
one after the other, cut to 10^6 events (uniform random events when those are absent).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from snnrun.data.events.frames import to_frames
from snnrun.data.events.readers import events

N_EVENTS = 1_000_000
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "dvsgesture-samples"


def recording() -> tuple[np.ndarray, str]:
    """10^6 time-ordered events on a 128x128 sensor, and where they came from."""
    if not SAMPLES.is_dir():
        rng = np.random.default_rng(0)
        t = np.sort(rng.integers(0, 6_000_000, N_EVENTS))
        xy = rng.integers(0, 128, (2, N_EVENTS))
        return events(t, xy[0], xy[1], rng.integers(0, 2, N_EVENTS)), "uniform random events"
    from tonic.io import read_mnist_file

    parts, offset = [], 0
    dtype = np.dtype([(k, np.int64) for k in "xytp"])
    while sum(len(p) for p in parts) < N_EVENTS:
        for i in range(1, 11):
            ev = read_mnist_file(str(SAMPLES / f"{i}.bs2"), dtype=dtype)
            parts.append(events(ev["t"] + offset, ev["x"], ev["y"], ev["p"]))
            offset += int(ev["t"].max()) + 1
    return np.concatenate(parts)[:N_EVENTS], f"{SAMPLES.name} played back to back"


def best_seconds(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    out, best = fn(), float("inf")  # the first call warms up
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def contenders(ev: np.ndarray, T: int, split_by: str) -> dict[str, Callable[[], np.ndarray]]:
    from spikingjelly.datasets.utils import integrate_events_by_fixed_frames_number
    from tonic.transforms import ToFrame

    as_dict = {k: ev[k] for k in "txyp"}
    tonic_events = np.empty(len(ev), np.dtype([(k, np.int64) for k in "xytp"]))
    for k in "xytp":
        tonic_events[k] = ev[k]
    bins = {"n_event_bins": T} if split_by == "number" else {"n_time_bins": T}
    to_frame = ToFrame(sensor_size=(128, 128, 2), **bins)
    return {
        "snnrun": lambda: to_frames(ev, (2, 128, 128), T, split_by),
        "spikingjelly": lambda: integrate_events_by_fixed_frames_number(
            as_dict, split_by, T, 128, 128
        ),
        "tonic": lambda: to_frame(tonic_events),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--T", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ev, source = recording()
    print(f"{len(ev):,} events ({source}), T={args.T}, 2x128x128, best of {args.repeats}")
    print(f"{'split_by':<9} {'library':<13} {'ms':>8} {'frames/s':>10} {'snnrun x':>9} "
          f"{'events kept':>12}")  # fmt: skip
    for split_by in ("number", "time"):
        results = {
            name: best_seconds(fn, args.repeats)
            for name, fn in contenders(ev, args.T, split_by).items()
        }
        ours = results["snnrun"][0]
        for name, (seconds, frames) in results.items():
            print(f"{split_by:<9} {name:<13} {seconds * 1e3:8.1f} {args.T / seconds:10,.0f} "
                  f"{seconds / ours:9.2f} {int(np.asarray(frames).sum()):>12,}")  # fmt: skip


if __name__ == "__main__":
    main()
