#!/usr/bin/env python3
"""A/B training speed of two commits on the same commands, in the same environment.

    python scripts/bench_ab.py BASE [HEAD] [--cases quickstart fmnist_c32] [--rounds 5]
        [--slice 0.2 | --steps [--cpu-time]]

Each commit's tree is checked out in a temporary git worktree and run against the current
environment with no install (``PYTHONPATH=<tree>/src``; its ``conf/`` and ``kernels/`` are linked
into the tree's ``snnrun`` package, as the install maps them). Without ``HEAD`` the working tree
as it is (uncommitted edits included) is the B side. The two sides alternate on every case, and
the side that goes first alternates from round to round, so a slow spell of a shared machine
falls on both.

Each run is the real command, ``snnrun <case> logger=none``, in a subprocess; its figure is its
best epoch's ``train_samples_per_s`` (``metrics.jsonl``): other work on a shared machine only
slows an epoch down, so the best epoch is the least noisy estimate of what the code can do.
Reported per case: each side's median over rounds with its range, the ratio of the medians
(B / A: above 1 means B is faster), and the median and range of the per-round ratios (the rounds
are paired, so these drift less than the medians do).

Noise: on a 2-core VM a whole run goes fast or slow (the same code's runs differ by up to x1.5
from one to the next, while its epochs agree within a run), so one side after the other needs
many rounds to see a few percent (A/A ratios of 0.93 and 1.09 in 10 rounds). ``--slice 0.2``
runs both sides at once, taking turns on the machine every 0.2 s (SIGSTOP / SIGCONT), so a slow
spell falls on both; each side's figure is then its best epoch among those it finished while
both ran (half a solo run's speed; the ratio is what counts). A/A: 1.00 in 6 rounds. Run an A/A
first (``bench_ab.py HEAD``: the commit against its own clean tree) to see the spread.

``--steps`` measures the train step alone, with both trees in ONE process
(``scripts/bench_steps.py``): their steps interleave batch by batch, so the process's luck and a
slow spell land on both; ``--cpu-time`` (one torch thread, steps timed by CPU time) also leaves
out the preemptions of a busy machine: the least noisy figure (A/A per-round 0.987
[0.965-1.002] in 6 rounds while other jobs ran). It leaves out start-up, the test pass and the
per-epoch work, which ``--slice`` keeps.

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
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SNNRUN_DATA", REPO.parent / "shared" / "data"))
FMNIST = [f"dataset.root={DATA / 'fashion-mnist'}", "dataset=fmnist", "precision=fp32"]

CASES: dict[str, list[str]] = {
    "quickstart": ["experiment=quickstart", "epochs=4"],
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


def launch(tree: Path, case: list[str], run_dir: Path) -> subprocess.Popen:
    """``snnrun case logger=none`` from ``tree``'s sources, in its own process group."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "WANDB_MODE": "disabled"}
    code = "import sys; from snnrun.cli import main; sys.argv[0] = 'snnrun'; main()"
    args = [*case, "logger=none", f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=run_dir.parent, env=env, text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip


def epochs(run_dir: Path) -> list[float]:
    """The train samples/s of each epoch the run has finished."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(line)["train_samples_per_s"] for line in lines if line.endswith("}")]


def finish(proc: subprocess.Popen, run_dir: Path) -> None:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"snnrun {' '.join(map(str, proc.args[3:]))} failed:\n{err[-2000:]}")


def solo(trees: dict[str, Path], case: list[str], run_dirs: dict[str, Path]) -> dict[str, float]:
    """Each side's run alone, one after the other: its best epoch's train samples/s."""
    best = {}
    for side, tree in trees.items():
        proc = launch(tree, case, run_dirs[side])
        finish(proc, run_dirs[side])
        best[side] = max(epochs(run_dirs[side]))
    return best


def sliced(
    trees: dict[str, Path], case: list[str], run_dirs: dict[str, Path], slice_s: float
) -> dict[str, float]:
    """Both sides' runs alive at once, taking turns on the machine every ``slice_s`` seconds
    (SIGSTOP / SIGCONT of their process groups), so that a slow spell of the machine falls on
    both: each side's best epoch among those it finished while both ran (each had half of that
    time, so the figures are half a solo run's; their ratio is what counts)."""
    procs = {side: launch(tree, case, run_dirs[side]) for side, tree in trees.items()}
    turn = list(procs)
    os.killpg(procs[turn[1]].pid, signal.SIGSTOP)
    try:
        while all(p.poll() is None for p in procs.values()):
            time.sleep(slice_s)
            os.killpg(procs[turn[0]].pid, signal.SIGSTOP)
            turn.reverse()
            os.killpg(procs[turn[0]].pid, signal.SIGCONT)
        counted = {side: epochs(run_dirs[side]) for side in procs}
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGCONT)
    for side, p in procs.items():
        finish(p, run_dirs[side])
    if not all(counted.values()):
        raise SystemExit(f"{case}: a side finished no epoch while both ran; add epochs")
    return {side: max(values) for side, values in counted.items()}


def stepped(trees: dict[str, Path], case: list[str], rounds: int, args: list[str]) -> dict:
    """``--steps``: both trees' train steps in one process, interleaved (bench_steps.py): each
    side's samples/s per round."""
    cmd = [sys.executable, str(REPO / "scripts" / "bench_steps.py"), *map(str, trees.values()),
           "--rounds", str(rounds), *args, "--case", *case]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tempfile.gettempdir(), env=env)
    if proc.returncode != 0:
        raise SystemExit(f"bench_steps failed:\n{proc.stderr[-2000:]}")
    return dict(zip(trees, json.loads(proc.stdout), strict=True))


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} [{min(values):.1f}-{max(values):.1f}]"


def race(
    trees: dict[str, Path],
    cases: list[str],
    rounds: int,
    scratch: Path,
    slice_s: float,
    steps: list[str] | None = None,
) -> list[str]:
    """Alternate the two trees on every case; one table row per case."""
    (a, b) = trees
    rows = [
        f"| case | {a} samples/s | {b} samples/s | ratio {b}/{a} | per-round ratio |",
        "| --- | --- | --- | --- | --- |",
    ]
    for case in cases:
        got: dict[str, list[float]] = {a: [], b: []}
        if steps is not None:
            got = stepped(trees, CASES[case], rounds, steps)
        for r in range(rounds if steps is None else 0):
            order = (a, b) if r % 2 == 0 else (b, a)
            run_dirs = {side: scratch / "runs" / f"{case}-{'ab'[side == b]}-{r}" for side in order}
            ordered = {side: trees[side] for side in order}
            if slice_s > 0:
                best = sliced(ordered, CASES[case], run_dirs, slice_s)
            else:
                best = solo(ordered, CASES[case], run_dirs)
            for side in order:
                got[side].append(best[side])
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
    parser.add_argument("--slice", type=float, default=0.0, metavar="SECONDS",
                        help="run both sides at once, taking turns every SECONDS (0: one "
                        "after the other)")  # fmt: skip
    parser.add_argument("--steps", action="store_true",
                        help="train steps of both trees in one process, interleaved "
                        "(scripts/bench_steps.py): the least noisy, but steps only")  # fmt: skip
    parser.add_argument("--cpu-time", action="store_true",
                        help="with --steps: one torch thread, steps timed by CPU time (a busy "
                        "machine's preemptions do not count)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    steps = (["--threads", "1", "--cpu-time"] if args.cpu_time else []) if args.steps else None
    names = (args.base, args.head or "work")
    with tempfile.TemporaryDirectory(prefix="bench_ab-") as tmp:
        scratch = Path(tmp)
        (scratch / "runs").mkdir()
        with tree_of(args.base, scratch) as tree_a, tree_of(args.head, scratch) as tree_b:
            rows = race(dict(zip(names, (tree_a, tree_b), strict=True)), args.cases,
                        args.rounds, scratch, args.slice, steps)  # fmt: skip
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    mode = f"time-sliced every {args.slice} s" if args.slice else "one after the other"
    if args.steps:
        mode = "train steps in one process" + (", 1 thread, CPU time" if args.cpu_time else "")
    head = (f"bench_ab: {args.rounds} rounds ({mode}), train samples/s (median [range]), "
            f"threads {threads}")  # fmt: skip
    table = "\n".join([head, "", *rows])
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
