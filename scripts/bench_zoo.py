#!/usr/bin/env python3
"""One training step of a zoo network, snnrun's against SpikingJelly 2.0's own builder.

    python scripts/bench_zoo.py [--nets spikformer,sew_resnet18] [--steps 7] [--T 4]
        [--batch 8] [--warmup 2] [--cpu-time] [--profile] [--top 25]

Both sides in ONE process, their steps alternating A B A B ... (the side that goes first
alternates too), so a slow spell of a shared machine falls on both; the figure that counts is
the ratio of the medians (SpikingJelly's s/step over snnrun's: above 1 means snnrun is faster).

A step: zero the gradients, forward on a direct-encoded batch (the image at every step, as the
runner's ``encoder=direct`` feeds it: an expanded view, stride 0 over T), cross-entropy on the
mean output over T, backward, SGD (lr 0.01, momentum 0.9).

- snnrun: ``model=<net> neuron=lif surrogate=atan`` composed as a run would
  (``compose_config`` then ``build_model``), placed by ``run.build.place`` on the CPU (the
  runner's layout: channels_last when the network has no 1x1 conv2d, so spikformer's SPS stem
  goes NHWC and sew_resnet18, with its 1x1 shortcuts, stays contiguous).
- SpikingJelly 2.0: ``spikformer_cifar10`` (32x32) / ``sew_resnet18(cnf="ADD")`` (64x64) with
  its ``LIFNode`` (tau 2, ATan, multi-step; Spikformer's attention neuron at 0.5), every neuron's
  surrogate set to ATan and ``detach_reset`` to snnrun's (false), snnrun's weights copied in (so
  both sides see the same spikes and the same loss, which the script checks on the first step).

``--cpu-time``: one torch thread, each step timed by the thread's CPU time (``time.thread_time``):
what another job on a shared machine takes is left out (the wall-clock default keeps it).

``--profile``: ``torch.profiler`` over one step of each side (after the warm-up): its top ops by
self CPU time, and by input shape; then both sides' self CPU time per op, side by side, averaged
over ``--steps`` alternating steps (with ``--cpu-time``: on one thread, where a busy machine's
other jobs disturb the op times least).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SIZES = {"spikformer": 32, "sew_resnet18": 64}


def snnrun_net(name: str, T: int, size: int) -> nn.Module:
    from omegaconf import OmegaConf

    from snnrun.core.compose import compose_config
    from snnrun.net.model import build_model
    from snnrun.run.build import place

    overrides = [f"model={name}", "neuron=lif", "neuron.tau=2.0", "surrogate=atan", f"T={T}"]
    conf = OmegaConf.to_container(compose_config(overrides), resolve=True)
    groups = {"neuron": conf["neuron"], "surrogate": conf["surrogate"]}
    model = build_model(conf["model"], groups, (3, size, size), 10)
    return place(model, torch.device("cpu"))


def spikingjelly_net(name: str, T: int) -> nn.Module:
    from spikingjelly.activation_based import functional, neuron, surrogate
    from spikingjelly.activation_based.model import sew_resnet, spikformer

    if name == "spikformer":
        model = spikformer.spikformer_cifar10(T=T, num_classes=10)  # its LIF, attention at 0.5
    else:
        model = sew_resnet.sew_resnet18(cnf="ADD", spiking_neuron=neuron.LIFNode, num_classes=10)
    for m in model.modules():
        if isinstance(m, neuron.BaseNode):
            m.surrogate_function = surrogate.ATan()
            m.detach_reset = False  # snnrun's lif default
            assert m.tau == 2.0
    functional.set_step_mode(model, "m")
    return model


def copy_weights(ours: nn.Module, theirs: nn.Module) -> None:
    """snnrun's tensors into SpikingJelly's: Spikformer's q/k/v conv+BN into its fused ``qkv``,
    the rest by order (pairwise of the same shape)."""
    from spikingjelly.activation_based.layer.attention import SpikingSelfAttention as SJ

    from snnrun.net.attention import SpikingSelfAttention

    sj = [n for n, m in theirs.named_modules() if isinstance(m, SJ)]
    sr = [n for n, m in ours.named_modules() if isinstance(m, SpikingSelfAttention)]
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    target: dict[str, torch.Tensor] = {}
    for a, b in zip(sj, sr, strict=True):
        for i, part in enumerate(("conv", "bn")):
            for key in [k for k in theirs_sd if k.startswith(f"{a}.qkv_conv_bn.{i}.")]:
                leaf = key.rsplit(".", 1)[1]
                parts = [ours_sd[f"{b}.{n}_{part}.{leaf}"] for n in "qkv"]
                target[key] = parts[0] if parts[0].dim() == 0 else torch.cat(parts)
            for key in [k for k in theirs_sd if k.startswith(f"{a}.proj_conv_bn.{i}.")]:
                target[key] = ours_sd[f"{b}.proj_{part}.{key.rsplit('.', 1)[1]}"]
    rest_theirs = [k for k in theirs_sd if not k.startswith(tuple(f"{a}." for a in sj))]
    rest_ours = [k for k in ours_sd if not k.startswith(tuple(f"{b}." for b in sr))]
    for k, j in zip(rest_theirs, rest_ours, strict=True):
        assert theirs_sd[k].shape == ours_sd[j].shape, (k, j)
        target[k] = ours_sd[j]
    theirs.load_state_dict({k: t.clone() for k, t in target.items()})


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, reset: Callable[[], None]):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> float:
        reset()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).mean(0), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def sides(name: str, T: int, batch: int) -> dict[str, Callable[[], float]]:
    from spikingjelly.activation_based import functional

    size = SIZES[name]
    torch.manual_seed(0)
    ours = snnrun_net(name, T, size)
    theirs = spikingjelly_net(name, T)
    copy_weights(ours, theirs)
    ours.train(), theirs.train()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, size, size, generator=g)
    x = x.unsqueeze(0).expand(T, *x.shape)  # encoder=direct
    y = torch.randint(0, 10, (batch,), generator=g)
    return {
        "snnrun": make_step(ours, x, y, lambda: None),  # its forward resets its states
        "spikingjelly": make_step(theirs, x, y, lambda: functional.reset_net(theirs)),
    }


def race(name: str, T: int, batch: int, steps: int, warmup: int,
         clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:  # fmt: skip
    run = sides(name, T, batch)
    first = {side: step() for side, step in run.items()}  # warm-up 1, and the same loss
    # equal weights and spikes; float32 rounding in another layout (channels_last) may flip a few
    if abs(first["snnrun"] - first["spikingjelly"]) > 0.05 * max(1.0, abs(first["snnrun"])):
        raise AssertionError(f"{name}: the two sides' first losses differ: {first}")
    for _ in range(warmup - 1):
        for step in run.values():
            step()
    times: dict[str, list[float]] = {side: [] for side in run}
    order = list(run)
    for i in range(steps):
        for side in order if i % 2 == 0 else order[::-1]:
            start = clock()
            run[side]()
            times[side].append(clock() - start)
    ratios = [b / a for a, b in zip(times["snnrun"], times["spikingjelly"], strict=True)]
    return {
        "snnrun": statistics.median(times["snnrun"]),
        "spikingjelly": statistics.median(times["spikingjelly"]),
        "snnrun_best": min(times["snnrun"]),
        "spikingjelly_best": min(times["spikingjelly"]),
        "paired": statistics.median(ratios),
        "lo": min(ratios),
        "hi": max(ratios),
    }


def profile(name: str, T: int, batch: int, warmup: int, top: int, steps: int) -> None:
    """Each side's top ops over one step (by self CPU time, then by input shape), then both
    sides' self CPU time per op side by side, averaged over ``steps`` alternating steps."""
    from collections import Counter

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    run = sides(name, T, batch)
    for _ in range(max(warmup, 1)):
        for step in run.values():
            step()
    per_op: dict[str, Counter[str]] = {side: Counter() for side in run}
    for i in range(max(steps, 1)):
        for side in list(run) if i % 2 == 0 else list(run)[::-1]:
            with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                run[side]()
            events = prof.key_averages()
            for e in events:
                per_op[side][e.key] += e.self_cpu_time_total / 1e3 / max(steps, 1)
            if i == 0:
                total = sum(e.self_cpu_time_total for e in events) / 1e6
                print(f"\n### {name}: {side} (one step, {total:.3f} s self CPU in ops)\n")
                print(events.table(sort_by="self_cpu_time_total", row_limit=top,
                                   max_name_column_width=40))  # fmt: skip
                print(prof.key_averages(group_by_input_shape=True).table(
                    sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=40,
                    max_shapes_column_width=70))  # fmt: skip
    ours, theirs = per_op["snnrun"], per_op["spikingjelly"]
    keys = sorted(set(ours) | set(theirs), key=lambda k: -(ours[k] + theirs[k]))
    print(f"\n### {name}: self CPU ms per step by op, mean of {max(steps, 1)} alternating steps\n")
    print("| op | snnrun | SpikingJelly | snnrun - SJ |\n| --- | ---: | ---: | ---: |")
    for key in keys[:top]:
        print(f"| {key} | {ours[key]:.1f} | {theirs[key]:.1f} | {ours[key] - theirs[key]:+.1f} |")
    total_ours, total_theirs = sum(ours.values()), sum(theirs.values())
    print(f"| all ops | {total_ours:.1f} | {total_theirs:.1f} | {total_ours - total_theirs:+.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", default="spikformer,sew_resnet18")
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--cpu-time", action="store_true",
                        help="one torch thread, steps timed by the thread's CPU time (a busy "
                        "machine's preemptions left out)")  # fmt: skip
    args = parser.parse_args()
    nets = [n for n in args.nets.split(",") if n]
    unknown = set(nets) - set(SIZES)
    if unknown:
        parser.error(f"unknown net(s) {', '.join(sorted(unknown))}; choose from {list(SIZES)}")
    if args.cpu_time:
        torch.set_num_threads(1)
    clock = time.thread_time if args.cpu_time else time.perf_counter
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, T={args.T}, "
          f"batch {args.batch}, {args.steps} alternating steps each, "
          f"{'CPU' if args.cpu_time else 'wall'} time")  # fmt: skip
    if args.profile:
        for name in nets:
            profile(name, args.T, args.batch, args.warmup, args.top, args.steps)
        return
    print(table(nets, args.T, args.batch, args.steps, args.warmup, clock))


def table(nets: list[str], T: int, batch: int, steps: int, warmup: int,
          clock: Callable[[], float] = time.perf_counter) -> str:  # fmt: skip
    """The race of each net as one markdown table (``scripts/bench_train.py --zoo`` prints it
    beside its own)."""
    rows = []
    for name in nets:
        r = race(name, T, batch, steps, warmup, clock)
        rows.append(
            f"| {name} ({SIZES[name]}x{SIZES[name]}) | {r['snnrun']:.3f} | {r['spikingjelly']:.3f} "
            f"| {r['spikingjelly'] / r['snnrun']:.2f}x | {r['paired']:.2f}x "
            f"[{r['lo']:.2f}-{r['hi']:.2f}] "
            f"| {r['spikingjelly_best'] / r['snnrun_best']:.2f}x |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    head = ("| network | snnrun s/step | SpikingJelly s/step | ratio (SJ / snnrun) "
            "| paired ratio [range] | best-step ratio |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: |")  # fmt: skip
    return "\n".join([head, *rows])


if __name__ == "__main__":
    main()
