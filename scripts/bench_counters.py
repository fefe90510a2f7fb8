"""Firing rates, SynOps and energy of a trained run beside SpikingJelly 2.0's op counters,
and what counting costs: test-pass samples/s with the counters on and off, interleaved.

    python scripts/bench_counters.py <run dir> [--batches 20] [--repeats 3]

The run's best network is rebuilt with ``snnrun.load_run``; its test split is loaded from the
run's config (``--root`` overrides ``dataset.root``). One table per question; ratios only
within this one run (the machine is noisy).
"""

from __future__ import annotations

import argparse
import time

import torch

import snnrun
from snnrun.data.encoder import build_encoder
from snnrun.engine.monitor import FiringRates, SynapticOps, monitoring


def batches(run: snnrun.api.LoadedRun, n: int, size: int, root: str | None) -> list:
    """The first ``n`` test batches, encoded to ``[T, N, ...]``."""
    splits = run.splits(**({"root": root} if root else {}))
    encode = build_encoder(run.config["encoder"], splits.sequence)
    out = []
    for i in range(n):
        idx = list(range(i * size, min((i + 1) * size, len(splits.test))))
        if not idx:
            break
        x, y = splits.test.__getitems__(idx)
        out.append((encode(x, run.config["T"]), y))
    return out


def ours(model: torch.nn.Module, data: list) -> dict[str, float]:
    counters = [FiringRates(model), SynapticOps(model)]
    with torch.no_grad(), monitoring(counters) as active:
        for x, _ in data:
            model(x)
    return active.summary()


def spikingjelly(model: torch.nn.Module, data: list) -> dict[str, float] | None:
    try:
        from spikingjelly.activation_based import op_counter
    except ImportError:
        print("SpikingJelly not installed: its column is skipped (pip install spikingjelly)")
        return None
    synop, mac = op_counter.SynOpCounter(), op_counter.MACCounter()
    with torch.no_grad(), op_counter.DispatchCounterMode([synop, mac]):
        for x, _ in data:
            model(x)
    samples = sum(x.shape[1] for x, _ in data)
    return {
        "synops/ac": synop.get_total() / samples,
        "all MACs (SJ MACCounter)": mac.get_total() / samples,
    }


def throughput(model: torch.nn.Module, data: list, counting: bool) -> float:
    counters = [FiringRates(model), SynapticOps(model)] if counting else []
    start = time.perf_counter()
    with torch.no_grad(), monitoring(counters) as active:
        for x, _ in data:
            model(x)
        active.summary()
    return sum(x.shape[1] for x, _ in data) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", default=None)
    args = parser.parse_args()
    run = snnrun.load_run(args.run_dir)
    data = batches(run, args.batches, args.batch_size, args.root)
    samples = sum(x.shape[1] for x, _ in data)
    print(f"run {args.run_dir}: model={run.config['model']['name']} T={run.config['T']} "
          f"epoch {run.epoch}, {samples} test samples, torch {torch.__version__}")  # fmt: skip
    counted, theirs = ours(run.model, data), spikingjelly(run.model, data)
    print("\n| quantity (per sample) | snnrun | SpikingJelly 2.0 |\n| --- | --- | --- |")
    for key, value in counted.items():
        peer = theirs.get(key) if theirs else None
        shown = "-" if peer is None else f"{peer:,.1f}"
        print(f"| {key} | {value:,.4g} | {shown} |")
    if theirs:
        print(f"| all MACs (SJ MACCounter) | - | {theirs['all MACs (SJ MACCounter)']:,.1f} |")
    rows = {"off": [], "on": []}
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        for mode in ("off", "on"):
            rows[mode].append(throughput(run.model, data, mode == "on"))
    off, on = max(rows["off"]), max(rows["on"])
    print("\n| test pass | samples/s (best of repeats) | vs off |\n| --- | --- | --- |")
    print(f"| counters off | {off:,.0f} | 1.00 |\n| counters on | {on:,.0f} | {on / off:.2f} |")


if __name__ == "__main__":
    main()
