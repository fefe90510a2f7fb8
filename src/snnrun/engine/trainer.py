"""The training loop: batch → encode → forward → loss → backward → step; test each epoch.

The trainer receives built objects and reads no config: the run's built pieces, its
:class:`TrainSettings` and its callbacks (:mod:`snnrun.engine.callback`), its one seam. It
trains: the one loss step, gradient clipping, the optimizer and scheduler steps, the
validation and test passes (the one test pass of :mod:`snnrun.engine.testing`), the epoch's
record. Everything else (checkpoints, the metrics file, loggers, the console, early stopping,
the divergence guard, the profiler, figures) is a callback, called in the order given:
``on_train_batch_end`` after each step, ``on_epoch_end`` on each record (the keys a callback
returns join the record before the next callback sees it), ``on_fit_end`` however fit ends.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from snnrun.core.distributed import active
from snnrun.core.errors import SnnrunError
from snnrun.core.stop import check_stop
from snnrun.engine.callback import Callback, FitContext
from snnrun.engine.testing import LossStep, Totals, test_pass

if TYPE_CHECKING:
    from snnrun.run.build import Run


@dataclass
class TrainState:
    """What a checkpoint restores besides tensors: where the run is and what it has seen."""

    epoch: int = 0  # the next epoch to run
    global_step: int = 0
    best_acc: float = 0.0  # the best test accuracy (reported, never selected on unless asked)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None  # checkpoint.monitor's best value so far
    stop_best: float | None = None  # early_stopping.monitor's best value so far
    stale_epochs: int = 0  # epochs since it last improved by more than min_delta
    stopped_early: bool = False


@dataclass(frozen=True)
class TrainSettings:
    """The values training itself needs (``T``, ``optimizer.clip_grad_norm``,
    ``accumulate_grad_batches``: the session reads them from the config)."""

    T: int  # time steps per sample
    clip_grad_norm: float | None = None  # max total gradient L2 norm (None: no clipping)
    accumulate: int = 1  # batches whose gradients make one optimizer step

    @classmethod
    def of(cls, config: dict[str, Any]) -> TrainSettings:
        """From a run config (a config from before ``accumulate_grad_batches`` steps every
        batch)."""
        k = config.get("accumulate_grad_batches", 1)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise SnnrunError(
                f"accumulate_grad_batches must be a whole number >= 1, got {k!r}; set "
                "accumulate_grad_batches=1 (no accumulation) or the batches per optimizer step"
            )
        return cls(config["T"], config["optimizer"].get("clip_grad_norm") or None, k)

    def optimizer_steps(self, batches: int) -> int:
        """Optimizer steps in an epoch of ``batches`` (a last, smaller group steps too)."""
        return -(-batches // self.accumulate)


class Trainer:
    """Fits ``net`` (the run's model, possibly compiled) with the run's other built pieces."""

    def __init__(self, run: Run, net: nn.Module, eval_net: nn.Module | None = None, *,
                 settings: TrainSettings, callbacks: Sequence[Callback] = ()) -> None:  # fmt: skip
        """``net`` trains (DDP-wrapped under torchrun); ``eval_net`` (default ``net``) tests,
        unwrapped so that ranks with unequal test shares never wait on each other."""
        self.run, self.net = run, net
        self.eval_net = eval_net if eval_net is not None else net  # a compiled net has no bool()
        self.step = LossStep(run.device, run.encoder, run.loss, run.precision, settings.T)
        self.clip, self.accumulate = settings.clip_grad_norm, settings.accumulate
        self.per_step = getattr(run.scheduler, "per_step", False) is True  # else once per epoch
        self.clipped = (
            [p for g in run.optimizer.param_groups for p in g["params"]] if self.clip else []
        )
        self.collective = active()
        self.callbacks = list(callbacks)

    def fit(self, epochs: int, state: TrainState, directory: Path | None = None) -> TrainState:
        """Train from ``state.epoch`` to ``epochs`` (``directory``: the run dir, for the
        callbacks); the ``on_fit_end`` of every callback whose ``on_fit_start`` ran runs
        however the fit ends."""
        fit = FitContext(self.run, state, directory, epochs, self.callbacks)
        started: list[Callback] = []
        last: dict[str, Any] | None = None
        try:
            for callback in self.callbacks:
                callback.on_fit_start(fit)
                started.append(callback)
            for record in self._epochs(fit):
                last = record
        finally:
            _each(started, lambda cb: cb.on_fit_end(fit, last))
        return state

    def _epochs(self, fit: FitContext) -> Any:
        """Each epoch's record, once every callback has seen it; the loop ends when
        ``state.stopped_early`` is set (also before the first epoch)."""
        run, state = self.run, fit.state
        for epoch in range(state.epoch, fit.epochs):
            if state.stopped_early:
                return
            start = time.perf_counter()
            if run.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(run.device)
            lr = run.optimizer.param_groups[0]["lr"]
            for loader in (run.train_loader, run.test_loader, run.val_loader):
                if loader is not None:
                    loader.batch_sampler.set_epoch(epoch)
            train = self.train_epoch(run.train_loader, fit)
            val, test = self.evaluate(fit, epoch)
            state.best_acc = max(state.best_acc, test["acc"])
            record = {
                "epoch": epoch,
                "global_step": state.global_step,
                "train_loss": train["loss"],
                "train_acc": train["acc"],
                "test_loss": test["loss"],
                "test_acc": test["acc"],
                "max_test_acc": state.best_acc,
                "train_samples_per_s": train["samples_per_s"],
                "test_samples_per_s": test["samples_per_s"],
                "epoch_seconds": time.perf_counter() - start,
                "lr": lr,
                **({"val_loss": val["loss"], "val_acc": val["acc"]} if val else {}),
                **test["monitors"],
            }
            if run.device.type == "cuda":
                record["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated(run.device) / 2**20
            if run.scheduler is not None and not self.per_step:
                run.scheduler.step()
            state.epoch = epoch + 1
            state.history.append(record)
            fit.added = {}
            for callback in self.callbacks:
                added = _plain(callback.on_epoch_end(fit, record))
                record.update(added)
                fit.added.update(added)
            yield record

    def evaluate(self, fit: FitContext, epoch: int) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """The validation pass (None without a validation split) and the test pass, between the
        callbacks' ``on_evaluate_start`` and ``on_evaluate_end`` (the latter however it ends)."""
        run = self.run
        started = []
        try:
            for callback in self.callbacks:
                _hook(callback, "on_evaluate_start")(fit)
                started.append(callback)
            val = (test_pass(self.eval_net, run.val_loader, self.step, (), f"epoch {epoch + 1} val")
                   if run.val_loader is not None else None)  # fmt: skip
            test = test_pass(self.eval_net, run.test_loader, self.step, run.monitors,
                             f"epoch {epoch + 1} test")  # fmt: skip
        finally:
            _each(started, lambda cb: _hook(cb, "on_evaluate_end")(fit))
        return val, test

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The one loss step (:class:`~snnrun.engine.testing.LossStep`) on the training net."""
        return self.step(self.net, x, y)

    def train_epoch(self, loader: DataLoader, fit: FitContext) -> dict[str, Any]:
        """One pass over ``loader``; with ``accumulate_grad_batches`` k, each group of k batches
        (the epoch's last group may be smaller) adds ``loss / group size`` per batch to the
        gradients and makes one optimizer step: the step of one batch k times larger."""
        self.net.train()
        totals = Totals()
        k, batches = self.accumulate, len(loader)
        starts = _overriding(self.callbacks, "on_train_batch_start")  # no no-op call per batch
        for i, (x, y) in enumerate(loader):
            y = y.to(self.run.device, non_blocking=True)
            for start in starts:
                x, y = start(fit, (x, y)) or (x, y)
            group = min(k, batches - i // k * k)
            last = i % k == group - 1
            loss, correct = self.train_step(x, y, first=i % k == 0, last=last, share=1 / group)
            if self.per_step and last:
                self.run.scheduler.step()
            totals.add(loss, correct, len(y))
            fit.state.global_step += 1
            fit.stepped = last
            for callback in self.callbacks:
                callback.on_train_batch_end(fit, (x, y), loss)
            check_stop(self.collective)
        return totals.summary()

    def train_step(
        self, x: torch.Tensor, y: torch.Tensor, first: bool = True, last: bool = True,
        share: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Forward and backward of one batch, adding the gradient of ``share x loss`` (the
        gradients are zeroed when ``first``); the optimizer steps when ``last`` (DDP syncs the
        gradients only then). Returns the batch's loss and its correct predictions (against
        the most probable class of soft targets ``y [N, classes]``)."""
        optimizer, scaler = self.run.optimizer, self.run.precision.scaler
        no_sync = getattr(self.net, "no_sync", None)
        with no_sync() if no_sync is not None and not last else contextlib.nullcontext():
            out, loss = self.forward(x, y)
            if first:
                optimizer.zero_grad(set_to_none=True)
            part = loss if share == 1.0 else loss * share
            (part if scaler is None else scaler.scale(part)).backward()
        if last and scaler is None:
            self._clip_gradients()
            optimizer.step()
        elif last:
            if self.clip:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            self._clip_gradients()
            scaler.step(optimizer)
            scaler.update()
        labels = y if y.dim() == 1 else y.argmax(-1)
        return loss.detach(), (self.run.loss.predict(out) == labels).sum()

    def _clip_gradients(self) -> None:
        """``clip_grad_norm``: scale every gradient so their total L2 norm is at most the
        limit (``torch.nn.utils.clip_grad_norm_``; non-finite norms are left to the
        divergence guard and the GradScaler)."""
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.clipped, self.clip)


def _plain(added: dict[str, Any] | None) -> dict[str, Any]:
    """A callback's keys for the record, a one-element tensor as its number."""
    return {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in (added or {}).items()}


def _hook(callback: Callback, name: str) -> Any:
    """``callback``'s hook ``name``; one of ``OPTIONAL_HOOKS`` that a callback written without
    subclassing :class:`Callback` lacks does nothing (the base class's)."""
    return getattr(callback, name, None) or getattr(Callback(), name)


def _overriding(callbacks: Sequence[Callback], name: str) -> list[Any]:
    """The hooks ``name`` of the callbacks that define one (not the base class's no-op)."""
    base = getattr(Callback, name)
    return [getattr(cb, name) for cb in callbacks if getattr(type(cb), name, base) is not base]


def _each(callbacks: Sequence[Callback], call: Any) -> None:
    """``call(callback)`` for every callback, even when one fails (the first failure is
    raised after)."""
    failure: BaseException | None = None
    for callback in callbacks:
        try:
            call(callback)
        except Exception as e:  # each callback raises its own kinds
            failure = failure or e
    if failure is not None:
        raise failure
