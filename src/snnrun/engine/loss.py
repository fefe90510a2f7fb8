"""Losses on the output spikes ``[T, N, classes]``; each also says which class it predicts.

- ``mse_rate``: MSE between the firing rate (mean over T) and the one-hot label (the
  SpikingJelly tutorials' default).
- ``ce_rate``: cross-entropy with the firing rates as logits.
- ``ce_count``: snnTorch's ``ce_rate_loss``: cross-entropy of the output at every step,
  averaged over T.
Prediction is the argmax of the firing rate (equivalently, of the spike count).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from snnrun.core.registry import Registry


class RateLoss:
    """Base: ``loss(out, y)`` and ``predict(out)`` on outputs ``[T, N, classes]``."""

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return out.mean(0).argmax(-1)


LOSSES: Registry[type[RateLoss]] = Registry("loss")


@LOSSES.register("mse_rate")
class MSERate(RateLoss):
    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        rate = out.float().mean(0)
        return F.mse_loss(rate, F.one_hot(y, rate.shape[-1]).to(rate.dtype))


@LOSSES.register("ce_rate")
class CERate(RateLoss):
    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.float().mean(0), y)


@LOSSES.register("ce_count")
class CECount(RateLoss):
    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        T = out.shape[0]
        logits = out.float().flatten(0, 1)  # [T*N, classes]
        return F.cross_entropy(logits, y.repeat(T))


def build_loss(options: dict[str, Any]) -> RateLoss:
    options = dict(options)
    return LOSSES.get(options.pop("name"))(**options)
