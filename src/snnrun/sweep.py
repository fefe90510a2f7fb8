"""Hydra callback: after a sweep (``snnrun -m ...``), a table of every job's final metrics.

A job that failed is marked ``failed`` with its one-line reason and collected in
:data:`FAILED`, so the command exits non-zero after all jobs ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from snnrun.progress import console
from snnrun.rundir import RunDir

FAILED: list[str] = []
COLUMNS = ("job", "status", "overrides", "epochs", "train_loss", "test_acc", "max_test_acc")


def job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder under ``sweep_dir``: status, overrides and last/best metrics."""
    rows = []
    jobs = (p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for job in sorted(jobs, key=_job_order):
        rundir = RunDir(job)
        history = rundir.read_metrics()
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.load(overrides_file) if overrides_file.is_file() else []
        last = history[-1] if history else {}
        failure = rundir.failure()
        rows.append(
            {
                "job": job.name,
                "status": f"failed: {failure}" if failure else "ok",
                "overrides": " ".join(str(o) for o in overrides),
                "epochs": len(history),
                "train_loss": last.get("train_loss"),
                "test_acc": last.get("test_acc"),
                "max_test_acc": last.get("max_test_acc"),
            }
        )
    return rows


def _job_order(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (1 << 30, path.name)


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = job_rows(sweep_dir)
        shared = _shared_overrides(rows)
        for row in rows:
            row["overrides"] = " ".join(o for o in row["overrides"].split() if o not in shared)
        title = f"sweep {sweep_dir}" + (f" (every job: {' '.join(shared)})" if shared else "")
        table = Table(title=title)
        for column in COLUMNS:
            table.add_column(
                column, justify="left" if column in ("overrides", "status") else "right"
            )
        for row in rows:
            style = "red" if row["status"] != "ok" else None
            table.add_row(*(_fmt(row[c]) for c in COLUMNS), style=style)
        console.print(table)
        FAILED.extend(r["job"] for r in rows if r["status"] != "ok")


def _shared_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """The overrides every job has (shown once, above the table)."""
    if len(rows) < 2:
        return []
    sets = [set(r["overrides"].split()) for r in rows]
    return [o for o in rows[0]["overrides"].split() if all(o in s for s in sets)]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
