#!/usr/bin/env python3
"""Memory and time over T: forward+backward of one neuron layer, and of the csnn end to end.

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
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

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


def _cpu_peak(step: Callable[[], None]) -> float:
    """Bytes the CPU allocator holds at its peak during ``step`` beyond what it held before:
    the running ``Total Allocated`` of the profiler's memory events (every allocation and free
    of the c10 allocator, whoever keeps the tensor)."""
    with tempfile.TemporaryDirectory() as folder:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        trace = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    memory = [e["args"] for e in events if e.get("name") == "[memory]"]
    before = memory[0]["Total Allocated"] - memory[0]["Bytes"]
    return max(m["Total Allocated"] for m in memory) - before


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
        peak = _cpu_peak(step) / 2**20
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", default="4,16,64,256")
    parser.add_argument("--row", help="run one row in this process (internal)")
    parser.add_argument("--rows", default=None, help="comma-separated rows (default: all)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.row:
        print(json.dumps(measure(args.row, int(args.T))))
        return
    steps = [int(t) for t in args.T.split(",")]
    rows = args.rows.split(",") if args.rows else [*LAYER_ROWS, *CSNN_ROWS]
    if not torch.cuda.is_available():
        rows = [r for r in rows if "triton" not in r]
    text = table(steps, rows)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
