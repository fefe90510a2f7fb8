"""The training loop: batch → encode → forward → loss → backward → step → log; test each epoch.

The trainer receives built objects and never names a neuron, dataset or model. At the end of
each epoch it hands the epoch's record to ``on_epoch_end`` (checkpointing, metrics file).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from snnrun.encoders import Encoder
from snnrun.loggers import RunLogger
from snnrun.losses import RateLoss
from snnrun.precision import Precision
from snnrun.progress import print_epoch, progress_bar


@dataclass
class TrainState:
    """What a checkpoint restores besides tensors: where the run is and what it has seen."""

    epoch: int = 0  # the next epoch to run
    global_step: int = 0
    best_acc: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


EpochHook = Callable[[TrainState, dict[str, Any], bool], None]


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        encoder: Encoder,
        loss_fn: RateLoss,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        precision: Precision,
        device: torch.device,
        T: int,
        logger: RunLogger,
        log_every: int = 10,
    ) -> None:
        self.model, self.encoder, self.loss_fn = model, encoder, loss_fn
        self.optimizer, self.scheduler, self.precision = optimizer, scheduler, precision
        self.device, self.T, self.logger, self.log_every = device, T, logger, log_every

    def fit(
        self,
        train_loader: DataLoader,
        test_loader: DataLoader,
        epochs: int,
        state: TrainState,
        on_epoch_end: EpochHook,
    ) -> TrainState:
        for epoch in range(state.epoch, epochs):
            start = time.perf_counter()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            lr = self.optimizer.param_groups[0]["lr"]
            train = self.train_epoch(train_loader, state, f"epoch {epoch} train")
            test = self.evaluate(test_loader, f"epoch {epoch} test")
            is_best = test["acc"] > state.best_acc or not state.history
            state.best_acc = max(state.best_acc, test["acc"])
            record = {
                "epoch": epoch,
                "train_loss": train["loss"],
                "train_acc": train["acc"],
                "test_loss": test["loss"],
                "test_acc": test["acc"],
                "max_test_acc": state.best_acc,
                "train_samples_per_s": train["samples_per_s"],
                "test_samples_per_s": test["samples_per_s"],
                "epoch_seconds": time.perf_counter() - start,
                "lr": lr,
            }
            if self.device.type == "cuda":
                record["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            if self.scheduler is not None:
                self.scheduler.step()
            state.epoch = epoch + 1
            state.history.append(record)
            print_epoch(record, epochs)
            self.logger.log_epoch(state.global_step, record)
            on_epoch_end(state, record, is_best)
        return state

    def train_epoch(self, loader: DataLoader, state: TrainState, label: str) -> dict[str, float]:
        self.model.train()
        totals = _Totals()
        with progress_bar() as bar:
            task = bar.add_task(label, total=len(loader.dataset), loss="")
            for x, y in loader:
                loss, correct = self.train_step(x, y)
                totals.add(loss, correct, len(y))
                state.global_step += 1
                if state.global_step % self.log_every == 0:
                    self.logger.log_step(state.global_step, {"loss": loss.item()})
                shown = "" if bar.disable else f"loss={loss.item():.4f}"  # no sync when hidden
                bar.update(task, advance=len(y), loss=shown)
        return totals.summary()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._to_device(x, y)
        with self.precision.autocast():
            out = self.model(self.encoder(x, self.T))
            loss = self.loss_fn(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.precision.scaler
        if scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(self.optimizer)
            scaler.update()
        return loss.detach(), (self.loss_fn.predict(out) == y).sum()

    @torch.no_grad()
    def evaluate(self, loader: DataLoader, label: str) -> dict[str, float]:
        self.model.eval()
        totals = _Totals()
        with progress_bar() as bar:
            task = bar.add_task(label, total=len(loader.dataset), loss="")
            for x, y in loader:
                x, y = self._to_device(x, y)
                with self.precision.autocast():
                    out = self.model(self.encoder(x, self.T))
                    loss = self.loss_fn(out, y)
                totals.add(loss, (self.loss_fn.predict(out) == y).sum(), len(y))
                bar.update(task, advance=len(y))
        return totals.summary()

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class _Totals:
    """Sample-weighted loss and accuracy over an epoch, plus throughput.

    Sums stay on the device (no host sync per step); :meth:`summary` reads them once.
    """

    def __init__(self) -> None:
        self.loss: torch.Tensor | float = 0.0
        self.correct: torch.Tensor | int = 0
        self.samples = 0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        self.loss = self.loss + loss.detach().double() * n
        self.correct = self.correct + correct
        self.samples += n

    def summary(self) -> dict[str, float]:
        n = max(self.samples, 1)
        loss, correct = float(self.loss), int(self.correct)  # the one sync of the epoch
        seconds = time.perf_counter() - self.start
        return {
            "loss": loss / n,
            "acc": correct / n,
            "samples_per_s": self.samples / seconds if seconds > 0 else 0.0,
        }
