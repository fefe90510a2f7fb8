"""The training loop: batch → encode → forward → loss → backward → step → log; test each epoch.

The trainer receives built objects and never names a neuron, dataset or model. Training and
testing share one loss step, and the test epoch is the one test pass
(:mod:`snnrun.engine.testing`). At the end of each epoch the
parameters are checked for non-finite values (one host sync) before the epoch's record goes to
``on_epoch_end`` (checkpointing, metrics file), so a diverged run never overwrites its last
good checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from snnrun.core.distributed import active
from snnrun.core.errors import SnnrunError
from snnrun.core.progress import console, print_epoch, progress_bar
from snnrun.core.stop import check_stop
from snnrun.engine.profile import StepProfiler
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


EpochHook = Callable[[TrainState, dict[str, Any], bool], None]
RECORD_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")
VAL_KEYS = ("val_loss", "val_acc")


class Watch:
    """A record key watched for improvement (the ``checkpoint`` and ``early_stopping``
    sections): ``monitor`` (``auto``: ``val_acc`` with a validation split, else ``test_acc``)
    and ``mode`` (``max`` or ``min``); a bad one is one line naming the section."""

    def __init__(self, section: str, options: dict[str, Any], has_val: bool) -> None:
        monitor = options.get("monitor") or "auto"
        self.monitor = ("val_acc" if has_val else "test_acc") if monitor == "auto" else monitor
        self.mode = options.get("mode", "max")
        if monitor == "auto" and self.mode != "max":
            raise SnnrunError(f"{section}.monitor=auto watches an accuracy ({self.monitor}); "
                              f"use {section}.mode=max, or name the key to watch")  # fmt: skip
        known = RECORD_KEYS + (VAL_KEYS if has_val else ())
        if self.monitor not in known:
            hint = " (val_* needs dataset.val_fraction > 0)" if self.monitor in VAL_KEYS else ""
            raise SnnrunError(f"{section}.monitor={self.monitor!r} is no key of the epoch record; "
                              f"use one of {', '.join(known)}{hint}")  # fmt: skip
        if self.mode not in ("max", "min"):
            raise SnnrunError(f"{section}.mode={self.mode!r}; use max or min")

    def best_of(self, history: list[dict[str, Any]]) -> float | None:
        values = [r[self.monitor] for r in history if self.monitor in r]
        if not values:
            return None
        return max(values) if self.mode == "max" else min(values)

    def improves(self, record: dict[str, Any], best: float | None, delta: float = 0.0) -> bool:
        value = record[self.monitor]
        if best is None:
            return True
        return value > best + delta if self.mode == "max" else value < best - delta


def check_early_stopping(options: dict[str, Any]) -> None:
    """``early_stopping.patience`` (a whole number of epochs, 0: stop at the first epoch
    without an improvement) and ``min_delta`` (not negative): a bad one is one line."""
    patience, delta = options.get("patience", 5), options.get("min_delta", 0.0)
    if not isinstance(patience, int) or isinstance(patience, bool) or patience < 0:
        raise SnnrunError(f"early_stopping.patience must be a non-negative integer (0: stop at "
                          f"the first epoch without an improvement), got {patience!r}")  # fmt: skip
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or delta < 0:
        raise SnnrunError(f"early_stopping.min_delta must be >= 0 (the improvement that counts), "
                          f"got {delta!r}")  # fmt: skip


def watches(config: dict[str, Any], has_val: bool) -> tuple[Watch, Watch | None]:
    """``checkpoint``'s watch and ``early_stopping``'s (None: off, ``monitor: null``), each
    checked: a bad key, mode, patience or min_delta is one line."""
    stopping = config.get("early_stopping") or {}
    check_early_stopping(stopping)
    best = Watch("checkpoint", config.get("checkpoint", {}), has_val)
    return best, Watch("early_stopping", stopping, has_val) if stopping.get("monitor") else None


class DivergedError(SnnrunError):
    """Parameters or the loss became NaN/inf."""


class Trainer:
    """Fits ``net`` (the run's model, possibly compiled) with the run's other built pieces."""

    def __init__(self, run: Run, net: nn.Module, eval_net: nn.Module | None = None) -> None:
        """``net`` trains (DDP-wrapped under torchrun); ``eval_net`` (default ``net``) tests,
        unwrapped so that ranks with unequal test shares never wait on each other."""
        self.run, self.net = run, net
        self.eval_net = eval_net if eval_net is not None else net  # a compiled net has no bool()
        self.step = LossStep(run.device, run.encoder, run.loss, run.precision, run.config["T"])
        self.log_every = run.config["log_every"]
        self.clip = run.config["optimizer"].get("clip_grad_norm")  # max total gradient norm
        self.clipped = (
            [p for g in run.optimizer.param_groups for p in g["params"]] if self.clip else []
        )
        self.collective = active()
        self.best, self.stopping = watches(run.config, run.val_loader is not None)
        stopping = run.config.get("early_stopping") or {}
        self.patience, self.min_delta = stopping.get("patience", 5), stopping.get("min_delta", 0.0)
        self.profiler: StepProfiler | None = None  # debug=profile: set by the session

    def fit(self, epochs: int, state: TrainState, on_epoch_end: EpochHook) -> TrainState:
        if state.stopped_early:
            console.print(
                f"the run stopped early after epoch {state.epoch} (early_stopping: no "
                f"{self.stopping.monitor if self.stopping else 'monitored'} improvement in "
                f"{_epochs(state.stale_epochs)}); nothing to train"
            )
            return state
        if state.best_value is None and state.history:  # a checkpoint from before the key
            state.best_value = self.best.best_of(state.history)
        try:
            self._epochs(epochs, state, on_epoch_end)
        finally:
            if self.profiler is not None:
                self.profiler.finish()
        return state

    def _epochs(self, epochs: int, state: TrainState, on_epoch_end: EpochHook) -> None:
        run = self.run
        for epoch in range(state.epoch, epochs):
            start = time.perf_counter()
            if run.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(run.device)
            lr = run.optimizer.param_groups[0]["lr"]
            for loader in (run.train_loader, run.test_loader, run.val_loader):
                if loader is not None:
                    loader.batch_sampler.set_epoch(epoch)
            train = self.train_epoch(run.train_loader, state, f"epoch {epoch + 1} train")
            val = (test_pass(self.eval_net, run.val_loader, self.step, (), f"epoch {epoch + 1} val")
                   if run.val_loader is not None else None)  # fmt: skip
            test = test_pass(self.eval_net, run.test_loader, self.step, run.monitors,
                             f"epoch {epoch + 1} test")  # fmt: skip
            self._check_finite(epoch, train, state)
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
            is_best = self.best.improves(record, state.best_value) or not state.history
            if is_best:
                state.best_value = record[self.best.monitor]
            if self.stopping is not None:
                self._watch_for_stop(record, state)
            if run.device.type == "cuda":
                record["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated(run.device) / 2**20
            if run.scheduler is not None:
                run.scheduler.step()
            state.epoch = epoch + 1
            state.history.append(record)
            print_epoch(record, epochs)
            run.logger.log_epoch(state.global_step, record)
            on_epoch_end(state, record, is_best)
            if state.stopped_early:
                console.print(f"early stop: {self.stopping.monitor} did not improve by more "  # type: ignore[union-attr]
                              f"than {self.min_delta} in {_epochs(state.stale_epochs)} "
                              f"(patience {self.patience})")  # fmt: skip
                break

    def _watch_for_stop(self, record: dict[str, Any], state: TrainState) -> None:
        """``early_stopping``: count the epochs without an improvement of more than
        ``min_delta``; at ``patience`` of them (0 or 1: the first) the record says
        ``early_stop`` and the run ends. An improving epoch never stops it."""
        assert self.stopping is not None
        if self.stopping.improves(record, state.stop_best, self.min_delta):
            state.stop_best, state.stale_epochs = record[self.stopping.monitor], 0
            return
        state.stale_epochs += 1
        if state.stale_epochs >= self.patience:
            state.stopped_early = record["early_stop"] = True

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The one loss step (:class:`~snnrun.engine.testing.LossStep`) on the training net."""
        return self.step(self.net, x, y)

    def train_epoch(self, loader: DataLoader, state: TrainState, label: str) -> dict[str, Any]:
        self.net.train()
        totals = Totals()
        with progress_bar() as bar:
            task = bar.add_task(label, total=len(loader.dataset), loss="")
            for x, y in loader:
                loss, correct = self.train_step(x, y.to(self.run.device, non_blocking=True))
                if self.profiler is not None:
                    self.profiler.step()
                totals.add(loss, correct, len(y))
                state.global_step += 1
                if self.run.logger.wants_steps and state.global_step % self.log_every == 0:
                    self.run.logger.log_step(state.global_step, {"loss": loss.item()})
                shown = "" if bar.disable else f"loss={loss.item():.4f}"  # no sync when hidden
                bar.update(task, advance=len(y), loss=shown)
                check_stop(self.collective)
        return totals.summary()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, loss = self.forward(x, y)
        optimizer, scaler = self.run.optimizer, self.run.precision.scaler
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            self._clip_gradients()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            if self.clip:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            self._clip_gradients()
            scaler.step(optimizer)
            scaler.update()
        return loss.detach(), (self.run.loss.predict(out) == y).sum()

    def _clip_gradients(self) -> None:
        """``optimizer.clip_grad_norm``: scale every gradient so their total L2 norm is at most
        the limit (``torch.nn.utils.clip_grad_norm_``; non-finite norms are left to the
        divergence check and the GradScaler)."""
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.clipped, self.clip)

    def _check_finite(self, epoch: int, train: dict[str, Any], state: TrainState) -> None:
        """One sync: every parameter and buffer finite, else name the first bad tensor, say
        whether a checkpoint holds the last good weights, and what to try."""
        tensors = [*self.run.model.named_parameters(), *self.run.model.named_buffers()]
        floats = [(n, t) for n, t in tensors if t.is_floating_point()]
        if floats and bool(torch.stack([t.isfinite().all() for _, t in floats]).all()):
            if train["loss"] == train["loss"] and abs(train["loss"]) != float("inf"):
                return
            bad = f"the training loss is {train['loss']}"
        else:
            name = next(n for n, t in floats if not bool(t.isfinite().all()))
            bad = f"parameter {name} holds NaN/inf"
        kept = state.history and (self.run.config.get("debug") or {}).get("checkpoint", True)
        if kept:
            raise DivergedError(f"training diverged in epoch {epoch + 1}: {bad}; the last good "
                                f"checkpoint (epoch {state.epoch}) is kept (try "
                                f"{self._what_to_try()})")  # fmt: skip
        raise DivergedError(
            f"training diverged in epoch {epoch + 1}: {bad}; no checkpoint was written, so there "
            f"is nothing to resume: start again with {self._what_to_try()}"
        )

    def _what_to_try(self) -> str:
        """After a divergence: the usual fixes this run has not applied yet."""
        config = self.run.config
        tries = [f"a lower optimizer.lr (it is {config['optimizer'].get('lr')})"]
        tries += [] if self.clip else ["optimizer.clip_grad_norm=1.0"]
        tries += ["other surrogate/neuron values"]
        tries += [] if config["precision"]["name"] == "fp32" else ["precision=fp32"]
        return f"{', '.join(tries[:-1])} or {tries[-1]}"


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"
