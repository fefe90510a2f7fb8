#!/usr/bin/env python3
"""One training step of a zoo network, snnrun's against SpikingJelly 2.0's own builder.

    python scripts/bench_zoo.py [--nets spikformer,sew_resnet18] [--steps 7] [--T 4]
        [--batch 8] [--warmup 2] [--cpu-time] [--profile] [--top 25]
    python scripts/bench_zoo.py --device cuda --nets fmnist_csnn,sew_resnet18_cifar,spikformer,alif
        --backends torch,triton --precisions fp32,amp_bf16 [--T 4] [--batch 64] [--out FILE.md]

All sides in ONE process, their steps alternating A B C ... (the order reversing every round),
so a slow spell of a shared machine falls on all; the figure that counts is the ratio of the
medians (SpikingJelly's s/step over snnrun's: above 1 means snnrun is faster).

A step: zero the gradients, forward on a batch (an image: direct-encoded, the image at every
step, as the runner's ``encoder=direct`` feeds it, an expanded view, stride 0 over T; ``alif``:
random input spikes ``[T, N, 700]``), cross-entropy on the mean output over T, backward, SGD
(lr 0.01, momentum 0.9); under ``--precisions amp_bf16`` the forward and the loss run in
``torch.autocast(bfloat16)``, as ``precision=amp_bf16`` does.

- snnrun: ``model=<net>`` with the net's neuron group composed as a run would
  (``compose_config`` then ``build_model``), placed by ``run.build.place`` (the runner's layout:
  on a CPU channels_last when the network has no 1x1 conv2d), one side per ``--backends`` x
  ``--precisions`` (``neuron.backend=triton`` where the kernels cannot run falls back to torch).
- SpikingJelly 2.0, one side per precision, its implementation chosen by itself per device
  (``torch-reference`` on a CPU, its fused kernels on CUDA), every neuron's surrogate set to ATan
  and ``detach_reset`` to snnrun's (false), snnrun's weights copied in (so all sides see the same
  spikes and the same loss, which the table shows as ``first loss``):
  ``spikformer_cifar10`` (32x32), ``sew_resnet18(cnf="ADD")`` (64x64; ``sew_resnet18_cifar``:
  its stem made the CIFAR one, Conv3x3/1 and no max pool, 32x32), the tutorials' Fashion-MNIST
  CSNN (``fmnist_csnn``: {Conv3x3(128)-BN-IF-MaxPool2}x2-Linear-IF-Linear-IF, 28x28).
  ``alif`` (``experiment=shd_alif``'s recurrent ALIF net on SHD-sized input) has no SpikingJelly
  builder (it ships no ALIF neuron): snnrun's sides only.

Per side: the first step's loss, images/s (batch over the median step), and on CUDA the step's
peak memory (``max_memory_allocated`` over the step, less what was allocated at its start: the
weights, optimizer states and every side's gradients).

``--cpu-time``: one torch thread, each step timed by the thread's CPU time (``time.thread_time``):
what another job on a shared machine takes is left out (the wall-clock default keeps it).

``--profile``: ``torch.profiler`` over one step of each side (after the warm-up): its top ops by
self CPU time, and by input shape; then both sides' self CPU time per op, side by side, averaged
over ``--steps`` alternating steps (with ``--cpu-time``: on one thread, where a busy machine's
other jobs disturb the op times least).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

Step = Callable[[], float]
LIF = ("neuron=lif", "neuron.tau=2.0", "surrogate=atan")


@dataclass(frozen=True)
class Net:
    """A network of the race: snnrun's overrides, one sample's shape, its classes, and the
    SpikingJelly builder (``T -> module``; None: SpikingJelly has none)."""

    overrides: tuple[str, ...]
    shape: tuple[int, ...]
    peer: Callable[[int], nn.Module] | None
    classes: int = 10
    sequence: bool = False  # input: random spikes [T, N, *shape] (else an image repeated over T)


def _sj_spikformer(T: int) -> nn.Module:
    from spikingjelly.activation_based.model import spikformer

    return spikformer.spikformer_cifar10(T=T, num_classes=10)  # its LIF, attention at 0.5


def _sj_sew_resnet18(T: int, cifar_stem: bool = False) -> nn.Module:
    from spikingjelly.activation_based import neuron
    from spikingjelly.activation_based.model import sew_resnet

    model = sew_resnet.sew_resnet18(cnf="ADD", spiking_neuron=neuron.LIFNode, num_classes=10)
    if cifar_stem:  # the 32x32 ResNet stem, as snnrun's model.stem=cifar
        model.conv1 = type(model.conv1)(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def sj_csnn(C: int) -> nn.Sequential:
    """The SpikingJelly tutorials' Fashion-MNIST CSNN (seeds 000/001), multi-step."""
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    def node() -> nn.Module:
        return neuron.IFNode(surrogate_function=surrogate.ATan())

    net = nn.Sequential(
        layer.Conv2d(1, C, kernel_size=3, padding=1, bias=False), layer.BatchNorm2d(C), node(),
        layer.MaxPool2d(2, 2),
        layer.Conv2d(C, C, kernel_size=3, padding=1, bias=False), layer.BatchNorm2d(C), node(),
        layer.MaxPool2d(2, 2),
        layer.Flatten(),
        layer.Linear(C * 7 * 7, C * 4 * 4, bias=False), node(),
        layer.Linear(C * 4 * 4, 10, bias=False), node(),
    )  # fmt: skip
    functional.set_step_mode(net, step_mode="m")
    return net


NETS = {
    "spikformer": Net(("model=spikformer", *LIF), (3, 32, 32), _sj_spikformer),
    "sew_resnet18": Net(("model=sew_resnet18", *LIF), (3, 64, 64), _sj_sew_resnet18),
    "sew_resnet18_cifar": Net(("model=sew_resnet18", "model.stem=cifar", *LIF), (3, 32, 32),
                              lambda T: _sj_sew_resnet18(T, cifar_stem=True)),
    "fmnist_csnn": Net(("model=csnn", "model.channels=128", "neuron=if", "surrogate=atan"),
                       (1, 28, 28), lambda T: sj_csnn(128)),
    "alif": Net(("model=rsnn", "model.hidden=128", "neuron=alif", "neuron.tau=20.0",
                 "neuron.tau_adapt=200.0", "neuron.beta_a=1.8", "surrogate=atan"),
                (700,), None, classes=20, sequence=True),
}  # fmt: skip
PRECISIONS = {"fp32": None, "amp_bf16": torch.bfloat16}


def snnrun_net(name: str, T: int, device: torch.device, backend: str = "torch") -> nn.Module:
    from omegaconf import OmegaConf

    from snnrun.core.compose import compose_config
    from snnrun.net.model import build_model
    from snnrun.run.build import place

    net = NETS[name]
    overrides = [*net.overrides, f"neuron.backend={backend}", f"T={T}"]
    conf = OmegaConf.to_container(compose_config(overrides), resolve=True)
    groups = {"neuron": conf["neuron"], "surrogate": conf["surrogate"]}
    model = build_model(conf["model"], groups, net.shape, net.classes)
    return place(model, device)


def spikingjelly_net(name: str, T: int) -> nn.Module:
    from spikingjelly.activation_based import functional, neuron, surrogate

    model = NETS[name].peer(T)
    for m in model.modules():
        if isinstance(m, neuron.BaseNode):
            m.surrogate_function = surrogate.ATan()
            m.detach_reset = False  # snnrun's default
            assert isinstance(m, neuron.IFNode) or m.tau == 2.0
    functional.set_step_mode(model, "m")
    return model


def sj_implementation(device: torch.device) -> str:
    """The LIF and IF implementations SpikingJelly 2.0 binds on ``device`` (its own query; it
    may still run its reference under autocast, which the query does not judge)."""
    found = []
    for kind in ("lif", "if"):
        try:
            from spikingjelly.activation_based import functional

            bound = functional.neuron_implementation(kind, device)["implementation"]
            found.append(f"{kind} {bound}")
        except Exception as e:  # an old version, or a query that fails, must not end the race
            found.append(f"{kind} unknown ({type(e).__name__})")
    return ", ".join(found)


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


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, reset: Callable[[], None],
              dtype: torch.dtype | None = None) -> Step:  # fmt: skip
    """One training step; ``dtype``: the forward and the loss under autocast to it."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> float:
        reset()
        optimizer.zero_grad(set_to_none=True)
        cast = torch.autocast(x.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with cast:
            loss = F.cross_entropy(model(x).mean(0).float(), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def batch_of(name: str, T: int, batch: int, device: torch.device):
    """``(x [T, N, ...], y [N])``: an image repeated over T (a view), or random input spikes."""
    net = NETS[name]
    g = torch.Generator().manual_seed(1)
    if net.sequence:
        x = (torch.rand(T, batch, *net.shape, generator=g) < 0.05).float().to(device)
    else:  # expanded on the device, as the runner's encoder does: snnrun sees stride 0 over T
        x = torch.rand(batch, *net.shape, generator=g).to(device)
        x = x.unsqueeze(0).expand(T, *x.shape)  # encoder=direct
    y = torch.randint(0, net.classes, (batch,), generator=g)
    return x, y.to(device)


def sides(name: str, T: int, batch: int, device: torch.device | None = None,
          backends: tuple[str, ...] = ("torch",),
          precisions: tuple[str, ...] = ("fp32",)) -> dict[str, Step]:  # fmt: skip
    """The steps of the race, by label: ``snnrun[ backend][ precision]`` for every backend and
    precision (the parts named only where there is more than one), ``spikingjelly[ precision]``
    where SpikingJelly has the network. Every side starts from the same weights."""
    from spikingjelly.activation_based import functional

    device = device or torch.device("cpu")
    x, y = batch_of(name, T, batch, device)

    def label(who: str, *parts: tuple[str, tuple[str, ...]]) -> str:
        return " ".join([who, *(part for part, among in parts if len(among) > 1)])

    torch.manual_seed(0)
    run: dict[str, Step] = {}
    first: nn.Module | None = None
    for backend in backends:
        for precision in precisions:
            ours = snnrun_net(name, T, device, backend)
            if first is None:
                first = ours
            ours.load_state_dict(first.state_dict())
            ours.train()
            key = label("snnrun", (backend, backends), (precision, precisions))
            run[key] = make_step(ours, x, y, lambda: None, PRECISIONS[precision])  # resets itself
    if NETS[name].peer is None:
        return run
    for precision in precisions:
        theirs = spikingjelly_net(name, T)
        copy_weights(first, theirs)
        theirs.to(device).train()
        reset = functools.partial(functional.reset_net, theirs)
        run[label("spikingjelly", (precision, precisions))] = make_step(
            theirs, x, y, reset, PRECISIONS[precision]
        )
    return run


@dataclass
class Record:
    """One side's race: the first step's loss, the timed steps, their peak memory (CUDA)."""

    first_loss: float | None = None
    times: list[float] = field(default_factory=list)  # s
    peaks: list[float] = field(default_factory=list)  # MiB above the step's start
    status: str = ""  # why it stopped, if it did


def measure(run: dict[str, Step], steps: int, warmup: int, device: torch.device,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, Record]:  # fmt: skip
    """Every side's warm-up, then ``steps`` rounds of one step each, the order reversing every
    round; a side that fails is dropped with its reason, the others go on."""
    cuda = device.type == "cuda"
    records = {side: Record() for side in run}

    def one(side: str, timed: bool) -> None:
        r = records[side]
        if r.status:
            return
        try:
            if cuda:
                torch.cuda.synchronize(device)
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            start = clock()
            loss = run[side]()
            if cuda:
                torch.cuda.synchronize(device)
            elapsed = clock() - start
        except Exception as e:  # one side's failure (out of memory, a backend's) ends only it
            r.status = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}"
            print(f"{side}:", file=sys.stderr)
            traceback.print_exc()
            return
        if r.first_loss is None:
            r.first_loss = loss
        if timed:
            r.times.append(elapsed)
            if cuda:
                r.peaks.append((torch.cuda.max_memory_allocated(device) - base) / 2**20)

    for _ in range(max(warmup, 1)):
        for side in run:
            one(side, timed=False)
    order = list(run)
    for i in range(steps):
        for side in order if i % 2 == 0 else order[::-1]:
            one(side, timed=True)
    return records


def race(name: str, T: int, batch: int, steps: int, warmup: int,
         clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:  # fmt: skip
    """snnrun's torch fp32 step against SpikingJelly's on the CPU: medians, bests, paired
    ratios."""
    records = measure(sides(name, T, batch), steps, warmup, torch.device("cpu"), clock)
    ours, theirs = records["snnrun"], records["spikingjelly"]
    for r in (ours, theirs):
        if r.status:
            raise RuntimeError(f"{name}: {r.status}")
    if losses_differ(ours.first_loss, theirs.first_loss):
        raise AssertionError(f"{name}: the first losses differ: {ours.first_loss}, "
                             f"{theirs.first_loss}")  # fmt: skip
    ratios = [b / a for a, b in zip(ours.times, theirs.times, strict=True)]
    return {
        "snnrun": statistics.median(ours.times),
        "spikingjelly": statistics.median(theirs.times),
        "snnrun_best": min(ours.times),
        "spikingjelly_best": min(theirs.times),
        "paired": statistics.median(ratios),
        "lo": min(ratios),
        "hi": max(ratios),
    }


def device_table(name: str, T: int, batch: int, steps: int, warmup: int, device: torch.device,
                 backends: tuple[str, ...], precisions: tuple[str, ...]) -> str:  # fmt: skip
    """Every side of one net on ``device`` as a markdown table, each beside SpikingJelly's side
    of the same precision."""
    records = measure(sides(name, T, batch, device, backends, precisions), steps, warmup, device)
    lines = [
        f"{name} (input {'x'.join(map(str, NETS[name].shape))}, T={T}, batch {batch}, "
        f"{steps} timed steps per side, alternating)",
        "",
        "| side | first loss | img/s | vs SJ | step peak MiB | vs SJ |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for side, r in records.items():
        peer = records.get(_peer_label(side, len(precisions) > 1))
        loss = _loss_cell(r, peer)
        if r.status or not r.times:
            lines.append(f"| {side} | {loss} | {r.status or 'no step'} | | | |")
            continue
        speed = batch / statistics.median(r.times)
        peak = max(r.peaks) if r.peaks else None
        vs_speed = vs_mem = "-"
        if peer is not None and peer.times and not peer.status:
            vs_speed = f"{speed / (batch / statistics.median(peer.times)):.2f}x"
            if peak is not None and peer.peaks:
                vs_mem = f"{peak / max(peer.peaks):.2f}x"
        peak_s = f"{peak:,.0f}" if peak is not None else "- (cpu)"
        lines.append(f"| {side} | {loss} | {speed:,.1f} | {vs_speed} | {peak_s} "
                     f"| {vs_mem} |")  # fmt: skip
    if NETS[name].peer is None:
        lines += ["", "SpikingJelly 2.0 has no builder for this network (it ships no ALIF neuron)."]
    lines += _fallback_note(device, backends)
    return "\n".join(lines) + "\n"


def _loss_cell(r: Record, peer: Record | None) -> str:
    """The first loss, marked ``(!)`` where it is 5% off SpikingJelly's of the same precision
    (the same weights and input: a different network or a wrong copy)."""
    if r.first_loss is None:
        return "-"
    off = peer is not None and peer.first_loss is not None and losses_differ(
        peer.first_loss, r.first_loss)  # fmt: skip
    return f"{r.first_loss:.4f}" + (" (!)" if off else "")


def _fallback_note(device: torch.device, backends: tuple[str, ...]) -> list[str]:
    from snnrun.kernels import fallback_reason

    reason = fallback_reason(device.type) if "triton" in backends else None
    return ["", f"snnrun triton ran the torch backend here: {reason}."] if reason else []


def losses_differ(reference: float, other: float) -> bool:
    """More than 5% apart: not the same network on the same weights and input (float32 rounding
    in another layout or precision may flip a few spikes, not more)."""
    return abs(other - reference) > 0.05 * max(1.0, abs(reference))


def _peer_label(side: str, several_precisions: bool) -> str:
    precision = side.rsplit(" ", 1)[1] if several_precisions else ""
    return f"spikingjelly {precision}".strip()


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
    parser.add_argument("--nets", default="spikformer,sew_resnet18",
                        help=f"NAME[:BATCH[:T]],... of {', '.join(NETS)}")  # fmt: skip
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--cpu-time", action="store_true",
                        help="one torch thread, steps timed by the thread's CPU time (a busy "
                        "machine's preemptions left out)")  # fmt: skip
    device_help = ("race every side on this device (cuda, cpu): img/s, peak memory; the "
                   "default is the CPU race of the two fp32 sides")  # fmt: skip
    parser.add_argument("--device", help=device_help)
    parser.add_argument("--backends", default="torch", help="snnrun's neuron backends")
    parser.add_argument("--precisions", default="fp32", help=f"of {', '.join(PRECISIONS)}")
    parser.add_argument("--out", type=Path, help="with --device: the tables, rewritten per net")
    args = parser.parse_args()
    nets = [_net_spec(n, args, parser) for n in args.nets.split(",") if n]
    if args.cpu_time:
        torch.set_num_threads(1)
    clock = time.thread_time if args.cpu_time else time.perf_counter
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, T={args.T}, "
          f"batch {args.batch}, {args.steps} alternating steps each, "
          f"{'CPU' if args.cpu_time else 'wall'} time")  # fmt: skip
    if not args.device and any(NETS[n].peer is None for n, _, _ in nets):
        parser.error("a net without a SpikingJelly builder (alif) races only with --device")
    if args.profile:
        for name, batch, T in nets:
            profile(name, T, batch, args.warmup, args.top, args.steps)
    elif args.device:
        device_race(nets, args)
    else:
        print(table([n for n, _, _ in nets], args.T, args.batch, args.steps, args.warmup, clock))


def _net_spec(spec: str, args: argparse.Namespace, parser: argparse.ArgumentParser):
    """``NAME[:BATCH[:T]]`` -> ``(name, batch, T)``, the defaults from ``--batch`` / ``--T``."""
    name, *rest = spec.split(":")
    if name not in NETS:
        parser.error(f"unknown net {name}; choose from {', '.join(NETS)}")
    batch = int(rest[0]) if rest else args.batch
    return name, batch, int(rest[1]) if len(rest) > 1 else args.T


def device_race(nets: list[tuple[str, int, int]], args: argparse.Namespace) -> None:
    """Every net's table on ``--device``, printed and written to ``--out`` as each finishes."""
    device = torch.device(args.device)
    backends, precisions = tuple(args.backends.split(",")), tuple(args.precisions.split(","))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    head = (f"`python scripts/bench_zoo.py {' '.join(sys.argv[1:])}` on {name}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}; torch {torch.__version__}; SpikingJelly's "
            f"implementation: {sj_implementation(device)}\n")  # fmt: skip
    parts = [head]
    for net, batch, T in nets:
        try:
            parts.append(device_table(net, T, batch, args.steps, args.warmup, device, backends,
                                      precisions))  # fmt: skip
        except Exception as e:  # one net's failure (a builder's, CUDA's) must not end the race
            traceback.print_exc()
            parts.append(f"{net}: failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}\n")
        print(parts[-1], flush=True)
        if args.out:
            args.out.write_text("\n".join(parts))
        if device.type == "cuda":
            torch.cuda.empty_cache()


def table(nets: list[str], T: int, batch: int, steps: int, warmup: int,
          clock: Callable[[], float] = time.perf_counter) -> str:  # fmt: skip
    """The race of each net as one markdown table (``scripts/bench_train.py --zoo`` prints it
    beside its own)."""
    rows = []
    for name in nets:
        r = race(name, T, batch, steps, warmup, clock)
        size = "x".join(map(str, NETS[name].shape[1:]))
        rows.append(
            f"| {name} ({size}) | {r['snnrun']:.3f} | {r['spikingjelly']:.3f} "
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
