"""snnrun's own behaviours of the training loop, written as callbacks on the one seam: the
divergence guard, early stopping and the console (the training progress bar and the epoch's
line). The run dir's (checkpoints, loggers, figures) are in :mod:`snnrun.run.callbacks`, the
profiler in :mod:`snnrun.engine.profile`."""

from __future__ import annotations

from typing import Any

import torch

from snnrun.core.errors import SnnrunError
from snnrun.core.progress import console, print_epoch, progress_bar
from snnrun.engine.callback import Callback, FitContext, Watch


class DivergedError(SnnrunError):
    """Parameters or the loss became NaN/inf."""


class DivergenceGuard(Callback):
    """Once per epoch, first: every parameter and buffer finite (one sync) and the training
    loss too, else the run ends before anything is written, naming the first bad tensor,
    whether a checkpoint holds the last good weights, and what to try."""

    def __init__(self, lr: Any, clip: float | None, precision: str, keeps_checkpoints: bool):
        self.lr, self.clip, self.precision = lr, clip, precision
        self.keeps_checkpoints = keeps_checkpoints

    def on_epoch_end(self, run: FitContext, record: dict[str, Any]) -> None:
        tensors = [*run.model.named_parameters(), *run.model.named_buffers()]
        floats = [(n, t) for n, t in tensors if t.is_floating_point()]
        loss = record["train_loss"]
        if floats and bool(torch.stack([t.isfinite().all() for _, t in floats]).all()):
            if loss == loss and abs(loss) != float("inf"):
                return
            bad = f"the training loss is {loss}"
        else:
            name = next(n for n, t in floats if not bool(t.isfinite().all()))
            bad = f"parameter {name} holds NaN/inf"
        epoch = record["epoch"]  # the epochs done before this one: the last good checkpoint
        if self.keeps_checkpoints and len(run.state.history) > 1:
            raise DivergedError(f"training diverged in epoch {epoch + 1}: {bad}; the last good "
                                f"checkpoint (epoch {epoch}) is kept (try "
                                f"{self._what_to_try()})")  # fmt: skip
        raise DivergedError(
            f"training diverged in epoch {epoch + 1}: {bad}; no checkpoint was written, so there "
            f"is nothing to resume: start again with {self._what_to_try()}"
        )

    def _what_to_try(self) -> str:
        """After a divergence: the usual fixes this run has not applied yet."""
        tries = [f"a lower optimizer.lr (it is {self.lr})"]
        tries += [] if self.clip else ["optimizer.clip_grad_norm=1.0"]
        tries += ["other surrogate/neuron values"]
        tries += [] if self.precision == "fp32" else ["precision=fp32"]
        return f"{', '.join(tries[:-1])} or {tries[-1]}"


class EarlyStopping(Callback):
    """``early_stopping`` (``watch`` None: off): count the epochs without an improvement of
    more than ``min_delta``; at ``patience`` of them (0 or 1: the first) the record says
    ``early_stop`` and the run ends. An improving epoch never stops it. Its state is the
    run's (``stop_best``, ``stale_epochs``, ``stopped_early``)."""

    def __init__(self, watch: Watch | None, patience: int = 5, min_delta: float = 0.0) -> None:
        self.watch, self.patience, self.min_delta = watch, patience, min_delta

    def on_fit_start(self, run: FitContext) -> None:
        state = run.state
        if state.stopped_early:
            console.print(
                f"the run stopped early after epoch {state.epoch} (early_stopping: no "
                f"{self.watch.monitor if self.watch else 'monitored'} improvement in "
                f"{_epochs(state.stale_epochs)}); nothing to train"
            )

    def on_epoch_end(self, run: FitContext, record: dict[str, Any]) -> None:
        if self.watch is None:
            return
        state = run.state
        if self.watch.improves(record, state.stop_best, self.min_delta):
            state.stop_best, state.stale_epochs = record[self.watch.monitor], 0
            return
        state.stale_epochs += 1
        if state.stale_epochs >= self.patience:
            state.stopped_early = record["early_stop"] = True  # a flag, not a metric

    def on_fit_end(self, run: FitContext, record: dict[str, Any] | None) -> None:
        if self.watch is not None and record is not None and record.get("early_stop"):
            console.print(f"early stop: {self.watch.monitor} did not improve by more than "
                          f"{self.min_delta} in {_epochs(run.state.stale_epochs)} "
                          f"(patience {self.patience})")  # fmt: skip


class ConsoleProgress(Callback):
    """The training pass's progress bar (samples/s, ETA; the loss shown only on a terminal,
    the one place it costs a sync) and the epoch's line, with the keys the callbacks added."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.task: Any = None
        self.batches = 0

    def on_train_batch_end(self, run: FitContext, batch: Any, loss: torch.Tensor) -> None:
        if self.bar is None:
            self.bar = progress_bar()
            self.bar.start()
            total = len(run.train_loader.dataset)
            self.task = self.bar.add_task(f"epoch {run.state.epoch + 1} train", total=total,
                                          loss="")  # fmt: skip
        shown = "" if self.bar.disable else f"loss={loss.item():.4f}"  # no sync when hidden
        self.bar.update(self.task, advance=len(batch[1]), loss=shown)
        self.batches += 1
        if self.batches >= len(run.train_loader):  # before the test pass opens its own bar
            self._close()

    def on_epoch_end(self, run: FitContext, record: dict[str, Any]) -> None:
        self._close()
        print_epoch(record, run.epochs, run.added)

    def on_fit_end(self, run: FitContext, record: dict[str, Any] | None) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        self.bar, self.batches = None, 0


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"
