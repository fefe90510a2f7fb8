"""``memory=auto`` and ``memory.budget``: the memory plan chosen by measuring one step of each.

Each candidate plan (``net/memory.py``; a key set to ``auto`` is searched, a key given a value
keeps it, and ``memory.budget`` under ``memory=none`` searches the keys left at none's values)
runs one training step (forward, loss, backward) on a copy of the network and one
batch of the test split, as stored: the peak the allocator held during the step beyond what it
held before (on a CPU the c10 allocator's running total, read from ``torch.profiler``'s memory
events; on CUDA ``max_memory_allocated``), and the step's time, measured in a second step. The
run's random streams, weights and statistics are untouched (a copy, the RNG forked).

With ``memory.budget`` (MiB): the fastest plan whose peak fits; none fitting is one line naming
the smallest peak. Without: the smallest peak among the plans at most ``max_slowdown`` times
as slow as the fastest.
"""

from __future__ import annotations

import contextlib
import copy
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from snnrun.core.errors import SnnrunError
from snnrun.net.memory import CHECKPOINTS, MemoryPlan, apply_plan
from snnrun.net.model import SpikingNetwork

AUTO = "auto"
SEARCHED = {"spikes": ("float", "bits"), "checkpoint": CHECKPOINTS}
KEYS = ("spikes", "checkpoint", "budget", "max_slowdown")
MAX_SLOWDOWN = 1.3  # conf/memory/none.yaml's, for a memory group written without the key


@dataclass(frozen=True)
class Measured:
    """One candidate's step: its plan, peak (MiB) and time (s)."""

    plan: MemoryPlan
    peak_mib: float
    step_s: float

    def record(self) -> dict[str, Any]:
        return {"spikes": self.plan.spikes, "checkpoint": self.plan.checkpoint,
                "peak_mib": round(self.peak_mib, 1), "step_s": round(self.step_s, 4)}  # fmt: skip


def check_options(options: dict[str, Any]) -> None:
    """The ``memory`` group's keys and values, before anything is built."""
    unknown = set(options) - {*KEYS, "name"}
    if unknown:
        raise SnnrunError(f"memory takes {', '.join(KEYS)}; unknown: {', '.join(sorted(unknown))}")
    for key, values in SEARCHED.items():
        value = options.get(key, values[0])
        allowed = (*values, "uint8") if key == "spikes" else values
        if value != AUTO and value not in allowed:
            raise SnnrunError(f"memory.{key}={value} is not one of {', '.join((*allowed, AUTO))}")
    budget = options.get("budget")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or budget <= 0):  # fmt: skip
        raise SnnrunError(f"memory.budget={budget} must be a positive number of MiB (or null)")
    slowdown = options.get("max_slowdown", MAX_SLOWDOWN)
    if isinstance(slowdown, bool) or not isinstance(slowdown, (int, float)) or slowdown < 1:
        raise SnnrunError(f"memory.max_slowdown={slowdown} must be a number >= 1")


def candidates(options: dict[str, Any]) -> list[MemoryPlan]:
    """The plans a ``memory`` group allows: a key at ``auto`` searched, another kept; with
    ``memory.budget`` under ``memory=none``, a key left at none's value searched too."""
    budget_only = options.get("budget") is not None and options.get("name", "none") == "none"
    values = []
    for key, searched in SEARCHED.items():
        value = options.get(key, searched[0])
        values.append(searched if value == AUTO or (budget_only and value == searched[0])
                      else (value,))  # fmt: skip
    return [MemoryPlan(spikes, checkpoint) for spikes, checkpoint in product(*values)]


def needs_measuring(options: dict[str, Any]) -> bool:
    return options.get("budget") is not None or len(candidates(options)) > 1


def choose(options: dict[str, Any], measured: list[Measured]) -> Measured:
    """The plan ``options`` asks for among the measured candidates (module doc)."""
    budget = options.get("budget")
    if budget is not None:
        fitting = [m for m in measured if m.peak_mib <= budget]
        if not fitting:
            least = min(measured, key=lambda m: m.peak_mib)
            raise SnnrunError(
                f"memory.budget={budget} MiB is below every plan's peak: the smallest is "
                f"{least.peak_mib:.0f} MiB ({least.plan}); raise memory.budget, or lower "
                "batch_size or T"
            )
        return min(fitting, key=lambda m: m.step_s)
    fastest = min(m.step_s for m in measured)
    slowdown = options.get("max_slowdown", MAX_SLOWDOWN)
    allowed = [m for m in measured if m.step_s <= slowdown * fastest]
    return min(allowed, key=lambda m: (m.peak_mib, m.step_s))


def measure_plans(
    model: SpikingNetwork,
    plans: list[MemoryPlan],
    step: Callable[[torch.nn.Module], torch.Tensor],
    device: torch.device,
    rounds: int = 3,
) -> list[Measured]:
    """Each plan's peak and step time on a copy of ``model``; ``step(net)`` returns the loss
    of one batch (the backward is run here). The time is the fastest of ``rounds`` steps, the
    plans taking turns (other work on the machine only slows a step down). The RNG is forked,
    so the run's draws stay."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        nets = [apply_plan(copy.deepcopy(model), plan).train() for plan in plans]
        runs = [_training_step(net, step) for net in nets]
        peaks = []
        for run in runs:
            run()  # warm-up: first-call allocations, lazy state
            peaks.append(peak_bytes(run, device) / 2**20)
        times = [[_timed(run, device) for run in runs] for _ in range(rounds)]
    return [
        Measured(plan, peak, min(t[i] for t in times))
        for i, (plan, peak) in enumerate(zip(plans, peaks))
    ]


def _training_step(
    net: torch.nn.Module, step: Callable[[torch.nn.Module], torch.Tensor]
) -> Callable[[], None]:
    def run() -> None:
        net.zero_grad(set_to_none=True)
        step(net).backward()

    return run


def _timed(run: Callable[[], None], device: torch.device) -> float:
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def peak_bytes(run: Callable[[], None], device: torch.device) -> int:
    """Bytes the allocator held at its peak during ``run()`` beyond what it held before."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return cpu_peak_bytes(run)


def cpu_peak_bytes(run: Callable[[], None]) -> int:
    """The CPU allocator's peak during ``run()``: the running ``Total Allocated`` of the
    profiler's memory events (every allocation and free of the c10 allocator, whoever keeps
    the tensor), less the total before."""
    with tempfile.TemporaryDirectory() as folder:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run()
        trace = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    memory = [e["args"] for e in events if e.get("name") == "[memory]"]
    if not memory:
        return 0
    before = memory[0]["Total Allocated"] - memory[0]["Bytes"]
    return max(m["Total Allocated"] for m in memory) - before


def plan_for(
    options: dict[str, Any],
    model: SpikingNetwork,
    step: Callable[[torch.nn.Module], torch.Tensor],
    device: torch.device,
) -> tuple[MemoryPlan, dict[str, Any]]:
    """The plan ``options`` (the ``memory`` group) gives, applied to ``model``, and its record
    for ``run.json`` (the candidates' measurements when it was chosen by measuring)."""
    check_options(options)
    plans = candidates(options)
    if not needs_measuring(options):
        apply_plan(model, plans[0])
        return plans[0], {"spikes": plans[0].spikes, "checkpoint": plans[0].checkpoint}
    with quiet_native_output():
        measured = measure_plans(model, plans, step, device)
    chosen = choose(options, measured)
    apply_plan(model, chosen.plan)
    record = {**chosen.record(), "budget_mib": options.get("budget"),
              "measured": [m.record() for m in measured]}  # fmt: skip
    return chosen.plan, record


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """The profiler's own lines (kineto's start/stop notes) written by native code to the
    process's stdout/stderr, silenced while the candidates are measured."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
