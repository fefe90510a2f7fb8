"""Augmentations of event-frame batches ``[N, T, C, H, W]`` (training split only, off by default).

- ``flip``: mirror left-right with probability 1/2 per sample (the same for all T; not for
  DVS128 Gesture, where it swaps left- and right-hand classes).
- ``crop_padding``: zero-pad by ``k`` pixels and crop back to ``H x W`` at a random offset per
  sample (CIFAR's random crop).
- ``event_drop``: drop each event with probability ``q``; on counts this is binomial thinning,
  ``x' ~ Binomial(x, 1 - q)``, the same distribution as dropping events before integration, so
  the cache stays valid. Works on spike bins ``[N, T, F]`` too.
Randomness comes from torch's global generator, which checkpoints capture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from snnrun.core.errors import SnnrunError

Augment = Callable[[torch.Tensor], torch.Tensor]
KEYS = ("flip", "crop_padding", "event_drop")


def flip(x: torch.Tensor) -> torch.Tensor:
    chosen = torch.rand(x.shape[0]) < 0.5
    x[chosen] = x[chosen].flip(-1)
    return x


def random_crop(padding: int) -> Augment:
    def crop(x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        padded = F.pad(x, (padding, padding, padding, padding))
        offsets = torch.randint(0, 2 * padding + 1, (x.shape[0], 2)).tolist()
        return torch.stack([p[..., i : i + H, j : j + W] for p, (i, j) in zip(padded, offsets)])

    return crop


def event_drop(q: float) -> Augment:
    def drop(x: torch.Tensor) -> torch.Tensor:
        return torch.binomial(x, torch.full_like(x, 1.0 - q))

    return drop


def build_augment(options: dict[str, Any], size: tuple[int, ...]) -> Augment | None:
    """The enabled augmentations of ``dataset.augment`` in order drop → crop → flip; None if off."""
    unknown = set(options) - set(KEYS)
    if unknown:
        known = ", ".join(KEYS)
        raise SnnrunError(f"unknown dataset.augment key(s) {sorted(unknown)}; known: {known}")
    steps: list[Augment] = []
    q = float(options.get("event_drop") or 0.0)
    if not 0.0 <= q < 1.0:
        raise SnnrunError(f"dataset.augment.event_drop must be in [0, 1), got {q}")
    if q > 0:
        steps.append(event_drop(q))
    padding, flips = int(options.get("crop_padding") or 0), bool(options.get("flip"))
    if (padding or flips) and len(size) != 3:
        raise SnnrunError("dataset.augment crop_padding and flip need frames [C, H, W]; "
                          f"this dataset's samples are {list(size)}")  # fmt: skip
    if padding < 0:
        raise SnnrunError(f"dataset.augment.crop_padding must be >= 0, got {padding}")
    if padding:
        steps.append(random_crop(padding))
    if flips:
        steps.append(flip)
    if not steps:
        return None

    def augment(x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x

    return augment
