"""Losses on the output spikes ``[T, N, classes]``; each also says which class it predicts.

- ``mse_rate``: MSE between the firing rate (mean over T) and the one-hot label (the
  SpikingJelly tutorials' default).
- ``ce_rate``: cross-entropy with the firing rates as logits.
- ``ce_count``: snnTorch's ``ce_rate_loss``: cross-entropy of the output at every step,
  averaged over T.
Prediction is the argmax of the firing rate (equivalently, of the spike count):
:func:`rate_predict`, also the default of a user's loss (``_target_``) without ``predict``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from snnrun.core import protocols
from snnrun.core.plugin import PluginError, has_target, instantiate_target
from snnrun.core.registry import Registry


def rate_predict(out: torch.Tensor) -> torch.Tensor:
    """Each sample's class: the argmax of the mean over T, ``[T, N, classes] -> [N]``."""
    return out.mean(0).argmax(-1)


class RateLoss:
    """Base: ``loss(out, y)`` and ``predict(out)`` on outputs ``[T, N, classes]``."""

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return rate_predict(out)


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


class UserLoss(RateLoss):
    """A user's loss (``_target_``, :class:`snnrun.core.protocols.Loss`) as the trainer calls
    it: its ``predict`` when it has one, else :func:`rate_predict`. The first call of each
    checks what it returns (a scalar; ``[N]``), and the first loss call moves a loss that is an
    ``nn.Module`` to the output's device; later calls pay one flag test."""

    def __init__(self, loss: Any, target: str) -> None:
        self.loss, self.target = loss, target
        self.own_predict = getattr(loss, "predict", None)
        self.checked = self.predicted = False

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.checked:
            return self.loss(out, y)
        if isinstance(self.loss, torch.nn.Module):
            self.loss.to(out.device)
        value = self.loss(out, y)
        if not (torch.is_tensor(value) and value.dim() == 0):
            got = f"a tensor of shape {list(value.shape)}" if torch.is_tensor(value) else (
                f"a {type(value).__name__}")  # fmt: skip
            raise PluginError(f"loss: {self.target} returned {got}; a loss must return a scalar "
                              "tensor (reduce it, e.g. with .mean())")  # fmt: skip
        self.checked = True
        return value

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        if self.own_predict is None:
            return rate_predict(out)
        if self.predicted:
            return self.own_predict(out)
        classes = self.own_predict(out)
        if not torch.is_tensor(classes) or list(classes.shape) != [out.shape[1]]:
            got = list(classes.shape) if torch.is_tensor(classes) else type(classes).__name__
            raise PluginError(f"loss: {self.target}.predict(out) returned {got}; it must give "
                              f"each sample's class, shape [N] = [{out.shape[1]}]")  # fmt: skip
        self.predicted = True
        return classes


def build_loss(options: dict[str, Any]) -> RateLoss:
    """The registered loss ``options['name']``, or the user's (``_target_``; ``name`` is then a
    label) held to the loss protocol."""
    if has_target(options):
        target = options["_target_"]
        loss = protocols.check("loss", instantiate_target(options, "loss"), target)
        return UserLoss(loss, target)
    options = dict(options)
    return LOSSES.get(options.pop("name"))(**options)
