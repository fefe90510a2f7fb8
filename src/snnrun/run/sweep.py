"""Sweeps (``snnrun -m ...``): what a failed job returns, and the table of every job at the end.

A job that fails, for any exception, is marked ``failed`` with its one-line reason (a crash
keeps its traceback under that line in the job's ``failed.txt``), prints one line and returns
a :class:`JobFailed`: not a number, so Optuna records the trial as failed and goes on. After
the sweep, :class:`SweepSummary` prints the table, saves it as ``summary.csv`` and
``summary.txt`` in the sweep dir, and collects the failed jobs in :data:`FAILED` so that the
command exits 1.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from snnrun.core.errors import one_line
from snnrun.core.progress import console
from snnrun.run.rundir import FAILED as FAILED_TXT
from snnrun.run.rundir import RunDir

FAILED: list[str] = []
SWEEP_DIR: list[Path] = []  # the finished sweep's dir
COLUMNS = ("job", "status", "overrides", "epochs", "train_loss", "test_acc", "max_test_acc")
SUMMARY_CSV, SUMMARY_TXT = "summary.csv", "summary.txt"


class JobFailed:
    """A failed job's return value: not float-castable, so Optuna's sweeper tells the study the
    trial FAILED (a NaN would make it raise and end the study)."""

    MARK = "snnrun job failed"

    def __init__(self, job: int, reason: str) -> None:
        self.job, self.reason = job, reason

    def __str__(self) -> str:
        return f"{self.MARK} (job {self.job}): {self.reason}"


def fail_job(run_dir: Path, job: int, error: Exception, user_error: bool) -> JobFailed:
    """Mark the job failed (a crash keeps its traceback in ``failed.txt``), print one line."""
    reason = one_line(error) if user_error else f"{type(error).__name__}: {one_line(error)}"
    details = "" if user_error else "\n\n" + "".join(traceback.format_exception(error))
    rundir = RunDir(run_dir)
    rundir.mark_failed(reason + details)
    where = "" if user_error else f"; the traceback is in {run_dir / FAILED_TXT}"
    print(f"snnrun: error: {reason}{where} (job {job}; the sweep goes on)", file=sys.stderr)
    return JobFailed(job, reason)


def stop_hint(args: list[str]) -> str:
    """For a sweep stopped between its jobs' epochs: how to continue a job."""
    if "-m" not in args and "--multirun" not in args:
        return ""
    return "; each job's dir keeps its finished epochs: continue one with snnrun resume=<job dir>"


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
                "status": f"failed: {failure.splitlines()[0]}" if failure else "ok",
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
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        logging.getLogger("alembic").setLevel(logging.WARNING)  # Optuna's storage: 7 INFO lines
        logging.getLogger("hydra_plugins.hydra_optuna_sweeper._impl").addFilter(_not_job_failed)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = job_rows(sweep_dir)
        write_csv(rows, sweep_dir / SUMMARY_CSV)
        table = summary_table(rows, sweep_dir)
        console.print(table)
        (sweep_dir / SUMMARY_TXT).write_text(_plain(table))
        FAILED.extend(r["job"] for r in rows if r["status"] != "ok")
        SWEEP_DIR.append(sweep_dir)


def _not_job_failed(record: logging.LogRecord) -> bool:
    """Optuna's sweeper logs a failed job's return value as "not float-castable" and its
    failure rate as if it stopped the study: snnrun printed the job's line already."""
    return JobFailed.MARK not in record.getMessage()


def _plain(table: Table) -> str:
    """The table as plain text, each row on one line however wide."""
    buffer = io.StringIO()
    Console(file=buffer, width=10_000, no_color=True, highlight=False).print(table)
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Every job's row with its values in full."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def summary_table(rows: list[dict[str, Any]], sweep_dir: Path) -> Table:
    """The jobs' table; overrides every job shares go in the title, long cells fold."""
    shared = _shared_overrides(rows)
    title = f"sweep {sweep_dir}" + (f" (every job: {_fmt_overrides(shared)})" if shared else "")
    cells = [{**r, "overrides": _fmt_overrides(o for o in r["overrides"].split()
                                                if o not in shared)} for r in rows]  # fmt: skip
    table = Table(title=title)
    for column in COLUMNS:
        text = column in ("overrides", "status")
        # text columns wrap between words (an override is a word) and fold only what is wider
        # than the cap; numbers keep their header's width
        widest = max((len(w) for c in cells for w in str(c[column]).split()), default=0)
        width = min(widest, 40 if column == "overrides" else 16) if text else len(column)
        table.add_column(column, justify="left" if text else "right", overflow="fold",
                         min_width=width)  # fmt: skip
    for c in cells:
        table.add_row(*(_fmt(c[k]) for k in COLUMNS), style=None if c["status"] == "ok" else "red")
    return table


def _shared_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """The overrides every job has (shown once, above the table)."""
    if len(rows) < 2:
        return []
    sets = [set(r["overrides"].split()) for r in rows]
    return [o for o in rows[0]["overrides"].split() if all(o in s for s in sets)]


def _fmt_overrides(overrides: Any) -> str:
    """``key=value`` overrides with float values as in the table (``optimizer.lr=0.0123``)."""
    out = []
    for o in overrides:
        key, eq, value = o.partition("=")
        number = _as_float(value) if eq else None
        out.append(o if number is None else f"{key}={_fmt(number)}")
    return " ".join(out)


def _as_float(value: str) -> float | None:
    """A float written as one (``0.5``, ``1e-3``); ints, words and lists are left alone."""
    if not any(c in value.lower() for c in ".e") or value.lower() in ("nan", "inf", "-inf"):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        small_or_big = value and not 1e-3 <= abs(value) < 1e4
        return f"{value:.4g}" if small_or_big else f"{value:.4f}"
    return str(value)
