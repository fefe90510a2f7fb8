#!/usr/bin/env python3
"""Memory and time over T: one neuron layer, the csnn, whole networks and their peers (--networks).

Every row runs in a fresh Python process (``--row``). Peak memory on a CPU comes from the
allocator, through ``torch.profiler`` with ``profile_memory``: its memory events carry the c10
allocator's running total, and the peak is that total's maximum during one forward+backward
minus the total before it (every tensor counts, whoever keeps it: a custom autograd node's
context too; glibc's own caching, which makes RSS deltas noisy, does not). On CUDA the row uses
``max_memory_allocated``.
The time is the median of three forward+backward passes after one warm-up, in the same process.

Rows, one layer ``x [T, N]`` (N = 32768, mean 0.5, std 0.8: many spikes):

- ``snnrun lif autograd`` / ``torch`` / ``triton`` (CUDA only): LIF tau=2, atan;
- ``snnrun alif`` / ``synaptic`` ``autograd`` / ``torch``; ``snnrun psn`` (one ``[T, T]`` product);
- ``user qif autograd`` / ``torch`` / ``triton`` (CUDA only): a user's neuron,
  ``examples/plugins/neuron.py``'s QIF (``snnrun.Neuron``: its step only);
- ``spikingjelly lif``: SpikingJelly 2.0 ``LIFNode(tau=2, ATan)``, multi-step, its torch backend;
- ``snntorch leaky`` / ``synaptic``: snnTorch 1.0 ``Leaky`` / ``Synaptic``, a Python loop over T.

The model column is the bytes per neuron and step that each design keeps for the backward
(float32): the ``torch`` backend keeps ``H`` (4 B) for a one-state neuron and ``X`` plus the
states every 8 steps for a multi-state one (4 + 8/8 B); an autograd loop keeps every
intermediate of every step. The csnn rows train the 16-channel csnn (batch 32, digits-sized
input) with each backend.

    python scripts/bench_memory.py [--T 4,16,64,256] [--out docs/bench_memory.md]

``--networks``: whole networks, one training step each (forward, cross-entropy on the mean of
the output over T, backward; the gradients set to None before the step, so the peak holds the
new weight gradients too), batch 8, 10 classes, LIF tau 2 (hard reset to 0, no
``detach_reset``), ATan, multi-step; every row a fresh process (``--net NET --row ROW``). The
peak is measured as above, on the step after one warm-up step; the time is the fastest of three
steps (of up to 30 while they take under 5 s in all; ``--rounds R``: every row run R times in
turn, the fastest of all; ``--cpu-time``: one torch thread, each step timed by its CPU time,
as ``scripts/bench_zoo.py --cpu-time``: on a machine shared with other jobs, two threads' wall
time can vary many times over between runs of the same code). Networks:

- ``csnn`` (``model=csnn``: 16 channels, ``1x28x28``), ``sew_resnet18`` (``model.stem=cifar``,
  ``3x32x32``), ``spikformer`` (CIFAR-10's, ``3x32x32``): a random image, direct-encoded;
- ``7b`` (``model=sew_resnet_dvs``, the SEW paper's 7B-Net): random binary events
  ``[T, N, 2, S, S]`` (20 % ones), S = ``--size`` (128; ``log2(S)`` blocks, 7 for 128).

Rows: ``snnrun <spikes>/<checkpoint>`` for the 9 memory plans (``net/memory.py``), built as a
run builds it (``compose_config`` with ``model=... neuron=lif neuron.tau=2 surrogate=atan
T=...``, ``build_model``, ``apply_plan``; torch's default memory layout: ``run.build.place``,
which turns the csnn and spikformer NHWC on a CPU, is not applied), fed the image expanded over
T (stride 0: the layers before the first neuron run once); ``spikingjelly plain``: SpikingJelly
2.0's own network where it has one, LIFNode(tau=2, ATan, ``detach_reset=False``), its torch
backend: ``sew_resnet18(cnf="ADD")`` with its ImageNet stem swapped for the CIFAR one (``conv1``
Conv3x3/1, ``maxpool`` the identity), ``spikformer_cifar10``; for the csnn its tutorial's CSNN
(``examples/conv_fashion_mnist.py``, IFNode made LIFNode) and for the 7B-Net the authors'
module from its layers (as ``tests/test_zoo.py``, PLIF made LIF); the csnn, ResNet and 7B-Net get
the expanded image (their tutorials' ``expand``), Spikformer the image, which its forward
``repeat``s over T; ``spikingjelly memopt``: the same network through
``memopt.optimize_memory(level=1, compress=True)`` (on a CPU level 1 is the highest: 2-4 measure
CUDA memory), its targets the blocks SpikingJelly's own builders give it (``BasicBlock``,
``SpikformerBlock``; the 7B-Net's SEW block; the csnn's conv/linear-BN-neuron stages), each
checkpointed and its input packed to bits when the probe finds it binary; ``snntorch`` (csnn
only): ``nn.Sequential`` with ``Leaky(beta=0.5, init_hidden=True)``, ATan, called once per
step on the same image (its BatchNorm normalises each step alone).

Columns: peak MiB, step s, the peak over ``snnrun float/none`` (``memory=none``) and over
``spikingjelly plain`` at the same network and T, the time over ``snnrun float/none``, and for
the snnrun rows the bytes per sample-step the design keeps for the backward (with that times
N*T in MiB): a conv/linear keeps its input (4 B a value; spikes 1 B under ``uint8``, 1/8 B
under ``bits``; counts, a SEW ``add``'s sums, 1 B under both), a BatchNorm its input (4 B), a
neuron H (4 B, every step), a max-pool its input and int64 indices (8 B per output) under
``float``, int16 indices only (2 B per output) under ``uint8``/``bits``; Spikformer's SSA keeps
q/k/v's input, their BN inputs and H, V, K and Q, the ``[d, d]`` product per head, the
attention neuron's H, the projection's input spikes, BN input and H; what the layers before the
first neuron keep counts once for all T (they run once), the input not at all (held before).
``checkpoint=blocks``: a residual (or attention) keeps only its input; ``all``: an attention
keeps only its input, and so does each segment of the other layers at any depth (residual
bodies and shortcuts walked into), ending at each neuron. Not counted: the weight gradients,
what the backward allocates as it runs, a recomputed unit's own tensors.

    python scripts/bench_memory.py --networks [csnn,sew_resnet18,spikformer,7b] [--T 4,16,64]
        [--rows snnrun,plain] [--size 128] [--max-T spikformer=16,7b=16] [--rounds 1]
        [--cpu-time] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from snnrun.engine.memory_budget import cpu_peak_bytes

N = 32768
ATAN = {"name": "atan", "alpha": 2.0}
LAYER_ROWS = {  # row -> (bytes per neuron-step the design keeps, a note)
    "snnrun lif autograd": ("every intermediate", ""),
    "snnrun lif torch": ("4 (H)", ""),
    "snnrun lif triton": ("4.5 (X, float32 V every 8 steps)", "CUDA only"),
    "snnrun alif autograd": ("every intermediate", ""),
    "snnrun alif torch": ("5 (X, 2 states every 8 steps)", ""),
    "snnrun synaptic torch": ("5 (X, 2 states every 8 steps)", ""),
    "snnrun psn": ("X and H (8)", "no time loop"),
    "user qif autograd": ("every intermediate", "examples/plugins/neuron.py"),
    "user qif torch": ("4.5 (X, its state every 8 steps)", "examples/plugins/neuron.py"),
    "user qif triton": ("4.5 (X, its state every 8 steps)", "CUDA only"),
    "spikingjelly lif": ("its own (H, float32)", "SpikingJelly 2.0"),
    "snntorch leaky": ("every intermediate", "snnTorch 1.0"),
    "snntorch synaptic": ("every intermediate", "snnTorch 1.0"),
}
CSNN_ROWS = ("csnn lif autograd", "csnn lif torch", "csnn alif torch", "csnn psn")


def _snnrun_layer(kind: str, backend: str, T: int) -> Callable[[torch.Tensor], torch.Tensor]:
    from snnrun.neuron.neurons import build_neuron

    options = {"name": kind, "backend": backend}
    options.update({"lif": {"tau": 2.0}, "alif": {"tau": 2.0, "tau_adapt": 20.0, "beta_a": 0.2},
                    "synaptic": {}, "psn": {"T": T}}[kind])  # fmt: skip
    layer = build_neuron(options, ATAN)

    def fwd(x: torch.Tensor) -> torch.Tensor:
        layer.reset()
        return layer(x)

    return fwd


def _user_layer(backend: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """examples/plugins/neuron.py's QIF, as a user's run builds it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from plugins.neuron import QIF

    import snnrun.net  # noqa: F401  (registers the triton backend)

    layer = QIF(backend=backend)

    def fwd(x: torch.Tensor) -> torch.Tensor:
        layer.reset()
        return layer(x)

    return fwd


def _peer_layer(row: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if row == "spikingjelly lif":
        from spikingjelly.activation_based import functional, neuron, surrogate

        node = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m")

        def sj(x: torch.Tensor) -> torch.Tensor:
            functional.reset_net(node)
            return node(x)

        return sj
    import snntorch
    from snntorch import surrogate as sg

    cell = (snntorch.Leaky(beta=0.5, spike_grad=sg.atan(alpha=2.0)) if row == "snntorch leaky"
            else snntorch.Synaptic(alpha=0.9, beta=0.8, spike_grad=sg.atan(alpha=2.0)))  # fmt: skip

    def st(x: torch.Tensor) -> torch.Tensor:
        cell.reset_mem()
        spikes = []
        for step in x:
            spikes.append(cell(step)[0])
        return torch.stack(spikes)

    return st


def _layer_case(row: str, T: int, device: torch.device):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(T, N, generator=gen) * 0.8 + 0.5).to(device).requires_grad_()
    grad = torch.randn(T, N, generator=gen).to(device)
    if row.startswith("snnrun"):
        _, kind, *backend = row.split()
        fwd = _snnrun_layer(kind, backend[0] if backend else "torch", T)
    elif row.startswith("user"):
        fwd = _user_layer(row.split()[-1])
    else:
        fwd = _peer_layer(row)

    def step() -> None:
        x.grad = None
        fwd(x).backward(grad)

    return step


def _csnn_case(row: str, T: int, device: torch.device):
    from omegaconf import OmegaConf

    from snnrun.core.compose import compose_config
    from snnrun.net.model import build_model

    _, kind, *backend = row.split()
    overrides = [f"neuron={kind}", "model.channels=16", f"T={T}"]
    if backend:
        overrides.append(f"neuron.backend={backend[0]}")
    conf = OmegaConf.to_container(compose_config(overrides), resolve=True)
    groups = {"neuron": conf["neuron"], "surrogate": conf["surrogate"]}
    model = build_model(conf["model"], groups, (1, 28, 28), 10).to(device)
    x = torch.rand(32, 1, 28, 28, device=device).unsqueeze(0).expand(T, -1, -1, -1, -1)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).mean().backward()

    return step


def measure(row: str, T: int) -> dict[str, float]:
    """One row at one T, in this process: peak memory (MiB) and median time (ms)."""
    device = torch.device("cuda" if "triton" in row and torch.cuda.is_available() else "cpu")
    step = (_csnn_case if row.startswith("csnn") else _layer_case)(row, T, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = cpu_peak_bytes(step) / 2**20
    times = []
    for _ in range(3):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return {"peak_mib": peak, "ms": statistics.median(times)}


def _run_row(row: str, T: int) -> dict[str, float] | str:
    cmd = [sys.executable, __file__, "--row", row, "--T", str(T)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        return (proc.stderr.strip().splitlines() or ["failed"])[-1][:80]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(steps: list[int], rows: list[str]) -> str:
    """The markdown table: peak MiB and ms per T, MiB per added step, and the peak at the
    largest T over the best peer's (the lowest of the SpikingJelly and snnTorch rows)."""
    head = " | ".join(f"T={t} MiB | ms" for t in steps)
    rule = " | ".join("---: | ---:" for _ in steps)
    lines = [
        f"| row | kept per neuron-step (B) | {head} | MiB per +1 step | / best peer |",
        f"| --- | --- | {rule} | ---: | ---: |",
    ]
    results = {}
    for row in rows:
        results[row] = {t: _run_row(row, t) for t in steps}
        print(row, results[row], file=sys.stderr, flush=True)
    last = steps[-1]
    peer_rows = [r for r in rows if r.startswith(("spikingjelly", "snntorch"))]
    peers = [results[r][last]["peak_mib"] for r in peer_rows if isinstance(results[r][last], dict)]
    for row in rows:
        lines.append(_line(row, results[row], steps, min(peers) if peers else None))
    return "\n".join(lines) + "\n"


def _line(row: str, result: dict, steps: list[int], best_peer: float | None) -> str:
    cells = [f"{r['peak_mib']:.1f} | {r['ms']:.1f}" if isinstance(r, dict) else f"{r} | -"
             for r in (result[t] for t in steps)]  # fmt: skip
    ok = [t for t in steps if isinstance(result[t], dict)]
    growth = ratio = "-"
    if len(ok) >= 2:
        a, b = ok[-2], ok[-1]
        growth = f"{(result[b]['peak_mib'] - result[a]['peak_mib']) / (b - a):.2f}"
    if best_peer and isinstance(result[steps[-1]], dict) and not row.startswith("csnn"):
        ratio = f"{result[steps[-1]]['peak_mib'] / best_peer:.2f}"
    model = LAYER_ROWS.get(row, ("", ""))[0]
    return f"| {row} | {model} | {' | '.join(cells)} | {growth} | {ratio} |"


# ---- --networks: whole networks, one training step ---------------------------------------

BATCH, CLASSES = 8, 10
PLANS = [(s, c) for s in ("float", "uint8", "bits") for c in ("none", "blocks", "all")]
BASE_ROW, PEER_ROW = "snnrun float/none", "spikingjelly plain"
TIMING_S, MAX_STEPS = 5.0, 30  # timed steps: 3, and more while they take under 5 s in all
NETWORKS = {  # name -> (model, overrides, input shape; None: 7b's, from --size)
    "csnn": ("csnn", (), (1, 28, 28)),
    "sew_resnet18": ("sew_resnet18", ("model.stem=cifar",), (3, 32, 32)),
    "spikformer": ("spikformer", (), (3, 32, 32)),
    "7b": ("sew_resnet_dvs", (), None),
}
LIF = {"tau": 2.0, "detach_reset": False, "step_mode": "m"}  # snnrun's lif defaults


def network_rows(net: str) -> list[str]:
    peers = ["spikingjelly plain", "spikingjelly memopt"] + (["snntorch"] if net == "csnn" else [])
    return [f"snnrun {s}/{c}" for s, c in PLANS] + peers


def _spec(net: str, size: int) -> tuple[str, list[str], tuple[int, ...]]:
    """The model name, its overrides and the per-sample input shape (7b: ``[2, size, size]``,
    ``log2(size)`` blocks: 7 for 128)."""
    model, overrides, shape = NETWORKS[net]
    if shape is None:
        blocks = size.bit_length() - 1
        if size != 2**blocks:
            raise SystemExit(f"--size {size}: 7b's frames must be a power of 2 on a side")
        return model, [f"model.blocks={blocks}"], (2, size, size)
    return model, list(overrides), shape


def _conf(net: str, T: int, size: int) -> tuple[dict, tuple[int, ...]]:
    from omegaconf import OmegaConf

    from snnrun.core.compose import compose_config

    model, overrides, shape = _spec(net, size)
    cfg = compose_config([f"model={model}", "neuron=lif", "neuron.tau=2", "surrogate=atan",
                          f"T={T}", *overrides])  # fmt: skip
    return OmegaConf.to_container(cfg, resolve=True), shape


def _snnrun_net(conf: dict, shape: tuple[int, ...], plan: str):
    from snnrun.net.memory import MemoryPlan, apply_plan
    from snnrun.net.model import build_model

    groups = {"neuron": conf["neuron"], "surrogate": conf["surrogate"]}
    model = build_model(conf["model"], groups, shape, CLASSES)
    return apply_plan(model, MemoryPlan(*plan.split("/")))


def _sj_lif():
    from spikingjelly.activation_based import neuron, surrogate

    return neuron.LIFNode(surrogate_function=surrogate.ATan(), **LIF)


def _sj_csnn(conf: dict) -> tuple[torch.nn.Module, type]:
    """SpikingJelly's tutorial CSNN (activation_based/examples/conv_fashion_mnist.py) with
    LIFNode for its IFNode, each conv/linear-BN-neuron in a ``Stage`` (an ``nn.Sequential``
    subclass: the unit memopt checkpoints, as its own example's ``VGGBlock``)."""
    from spikingjelly.activation_based import functional, layer

    class Stage(torch.nn.Sequential):
        pass

    c = conf["model"]["channels"]
    net = torch.nn.Sequential(
        Stage(layer.Conv2d(1, c, 3, padding=1, bias=False), layer.BatchNorm2d(c), _sj_lif()),
        layer.MaxPool2d(2, 2),
        Stage(layer.Conv2d(c, c, 3, padding=1, bias=False), layer.BatchNorm2d(c), _sj_lif()),
        layer.MaxPool2d(2, 2),
        layer.Flatten(),
        Stage(layer.Linear(c * 49, c * 16, bias=False), _sj_lif()),
        Stage(layer.Linear(c * 16, CLASSES, bias=False), _sj_lif()),
    )
    functional.set_step_mode(net, "m")
    return net, Stage


def _sj_sew_resnet18(conf: dict) -> tuple[torch.nn.Module, type]:
    """``sew_resnet18(cnf="ADD")`` with LIFNode; it has only the ImageNet stem, so its
    ``conv1`` becomes Conv3x3/1 and its ``maxpool`` the identity (snnrun's ``model.stem=cifar``)."""
    from spikingjelly.activation_based import functional, layer, neuron, surrogate
    from spikingjelly.activation_based.model import sew_resnet

    width = conf["model"]["width"]
    net = sew_resnet.sew_resnet18(cnf="ADD", spiking_neuron=neuron.LIFNode, num_classes=CLASSES,
                                  surrogate_function=surrogate.ATan(), **LIF)  # fmt: skip
    net.conv1 = layer.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
    net.maxpool = torch.nn.Identity()
    functional.set_step_mode(net, "m")
    return net, sew_resnet.BasicBlock


def _sj_spikformer(conf: dict, T: int) -> tuple[torch.nn.Module, type]:
    """``spikformer_cifar10`` (its LIF, attention neuron at 0.5) with ATan and snnrun's
    ``detach_reset`` (false), as ``scripts/bench_zoo.py`` builds it."""
    from spikingjelly.activation_based import functional, neuron, surrogate
    from spikingjelly.activation_based.model import spikformer

    net = spikformer.spikformer_cifar10(T=T, num_classes=CLASSES)
    for m in net.modules():
        if isinstance(m, neuron.BaseNode):
            m.surrogate_function, m.detach_reset = surrogate.ATan(), False
            assert m.tau == 2.0
    functional.set_step_mode(net, "m")
    return net, spikformer.SpikformerBlock


def _sj_dvs(conf: dict) -> tuple[torch.nn.Module, type]:
    """The authors' 7B-Net (Spike-Element-Wise-ResNet, dvsgesture/smodels.py) from
    SpikingJelly's layers, as tests/test_zoo.py rebuilds it, with LIFNode for its PLIF."""
    from spikingjelly.activation_based import functional, layer

    c, blocks = conf["model"]["channels"], conf["model"]["blocks"]

    def conv_bn_lif(c_in: int, k: int) -> torch.nn.Sequential:
        return torch.nn.Sequential(
            layer.Conv2d(c_in, c, k, padding=k // 2, bias=False),
            layer.BatchNorm2d(c),
            _sj_lif(),
        )

    class SEWBlock(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Sequential(conv_bn_lif(c, 3), conv_bn_lif(c, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) + x

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            convs: list[torch.nn.Module] = [conv_bn_lif(2, 1)]
            for _ in range(blocks):
                convs += [SEWBlock(), layer.MaxPool2d(2, 2)]
            self.conv = torch.nn.Sequential(*convs, torch.nn.Flatten(2))
            self.out = torch.nn.Linear(c, CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.conv(x).mean(0))

    net = Net()
    functional.set_step_mode(net, "m")
    return net, SEWBlock


def _snntorch_csnn(conf: dict, T: int) -> torch.nn.Module:
    """snnTorch's idiom: ``nn.Sequential`` with ``Leaky(beta=0.5, init_hidden=True)`` (ATan),
    called once per step on the same image; BatchNorm2d per step."""
    import snntorch
    from snntorch import surrogate as sg
    from snntorch import utils

    c = conf["model"]["channels"]

    def leaky(**kw: bool) -> torch.nn.Module:
        return snntorch.Leaky(beta=0.5, spike_grad=sg.atan(alpha=2.0), init_hidden=True, **kw)

    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), leaky(), nn.MaxPool2d(2),
        nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), leaky(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c * 49, c * 16, bias=False), leaky(),
        nn.Linear(c * 16, CLASSES, bias=False), leaky(output=True),
    )  # fmt: skip

    class Looped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            utils.reset(self.net)
            return torch.stack([self.net(x)[0] for _ in range(T)])

    return Looped()


def _network_case(net: str, row: str, T: int, size: int):
    """``(model, logits(), note, predicted bytes per sample-step or None)`` for one row:
    ``logits()`` runs the forward and returns the mean over T of the output, ``[N, classes]``."""
    conf, shape = _conf(net, T, size)
    g = torch.Generator().manual_seed(1)
    if net == "7b":  # random binary events, the same tensor for every side
        x = (torch.rand(T, BATCH, *shape, generator=g) < 0.2).float()
        seq = image = x
    else:  # direct encoding: the image at every step, an expanded view (stride 0 over T)
        image = torch.rand(BATCH, *shape, generator=g)
        seq = image.unsqueeze(0).expand(T, *image.shape)
    if row.startswith("snnrun"):
        model = _snnrun_net(conf, shape, row.split()[1])
        predicted = predicted_bytes(model, T, static=net != "7b")
        return model, lambda: model(seq).mean(0), "", predicted
    if row == "snntorch":
        model = _snntorch_csnn(conf, T)
        return model, lambda: model(image).mean(0), "same image each step", None
    from spikingjelly.activation_based import functional, memopt

    if net == "spikformer":
        model, unit = _sj_spikformer(conf, T)
        feed, how = image, "repeat (its forward)"
    else:
        builder = {"csnn": _sj_csnn, "sew_resnet18": _sj_sew_resnet18, "7b": _sj_dvs}[net]
        model, unit = builder(conf)
        feed, how = seq, "events" if net == "7b" else "expand"

    def forward(current: torch.nn.Module) -> torch.Tensor:
        functional.reset_net(current)
        out = current(feed)
        return out if net == "7b" else out.mean(0)  # 7b: its Linear runs on the mean over T

    note = how
    if row == "spikingjelly memopt":
        memopt.optimize_memory(model, unit, forward, level=1, compress=True)
        wrapped = [m for m in model.modules() if type(m).__name__ == "CheckpointWrapper"]
        note = f"{how}; {len(wrapped)} {unit.__name__} checkpointed"
    return model, lambda: forward(model), note, None


def measure_network(net: str, row: str, T: int, size: int, cpu_time: bool = False) -> dict:
    """One training step of one row, in this process: forward, cross-entropy on the mean
    over T, backward (the gradients set to None before each step). The peak (MiB) is the
    allocator's beyond what it held before the step, measured after one warm-up step; the
    time (s) the fastest of three more steps (of up to 30 while they take under 5 s in all:
    a short step on a shared machine needs more tries to find an undisturbed one).
    ``cpu_time``: one torch thread, timed by its CPU time (``time.thread_time``; a CPU
    backward runs in the calling thread), which leaves out what other jobs take."""
    import torch.nn.functional as F

    if cpu_time:
        torch.set_num_threads(1)
    clock = time.thread_time if cpu_time else time.perf_counter
    torch.manual_seed(0)
    model, logits, note, predicted = _network_case(net, row, T, size)
    model.train()
    y = torch.randint(0, CLASSES, (BATCH,), generator=torch.Generator().manual_seed(2))

    def step() -> None:
        F.cross_entropy(logits(), y).backward()

    model.zero_grad(set_to_none=True)
    step()  # warm-up: first-call allocations, lazy state
    model.zero_grad(set_to_none=True)
    peak = cpu_peak_bytes(step) / 2**20
    times: list[float] = []
    while len(times) < 3 or (len(times) < MAX_STEPS and sum(times) < TIMING_S):
        model.zero_grad(set_to_none=True)
        start = clock()
        step()
        times.append(clock() - start)
    params = sum(p.numel() for p in model.parameters())
    return {"peak_mib": peak, "s": min(times), "params": params, "note": note,
            "predicted": predicted}  # fmt: skip


# ---- the design's prediction: bytes kept per sample-step ---------------------------------


@dataclass(eq=False)
class _Value:
    """A tensor of the walk: its values per sample-step, the largest it can hold (1: spikes,
    k: counts 0..k, None: any float), whether it is stored once for all T (a static head's
    output) and whether it was held before the step (the network's input)."""

    numel: int
    largest: int | None = None
    static: bool = False
    free: bool = False


class _Kept:
    """What the layers keep for the backward, in bytes per sample-step."""

    def __init__(self, spikes: str, T: int) -> None:
        self.spikes, self.T = spikes, T
        self.saved: dict[int, tuple[_Value, float]] = {}  # a tensor kept by several: once
        self.other = 0.0

    def save(self, v: _Value) -> None:
        if not v.free:
            self.saved[id(v)] = (v, v.numel * self._per_value(v) / (self.T if v.static else 1))

    def add(self, nbytes: float, static: bool = False) -> None:
        self.other += nbytes / (self.T if static else 1)

    def _per_value(self, v: _Value) -> float:
        if self.spikes == "float" or v.largest is None or v.largest > 255:
            return 4.0
        return 1 / 8 if self.spikes == "bits" and v.largest == 1 else 1.0

    def total(self) -> float:
        return sum(b for _, b in self.saved.values()) + self.other


class _Unknown(Exception):
    """A module the prediction has no rule for (the cell stays blank)."""


def predicted_bytes(model: torch.nn.Module, T: int, static: bool) -> float | None:
    """The bytes per sample-step that the plan on ``model`` keeps for the backward, from the
    design's rules (module docstring); ``static``: the input is the same at every step."""
    from snnrun.net.model import split_static

    plan = model.memory_plan
    kept = _Kept(plan.spikes, T)
    head, tail = split_static(list(model.layers))
    v = _Value(0, static=static, free=True)
    try:
        for m in head:
            v = _walk(m, v, kept)
        _chain(tail, v, kept, plan.checkpoint)
    except _Unknown:
        return None
    return kept.total()


def _out(m: torch.nn.Module) -> int:
    return math.prod(m.snnrun_entry.shape)


def _walk(m: torch.nn.Module, v: _Value, kept: _Kept, checkpoint: str = "none") -> _Value:
    """``m``'s output for input ``v``, adding what ``m`` keeps to ``kept``; ``checkpoint``:
    the plan's, for a block or residual walked into (``all``), else ``none``."""
    from torch import nn

    from snnrun.net.attention import SpikingSelfAttention
    from snnrun.net.blocks import Block, Residual
    from snnrun.net.layers import Mean, TimeFolded
    from snnrun.neuron.neurons import SpikingNeuron

    if isinstance(m, SpikingNeuron):
        kept.add(4 * v.numel)  # H, every step
        return _Value(v.numel, 1)
    if isinstance(m, Block):
        return _chain(list(m), v, kept, checkpoint)
    if isinstance(m, Residual) and m.connect == "add":  # the sum keeps nothing
        a = _chain(list(m.body), v, kept, checkpoint)
        s = _chain(list(m.shortcut), v, kept, checkpoint)
        both = a.largest is not None and s.largest is not None
        return _Value(a.numel, a.largest + s.largest if both else None)
    if isinstance(m, SpikingSelfAttention):
        return _attention(m, v, kept)
    if isinstance(m, Mean):
        return _Value(_out(m), None, v.static)
    if not isinstance(m, TimeFolded):
        raise _Unknown(type(m).__name__)
    inner, out = m.module, _out(m)
    if isinstance(inner, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        kept.save(v)  # its input
        return _Value(out, None, v.static)
    if isinstance(inner, (nn.BatchNorm1d, nn.BatchNorm2d)):
        kept.add(4 * v.numel, v.static)  # its input
        return _Value(out, None, v.static)
    if isinstance(inner, nn.MaxPool2d):
        if kept.spikes == "float":
            kept.save(v)  # its input, and int64 indices
            kept.add(8 * out, v.static)
        else:
            kept.add(2 * out, v.static)  # int16 indices only
        return _Value(out, v.largest, v.static)
    if isinstance(inner, (nn.Flatten, nn.Unflatten)):
        return v  # a view: the same tensor
    if isinstance(inner, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
        return _Value(out, None, v.static)
    raise _Unknown(type(inner).__name__)


def _attention(m: torch.nn.Module, x: _Value, kept: _Kept) -> _Value:
    """SSA: the q/k/v convs keep ``x``; each branch's BN its input and its neuron H; ``V K^T``
    keeps V and K, ``(V K^T) Q`` the ``[d, d]`` product per head and Q; the attention neuron
    H; the projection conv its spikes, its BN and neuron as a branch's."""
    c, length = m.channels, x.numel // m.channels
    d = c // m.heads
    kept.save(x)
    kept.add(3 * 8 * c * length)
    q, k, v = (_Value(c * length, 1) for _ in range(3))
    kept.save(v)
    kept.save(k)
    kept.save(q)
    kept.add(4 * c * d + 4 * c * length)
    a = _Value(c * length, 1)
    kept.save(a)
    kept.add(8 * c * length)
    return _Value(c * length, 1)


def _chain(layers: list, v: _Value, kept: _Kept, checkpoint: str) -> _Value:
    """Layers in order under ``checkpoint``: ``blocks``: a unit (residual, attention, a block
    with a neuron but no unit) keeps only its input, a block holding units is walked into;
    ``all``: every block and residual is walked into (body and shortcut), an attention keeps
    only its input, and so does each segment of the other layers, ending at each neuron."""
    from snnrun.net.blocks import Block, Residual
    from snnrun.neuron.neurons import SpikingNeuron

    scratch = _Kept(kept.spikes, kept.T)  # what a recomputed part would have kept
    segment = False
    for m in layers:
        if checkpoint == "all" and isinstance(m, (Block, Residual)):
            segment = False
            v = _walk(m, v, kept, checkpoint)
        elif checkpoint != "none" and _is_unit(m):
            segment = False
            kept.save(v)
            v = _walk(m, v, scratch)
        elif checkpoint != "none" and _holds_unit(m):
            segment = False
            v = _chain(list(m), v, kept, checkpoint)
        elif checkpoint == "all":
            if not segment:
                kept.save(v)
                segment = True
            v = _walk(m, v, scratch)
            segment = not isinstance(m, SpikingNeuron)
        else:
            v = _walk(m, v, kept)
    return v


def _is_unit(m: torch.nn.Module) -> bool:
    from snnrun.net.blocks import Block
    from snnrun.net.memory import UNITS
    from snnrun.neuron.neurons import SpikingNeuron

    if isinstance(m, UNITS):
        return True
    neuron = any(isinstance(x, SpikingNeuron) for x in m.modules())
    return isinstance(m, Block) and neuron and not _holds_unit(m)


def _holds_unit(m: torch.nn.Module) -> bool:
    from snnrun.net.blocks import Block
    from snnrun.net.memory import UNITS

    def repeat(x: torch.nn.Module) -> bool:
        entry = getattr(x, "snnrun_entry", None)
        return isinstance(x, Block) and getattr(entry, "type", None) == "repeat"

    return isinstance(m, Block) and any(isinstance(x, UNITS) or repeat(x) for x in m.modules())


def _run_network_row(net: str, row: str, T: int, size: int, cpu_time: bool) -> dict | str:
    cmd = [sys.executable, __file__, "--net", net, "--row", row, "--T", str(T),
           "--size", str(size), *(["--cpu-time"] if cpu_time else [])]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        lines = proc.stderr.strip().splitlines()
        why = lines[-1] if lines else f"exit {proc.returncode}"
        return f"failed: {why[:100]}" if proc.returncode > 0 else f"killed ({proc.returncode})"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def network_table(
    nets: list[str],
    steps: list[int],
    keep: list[str] | None,
    size: int,
    max_t: dict[str, int],
    rounds: int = 1,
    out: Path | None = None,
    cpu_time: bool = False,
) -> str:
    """The ``--networks`` markdown table (module docstring), and a note for each network and
    T not run (``--max-T``) with what the largest T run projects for it; written to ``out``
    after each network and T, so that a long run's finished part survives."""
    lines = [
        f"| network | T | row | peak MiB | step {'CPU s (1 thread)' if cpu_time else 's'} "
        "| peak / none | peak / SJ plain | time / none "
        "| predicted KiB/sample-step (MiB at N·T) | note |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    notes: list[str] = []

    def text() -> str:
        return "\n".join([*lines, *([""] if notes else []), *(f"- {n}" for n in notes)]) + "\n"

    for net in nets:
        rows = [r for r in network_rows(net) if keep is None or any(k in r for k in keep)]
        done: dict[int, dict] = {}
        for T in steps:
            if max_t.get(net, T) < T:
                notes.append(_not_run(net, T, done, max_t[net]))
                continue
            results: dict[str, dict | str] = {}
            for _ in range(rounds):  # rows take turns; the fastest time of all rounds counts
                for row in rows:
                    got = _run_network_row(net, row, T, size, cpu_time)
                    print(net, T, row, got, file=sys.stderr, flush=True)
                    old = results.get(row)
                    if isinstance(got, dict) and isinstance(old, dict):
                        got["s"] = min(got["s"], old["s"])
                    results[row] = got if isinstance(got, dict) or old is None else old
            done[T] = results
            lines.extend(_network_line(net, T, row, results) for row in rows)
            if out:
                out.write_text(text())
    return text()


def _network_line(net: str, T: int, row: str, results: dict) -> str:
    r = results[row]
    if not isinstance(r, dict):
        return f"| {net} | {T} | {row} | {r} | | | | | | |"
    base, peer = results.get(BASE_ROW), results.get(PEER_ROW)

    def ratio(key: str, ref: object) -> str:
        return f"{r[key] / ref[key]:.2f}" if isinstance(ref, dict) and ref[key] else ""

    predicted = ""
    if r.get("predicted") is not None:
        b = r["predicted"]
        predicted = f"{b / 1024:,.1f} ({b * BATCH * T / 2**20:,.1f})"
    return (f"| {net} | {T} | {row} | {r['peak_mib']:,.1f} | {r['s']:.3f} | "
            f"{ratio('peak_mib', base)} | {ratio('peak_mib', peer)} | {ratio('s', base)} | "
            f"{predicted} | {r['note']} |")  # fmt: skip


def _not_run(net: str, T: int, done: dict[int, dict], cap: int) -> str:
    """Why ``net`` at ``T`` was not run, with the projection from the largest T run (memory
    and time grow about linearly in T; a row runs five steps)."""
    why = f"{net} at T={T}: not run (--max-T {net}={cap})"
    if not done:
        return why
    last = max(done)
    ok = [r for r in done[last].values() if isinstance(r, dict)]
    if not ok:
        return why
    scale = T / last
    peak = max(r["peak_mib"] for r in ok) * scale / 1024
    minutes = sum(r["s"] for r in ok) * 5 * scale / 60
    free = _available_gib()
    return (f"{why}: from T={last}, its largest peak would be about {peak:,.1f} GiB "
            f"({free:,.1f} GiB available now) and its rows would take about {minutes:,.0f} "
            "min of steps")  # fmt: skip


def _available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", help="comma-separated (default 4,16,64,256; --networks 4,16,64)")
    parser.add_argument("--row", help="run one row in this process (internal)")
    parser.add_argument("--net", help="with --row: that row of this network (internal)")
    parser.add_argument("--rows", default=None, help="comma-separated rows (default: all); "
                        "--networks: the rows that contain any of them")  # fmt: skip
    parser.add_argument("--networks", nargs="?", const=",".join(NETWORKS),
                        help=f"whole networks, one training step: {','.join(NETWORKS)} "
                        "(default: all)")  # fmt: skip
    parser.add_argument("--size", type=int, default=128, help="7b's frame side (default 128)")
    parser.add_argument(
        "--max-T",
        default="",
        metavar="NET=T,...",
        help="--networks: run NET only up to T (the rest noted with why)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="--networks: run every row this many times in turn (fastest time)",
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="--networks: one torch thread, each step timed by its CPU time",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.row and args.net:
        measured = measure_network(args.net, args.row, int(args.T), args.size, args.cpu_time)
        print(json.dumps(measured))
        return
    if args.row:
        print(json.dumps(measure(args.row, int(args.T))))
        return
    if args.networks:
        nets = args.networks.split(",")
        unknown = set(nets) - set(NETWORKS)
        if unknown:
            parser.error(f"--networks takes {','.join(NETWORKS)}, not {','.join(unknown)}")
        steps = [int(t) for t in (args.T or "4,16,64").split(",")]
        caps = dict(item.split("=") for item in args.max_T.split(",") if item)
        keep = args.rows.split(",") if args.rows else None
        text = network_table(nets, steps, keep, args.size, {k: int(v) for k, v in caps.items()},
                             args.rounds, args.out, args.cpu_time)  # fmt: skip
    else:
        steps = [int(t) for t in (args.T or "4,16,64,256").split(",")]
        rows = args.rows.split(",") if args.rows else [*LAYER_ROWS, *CSNN_ROWS]
        if not torch.cuda.is_available():
            rows = [r for r in rows if "triton" not in r]
        text = table(steps, rows)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
