#!/usr/bin/env python3
"""End-to-end training race: snnrun against SpikingJelly and snnTorch on the same networks.

Two networks, each trained for a fixed number of steps on the same in-memory batches (the
first ``batch x batches`` real training images, cycled):

- ``fmnist``: the Fashion-MNIST CSNN of the SpikingJelly tutorials (seeds 000/001):
  {Conv3x3(C)-BN-IF-MaxPool2}x2-Linear(49C, 16C)-IF-Linear(16C, 10)-IF, T=4, batch 128,
  MSE on firing rates, SGD lr 0.1 momentum 0.9, fp32 on the CPU (the tutorial's AMP fp16 is
  GPU-only). C=128 in the tutorial; ``--channels`` (default 32 on a CPU) says what ran.
- ``snntorch``: the snnTorch tutorial 6 CSNN (seed 004): 12C5-MP2-64C5-MP2-1024FC10, Leaky
  beta 0.5, fast-sigmoid slope 25, T=50, batch 128, cross-entropy at every step, Adam 1e-2.

Rows (each in its own process, one after the other, so the peak RSS is the row's own):

- ``snnrun``: the product: the real config composed (``experiment=fmnist_csnn`` /
  ``mnist_snntorch_csnn``, ``neuron.backend=torch``), built by :func:`snnrun.run.build_run`
  and stepped by :meth:`snnrun.engine.trainer.Trainer.train_step`; ``snnrun compile`` is
  ``compile=true`` (the runner's ``torch.compile(run.model)``); ``snnrun triton`` needs CUDA.
- ``spikingjelly``: seed 000's code: multi-step ``layer.*`` and ``neuron.IFNode(ATan)``, the
  image repeated T times, ``F.mse_loss`` on the mean spikes, ``functional.reset_net``; its
  fastest backend here (2.x picks it by device: ``torch-reference`` on a CPU).
- ``snntorch``: seed 004's code: ``nn.Sequential`` with ``snn.Leaky(init_hidden=True)`` called
  once per step in a Python loop after ``utils.reset``, ``SF.ce_rate_loss``.
- extra ``snnrun`` variants (``--variants``) show what each shipped speed-up buys and test
  candidates: ``autograd`` (the reference neuron loop, autograd through every op, that the
  default ``torch`` backend's handwritten backward replaced), ``nchw`` (without the runner's
  channels_last convolutions), ``step`` (encoder + net + loss compiled as one graph); and the
  eval pass with BatchNorm folded into the convolutions (``--eval``).

Reported per row: train samples/s (the best of ``--repeats`` timed chunks of ``--steps`` steps,
after ``--warmup`` steps that include compilation: other work on a shared machine only slows a
chunk down), peak RSS of the process and its growth over the timed steps, the ratio to each peer,
and the efficiency: the network's forward+backward FLOPs per second divided by the dense fp32
matmul FLOP/s measured in the same run. The network's FLOPs are counted once per net
(``torch.utils.flop_counter`` on snnrun's eager step: convolutions and matmuls, forward and
backward, the first convolution once since its input is the same at every step); a row that
executes more (the peers run the first convolution T times) shows it in ``exec GFLOP/step`` but is
credited only the network's FLOPs. ``--profile`` prints where the time goes (``torch.profiler``).

The real images are read from ``../shared/data/{fashion-mnist,mnist}`` beside the repo, or from
``$SNNRUN_DATA``.

    python scripts/bench_train.py [--nets fmnist snntorch] [--channels 32] [--steps 10]
        [--profile] [--variants] [--eval] [--out FILE.md]
    python scripts/bench_train.py --zoo [spikformer sew_resnet18]

``--zoo``: the zoo's Spikformer (CIFAR-10, 32x32) and SEW-ResNet-18 (64x64) against SpikingJelly
2.0's own builders of them, the same weights, one training step each (T=4, batch 8, LIF tau 2,
ATan, SGD) alternating in one process on one thread, timed by CPU time
(``scripts/bench_zoo.py``, which also profiles both sides: ``--profile``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SNNRUN_DATA", REPO.parent / "shared" / "data"))  # real MNIST copies
NETS = {
    "fmnist": {"experiment": "fmnist_csnn", "data": "fashion-mnist", "T": 4},
    "snntorch": {"experiment": "mnist_snntorch_csnn", "data": "mnist", "T": 50},
}
PEER = {"fmnist": "spikingjelly", "snntorch": "snntorch"}
Step = Callable[[torch.Tensor, torch.Tensor], object]


# --------------------------------------------------------------------------- shared pieces


def rss_mb() -> float:
    """Resident set size now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_flops(n: int = 2048, reps: int = 5) -> float:
    """Dense fp32 matmul FLOP/s on this machine (the best of ``reps``): the compute ceiling."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def snnrun_conf(net: str, args: argparse.Namespace, *extra: str) -> dict:
    """The composed, resolved config of the net's experiment, as the runner resolves it."""
    from omegaconf import OmegaConf

    from snnrun.core.compose import compose_config

    spec = NETS[net]
    overrides = [
        f"experiment={spec['experiment']}",
        f"dataset.root={DATA / spec['data']}",
        f"dataset.train_limit={args.batch * args.batches}",
        "dataset.test_limit=1000",
        f"batch_size={args.batch}",
        "logger=none",
        "monitor=none",
        *extra,
    ]
    if net == "fmnist":
        overrides += [f"model.channels={args.channels}", "precision=fp32"]
    return OmegaConf.to_container(compose_config(overrides), resolve=True)


def batches(net: str, args: argparse.Namespace) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same in-memory batches for every row: the first images of the real training set."""
    from snnrun.data.dataset import build_splits

    conf = snnrun_conf(net, args)
    train = build_splits(conf["dataset"]).train
    x, y = train.__getitems__(list(range(len(train))))
    return [(x[i : i + args.batch], y[i : i + args.batch]) for i in range(0, len(y), args.batch)]


# --------------------------------------------------------------------------- the rows


def snnrun_row(net: str, args: argparse.Namespace, variant: str) -> tuple[Step, nn.Module]:
    """The product's own train step on the composed config, as shipped or with one variant:
    ``compile`` (the runner's ``compile=true``), ``autograd`` (``neuron.backend=autograd``, the
    reference loop the default ``torch`` backend replaced), ``nchw`` (without the runner's
    channels_last), ``step`` (encoder + net + loss compiled as one graph, a candidate)."""
    from snnrun.engine.trainer import Trainer, TrainSettings
    from snnrun.run.build import build_run

    compiled = variant == "compile"
    backend = "autograd" if variant == "autograd" else "torch"
    conf = snnrun_conf(net, args, f"compile={str(compiled).lower()}", f"neuron.backend={backend}")
    run = build_run(conf)
    if variant == "nchw":
        run.model.to(memory_format=torch.contiguous_format)
    model = run.model
    net_mod = torch.compile(run.model) if compiled else run.model  # as run._fit does
    trainer = Trainer(run, net_mod, settings=TrainSettings.of(run.config))
    if variant == "step":
        trainer.forward = torch.compile(trainer.forward)
    trainer.net.train()
    return trainer.train_step, model


def spikingjelly_row(net: str, args: argparse.Namespace) -> tuple[Step, nn.Module]:
    """Seed 000's CSNN and training step, as written there (multi-step, reset after the step)."""
    from bench_zoo import sj_csnn
    from spikingjelly.activation_based import functional

    C, T = args.channels, NETS[net]["T"]

    class CSNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_fc = sj_csnn(C)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x_seq = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
            return self.conv_fc(x_seq).mean(0)

    model = CSNN()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(x: torch.Tensor, y: torch.Tensor) -> object:
        optimizer.zero_grad()
        out_fr = model(x)
        loss = F.mse_loss(out_fr, F.one_hot(y, 10).float())
        loss.backward()
        optimizer.step()
        functional.reset_net(model)
        return loss

    return step, model


def snntorch_row(net: str, args: argparse.Namespace) -> tuple[Step, nn.Module]:
    """Seed 004's net and training loop (``backprop.BPTT``'s body, written out)."""
    import snntorch as snn
    from snntorch import functional as SF
    from snntorch import surrogate, utils

    spike_grad, beta, num_steps = surrogate.fast_sigmoid(slope=25), 0.5, NETS[net]["T"]
    model = nn.Sequential(
        nn.Conv2d(1, 12, 5),
        nn.MaxPool2d(2),
        snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True),
        nn.Conv2d(12, 64, 5),
        nn.MaxPool2d(2),
        snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 10),
        snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True, output=True),
    )
    model.train()
    loss_fn = SF.ce_rate_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.999))

    def forward_pass(data: torch.Tensor) -> torch.Tensor:
        spk_rec = []
        utils.reset(model)
        for _ in range(num_steps):
            spk_out, _mem_out = model(data)
            spk_rec.append(spk_out)
        return torch.stack(spk_rec)

    def step(x: torch.Tensor, y: torch.Tensor) -> object:
        spk_rec = forward_pass(x)
        loss = loss_fn(spk_rec, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return step, model


def build_row(net: str, row: str, args: argparse.Namespace) -> tuple[Step, nn.Module]:
    if row == "spikingjelly":
        return spikingjelly_row(net, args)
    if row == "snntorch":
        return snntorch_row(net, args)
    variant = row.split(" ", 1)[1] if " " in row else ""
    return snnrun_row(net, args, variant)


# --------------------------------------------------------------------------- one row, measured


def executed_flops(step: Step, x: torch.Tensor, y: torch.Tensor) -> float:
    """Forward + backward FLOPs of one step (convolutions and matmuls) as this row runs it."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(x, y)
    return float(counter.get_total_flops())


def profile(step: Step, data: list, n: int) -> dict:
    """Self CPU time by operator group over ``n`` steps, and the top operators."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(n):
            step(*data[i % len(data)])
    groups: dict[str, float] = {}
    top = []
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total):
        groups[op_group(e.key)] = groups.get(op_group(e.key), 0.0) + e.self_cpu_time_total
        if len(top) < 12:
            key = "compiled graph" if "CompiledFxGraph" in e.key else e.key
            top.append((key, e.self_cpu_time_total / total, e.count // n))
    share = {k: v / total for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}
    return {"groups": share, "top": top, "ops_per_step": sum(e.count for e in events) // n}


def op_group(name: str) -> str:
    """Operator name → what the time is spent on."""
    low = name.lower()
    if any(k in low for k in ("conv", "mm", "addmm", "linear", "matmul", "bmm")):
        return "conv/matmul (fwd+bwd)"
    if "batch_norm" in low or "native_batch_norm" in low:
        return "batch norm"
    if "pool" in low:
        return "max pool"
    if any(k in low for k in ("optimizer", "_foreach", "sgd", "adam", "zero_")):
        return "optimizer"
    if any(k in low for k in ("compiled", "inductor", "torchdynamo", "graph", "cpp_fused")):
        return "compiled kernels (fused elementwise)"
    return "elementwise (neurons, loss; fwd+bwd), copies, autograd"


def child(args: argparse.Namespace) -> None:
    """Measure one row; print its record as JSON on the last line."""
    torch.manual_seed(0)
    net, row = args.child
    data = batches(net, args)
    step, model = build_row(net, row, args)
    record: dict = {"net": net, "row": row, "threads": torch.get_num_threads()}
    if args.count_flops and not any(k in row for k in ("compile", "step", "triton")):
        record["exec_flops"] = executed_flops(step, *data[0])
    warm = time.perf_counter()
    for i in range(args.warmup):
        step(*data[i % len(data)])
    record["warmup_s"] = time.perf_counter() - warm
    rss_before = rss_mb()
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for i in range(args.steps):
            step(*data[i % len(data)])
        rates.append(args.steps * args.batch / (time.perf_counter() - start))
    record.update(
        samples_per_s=max(rates),
        samples_per_s_median=statistics.median(rates),
        peak_rss_mb=peak_rss_mb(),
        rss_growth_mb=max(0.0, peak_rss_mb() - rss_before),
        params=sum(p.numel() for p in model.parameters()),
    )
    if args.profile and row in ("snnrun", "snnrun compile", PEER[net]):
        record["profile"] = profile(step, data, min(args.steps, 5))
    if args.eval and row == "snnrun":
        record["eval"] = eval_fold(model, data, NETS[net]["T"], args)
    print(json.dumps(record))


@torch.no_grad()
def eval_fold(model: nn.Module, data: list, T: int, args: argparse.Namespace) -> dict:
    """Test-pass samples/s of the trained-mode net in eval: as is, and with each BatchNorm
    folded into the convolution before it (a copy; spikes are compared)."""
    import copy

    from snnrun.neuron.neurons import reset_states

    model.eval()
    reset_states(model)  # no state from the last training step (non-leaf tensors)
    folded = copy.deepcopy(model)
    layers = folded.layers
    for i in range(len(layers) - 1):
        conv, bn = layers[i], layers[i + 1]
        pair = (getattr(conv, "module", None), getattr(bn, "module", None))
        if isinstance(pair[0], nn.Conv2d) and isinstance(pair[1], nn.BatchNorm2d):
            conv.module = torch.nn.utils.fusion.fuse_conv_bn_eval(conv.module, bn.module)
            bn.module = nn.Identity()
    out = {}
    for name, m in (("eval", model), ("eval bn-folded", folded)):
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for i in range(args.steps):
                x = data[i % len(data)][0]
                m(x.unsqueeze(0).expand(T, *x.shape))
            rates.append(args.steps * args.batch / (time.perf_counter() - start))
        out[name] = max(rates)
    x = data[0][0]
    a, b = model(x.unsqueeze(0).expand(T, *x.shape)), folded(x.unsqueeze(0).expand(T, *x.shape))
    out["spikes_agree"] = float((a == b).float().mean())
    return out


# --------------------------------------------------------------------------- the race


def rows_for(net: str, args: argparse.Namespace) -> list[str]:
    rows = ["snnrun", "snnrun compile", "snnrun triton", PEER[net]]
    if args.variants:
        rows += ["snnrun autograd", "snnrun nchw", "snnrun step"]
    return rows


def skip_reason(row: str) -> str | None:
    if row == "snnrun triton" and not torch.cuda.is_available():
        return "needs CUDA (no GPU here; on a CPU the triton backend falls back to the torch loop)"
    module = {"spikingjelly": "spikingjelly", "snntorch": "snntorch"}.get(row)
    if module:
        try:
            __import__(module)
        except ImportError as e:
            return f"{row} is not installed ({e.name}); pip install {module}"
    return None


def run_child(net: str, row: str, args: argparse.Namespace) -> dict:
    argv = [sys.executable, __file__, "--child", net, row, *args.passthrough]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {"net": net, "row": row, "failed": tail[0][:160]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def race(args: argparse.Namespace) -> None:
    started = time.strftime("%Y-%m-%d %H:%M")
    ceiling = matmul_flops()
    cores, threads = os.cpu_count(), torch.get_num_threads()
    print(f"dense fp32 matmul (2048^3): {ceiling / 1e9:,.1f} GFLOP/s on {cores} cores, "
          f"{threads} torch threads; torch {torch.__version__}", flush=True)  # fmt: skip
    results = []
    for net in args.nets:
        for row in rows_for(net, args):
            if args.rows and row not in args.rows:
                continue
            reason = skip_reason(row)
            if reason:
                print(f"  {net} / {row}: skipped: {reason}", flush=True)
                results.append({"net": net, "row": row, "skipped": reason})
                continue
            r = run_child(net, row, args)
            print(f"  {net} / {row}: {short(r)}", flush=True)
            results.append(r)
    ceiling = max(ceiling, matmul_flops())  # the ceiling is the best seen, before or after
    text = report(results, ceiling, args, started)
    print(text)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    if args.json:
        args.json.write_text(json.dumps({"ceiling": ceiling, "rows": results}, indent=1))


def short(r: dict) -> str:
    if "failed" in r:
        return "failed: " + r["failed"]
    return f"{r['samples_per_s']:,.1f} samples/s, peak RSS {r['peak_rss_mb']:,.0f} MB"


def report(results: list[dict], ceiling: float, args: argparse.Namespace, started: str) -> str:
    lines = [
        f"`python scripts/bench_train.py {' '.join(sys.argv[1:])}`, {started}; "
        f"{os.cpu_count()}-core CPU, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"dense fp32 matmul {ceiling / 1e9:,.1f} GFLOP/s (measured in this run); "
        f"fmnist CSNN with {args.channels} channels (the tutorial: 128), T=4; snnTorch CSNN T=50; "
        f"batch {args.batch}, {args.steps} steps x best of {args.repeats} after {args.warmup} "
        "warm-up steps.",
        "",
        "| net | row | train samples/s | vs peer | peak RSS MB (growth) | network GFLOP/step | "
        "exec GFLOP/step | efficiency |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for net in args.nets:
        mine = [r for r in results if r["net"] == net]
        base = next((r for r in mine if r["row"] == "snnrun" and "samples_per_s" in r), {})
        peer = next((r for r in mine if r["row"] == PEER[net] and "samples_per_s" in r), None)
        net_flops = base.get("exec_flops")
        for r in mine:
            head = f"| {net} | {r['row']} |"
            if "skipped" in r or "failed" in r:
                why = f"skipped: {r['skipped']}" if "skipped" in r else f"failed: {r['failed']}"
                lines.append(f"{head} {why} | | | | | |")
                continue
            vs = f"{r['samples_per_s'] / peer['samples_per_s']:.2f}x" if peer else "no peer"
            eff = "-"
            if net_flops:
                flops_s = net_flops * r["samples_per_s"] / args.batch
                eff = f"{100 * flops_s / ceiling:.1f}% ({flops_s / 1e9:.1f} GFLOP/s)"
            lines.append(
                f"{head} {r['samples_per_s']:,.1f} | {vs} | {r['peak_rss_mb']:,.0f} "
                f"(+{r['rss_growth_mb']:,.0f}) | "
                f"{net_flops / 1e9:.2f} | {gflop(r.get('exec_flops'))} | {eff} |"
                if net_flops
                else f"{head} {r['samples_per_s']:,.1f} | {vs} | {r['peak_rss_mb']:,.0f} | | | - |"
            )
    for r in results:
        if "profile" in r:
            p = r["profile"]
            groups = ", ".join(f"{k} {100 * v:.0f}%" for k, v in p["groups"].items())
            top = ", ".join(f"`{k}` {100 * s:.0f}% (x{c})" for k, s, c in p["top"][:8])
            lines += ["", f"- profile {r['net']} / {r['row']} (self CPU time, "
                      f"{p['ops_per_step']} ops a step): {groups}. Top: {top}"]  # fmt: skip
        if "eval" in r:
            e = r["eval"]
            lines += ["", f"- eval {r['net']}: {e['eval']:,.1f} samples/s as is, "
                      f"{e['eval bn-folded']:,.1f} with BN folded into conv "
                      f"(x{e['eval bn-folded'] / e['eval']:.2f}; spikes agree "
                      f"{100 * e['spikes_agree']:.2f}%)"]  # fmt: skip
    return "\n".join(lines) + "\n"


def gflop(flops: float | None) -> str:
    """Executed GFLOP/step; ``-`` for a compiled row (not counted: the same ops as eager)."""
    return "-" if flops is None else f"{flops / 1e9:.2f}"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--channels", type=int, default=32, help="fmnist CSNN channels (tutorial: 128)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=8, help="distinct in-memory batches, cycled")
    p.add_argument("--steps", type=int, default=10, help="timed steps per chunk")
    p.add_argument("--repeats", type=int, default=3, help="timed chunks; the best is reported")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation)")
    p.add_argument("--no-flops", dest="count_flops", action="store_false")
    p.add_argument("--profile", action="store_true", help="torch.profiler: where time goes")
    p.add_argument("--variants", action="store_true", help="also the candidate speed-ups")
    p.add_argument("--eval", action="store_true", help="eval pass with BN folded into conv")
    p.add_argument("--rows", nargs="+", help="only these rows (e.g. snnrun spikingjelly)")
    p.add_argument("--out", type=Path, help="also write the table (markdown) here")
    p.add_argument("--json", type=Path, help="also write the raw records here")
    zoo_help = (
        "race the zoo's spikformer / sew_resnet18 against SpikingJelly 2.0's builder "
        "instead (scripts/bench_zoo.py: T=4, batch 8, 1 thread, CPU time)"
    )
    p.add_argument("--zoo", nargs="*", metavar="NET", help=zoo_help)
    p.add_argument("--child", nargs=2, metavar=("NET", "ROW"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    keep = ("--channels", "--batch", "--batches", "--steps", "--repeats", "--warmup")
    args.passthrough = [f"{k}={getattr(args, k[2:])}" for k in keep]
    args.passthrough += [] if args.count_flops else ["--no-flops"]
    args.passthrough += ["--profile"] * args.profile + ["--eval"] * args.eval
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.child:
        child(args)
    elif args.zoo is not None:
        zoo(args.zoo or ["spikformer", "sew_resnet18"])
    else:
        race(args)


def zoo(nets: list[str]) -> None:
    """The zoo networks' training step against SpikingJelly 2.0's own builder, alternating in
    one process on one thread, timed by CPU time (``scripts/bench_zoo.py``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_zoo

    torch.set_num_threads(1)
    print(bench_zoo.table(nets, T=4, batch=8, steps=7, warmup=2, clock=time.thread_time))


if __name__ == "__main__":
    main()
