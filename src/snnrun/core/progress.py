"""Console output: progress with samples/s and an ETA, and one summary line per epoch.

On a terminal a transient rich bar; otherwise (output to a file or a pipe) a plain line at
each tenth of a pass, once a few seconds have gone by since the last line, so a log shows
that a long epoch is moving. Neither reads the loss (no host sync for the console).
"""

from __future__ import annotations

import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(soft_wrap=True)


class SamplesPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} samples/s" if speed else "", style="cyan")


class LoggedProgress(Progress):
    """A :class:`Progress` that, when its live bar is off, prints a plain line each time a
    task passes one of ``parts`` equal parts of its total, at most one per ``every_s``."""

    def __init__(self, *columns: Any, parts: int = 10, every_s: float = 5.0, **kw: Any) -> None:
        super().__init__(*columns, **kw)
        self.parts, self.every_s = parts, every_s
        self._last: dict[TaskID, tuple[int, float]] = {}  # task -> (part shown, when)

    def update(self, task_id: TaskID, **kw: Any) -> None:
        super().update(task_id, **kw)
        if self.disable:
            self._maybe_print(self._tasks[task_id])

    def _maybe_print(self, task: Task) -> None:
        if not task.total or task.completed >= task.total or not task.elapsed:
            return
        part = int(task.completed * self.parts // task.total)
        shown, when = self._last.get(task.id, (0, task.start_time or 0.0))
        now = self.get_time()
        if part > shown and now - when >= self.every_s:
            self._last[task.id] = (part, now)
            console.print(progress_line(task), highlight=False)


def progress_line(task: Task) -> str:
    """``epoch 3 train  40% 1,024/2,560  812 samples/s  ETA 0:00:02``."""
    done, total, elapsed = task.completed, task.total or 0, task.elapsed or 0.0
    speed = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / speed if speed > 0 else 0.0
    return (
        f"{task.description}  {done / total:.0%} {done:,.0f}/{total:,.0f}  "
        f"{speed:,.0f} samples/s  ETA {datetime.timedelta(seconds=round(eta))}"
    )


def progress_bar() -> Progress:
    """A transient bar on a terminal; elsewhere plain lines (:class:`LoggedProgress`).
    ``disable`` is true off a terminal: the caller may skip work done only for the bar."""
    return LoggedProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        SamplesPerSecond(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[loss]}"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def print_epoch(record: dict[str, Any], epochs: int, added: dict[str, Any] | None = None) -> None:
    """One line per epoch: train, validation (with a split), test, speed, learning rate, then
    ``added`` (the keys callbacks added to the record: ``key=value``)."""
    val = (f"val_loss={record['val_loss']:.4f} val_acc={record['val_acc']:.4f}  "
           if "val_loss" in record else "")  # fmt: skip
    console.print(
        f"epoch {record['epoch'] + 1:>3}/{epochs}  "
        f"train_loss={record['train_loss']:.4f} train_acc={record['train_acc']:.4f}  {val}"
        f"test_loss={record['test_loss']:.4f} test_acc={record['test_acc']:.4f}  "
        f"max_test_acc={record['max_test_acc']:.4f}  "
        f"{record['train_samples_per_s']:,.0f}/{record['test_samples_per_s']:,.0f} samples/s "
        f"(train/test)  {record['epoch_seconds']:.1f}s  lr={record['lr']:.3g}"
        f"{''.join(f'  {escape(k)}={_value(v)}' for k, v in (added or {}).items())}",
        highlight=False,
    )


def _value(value: Any) -> str:
    """A record value on the console line: a number to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))
