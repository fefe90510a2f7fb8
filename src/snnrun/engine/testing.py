"""The one loss step and the one test pass.

:class:`LossStep` turns a batch into (output spikes ``[T, N, classes]``, loss): device, encoder,
autocast, network, loss. :func:`test_pass` runs a loader through a network with it, counting
accuracy and loss (:class:`Totals`) and the monitors (firing rates, SynOps). The trainer's test
epoch, ``snnrun eval`` and ``scripts/results.py`` all call it; training uses the same step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from snnrun.core.distributed import sum_over_ranks
from snnrun.core.progress import progress_bar
from snnrun.core.stop import check_stop
from snnrun.engine.loss import RateLoss
from snnrun.engine.monitor import Monitor, monitoring
from snnrun.engine.precision import Precision


@dataclass
class LossStep:
    """A batch ``x`` ``[N, ...]`` (or ``[N, T, ...]`` sequences) and labels ``y`` ``[N]`` →
    (output spikes ``[T, N, classes]``, loss)."""

    device: torch.device
    encoder: Callable[[torch.Tensor, int], torch.Tensor]
    loss: RateLoss
    precision: Precision
    T: int

    def __call__(
        self, net: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        with self.precision.autocast():
            out = net(self.encoder(x, self.T))
            return out, self.loss(out, y)


@torch.no_grad()
def test_pass(
    net: nn.Module,
    loader: DataLoader,
    step: LossStep,
    monitors: Sequence[Monitor] = (),
    label: str = "test",
) -> dict[str, Any]:
    """``net`` in eval mode over ``loader``: ``{"loss", "acc", "samples_per_s", "monitors"}``
    (summed over ranks under torchrun)."""
    net.eval()
    totals = Totals()
    with progress_bar() as bar, monitoring(list(monitors)) as counted:
        task = bar.add_task(label, total=len(loader.dataset), loss="")
        for x, y in loader:
            y = y.to(step.device, non_blocking=True)
            out, loss = step(net, x, y)
            totals.add(loss, (step.loss.predict(out) == y).sum(), len(y))
            bar.update(task, advance=len(y))
            check_stop()
    return {**totals.summary(), "monitors": counted.summary()}


class Totals:
    """Sample-weighted loss and accuracy over a pass, plus throughput.

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
        """Over every rank: one all-reduce, the one host sync of the pass."""
        sums = torch.stack([torch.as_tensor(v).double() for v in (self.loss, self.correct)])
        sums = torch.cat([sums, torch.tensor([float(self.samples)], device=sums.device).double()])
        loss, correct, samples = sum_over_ranks(sums).tolist()
        n = max(samples, 1)
        seconds = time.perf_counter() - self.start
        return {
            "loss": loss / n,
            "acc": correct / n,
            "samples_per_s": samples / seconds if seconds > 0 else 0.0,
        }
