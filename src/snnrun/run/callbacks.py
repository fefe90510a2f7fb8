"""snnrun's behaviours that write into the run dir, as callbacks on the trainer's one seam:
the checkpoints and the metrics file, the loggers, the figures of ``viz.every_n_epochs``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from snnrun.engine.callback import Callback, FitContext, Watch
from snnrun.run.checkpoint import Checkpoint
from snnrun.run.logger import RunLogger
from snnrun.run.rundir import RunDir

if TYPE_CHECKING:
    from snnrun.engine.trainer import TrainState


class Checkpoints(Callback):
    """Each epoch: ``checkpoint_latest.pt``, the ``metrics.jsonl`` line, and
    ``checkpoint_best.pt`` when ``watch`` (``checkpoint.monitor``) improves (the first epoch
    always), in that order (:meth:`RunDir.save_epoch`); then every callback's
    ``on_checkpoint``, the best first. ``keep`` false (``debug.checkpoint=false``): the
    metrics line only. ``payload`` builds the checkpoint on every rank (it gathers their RNG
    states); rank 0 (``main``) writes."""

    def __init__(self, rundir: RunDir, watch: Watch, payload: Callable[[TrainState], Checkpoint],
                 keep: bool, main: bool) -> None:  # fmt: skip
        self.rundir, self.watch, self.payload = rundir, watch, payload
        self.keep, self.main = keep, main

    def on_fit_start(self, run: FitContext) -> None:
        state = run.state
        if state.best_value is None and state.history:  # a checkpoint from before the key
            state.best_value = self.watch.best_of(state.history)

    def on_epoch_end(self, run: FitContext, record: dict[str, Any]) -> None:
        state = run.state
        is_best = self.watch.improves(record, state.best_value) or len(state.history) == 1
        if is_best:
            state.best_value = record[self.watch.monitor]
        if not self.keep:
            if self.main:
                self.rundir.append_metrics(record)
            return
        payload = self.payload(state)
        if self.main:
            self.rundir.save_epoch(payload, record, is_best)
            if is_best:
                run.checkpoint_written(self.rundir.checkpoint("best"))
            run.checkpoint_written(self.rundir.checkpoint("latest"))


class Logging(Callback):
    """The run's loggers (``logger=``): started and finished with the fit, the training loss
    every ``log_every`` steps (a host sync, only for loggers that want it), each epoch's
    record as the callbacks left it, each epoch's checkpoints."""

    def __init__(self, logger: RunLogger, rundir: RunDir, run_id: str, config: dict[str, Any],
                 state: dict[str, Any] | None, log_every: int) -> None:  # fmt: skip
        self.logger, self.rundir, self.run_id, self.config = logger, rundir, run_id, config
        self.state, self.log_every = state, log_every
        self.started = False
        self.best: int | None = None  # the epoch of the last checkpoint_best.pt written

    def on_fit_start(self, run: FitContext) -> None:
        self.logger.start(self.rundir, self.run_id, self.config, self.state, run.state.history)
        self.started = True

    def on_train_batch_end(self, run: FitContext, batch: Any, loss: torch.Tensor) -> None:
        step = run.state.global_step
        if self.logger.wants_steps and step % self.log_every == 0:
            self.logger.log_step(step, {"loss": loss.item()})

    def on_epoch_end(self, run: FitContext, record: dict[str, Any]) -> None:
        self.logger.log_epoch(run.state.global_step, record)

    def on_checkpoint(self, run: FitContext, path: Path) -> None:
        epoch = run.state.history[-1]["epoch"]
        if path == self.rundir.checkpoint("best"):
            self.best = epoch
        elif path == self.rundir.checkpoint("latest"):
            self.logger.log_checkpoint(self.rundir, epoch, self.best == epoch)

    def on_fit_end(self, run: FitContext, record: dict[str, Any] | None) -> None:
        if self.started:
            self.logger.finish()


class TrainingFigures(Callback):
    """``viz.every_n_epochs``: the cheap figures (curves, firing rates) into the run dir every
    ``every`` epochs, and to the loggers."""

    def __init__(self, rundir: RunDir, every: int, fmt: str, logger: RunLogger) -> None:
        self.rundir, self.every, self.fmt, self.logger = rundir, every, fmt, logger

    def on_epoch_end(self, run: FitContext, record: dict[str, Any]) -> None:
        if self.every <= 0 or run.state.epoch % self.every:
            return
        from snnrun.report.render import render_cheap

        figures = render_cheap(self.rundir, run.state.history, self.fmt)
        self.logger.log_figures(figures, run.state.global_step)
