"""Mixup and CutMix of training batches (the ``mixup`` section), written as a callback.

Per batch (timm's ``Mixup``, mode ``batch``): with probability ``prob`` the batch is mixed with
itself reversed, ``x'_i = lam x_i + (1 - lam) x_{N-1-i}`` (mixup, Zhang et al. 2018; ``lam ~
Beta(alpha, alpha)``), or a box of each image is pasted from its partner (CutMix, Yun et al.
2019; ``lam ~ Beta(cutmix_alpha, cutmix_alpha)``, the box of area ``(1 - lam) H W`` centred
uniformly and clipped, ``lam`` then set to the part left); with both on, CutMix is chosen with
probability ``switch_prob``. The targets become ``lam onehot(y_i) + (1 - lam)
onehot(y_{N-1-i})`` ``[N, classes]``, which every loss takes (label smoothing then smooths the
mixed rows as timm does). From ``off_epoch`` epochs done on, batches are left as they are
(Spikformer: 200). Frames ``[N, T, C, H, W]`` are mixed alike over all T.

Each batch's draws come from a generator seeded by (seed, epoch, batch index in the epoch), so
a resumed run mixes as an unbroken one does; under torchrun every rank draws the same ``lam``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from snnrun.core.errors import SnnrunError
from snnrun.data.augment import sample_seed
from snnrun.engine.callback import Callback, FitContext

KEYS = ("alpha", "cutmix_alpha", "prob", "switch_prob", "off_epoch")
_SALT = 0x6D6978  # keeps the batches' seeds apart from the samples' augmentation seeds


def cutmix_box(shape: tuple[int, ...], lam: float, cy: int, cx: int) -> tuple[int, int, int, int]:
    """CutMix's box ``(top, bottom, left, right)`` on images ``[..., H, W]``: sides
    ``h = int(H sqrt(1 - lam))``, ``w = int(W sqrt(1 - lam))`` centred at ``(cy, cx)``
    (rows ``cy - h // 2`` to ``cy + (h + 1) // 2``, as timm 1.0), clipped to the image."""
    H, W = shape[-2:]
    ratio = math.sqrt(1.0 - lam)
    h, w = int(H * ratio), int(W * ratio)
    top, bottom = max(cy - h // 2, 0), min(cy + (h + 1) // 2, H)
    left, right = max(cx - w // 2, 0), min(cx + (w + 1) // 2, W)
    return top, bottom, left, right


def mix(x: torch.Tensor, lam: float, box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """``x [N, ...]`` mixed with ``x.flip(0)``: by ``lam`` (mixup), or the partner's ``box``
    pasted in (CutMix)."""
    if box is None:
        x = x if x.is_floating_point() else x.float()
        return x * lam + x.flip(0) * (1.0 - lam)
    top, bottom, left, right = box
    x = x.clone()
    x[..., top:bottom, left:right] = x.flip(0)[..., top:bottom, left:right]
    return x


def mixed_targets(y: torch.Tensor, classes: int, lam: float) -> torch.Tensor:
    """``lam onehot(y) + (1 - lam) onehot(y.flip(0))``, ``[N, classes]`` float32."""
    hot = F.one_hot(y, classes).float()
    return hot * lam + hot.flip(0) * (1.0 - lam)


class Mixup(Callback):
    """The ``mixup`` section (module docstring) on every training batch."""

    def __init__(self, alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
                 switch_prob: float = 0.5, off_epoch: int | None = None) -> None:  # fmt: skip
        for key, value in (("alpha", alpha), ("cutmix_alpha", cutmix_alpha)):
            if not _number(value) or value < 0:
                raise SnnrunError(f"mixup.{key} must be >= 0 (its Beta's parameter; 0: off), "
                                  f"got {value!r}")  # fmt: skip
        for key, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not _number(value) or not 0 <= value <= 1:
                raise SnnrunError(f"mixup.{key} must be a probability in [0, 1], got {value!r}")
        if off_epoch is not None and (isinstance(off_epoch, bool) or not isinstance(off_epoch, int)
                                      or off_epoch < 0):  # fmt: skip
            raise SnnrunError(f"mixup.off_epoch must be a whole number of epochs >= 0 (null: mix "
                              f"to the end), got {off_epoch!r}")  # fmt: skip
        self.alpha, self.cutmix_alpha = float(alpha), float(cutmix_alpha)
        self.prob, self.switch_prob, self.off_epoch = float(prob), float(switch_prob), off_epoch
        self.epoch, self.batch = -1, 0  # the batch's place, for its seed
        self.classes = self.seed = 0

    def on_fit_start(self, run: FitContext) -> None:
        self.classes, self.seed = run.splits.num_classes, run.config["seed"]
        shape = tuple(run.splits.sample_shape)
        if self.cutmix_alpha and len(shape) != 3:
            raise SnnrunError(f"mixup.cutmix_alpha needs images or frames [C, H, W]; these samples "
                              f"are {list(shape)}: set mixup.cutmix_alpha=0")  # fmt: skip

    def draw(self, epoch: int, batch: int) -> tuple[float, bool, np.random.Generator]:
        """Batch ``batch`` of ``epoch``: (lam, whether CutMix, the generator, for the box)."""
        rng = np.random.default_rng(sample_seed(self.seed ^ _SALT, epoch, batch))
        if rng.random() >= self.prob:
            return 1.0, False, rng
        if self.alpha > 0 and self.cutmix_alpha > 0:
            cut = bool(rng.random() < self.switch_prob)
        else:
            cut = self.cutmix_alpha > 0
        a = self.cutmix_alpha if cut else self.alpha
        return float(rng.beta(a, a)), cut, rng

    def on_train_batch_start(
        self, run: FitContext, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        epoch = run.state.epoch
        self.epoch, self.batch = epoch, (self.batch + 1 if epoch == self.epoch else 0)
        if self.off_epoch is not None and epoch >= self.off_epoch:
            return None
        x, y = batch
        lam, cut, rng = self.draw(epoch, self.batch)
        x = x.to(run.device, non_blocking=True)
        if lam == 1.0:
            return x, mixed_targets(y, self.classes, 1.0)
        box = None
        if cut:
            H, W = x.shape[-2:]
            box = cutmix_box(x.shape, lam, int(rng.integers(0, H)), int(rng.integers(0, W)))
            lam = 1.0 - (box[1] - box[0]) * (box[3] - box[2]) / (H * W)
        return mix(x, lam, box), mixed_targets(y, self.classes, lam)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def build_mixup(options: dict[str, Any] | None) -> Mixup | None:
    """The ``mixup`` section's callback; None while ``alpha`` and ``cutmix_alpha`` are 0."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(KEYS))
    if unknown:
        raise SnnrunError(f"unknown mixup key(s) {unknown}; known: {', '.join(KEYS)}")
    mixup = Mixup(**options)
    return mixup if mixup.alpha or mixup.cutmix_alpha else None
