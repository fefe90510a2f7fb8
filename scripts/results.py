#!/usr/bin/env python3
"""The accuracy rows of ``docs/results.md``: the exact commands, extra evaluations, the table.

    python scripts/results.py run mnist_snntorch_csnn   # train a row (commands below, niced)
    python scripts/results.py eval mnist_snntorch_csnn  # re-evaluate its latest checkpoint
    python scripts/results.py table                     # run dirs -> docs/results.md + curves

Every row is an ``snnrun`` command (``ROWS``) training into a run dir under ``--runs``
(default ``/work/runs``); the table reads each run dir's ``metrics.jsonl`` and draws its curves
with ``snnrun viz``. ``mnist_snntorch_csnn`` is trained one epoch per command (``epochs=1``,
then ``resume=<dir> epochs=2``, ``epochs=3``: resume continues exactly, so this is the run of
``epochs=3``), and after each epoch its latest checkpoint is evaluated two more ways, written
beside the run dir as ``<run dir>.eval.jsonl``:

- ``train_acc_tutorial``: the snnTorch tutorial's figure, accuracy of the trained net (eval
  mode, no gradient) on its *training* loader (the 6000 training samples);
- ``test_acc_full``: the full 10,000-image MNIST test set (the run's own ``test_acc`` is on
  the first 1000, the tutorial's tenth).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SNNRUN = [sys.executable, "-m", "snnrun"]
NICE = ["nice", "-n", "19"]
DATA = Path("/work/shared/data")
NMNIST_TREE = Path("/work/data-nmnist")  # tonic's layout, links to DATA / "nmnist-small"
HARDWARE = "2-core CPU (this machine, shared)"
DATE = "2026-11-24"
CODE = (
    "snnrun at commit 058d44b, torch 2.14.1 (CPU). The first commands (`mnist_fc` epochs 1-2, "
    "`mnist_snntorch_csnn` epochs 1-2) ran from the working tree while the modules a run "
    "imports still matched that commit; once it was being edited, the others imported a copy "
    "of that commit's `src/`, `conf/` and `kernels/` through `PYTHONPATH`. `mnist_fc` epochs "
    "27-100 ran from the working tree at commit 0c69068 (the same computation for its "
    "convolution-free network); `fmnist_csnn` ran at commit a1ca59e"
)


@dataclass
class Row:
    """One line of the results table: how its run dir is made and what it is compared with."""

    name: str
    published: str
    overrides: list[str]
    steps: list[list[str]] = field(default_factory=list)  # extra commands (resume ...)
    reduced: str = ""  # how this run differs from the published recipe
    note: str = ""


ROWS = {
    r.name: r
    for r in [
        Row(
            "mnist_snntorch_csnn",
            "93.4% / 95.8% / 96.5% after epochs 1/2/3, on the tutorial's *training* loader",
            ["experiment=mnist_snntorch_csnn", f"dataset.root={DATA / 'mnist'}", "epochs=1",
             "logger=none"],
            steps=[["epochs=2"], ["epochs=3"]],
        ),
        Row(
            "mnist_fc",
            "92.5% after 100 epochs",
            ["experiment=mnist_fc", f"dataset.root={DATA / 'mnist'}", "logger=none"],
            steps=[[], []],
            note="The first command was stopped by SIGTERM after epoch 2 and the first resume "
            "after epoch 26, by hand at the end of a session; resume is exact, so the three "
            "commands make one run",
        ),
        Row(
            "fmnist_csnn",
            "93.08% (multi-step) / 93.3% (clock-driven) max test acc after 64 epochs, 128 ch",
            ["experiment=fmnist_csnn", f"dataset.root={DATA / 'fashion-mnist'}",
             "model.channels=32", "precision=fp32", "epochs=8", "scheduler.T_max=8",
             "logger=none"],
            reduced="reduced for the CPU: 32 channels (not 128), 8 epochs (not 64, cosine "
            "T_max 8), fp32 (AMP fp16 is GPU-only); full 60k/10k data",
            note="Run at commit a1ca59e. An earlier, smaller reduced run (16 channels, 2 epochs, "
            "commit 058d44b) reached 83.94%",
        ),
        Row(
            "nmnist_csnn",
            "no published figure for this recipe (1000/100 real recordings here)",
            ["experiment=nmnist_csnn", f"dataset.root={NMNIST_TREE}", "model.channels=16",
             "epochs=8", "scheduler.T_max=8", "logger=none"],
            reduced="CPU choices: 16 channels (not 128), 8 epochs (cosine T_max 8), T=10; "
            "1000 train / 100 test real N-MNIST recordings (`/work/data-nmnist` is a tree of "
            "links to `../shared/data/nmnist-small` in tonic's layout, made by this script as "
            "tests/test_events.py makes it)",
        ),
        Row(
            "nmnist_sew",
            "no published figure for this reduced network; compare the nmnist_csnn row",
            ["experiment=nmnist_csnn", f"dataset.root={NMNIST_TREE}", "model=sew_resnet_dvs",
             "model.channels=16", "model.blocks=4", "model.classes=10", "model.connect=add",
             "neuron.detach_reset=true", "loss=ce_rate", "epochs=8", "scheduler.T_max=8",
             "logger=none"],
            reduced="the SEW paper's DVS network (model=sew_resnet_dvs: SEW blocks with PLIF, "
            "ADD) reduced to 16 channels and 4 blocks for N-MNIST's 34x34 frames; otherwise the "
            "nmnist_csnn row's recipe (T=10, 8 epochs, the same 1000/100 recordings)",
        ),
        Row(
            "fmnist_spikformer",
            "no published Fashion-MNIST figure (Spikformer reports CIFAR and ImageNet)",
            ["dataset=fmnist", f"dataset.root={DATA / 'fashion-mnist'}", "model=spikformer",
             "model.embed_dim=64", "model.heads=4", "model.depths=1", "neuron=lif",
             "neuron.detach_reset=true", "surrogate=atan", "encoder=direct", "loss=ce_rate",
             "optimizer=adam", "optimizer.lr=0.001", "scheduler=cosine", "precision=fp32",
             "T=4", "batch_size=128", "dataset.train_limit=20000",
             "epochs=6", "scheduler.T_max=6", "logger=none"],
            reduced="a small Spikformer (embed 64, 4 heads, 1 block; 7x7 tokens) on 20000 of the "
            "60000 training images, 6 epochs of Adam 1e-3, T=4, LIF tau 2 with detach_reset "
            "(Spikformer's neuron), fp32; the full 10000-image test set",
        ),
    ]
}  # fmt: skip


def run_dir(runs: Path, name: str) -> Path:
    return runs / name


def commands(row: Row, runs: Path) -> list[list[str]]:
    """The exact argv of each command of a row (the first trains, the others resume)."""
    out = [[*row.overrides, f"hydra.run.dir={run_dir(runs, row.name)}"]]
    out += [[f"resume={run_dir(runs, row.name)}", *step] for step in row.steps]
    return out


def shown(argv: list[str]) -> str:
    return "nice -n 19 snnrun " + " ".join(argv)


# --------------------------------------------------------------------------- training


def nmnist_tree() -> None:
    """The 1000/100 real N-MNIST recordings in tonic's layout, as links (tests/test_events.py)."""
    src = DATA / "nmnist-small"
    for split, listing in (("Train", "train1K.txt"), ("Test", "test100.txt")):
        for line in (src / listing).read_text().splitlines()[1:]:
            sample, label = line.split()
            folder = NMNIST_TREE / "NMNIST" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            link = folder / f"{sample}.bin"
            if not link.exists():
                link.symlink_to(src / f"{sample}.bs2")


def run_row(row: Row, runs: Path) -> None:
    if row.name in ("nmnist_csnn", "nmnist_sew"):
        nmnist_tree()
    for argv in commands(row, runs):
        print("$ " + shown(argv), flush=True)
        subprocess.run([*NICE, *SNNRUN, *argv], check=True, cwd=REPO)
        if row.name == "mnist_snntorch_csnn":
            record = evaluate_snntorch(run_dir(runs, row.name))
            print(json.dumps(record), flush=True)


# --------------------------------------------------------------------------- evaluation


def accuracy(model: torch.nn.Module, dataset, encoder, loss, T: int, batch: int = 500) -> float:
    """Fraction of ``dataset`` classified right by ``model``: the product's one test pass."""
    from snnrun.data.dataset import make_loader
    from snnrun.engine.precision import build_precision
    from snnrun.engine.testing import LossStep, test_pass

    cpu = torch.device("cpu")
    step = LossStep(cpu, encoder, loss, build_precision({"name": "fp32"}, cpu), T)
    return test_pass(model, make_loader(dataset, batch, False, 0), step)["acc"]


def evaluate_snntorch(path: Path) -> dict:
    """The latest checkpoint on the training split (the tutorial's figure) and the full test
    set; appended to ``<run dir>.eval.jsonl``."""
    import snnrun
    from snnrun.data.encoder import build_encoder
    from snnrun.engine.loss import build_loss

    run = snnrun.load_run(path, which="latest")
    conf = run.config
    encoder, loss = build_encoder(conf["encoder"]), build_loss(conf["loss"])
    train = run.splits().train  # the run's own training split (train_limit=6000)
    test_full = run.splits(test_limit=None).test
    record = {
        "epoch": run.epoch,
        "train_acc_tutorial": accuracy(run.model, train, encoder, loss, conf["T"]),
        "train_samples": len(train),
        "test_acc_full": accuracy(run.model, test_full, encoder, loss, conf["T"]),
        "test_samples_full": len(test_full),
        "test_acc_run": run.metrics[run.epoch - 1]["test_acc"],
    }
    with open(f"{path}.eval.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


# --------------------------------------------------------------------------- the table


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curves(path: Path, name: str) -> str:
    """``snnrun viz <dir>``'s curves (drawn again only when the run has trained since), copied
    to docs/results/<name>.png; the link text."""
    png = path / "figures" / "curves.png"
    if not png.exists() or png.stat().st_mtime < (path / "metrics.jsonl").stat().st_mtime:
        argv = [*SNNRUN, "viz", str(path)]
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0 or not png.exists():
            print(proc.stdout[-1000:], proc.stderr[-1000:], sep="\n")
            return "(no figure)"
    out = REPO / "docs" / "results" / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(png, out)
    return f"[curves](results/{name}.png)"


def planned_epochs(path: Path) -> int:
    """The epochs the run was configured for (its resolved ``config.yaml``)."""
    import yaml

    return int(yaml.safe_load((path / "config.yaml").read_text())["epochs"])


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def row_text(row: Row, runs: Path) -> tuple[str, list[str]]:
    """(the summary table's line, the row's detail section)."""
    path = run_dir(runs, row.name)
    metrics = read_jsonl(path / "metrics.jsonl")
    cmds = ["```bash", *(shown(c) for c in commands(row, runs)), "```"]
    head = [f"### `{row.name}`", "", f"Published: {row.published}."]
    head += [f"*{row.reduced[0].upper()}{row.reduced[1:]}.*"] if row.reduced else []
    if not metrics:
        return f"| `{row.name}` | {row.published} | not run yet | |", [*head, "", *cmds]
    last, best = metrics[-1], max(m["test_acc"] for m in metrics)
    got = f"{pct(last['test_acc'])} test after {len(metrics)} epochs (max {pct(best)})"
    detail = []
    if row.name == "mnist_snntorch_csnn":
        evals = {e["epoch"]: e for e in read_jsonl(Path(f"{path}.eval.jsonl"))}
        got = "full test set " + " / ".join(pct(evals[e]["test_acc_full"]) for e in sorted(evals))
        got += "; tutorial's way " + " / ".join(
            pct(evals[e]["train_acc_tutorial"]) for e in sorted(evals)
        )
        got += " after epochs " + "/".join(str(e) for e in sorted(evals))
        published = {1: "93.38%", 2: "95.77%", 3: "96.48%"}
        detail += [
            "| after epoch | published (tutorial's training loader) | measured the tutorial's "
            "way (the 6000 training samples, eval mode) | full MNIST test set (10,000) | "
            "the run's `test_acc` (first 1000 test images) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for e in sorted(evals):
            r = evals[e]
            detail.append(
                f"| {e} | {published.get(e, '-')} | {pct(r['train_acc_tutorial'])} | "
                f"{pct(r['test_acc_full'])} | {pct(metrics[e - 1]['test_acc'])} |"
            )
        detail += ["", "The tutorial's loader drops the last partial batch of a shuffled 6000 "
                   "(46 x 128 = 5888 images); here all 6000 are counted.", ""]  # fmt: skip
    detail += [f"{row.note}.", ""] if row.note else []
    planned = planned_epochs(path)
    if len(metrics) < planned:
        got += f"; **{len(metrics)}/{planned} epochs so far**"
        detail += [f"Unfinished: {len(metrics)} of {planned} epochs. Continue it with", "",
                   "```bash", f"nice -n 19 snnrun resume={path}", "```", ""]  # fmt: skip
    secs = sum(m["epoch_seconds"] for m in metrics)
    epochs = ", ".join(f"{m['epoch'] + 1}: {pct(m['test_acc'])}" for m in metrics[-8:])
    link = curves(path, row.name)
    detail += [
        f"Test accuracy by epoch{' (last 8)' if len(metrics) > 8 else ''}: {epochs}.",
        "",
        f"Hardware, date: {HARDWARE}, {DATE}; {secs / 60:.1f} min of training and testing, "
        f"{last['train_samples_per_s']:.0f} train samples/s in the last epoch. Run dir: `{path}`. "
        f"Curves: {link}.",
        "",
        *cmds,
    ]
    return f"| `{row.name}` | {row.published} | {got} | {link} |", [*head, "", *detail]


DVS_LINE = (
    "| `dvsgesture_plif` | 96.18% max test acc after 256 epochs (T=16) | **not run**: needs a "
    "GPU and the full DVS128 Gesture dataset, neither available offline here | - |"
)
DVS_DETAIL = [
    "### `dvsgesture_plif`",
    "",
    "Not run. The recipe (T=16, 128 channels, 256 epochs, AMP) needs a GPU (none was lent to "
    "this session), and the full DVS128 Gesture dataset is not available offline: "
    "`../shared/data/` holds 10 sample recordings only, too few to train or test on. On a GPU "
    "machine with the dataset:",
    "",
    "```bash",
    "snnrun experiment=dvsgesture_plif dataset.root=<folder holding DvsGesture/>",
    "```",
]


def table(runs: Path, out: Path) -> None:
    lines = [
        "# Results: the tutorials' accuracies, reproduced by `snnrun experiment=...`",
        "",
        "Every number below comes from `scripts/results.py` (`python scripts/results.py run "
        "<row>` trains a row with the commands shown; `python scripts/results.py table` writes "
        f"this page from the run dirs' `metrics.jsonl`). Hardware: {HARDWARE}, no GPU; date "
        f"{DATE}. Accuracies are as measured, never rounded up; reduced runs say so. Each curve "
        "is the run's `snnrun viz <run dir>` `figures/curves.png`.",
        "",
        f"Code: {CODE}.",
        "",
        "| experiment | published | measured here | curve |",
        "| --- | --- | --- | --- |",
    ]
    details = []
    for row in ROWS.values():
        line, detail = row_text(row, runs)
        lines.append(line)
        details += ["", *detail]
    lines += [DVS_LINE, "", "## Rows", *details, "", *DVS_DETAIL, ""]
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("action", choices=["run", "eval", "table"])
    p.add_argument("rows", nargs="*", help=f"rows to run: {', '.join(ROWS)}")
    p.add_argument("--runs", type=Path, default=Path("/work/runs"), help="where run dirs live")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results.md")
    args = p.parse_args(argv)
    if args.action == "table":
        table(args.runs, args.out)
        return
    for name in args.rows:
        if args.action == "run":
            run_row(ROWS[name], args.runs)
        else:
            print(json.dumps(evaluate_snntorch(run_dir(args.runs, name))))


if __name__ == "__main__":
    main()
