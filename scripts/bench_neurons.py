#!/usr/bin/env python3
"""Neuron-layer benchmark: forward and forward+backward of one multi-step layer.

Compares, in one run and on identical inputs ``x`` [T, N] (mean 0.5, std 0.8: many spikes):

- ``snnrun torch``: the reference loop (:func:`snnrun.neuron.dynamics.reference_loop`), LIF tau=2,
  atan.
- ``snnrun torch+compile``: the same loop under ``torch.compile`` (default Inductor backend).
- ``snnrun triton``: the fused kernels (:mod:`snnrun.kernels`); also ``snnrun triton leaky``.
- ``spikingjelly``: SpikingJelly 2.x ``LIFNode(tau=2, ATan)``, multi-step, its fastest backend
  (an explicit ``backend=`` of triton, cupy, torch where the version has one; 2.x picks its
  implementation by device and the row names it).
- ``snntorch``: ``snntorch.Leaky(beta=0.5, atan)``, a Python loop over T.

Timing: on CUDA ``triton.testing.do_bench`` (median, after its warm-up); on CPU the median wall
time of a few runs, small sizes only, and no Triton rows (the CPU interpreter checks correctness;
it is no benchmark; with TRITON_INTERPRET=1 the rows run, as a smoke test only). ``fwd`` is a
training-mode forward (inputs require grad); ``f+b`` adds ``backward(spikes, grad)`` with a fixed
random ``grad``.

Effective bandwidth counts only the bytes that must move, per neuron and step with ``B`` the
input element size: forward reads x and writes spikes (2B); backward reads grad_s and the saved
state and writes grad_x (3B). ``%copy`` divides the f+b figure by a device-to-device copy
measured in the same run. ``vs SJ`` is SpikingJelly's f+b time over the row's (above 1: faster
than SpikingJelly). The ``model`` column is each design's own bytes per element (f+b). ``--out``
is rewritten after every size, so a run cut short keeps the sizes it finished.

    python scripts/bench_neurons.py [--quick] [--sizes 16x1048576,64x65536] [--skip compile]
        [--out FILE.md]
    python scripts/bench_neurons.py --e2e DATA_ROOT [--e2e-backends triton] [--e2e-train-limit 0]
        [--e2e-warmup 1024] [--e2e-overrides "model.channels=8 ..."] [--out FILE.md]

``--e2e``: ``snnrun experiment=fmnist_csnn`` for one epoch per backend (``--e2e-train-limit 0``:
the whole training set): train samples/s, peak GPU memory, wall time and the test accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

import snnrun.kernels  # registers the triton backend
from snnrun.neuron.dynamics import Dynamics, reference_loop
from snnrun.neuron.neuron_loop import handwritten_loop
from snnrun.neuron.surrogate import Surrogate

REPO = Path(__file__).resolve().parents[1]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LIF = Dynamics("lif", surrogate=Surrogate("atan", 2.0))  # tau = 2: k = 0.5, hard reset to 0
LEAKY = Dynamics("leaky", v_reset=None, detach_reset=True, surrogate=Surrogate("atan", 2.0))
Fwd = Callable[[torch.Tensor], torch.Tensor]  # x [T, N] -> spikes [T, N]


# --------------------------------------------------------------------------- implementations


@dataclass
class Impl:
    """One row family: how to build its forward, its bytes-per-element model, its reference."""

    name: str
    model: str  # bytes per neuron per step, forward + backward, B = input element size
    build: Callable[[torch.device], Fwd]
    kind: str = "lif"  # compare spikes with the torch loop of this kind
    needs_cuda: bool = False
    note: str = ""
    skip: str | None = None  # why it cannot run here


def _snnrun(backend: str, dyn: Dynamics, decay: float | torch.Tensor) -> Callable:
    fn = {"torch": handwritten_loop, "triton": snnrun.kernels.triton_membrane}[backend]

    def build(device: torch.device) -> Fwd:
        # A tensor decay lives on the device, like a layer's beta buffer (no copy per call).
        d = decay.to(device) if isinstance(decay, torch.Tensor) else decay
        return lambda x: fn(x, torch.zeros_like(x[0]), d, dyn, False)[0]

    return build


def _lif_loop(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return reference_loop(x, v, 0.5, LIF, False)[0]


_COMPILED_LOOP: list[Callable] = []


def _compiled(device: torch.device) -> Fwd:
    """The torch loop under ``torch.compile``: N is marked dynamic, so one compile per T, dtype."""
    if not _COMPILED_LOOP:
        for name in ("cache_size_limit", "recompile_limit"):  # renamed across torch versions
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, 64)
        _COMPILED_LOOP.append(torch.compile(_lif_loop))
    loop = _COMPILED_LOOP[0]

    def fwd(x: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x[0])
        torch._dynamo.maybe_mark_dynamic(x, 1)
        torch._dynamo.maybe_mark_dynamic(v, 0)
        return loop(x, v)

    return fwd


def _spikingjelly() -> Impl:
    try:
        from spikingjelly.activation_based import functional, neuron, surrogate
    except ImportError as e:
        return Impl("spikingjelly", "-", _none, skip=f"not installed ({e.name})")
    model = "4B + 8 bytes (2.x saves float32 H [T, N])"

    def build(device: torch.device) -> Fwd:
        node = _sj_node(neuron, surrogate, device)
        node.to(device)

        def fwd(x: torch.Tensor) -> torch.Tensor:
            functional.reset_net(node)
            return node(x)

        return fwd

    return Impl("spikingjelly", model, build, note=_sj_note(functional))


def _sj_node(neuron, surrogate, device: torch.device):
    """``LIFNode(tau=2, ATan, 'm')`` with the fastest backend the version names, if any."""
    kwargs = dict(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m")
    try:
        probe = neuron.LIFNode(**kwargs)
        supported = getattr(probe, "supported_backends", ())
    except TypeError:
        supported = ()
    for backend in ("triton", "cupy", "torch"):
        if backend in supported and (backend == "torch" or device.type == "cuda"):
            return neuron.LIFNode(backend=backend, **kwargs)
    return neuron.LIFNode(**kwargs)


def _sj_note(functional) -> str:
    query = getattr(functional, "neuron_implementation", None)
    if query is None:
        return "backend: explicit"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return f"implementation: {query('lif', device)['implementation']}"
    except Exception as e:  # a query that fails must not end the benchmark
        return f"implementation query failed: {e}"


def _snntorch() -> Impl:
    try:
        import snntorch
        from snntorch import surrogate
    except ImportError as e:
        return Impl("snntorch", "-", _none, kind="leaky", skip=f"not installed ({e.name})")

    def build(device: torch.device) -> Fwd:
        leaky = snntorch.Leaky(beta=0.5, spike_grad=surrogate.atan(alpha=2.0)).to(device)

        def fwd(x: torch.Tensor) -> torch.Tensor:
            mem, spikes = torch.zeros_like(x[0]), []
            for step in x:
                spk, mem = leaky(step, mem)
                spikes.append(spk)
            return torch.stack(spikes)

        return fwd

    return Impl("snntorch", "~ torch loop", build, kind="leaky")


def _none(device: torch.device) -> Fwd:
    raise RuntimeError("not available")


def implementations(cuda: bool, triton_ok: bool) -> list[Impl]:
    """Every row family; those that cannot run here carry their reason."""
    no_triton = None
    if not cuda and not snnrun.kernels.INTERPRET:  # TRITON_INTERPRET=1: smoke-test the rows
        no_triton = "needs CUDA (the CPU interpreter is a correctness tool, not a benchmark)"
    elif not triton_ok:
        no_triton = "triton is not installed"
    compile_skip = None if cuda or shutil.which("g++") else "Inductor on CPU needs a C++ compiler"
    return [
        Impl("snnrun torch", "~65B (est.: ~10 eager ops a step, ~2x that in backward)",
             _snnrun("torch", LIF, 0.5)),
        Impl("snnrun torch+compile", ">= 5B (Inductor fuses; its partitioner picks what to save)",
             _compiled, skip=compile_skip),
        Impl("snnrun triton", "5B + 1 byte (float32 checkpoint every 8 steps)",
             _snnrun("triton", LIF, 0.5), skip=no_triton),
        Impl("snnrun triton leaky", "5B + 1 byte", _snnrun("triton", LEAKY, torch.tensor(0.5)),
             kind="leaky", skip=no_triton),
        _spikingjelly(),
        _snntorch(),
    ]  # fmt: skip


# --------------------------------------------------------------------------- timing


def timer(cuda: bool) -> Callable[[Callable[[], object]], float]:
    """``time(fn) -> ms``: do_bench's median on CUDA, the median of wall times on CPU."""
    if cuda:
        from triton.testing import do_bench

        return lambda fn: float(do_bench(fn, warmup=25, rep=100, return_mode="median"))

    def wall(fn: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    return wall


def copy_bandwidth(device: torch.device, time_ms: Callable) -> float:
    """GB/s of a large device-to-device copy, counting bytes read and written."""
    n = (1 << 28) if device.type == "cuda" else (1 << 25)  # 1 GiB / 128 MiB of float32
    src = torch.empty(n, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / ms / 1e6


@dataclass
class Row:
    impl: Impl
    t: int
    n: int
    dtype: str
    fwd_ms: float = math.nan
    fb_ms: float = math.nan
    agree: float = math.nan
    status: str = ""
    extra: dict = field(default_factory=dict)


def fits(t: int, n: int, device: torch.device) -> bool:
    """Rough guard: the torch loop keeps ~16 float32 [T, N] tensors alive through backward."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return 16 * 4 * t * n < 0.9 * free


def measure(impl: Impl, x: torch.Tensor, grad: torch.Tensor, reference: torch.Tensor,
            time_ms: Callable) -> tuple[float, float, float]:  # fmt: skip
    """``(fwd ms, f+b ms, fraction of spikes equal to the torch loop's)``."""
    fwd = impl.build(x.device)
    xg = x.detach().clone().requires_grad_()
    spikes = fwd(xg)
    agree = (spikes.detach() == reference).float().mean().item()

    def forward() -> None:
        fwd(xg)

    def forward_backward() -> None:
        xg.grad = None
        torch.autograd.backward(fwd(xg), grad)

    forward_backward()  # compile / autotune / load outside the timed region
    return time_ms(forward), time_ms(forward_backward), agree


def bench(args: argparse.Namespace) -> list[Row]:
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    try:
        import triton  # noqa: F401

        triton_ok = True
    except ImportError:
        triton_ok = False
    time_ms = timer(cuda)
    impls = [i for i in implementations(cuda, triton_ok) if _selected(i, args.impls)]
    impls = [i for i in impls if not any(name in i.name for name in args.skip or [])]
    args.copy_gbs = copy_bandwidth(device, time_ms)
    args.header += f"; copy bandwidth {args.copy_gbs:,.0f} GB/s"
    print(f"device: {_device_name(device)}; copy bandwidth {args.copy_gbs:,.0f} GB/s")
    for impl in impls:
        line = f"  {impl.name}: {impl.note or ''}"
        print(line + (f" [skipped: {impl.skip}]" if impl.skip else ""))
    rows: list[Row] = []
    for t, n in sizes(args, cuda):
        for dtype_name in args.dtypes:
            rows += bench_size(impls, t, n, dtype_name, device, time_ms)
            if args.out:
                args.out.write_text(markdown(rows, args.copy_gbs, args.header))
    return rows


def bench_size(impls: list[Impl], t: int, n: int, dtype_name: str, device: torch.device,
               time_ms: Callable) -> list[Row]:  # fmt: skip
    """All implementations on one ``x`` [T, N]."""
    dtype = DTYPES[dtype_name]
    rows = [Row(impl, t, n, dtype_name) for impl in impls]
    if not fits(t, n, device):
        for row in rows:
            row.status = "skipped: does not fit in GPU memory"
        _print_rows(rows)
        return rows
    g = torch.Generator(device=device).manual_seed(t * 7919 + n)
    x = (0.5 + 0.8 * torch.randn(t, n, device=device, generator=g)).to(dtype)
    grad = torch.randn(t, n, device=device, generator=g).to(dtype)
    refs = {
        "lif": reference_loop(x, torch.zeros_like(x[0]), 0.5, LIF, False)[0],
        "leaky": reference_loop(x, torch.zeros_like(x[0]), torch.tensor(0.5), LEAKY, False)[0],
    }
    for row in rows:
        if row.impl.skip:
            row.status = f"skipped: {row.impl.skip}"
            continue
        try:
            row.fwd_ms, row.fb_ms, row.agree = measure(row.impl, x, grad, refs[row.impl.kind],
                                                       time_ms)  # fmt: skip
        except torch.cuda.OutOfMemoryError:
            row.status = "out of GPU memory"
        except Exception as e:  # one failing implementation must not end the run
            row.status = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
        if device.type == "cuda":
            torch.cuda.empty_cache()
    _print_rows(rows)
    return rows


def sizes(args: argparse.Namespace, cuda: bool) -> list[tuple[int, int]]:
    if args.sizes:
        return [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    if not cuda:
        return [(4, 1 << 12), (16, 1 << 12), (4, 1 << 16), (16, 1 << 16)][: 2 if args.quick else 4]
    if args.quick:
        return [(16, 1 << 20)]
    return [(t, n) for n in (1 << 16, 1 << 20, 1 << 24) for t in (4, 16, 64)]


def _selected(impl: Impl, names: list[str] | None) -> bool:
    return not names or any(name in impl.name for name in names)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores)"


# --------------------------------------------------------------------------- the table


COLUMNS = ("impl", "T", "N", "dtype", "fwd ms", "f+b ms", "speed-up fwd/f+b", "vs SJ f+b",
           "GB/s fwd", "GB/s f+b", "%copy", "agree", "model B/elem (f+b)")  # fmt: skip


def _cells(row: Row, base: Row | None, sj: Row | None, copy_gbs: float) -> list[str]:
    size = torch.tensor([], dtype=DTYPES[row.dtype]).element_size()
    elems = row.t * row.n
    head = [row.impl.name, str(row.t), _pow2(row.n), row.dtype]
    if row.status:
        return [*head, row.status, "", "", "", "", "", "", "", row.impl.model]
    fwd_gbs = 2 * size * elems / row.fwd_ms / 1e6
    fb_gbs = 5 * size * elems / row.fb_ms / 1e6
    speed = "-"
    if base is not None and not base.status:
        speed = f"{base.fwd_ms / row.fwd_ms:.1f}x / {base.fb_ms / row.fb_ms:.1f}x"
    vs_sj = f"{sj.fb_ms / row.fb_ms:.2f}x" if sj is not None and not sj.status else "-"
    return [
        *head, f"{row.fwd_ms:.3f}", f"{row.fb_ms:.3f}", speed, vs_sj, f"{fwd_gbs:,.1f}",
        f"{fb_gbs:,.1f}", f"{100 * fb_gbs / copy_gbs:.0f}%", f"{row.agree:.4f}", row.impl.model,
    ]  # fmt: skip


def _pow2(n: int) -> str:
    return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)


def table(rows: list[Row], copy_gbs: float) -> list[list[str]]:
    def same_size(name: str, row: Row) -> Row | None:
        return next((r for r in rows if r.impl.name == name and
                     (r.t, r.n, r.dtype) == (row.t, row.n, row.dtype)), None)  # fmt: skip

    return [
        _cells(row, same_size("snnrun torch", row), same_size("spikingjelly", row), copy_gbs)
        for row in rows
    ]


_printed_header = False


def _print_rows(rows: list[Row]) -> None:
    """Print rows as they finish (a long GPU run shows progress)."""
    global _printed_header
    copy = ARGS.copy_gbs if ARGS is not None else math.nan
    cells = table(rows, copy)
    if not _printed_header:
        print(" | ".join(COLUMNS))
        _printed_header = True
    for c in cells:
        print(" | ".join(c), flush=True)


def markdown(rows: list[Row], copy_gbs: float, header: str) -> str:
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c) + " |" for c in table(rows, copy_gbs)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- end to end


def e2e(args: argparse.Namespace) -> None:
    """``snnrun experiment=fmnist_csnn`` for one epoch with each backend: samples/s, peak MB,
    wall time, test accuracy; ``--out`` rewritten after each backend; a failed backend is a
    row, the others still run (the exit status says so)."""
    limit = [f"dataset.train_limit={args.e2e_train_limit}"] if args.e2e_train_limit else []
    shared = ["experiment=fmnist_csnn", "epochs=1", *limit, "logger=none",
              f"dataset.root={args.e2e}", *args.e2e_overrides.split()]  # fmt: skip
    results: dict[str, dict] = {}
    for backend in args.e2e_backends:
        if args.e2e_warmup and backend == "triton":  # untimed: fills Triton's on-disk cache
            warm = [f"dataset.train_limit={args.e2e_warmup}", "dataset.test_limit=256"]
            _run_snnrun([*shared, *warm, f"neuron.backend={backend}"])
        start = time.perf_counter()
        record, output = _run_snnrun([*shared, f"neuron.backend={backend}"])
        if record is not None:
            record["wall_s"] = time.perf_counter() - start
        if "falling back to the torch backend" in output:
            backend += " (fell back to torch)"
        results[backend] = record or {"status": "failed (its output is in the log)"}
        text = e2e_table(results, " ".join(shared))
        if args.out:
            args.out.write_text(text)
    print(text)
    if any("status" in r for r in results.values()):
        raise SystemExit("an e2e run failed")


def _run_snnrun(overrides: list[str]) -> tuple[dict | None, str]:
    """One ``snnrun`` run in a temporary run dir, its output streamed: (its last record, or
    None if it failed; its output)."""
    with tempfile.TemporaryDirectory(prefix="e2e-") as run_dir:
        overrides = [*overrides, f"hydra.run.dir={run_dir}"]
        command = [sys.executable, "-c", "from snnrun.cli import main; main()", *overrides]
        print("$ snnrun " + " ".join(overrides), flush=True)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=REPO)  # fmt: skip
        output = []
        for line in proc.stdout:
            print(line, end="", flush=True)
            output.append(line)
        if proc.wait() != 0:
            return None, "".join(output)
        return _last_record(Path(run_dir) / "metrics.jsonl"), "".join(output)


def _last_record(path: Path) -> dict:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])


def e2e_table(results: dict[str, dict], command: str) -> str:
    """One markdown row per backend; the triton/torch ratios when both ran."""
    lines = [f"`snnrun {command} neuron.backend=<backend>`", "",
             "| backend | train samples/s | peak GPU MiB | test acc | wall s |",
             "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for backend, r in results.items():
        if "status" in r:
            lines.append(f"| {backend} | {r['status']} | | | |")
            continue
        peak = r.get("peak_gpu_mem_mb")
        peak_s = f"{peak:,.0f}" if peak is not None else "- (cpu)"
        lines.append(f"| {backend} | {r['train_samples_per_s']:,.1f} | {peak_s} "
                     f"| {100 * r['test_acc']:.2f}% | {r['wall_s']:.1f} |")  # fmt: skip
    if {"torch", "triton"} <= results.keys() and not any("status" in r for r in results.values()):
        torch_r, triton_r = results["torch"], results["triton"]
        ratio = triton_r["train_samples_per_s"] / torch_r["train_samples_per_s"]
        line = f"triton/torch: samples/s x{ratio:.2f}"
        if "peak_gpu_mem_mb" in torch_r and "peak_gpu_mem_mb" in triton_r:
            line += f", peak memory x{triton_r['peak_gpu_mem_mb'] / torch_r['peak_gpu_mem_mb']:.2f}"
        lines += ["", line]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


ARGS: argparse.Namespace | None = None


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one size per device (a smoke run)")
    p.add_argument("--sizes", help="comma-separated TxN, e.g. 16x1048576,64x65536")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=DTYPES)
    p.add_argument("--impls", nargs="+", help="only rows whose name contains one of these")
    p.add_argument("--skip", nargs="+", help="no rows whose name contains one of these")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even if CUDA is there")
    p.add_argument("--out", type=Path, help="also write the table as markdown to this file")
    p.add_argument("--e2e", metavar="DATA_ROOT", help="run the end-to-end comparison instead")
    p.add_argument("--e2e-train-limit", type=int, default=10000, help="0: the whole epoch")
    p.add_argument("--e2e-backends", nargs="+", default=["torch", "triton"])
    p.add_argument(
        "--e2e-warmup",
        type=int,
        default=0,
        metavar="SAMPLES",
        help="triton: an untimed run of this many samples first (Triton's cache)",
    )
    p.add_argument("--e2e-overrides", default="", help="extra overrides, space-separated")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    global ARGS
    args = ARGS = parse(argv)
    if args.e2e:
        e2e(args)
        return
    started = time.strftime("%Y-%m-%d %H:%M")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    args.header = (
        f"`python scripts/bench_neurons.py {' '.join(sys.argv[1:])}` on {_device_name(device)}, "
        f"{started}; torch {torch.__version__}"
    )
    bench(args)
    if args.out:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
