#!/usr/bin/env python3
"""CPU training speed of the CSNN with and without channels_last convolutions, in one process.

``run/build.place`` puts convolutions channels_last (NHWC) on a CPU only in a network without
1x1 convolutions: oneDNN's AVX2 1x1 convolution backward hangs or corrupts memory on that layout
(docs/upstream/onednn_channels_last_hang.md). This measures what NHWC buys: two runs of the
same config and seed (``scripts/bench_train.py``'s real batches and its ``snnrun`` row: the
composed experiment, ``build_run``, the trainer's ``train_step``), one contiguous and one
channels_last, timed in alternating
chunks of ``--steps`` steps (ABBA order), so that other load on the machine falls on both. It
prints the median samples/s of each layout and the median of the per-round ratios.

    python scripts/bench_layout.py [--net fmnist] [--channels 32] [--rounds 8] [--steps 5]

Run it on a quiet machine; ``ONEDNN_MAX_CPU_ISA=AVX2`` (the kernels of an AVX2-only CPU) crashes
the channels_last row.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from bench_train import NETS, batches, snnrun_conf

LAYOUTS = ("contiguous", "channels_last")


def train_step(net: str, args: argparse.Namespace, layout: str) -> Callable[..., object]:
    """The runner's train step on the composed experiment, its network in ``layout``."""
    from snnrun.engine.trainer import Trainer, TrainSettings
    from snnrun.run.build import build_run

    torch.manual_seed(0)
    run = build_run(snnrun_conf(net, args, "neuron.backend=torch"))
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    run.model.to(memory_format=fmt)  # whatever run/build.place chose
    trainer = Trainer(run, run.model, settings=TrainSettings.of(run.config))
    trainer.net.train()
    return trainer.train_step


def rate(step: Callable[..., object], data: list, steps: int, batch: int) -> float:
    start = time.perf_counter()
    for i in range(steps):
        step(*data[i % len(data)])
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--net", default="fmnist", choices=list(NETS))
    p.add_argument("--channels", type=int, default=32, help="fmnist CSNN channels (tutorial: 128)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=4, help="distinct in-memory batches, cycled")
    p.add_argument("--steps", type=int, default=5, help="steps per timed chunk")
    p.add_argument("--rounds", type=int, default=8, help="timed chunks per layout")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per layout")
    args = p.parse_args()

    data = batches(args.net, args)
    steps = {layout: train_step(args.net, args, layout) for layout in LAYOUTS}
    for step in steps.values():
        rate(step, data, args.warmup, args.batch)
    rates: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    for r in range(args.rounds):
        for layout in LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]:  # ABBA
            rates[layout].append(rate(steps[layout], data, args.steps, args.batch))
    ratios = [b / a for a, b in zip(*rates.values(), strict=True)]

    print(f"{args.net} CSNN (channels {args.channels}), T={NETS[args.net]['T']}, batch "
          f"{args.batch}, fp32 on the CPU, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; {args.rounds} alternating chunks of {args.steps} steps per "
          "layout\n")  # fmt: skip
    print("| layout | train samples/s (median) | min | max |")
    print("|---|---|---|---|")
    for layout, xs in rates.items():
        print(f"| {layout} | {statistics.median(xs):,.1f} | {min(xs):,.1f} | {max(xs):,.1f} |")
    print(
        f"\nchannels_last / contiguous: x{statistics.median(ratios):.2f} (median of the "
        f"per-round ratios; range x{min(ratios):.2f} to x{max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
