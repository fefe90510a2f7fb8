#!/usr/bin/env python3
"""A/B training speed of two commits on the same commands, in the same environment.

    python scripts/bench_ab.py BASE [HEAD] [--cases quickstart fmnist_c32] [--rounds 5]

Each commit's tree is checked out in a temporary git worktree and run against the current
environment with no install (``PYTHONPATH=<tree>/src``; its ``conf/`` and ``kernels/`` are linked
into the tree's ``snnrun`` package, as the install maps them). Without ``HEAD`` the working tree
as it is (uncommitted edits included) is the B side. The two sides alternate on every case, and
the side that goes first alternates from round to round, so a slow spell of a shared machine
falls on both.

Each run is the real command, ``snnrun <case> logger=none``, in a subprocess; its figure is the
median of its epochs' ``train_samples_per_s`` (``metrics.jsonl``). Reported per case: each
side's median over rounds with its range, the ratio of the medians (B / A: above 1 means B is
faster), and the median and range of the per-round ratios (the rounds are paired, so these
drift less than the medians do).

Cases (data from ``../shared/data`` beside the repo, or ``$SNNRUN_DATA``):

- ``quickstart``: plain ``experiment=quickstart`` (the 16-channel CSNN on the embedded digits);
- ``fmnist_c32``: the Fashion-MNIST CSNN of the tutorials at C=32, fp32;
- ``sew_resnet18``: SEW ResNet-18, CIFAR stem, width 16, on Fashion-MNIST;
- ``rsnn_alif``: the recurrent net with ALIF neurons on the digits.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SNNRUN_DATA", REPO.parent / "shared" / "data"))
FMNIST = [f"dataset.root={DATA / 'fashion-mnist'}", "dataset=fmnist", "precision=fp32"]

CASES: dict[str, list[str]] = {
    "quickstart": ["experiment=quickstart", "epochs=3"],
    "fmnist_c32": [
        "experiment=fmnist_csnn",
        *FMNIST,
        "model.channels=32",
        "epochs=2",
        "dataset.train_limit=3072",
        "dataset.test_limit=256",
    ],
    "sew_resnet18": [
        "model=sew_resnet18",
        *FMNIST,
        "model.stem=cifar",
        "model.width=16",
        "epochs=2",
        "batch_size=32",
        "dataset.train_limit=512",
        "dataset.test_limit=128",
    ],
    "rsnn_alif": [
        "model=rsnn",
        "model.classes=10",
        "neuron=alif",
        "dataset=digits",
        "T=8",
        "epochs=2",
        "dataset.train_limit=768",
    ],
}


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@contextmanager
def tree_of(rev: str | None, scratch: Path) -> Iterator[Path]:
    """The source tree of ``rev`` in a temporary worktree (``None``: the working tree)."""
    if rev is None:
        yield REPO
        return
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    path = scratch / sha[:10]
    git("worktree", "add", "--detach", str(path), sha)
    try:
        package = path / "src" / "snnrun"
        for name in ("conf", "kernels"):  # what the install maps into the package
            if not (package / name).exists():
                (package / name).symlink_to(path / name, target_is_directory=True)
        yield path
    finally:
        git("worktree", "remove", "--force", str(path))


def samples_per_s(tree: Path, case: list[str], run_dir: Path) -> float:
    """One run of ``snnrun case`` from ``tree``: the median of its epochs' train samples/s."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "WANDB_MODE": "disabled"}
    code = "import sys; from snnrun.cli import main; sys.argv[0] = 'snnrun'; main()"
    args = [*case, "logger=none", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=run_dir.parent, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: snnrun {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return statistics.median(json.loads(line)["train_samples_per_s"] for line in lines if line)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} [{min(values):.1f}-{max(values):.1f}]"


def race(trees: dict[str, Path], cases: list[str], rounds: int, scratch: Path) -> list[str]:
    """Alternate the two trees on every case; one table row per case."""
    (a, b) = trees
    rows = [
        f"| case | {a} samples/s | {b} samples/s | ratio {b}/{a} | per-round ratio |",
        "| --- | --- | --- | --- | --- |",
    ]
    for case in cases:
        got: dict[str, list[float]] = {a: [], b: []}
        for r in range(rounds):
            order = (a, b) if r % 2 == 0 else (b, a)
            for side in order:
                run_dir = scratch / "runs" / f"{case}-{'ab'[side == b]}-{r}"
                got[side].append(samples_per_s(trees[side], CASES[case], run_dir))
            print(f"  {case} round {r + 1}: {a} {got[a][-1]:.1f}, {b} {got[b][-1]:.1f}", flush=True)
        paired = [y / x for x, y in zip(got[a], got[b], strict=True)]
        ratio = statistics.median(got[b]) / statistics.median(got[a])
        rows.append(
            f"| {case} | {spread(got[a])} | {spread(got[b])} | {ratio:.3f} | "
            f"{statistics.median(paired):.3f} [{min(paired):.3f}-{max(paired):.3f}] |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the A side: a commit, tag or branch")
    parser.add_argument("head", nargs="?", help="the B side (default: the working tree)")
    parser.add_argument("--cases", nargs="+", default=["quickstart", "fmnist_c32"], choices=CASES)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    names = (args.base, args.head or "work")
    with tempfile.TemporaryDirectory(prefix="bench_ab-") as tmp:
        scratch = Path(tmp)
        (scratch / "runs").mkdir()
        with tree_of(args.base, scratch) as tree_a, tree_of(args.head, scratch) as tree_b:
            rows = race(dict(zip(names, (tree_a, tree_b), strict=True)), args.cases,
                        args.rounds, scratch)  # fmt: skip
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    head = f"bench_ab: {args.rounds} rounds, train samples/s (median [range]), threads {threads}"
    table = "\n".join([head, "", *rows])
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
