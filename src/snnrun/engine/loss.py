"""Losses on the network's output ``[T, N, classes]`` (spikes, or a readout's membrane); each
also says which class it predicts. Every loss here is written as a user's is (a callable
``loss(out, y)`` with an optional ``predict(out)``), registered by name.

- ``mse_rate``: MSE between the firing rate (mean over T) and the one-hot label (the
  SpikingJelly tutorials' default).
- ``mse_count``: snnTorch's ``mse_count_loss``: MSE between each output's spike count and
  ``int(correct_rate T)`` (the label) or ``int(incorrect_rate T)`` (the others), divided by T.
- ``ce_rate``: cross-entropy with the firing rates as logits.
- ``ce_per_step``: cross-entropy of the output at every step, averaged over T (snnTorch's
  ``ce_rate_loss``); ``ce_count`` is its former name, kept for runs that name it.
- ``tet``: TET (Deng et al., ICLR 2022), ``(1 - lambda) L_TET + lambda L_MSE`` with
  ``L_TET = 1/T sum_t CE(O[t], y)`` and ``L_MSE = mean((O - phi)^2)`` over every step, neuron
  and sample (the authors' code: ``lambda`` 1e-3, ``phi`` 1).
- ``ce_max_membrane`` / ``ce_last_membrane``: cross-entropy of the maximum over T / of the last
  step of the output (a non-spiking readout's membrane: Cramer et al. 2020, Zenke & Vogels
  2021); each predicts the argmax of the same.

Every cross-entropy takes ``label_smoothing`` (torch's: the target is ``(1 - e) onehot + e/K``).
Every loss takes soft targets ``y [N, classes]`` (mixup's, :mod:`snnrun.engine.mixup`) where
it takes labels ``y [N]``: the one-hot rows become those rows (smoothed as a one-hot row is;
with mixup this is timm's smoothing of the mixed targets).
Prediction is otherwise the argmax of the firing rate (equivalently, of the spike count):
:func:`rate_predict`, also the default of a user's loss (``_target_``) without ``predict``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from snnrun.core import protocols
from snnrun.core.plugin import PluginError, has_target, instantiate_target
from snnrun.core.registry import Registry
from snnrun.engine.rate_reg import RateRegularizer, build_rate_reg


def targets(y: torch.Tensor, classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Labels ``y [N]`` as one-hot rows ``[N, classes]``; soft targets as they are."""
    return F.one_hot(y, classes).to(dtype) if y.dim() == 1 else y.to(dtype)


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
        return F.mse_loss(rate, targets(y, rate.shape[-1], rate.dtype))


@LOSSES.register("mse_count")
class MSECount(RateLoss):
    """snnTorch's ``mse_count_loss``: ``mean((C - C*)^2) / T`` with the spike counts
    ``C = sum_t O[t]`` and the whole-spike targets ``C* = int(T correct_rate)`` (the label),
    ``int(T incorrect_rate)`` (the other classes), as snnTorch rounds them; a soft target row
    ``p`` asks for ``off + (on - off) p``."""

    def __init__(self, correct_rate: float = 1.0, incorrect_rate: float = 0.0) -> None:
        self.correct_rate, self.incorrect_rate = float(correct_rate), float(incorrect_rate)

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        steps, count = out.shape[0], out.float().sum(0)
        on, off = float(int(steps * self.correct_rate)), float(int(steps * self.incorrect_rate))
        target = off + (on - off) * targets(y, count.shape[-1], count.dtype)
        return F.mse_loss(count, target) / steps


class CrossEntropy(RateLoss):
    """Base of the cross-entropy losses: ``label_smoothing`` in [0, 1)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        smoothing = float(label_smoothing)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(
                f"label_smoothing must be in [0, 1), got {label_smoothing!r}; set "
                "loss.label_smoothing=0.1 (or 0: off)"
            )
        self.label_smoothing = smoothing

    def ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of ``logits [N, classes]`` against ``y [N]`` (or soft ``[N, classes]``),
        smoothed."""
        y = y if y.dim() == 1 else y.to(logits.dtype)
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def per_step(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``1/T sum_t CE(O[t], y)`` (one call over ``[T*N, classes]``: the same mean)."""
        steps = y.repeat(out.shape[0], *(1,) * (y.dim() - 1))
        return self.ce(out.float().flatten(0, 1), steps)


@LOSSES.register("ce_rate")
class CERate(CrossEntropy):
    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.ce(out.float().mean(0), y)


@LOSSES.register("ce_count")  # its former name (the runs that name it keep their loss)
@LOSSES.register("ce_per_step")
class CEPerStep(CrossEntropy):
    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.per_step(out, y)


@LOSSES.register("tet")
class TET(CrossEntropy):
    """TET, ``(1 - lambda) L_TET + lambda L_MSE`` (the module docstring); the config keys are
    ``lambda`` (1e-3) and ``phi`` (1.0), as in the paper."""

    def __init__(self, phi: float = 1.0, label_smoothing: float = 0.0, **kw: Any) -> None:
        super().__init__(label_smoothing)
        lam = kw.pop("lambda", 1e-3)
        if kw:
            raise TypeError(f"tet has no option {', '.join(sorted(kw))} (it takes lambda, phi, "
                            "label_smoothing)")  # fmt: skip
        if not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"tet needs lambda in [0, 1], got {lam!r}; set loss.lambda=0.001")
        self.lam, self.phi = float(lam), float(phi)

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.per_step(out, y)
        if self.lam == 0.0:
            return loss
        out = out.float()
        return (1.0 - self.lam) * loss + self.lam * F.mse_loss(out, torch.full_like(out, self.phi))


@LOSSES.register("ce_max_membrane")
class CEMaxMembrane(CrossEntropy):
    """Cross-entropy of ``max_t O[t]``; predicts its argmax."""

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.ce(self.logits(out), y)

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        return out.float().amax(0)

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return self.logits(out).argmax(-1)


@LOSSES.register("ce_last_membrane")
class CELastMembrane(CEMaxMembrane):
    """Cross-entropy of ``O[T-1]``; predicts its argmax."""

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        return out[-1].float()


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


def build_loss(options: dict[str, Any], model: torch.nn.Module | None = None) -> RateLoss:
    """The registered loss ``options['name']``, or the user's (``_target_``; ``name`` is then a
    label) held to the loss protocol; with ``model`` (training), plus ``rate_reg``'s penalty
    on its spikes (:mod:`snnrun.engine.rate_reg`) when that is on."""
    options = dict(options)
    regularizer = build_rate_reg(options.pop("rate_reg", None))
    if has_target(options):
        target = options["_target_"]
        loss: RateLoss = UserLoss(
            protocols.check("loss", instantiate_target(options, "loss"), target), target
        )
    else:
        loss = LOSSES.get(options.pop("name"))(**options)
    if regularizer is None or model is None:
        return loss
    regularizer.attach(model)
    return Regularized(loss, regularizer)


class Regularized(RateLoss):
    """A loss plus a regulariser's ``penalty()`` of the last forward; ``predict`` is the
    loss's."""

    def __init__(self, loss: RateLoss, regularizer: RateRegularizer) -> None:
        self.loss, self.regularizer = loss, regularizer

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(out, y) + self.regularizer.penalty()

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return self.loss.predict(out)
