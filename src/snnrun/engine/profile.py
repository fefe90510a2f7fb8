"""``debug=profile``: torch.profiler over a few training steps, written into the run dir.

A callback on the trainer's seam: each training step ends a profiler step. It skips one
step, warms up on one, records ``steps`` (CPU, and CUDA when the run is on a GPU, with shapes
and memory), then writes ``trace.json`` (open it in chrome://tracing or ui.perfetto.dev) and
``top_ops.txt``, the operators by self time, also printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, schedule

from snnrun.core.progress import console
from snnrun.engine.callback import Callback, FitContext

ROWS = 15  # operators in the table


class StepProfiler(Callback):
    """Records ``steps`` training steps (after 1 skipped and 1 warm-up) into ``folder``."""

    def __init__(self, folder: Path, steps: int, device: torch.device) -> None:
        self.folder, self.steps, self.seen = folder, steps, 0
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self.sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        self.profiler = profile(
            activities=activities,
            schedule=schedule(wait=1, warmup=1, active=steps, repeat=1),
            on_trace_ready=self._write,
            record_shapes=True,
            profile_memory=True,
        )
        self.stopped = True  # until the fit starts

    def on_fit_start(self, run: FitContext) -> None:
        self.profiler.start()
        self.stopped = False

    def on_train_batch_end(self, run: FitContext, batch: Any, loss: torch.Tensor) -> None:
        if not self.stopped:
            self.profiler.step()

    def on_fit_end(self, run: FitContext, record: dict[str, Any] | None) -> None:
        """Stop (also when training had fewer steps than asked: what was recorded is written)."""
        if not self.stopped:
            self.stopped = True
            self.profiler.stop()

    def _write(self, prof: profile) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.folder / "trace.json"))
        table = prof.key_averages().table(sort_by=self.sort_by, row_limit=ROWS)
        (self.folder / "top_ops.txt").write_text(table + "\n")
        console.print(table, highlight=False, markup=False)
        console.print(f"profile of {self.steps} training steps: {self.folder}", highlight=False)
