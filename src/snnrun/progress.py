"""Console output: a rich progress bar with samples/s, and one summary line per epoch."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

console = Console(soft_wrap=True)


class SamplesPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} samples/s" if speed else "", style="cyan")


def progress_bar() -> Progress:
    """A transient bar, drawn only on a terminal (logs and CI stay clean)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        SamplesPerSecond(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[loss]}"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def print_epoch(record: dict[str, Any], epochs: int) -> None:
    console.print(
        f"epoch {record['epoch']:>3}/{epochs - 1}  "
        f"train_loss={record['train_loss']:.4f} train_acc={record['train_acc']:.4f}  "
        f"test_loss={record['test_loss']:.4f} test_acc={record['test_acc']:.4f}  "
        f"max_test_acc={record['max_test_acc']:.4f}  "
        f"{record['train_samples_per_s']:,.0f}/{record['test_samples_per_s']:,.0f} samples/s "
        f"(train/test)  {record['epoch_seconds']:.1f}s  lr={record['lr']:.3g}",
        highlight=False,
    )
