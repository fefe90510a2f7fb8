#!/usr/bin/env python3
"""Train steps of two source trees in ONE process, interleaved step by step (bench_ab --steps).

    python scripts/bench_steps.py TREE_A TREE_B --case quickstart --rounds 10 [--names a b]

Each tree's ``snnrun`` is imported in turn under the same package name (the other's modules are
set aside in between, and put back before each of its steps, so a lazy import inside a step
finds its own tree), and each builds the case's run from its own ``conf/`` (``build_run``) and its
``Trainer``. Then the two alternate batch by batch, the side that goes first alternating too: each
step is timed from fetching the batch out of the side's own train loader to the end of
``Trainer.train_step`` (forward, loss, backward, optimizer step). A round is one pass over the
loader; its figure per side is samples / summed step time. Prints one JSON object: each side's
samples/s per round.

Why: on a shared 2-core VM a whole process runs fast or slow (x1.5 between runs of the same
code), so separate processes need many rounds to see a few percent. Inside one process the two
sides share the process's luck, and a slow spell of the machine lands on both within a step.
What it leaves out: start-up, the test pass and per-epoch work (checkpoints, logging).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any


def _snnrun_modules() -> dict[str, ModuleType]:
    return {n: m for n, m in sys.modules.items() if n == "snnrun" or n.startswith("snnrun.")}


def activate(modules: dict[str, ModuleType]) -> None:
    """Make ``modules`` the process's ``snnrun`` (set the other tree's aside)."""
    for name in _snnrun_modules():
        del sys.modules[name]
    sys.modules.update(modules)


def _import(tree: Path, *candidates: str) -> ModuleType:
    """The first of ``candidates`` that ``tree`` holds (the layout moved between commits; an
    editable install would fill a missing one from another tree)."""
    import importlib

    for name in candidates:
        path = tree / "src" / Path(*name.split("."))
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return importlib.import_module(name)
    raise SystemExit(f"{tree} holds none of {candidates}")


class Side:
    """One tree's run: its modules, trainer and train loader."""

    def __init__(self, tree: Path, case: list[str]) -> None:
        activate({})
        sys.path.insert(0, str(tree / "src"))
        try:
            self.trainer, self.loader = self._build(tree, case)
        finally:
            sys.path.pop(0)
        self.modules = _snnrun_modules()
        self.tree = tree

    @staticmethod
    def _build(tree: Path, case: list[str]) -> tuple[Any, Any]:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        import snnrun  # this tree's resolvers (${mul:...})

        assert Path(snnrun.__file__).is_relative_to(tree), snnrun.__file__
        build = _import(tree, "snnrun.run.build", "snnrun.run")
        trainer = _import(tree, "snnrun.engine.trainer", "snnrun.trainer")
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(tree / "conf"), version_base=None):
            cfg = compose("config", overrides=[*case, "logger=none"])
        run = build.build_run(build.resolve_paths(cfg))
        run.model.train()
        if not hasattr(trainer, "TrainSettings"):  # before the callbacks seam
            return trainer.Trainer(run, run.model), run.train_loader
        settings = trainer.TrainSettings.of(run.config)
        return trainer.Trainer(run, run.model, settings=settings), run.train_loader

    def steps(self, clock: Any = time.perf_counter) -> Any:
        """A generator: each ``next`` runs one timed step, yielding (samples, seconds)."""
        device = self.trainer.run.device
        batches = iter(self.loader)
        while True:
            activate(self.modules)
            start = clock()
            try:
                x, y = next(batches)
            except StopIteration:
                return
            self.trainer.train_step(x, y.to(device, non_blocking=True))
            yield len(y), clock() - start


def race(sides: list[Side], rounds: int, clock: Any) -> list[list[float]]:
    """Per round, each side's samples/s over one pass of its loader, steps interleaved."""
    got: list[list[float]] = [[] for _ in sides]
    for r in range(rounds + 1):  # round 0 warms up (allocator, oneDNN primitives)
        for side in sides:
            side.loader.batch_sampler.set_epoch(r)
        gens = [side.steps(clock) for side in sides]
        totals = [[0, 0.0] for _ in sides]
        step = 0
        while True:
            order = range(len(sides)) if (r + step) % 2 == 0 else reversed(range(len(sides)))
            done = False
            for i in order:
                try:
                    n, s = next(gens[i])
                except StopIteration:
                    done = True
                    break
                totals[i][0] += n
                totals[i][1] += s
            if done:
                break
            step += 1
        if r:
            for i, (n, s) in enumerate(totals):
                got[i].append(n / s)
            print(f"  round {r}: " + ", ".join(f"{v[-1]:.1f}" for v in got), file=sys.stderr)
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs=2, type=Path)
    parser.add_argument("--case", nargs="+", required=True, help="the case's overrides")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time steps by the process's CPU time, which a busy machine's "
                        "preemptions do not add to (use with --threads 1)")  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sides = [Side(tree.resolve(), args.case) for tree in args.trees]
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(json.dumps(race(sides, args.rounds, clock)))


if __name__ == "__main__":
    main()
