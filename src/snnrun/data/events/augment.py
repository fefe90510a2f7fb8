"""Augmentation of event sequences on the training split: an event dataset's ``dataset.augment``.

Steps, all off by default, in this order, on frames ``[T, C, H, W]`` (N-MNIST, DVS128 Gesture,
CIFAR10-DVS) or spike bins ``[T, F]`` (SHD) of counts:

- ``event_drop: q``: drop each event with probability ``q``; on counts this is binomial
  thinning, ``x' ~ Binomial(x, 1 - q)``, the same distribution as dropping events before
  integration, so the cache stays valid (EventDrop's random drop, below).
- ``event_drop_time: r``: EventDrop's drop by time: ``L = int(u T)`` consecutive frames (bins),
  ``u ~ U(0, r)``, starting uniformly in ``[0, T - L]``, are set to 0. tonic's
  ``DropEventByTime`` erases a time window of the raw events; on cached frames a run of frames
  is its equivalent (a window in event order where ``split_by=number``).
- ``event_drop_area: a``: EventDrop's drop by area: a box of ``int(u H) x int(u W)`` pixels,
  ``u ~ U(0, a)``, uniformly placed inside the frame, is set to 0 in all T frames (tonic's
  ``DropEventByArea`` on raw events, one ratio for both sides).
- ``crop_padding: k``: zero-pad by ``k`` pixels and crop back to ``H x W`` at a random offset,
  the same for all T (CIFAR's random crop).
- ``flip``: mirror left-right with probability 1/2, the same for all T (not for DVS128 Gesture,
  where it swaps left- and right-hand classes).
- ``nda``: NDA (Li et al., "Neuromorphic Data Augmentation for Training Spiking Neural
  Networks", ECCV 2022): ONE of roll, rotate, shear-x, chosen uniformly, the same for all T.
  roll: ``torch.roll`` by integer shifts uniform in ``[-nda_roll, nda_roll]`` on H and on W;
  rotate: an angle uniform in ``[-nda_degrees, nda_degrees]``; shear-x: a shear angle uniform
  in the same range; both with nearest interpolation, zeros outside (torchvision's
  ``RandomRotation`` / ``RandomAffine`` defaults). As the authors' CIFAR10-DVS loader
  (github.com/Intelligent-Computing-Lab-Yale/NDA_SNN, ``functions/data_loaders.py``,
  ``DVSCifar10``: ``random.randint(-5, 5)`` rolls on dims (2, 3) of ``[T, C, H, W]``,
  ``RandomRotation(degrees=30)``, ``RandomAffine(degrees=0, shear=(-30, 30))``; N-Caltech101:
  3 and 15), which has no flip; the TET authors' loader (github.com/brain-intelligence-lab/
  temporal_efficient_training, ``data_loaders.py``) flips with p 1/2, then rolls by the same
  ``[-5, 5]``: ``flip: true`` with ``nda: true`` is flip then NDA.

EventDrop: Gu et al., "EventDrop: Data Augmentation for Event-based Learning", IJCAI 2021. The
authors' code (github.com/fuqianggu/EventDrop, ``utils/dataset.py``) picks one strategy per
sample (none, time with a ratio in {0.1, ..., 0.9}, area with a side ratio in {0.05, ..., 0.25},
random drop); here every key above 0 applies to every sample.

Every sample draws from its own generator, seeded with
:func:`snnrun.data.augment.sample_seed` ``(seed, epoch, i)``: ``augment(x [N, T, ...], seeds
[N])``, as the image ``augment`` group, so a resumed run draws what an unbroken one does, with
any batch composition or ``num_workers``; torch's global generators are never touched.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from snnrun.core import protocols
from snnrun.core.errors import SnnrunError
from snnrun.data.augment import ImageAugment, Step, flip, random_crop

KEYS = ("event_drop", "event_drop_time", "event_drop_area", "crop_padding", "flip", "nda",
        "nda_roll", "nda_degrees")  # fmt: skip
DROPS = ("event_drop", "event_drop_time", "event_drop_area")
FRAMES = ("event_drop_area", "crop_padding", "flip", "nda")  # need frames [C, H, W]


def event_drop(x: torch.Tensor, g: torch.Generator, q: float) -> torch.Tensor:
    return torch.binomial(x, torch.full_like(x, 1.0 - q), generator=g)


def drop_by_time(x: torch.Tensor, g: torch.Generator, ratio: float) -> torch.Tensor:
    T = x.shape[0]
    length = int(float(torch.empty(()).uniform_(0.0, ratio, generator=g)) * T)
    start = int(torch.randint(0, T - length + 1, (), generator=g))
    x = x.clone()
    x[start : start + length] = 0
    return x


def drop_by_area(x: torch.Tensor, g: torch.Generator, ratio: float) -> torch.Tensor:
    H, W = x.shape[-2:]
    u = float(torch.empty(()).uniform_(0.0, ratio, generator=g))
    h, w = int(u * H), int(u * W)
    i = int(torch.randint(0, H - h + 1, (), generator=g))
    j = int(torch.randint(0, W - w + 1, (), generator=g))
    x = x.clone()
    x[..., i : i + h, j : j + w] = 0
    return x


def nda(x: torch.Tensor, g: torch.Generator, roll: int, degrees: float) -> torch.Tensor:
    """One of roll / rotate / shear-x on a sample ``[T, C, H, W]``, the same for all T."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    choice = int(torch.randint(0, 3, (), generator=g))
    if choice == 0:
        dy, dx = torch.randint(-roll, roll + 1, (2,), generator=g).tolist()
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    angle = float(torch.empty(()).uniform_(-degrees, degrees, generator=g))
    if choice == 1:
        return TF.rotate(x, angle, interpolation=InterpolationMode.NEAREST)
    return TF.affine(x, angle=0.0, translate=[0, 0], scale=1.0, shear=[angle, 0.0],
                     interpolation=InterpolationMode.NEAREST)  # fmt: skip


class EventAugment(ImageAugment):
    """The enabled steps, applied per sample ``[T, ...]``: ``augment(x [N, T, ...], seeds [N])``
    (picklable, for loader workers started by spawn)."""


def build_augment(options: dict[str, Any], size: tuple[int, ...]) -> protocols.Augment | None:
    """The enabled steps of ``dataset.augment`` for samples ``[T, *size]``; None if all are off."""
    unknown = sorted(set(options) - set(KEYS))
    if unknown:
        raise SnnrunError(f"unknown dataset.augment key(s) {unknown}; known: {', '.join(KEYS)}")
    q, r, a = (_number(options, key, 0.0) for key in DROPS)
    padding, roll = _count(options, "crop_padding", 0), _count(options, "nda_roll", 5)
    degrees = _number(options, "nda_degrees", 30, high=180)
    flips, ndas = bool(options.get("flip")), bool(options.get("nda"))
    on = [k for k, v in zip(FRAMES, (a, padding, flips, ndas)) if v]
    if on and len(size) != 3:
        off = "false" if on[0] in ("flip", "nda") else "0"
        raise SnnrunError(f"dataset.augment.{on[0]} needs frames [C, H, W], and this dataset's "
                          f"samples are [T, {', '.join(map(str, size))}]: set "
                          f"dataset.augment.{on[0]}={off}")  # fmt: skip
    steps: list[Step] = [partial(event_drop, q=q)] if q else []
    steps += [partial(drop_by_time, ratio=r)] if r else []
    steps += [partial(drop_by_area, ratio=a)] if a else []
    steps += [partial(random_crop, padding=padding)] if padding else []
    steps += [flip] if flips else []
    steps += [partial(nda, roll=roll, degrees=degrees)] if ndas else []
    return EventAugment(steps) if steps else None


def _number(options: dict[str, Any], key: str, default: float, high: float | None = None) -> float:
    """``dataset.augment.<key>``: a fraction in ``[0, 1)`` (0: off), or with ``high`` an angle in
    ``[0, high]``."""
    value = options.get(key, default)
    value = 0.0 if value is None else value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if high is None:
        inside, span = number and 0 <= value < 1, "[0, 1) (0: off)"
    else:
        inside, span = number and 0 <= value <= high, f"[0, {high:g}]"
    if not inside:
        raise SnnrunError(f"dataset.augment.{key} must be a number in {span}, got {value!r}")
    return float(value)


def _count(options: dict[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    value = 0 if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SnnrunError(f"dataset.augment.{key} must be a whole number >= 0, got {value!r}")
    return value
