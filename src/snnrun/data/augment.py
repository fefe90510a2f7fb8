"""Augmentation of static images on the training split: the ``augment`` config group.

Steps, in the order of the CIFAR recipes (DeVries & Taylor 2017; Cubuk et al. 2019), on pixels
``[N, C, H, W]`` in [0, 1] before the dataset's normalisation:

- ``crop_padding: p``: zero-pad by ``p`` pixels, crop back to ``H x W`` at offsets
  ``(i, j)`` uniform in ``[0, 2p]^2`` (torchvision's ``RandomCrop(H, padding=p)``).
- ``flip``: mirror left-right with probability 1/2.
- ``autoaugment``: torchvision's ``AutoAugment`` with its CIFAR10 policy, on the image as uint8.
- ``randaugment: n`` (and ``randaugment_magnitude: m``, 9): torchvision's ``RandAugment`` with
  ``n`` operations of magnitude ``m`` of 30 (timm's ``rand-m9-n1`` is ``n`` 1 at 9/10 of
  each op's range: ``m`` 27; timm's magnitude noise ``mstd`` and its op probability 0.5 have
  no torchvision counterpart), on the image as uint8.
- ``cutout: L``: one ``L x L`` square (clipped at the border) centred uniformly in the image is
  set to the dataset's mean colour, 0 after normalisation, as Cutout sets it (16 on CIFAR-10,
  8 on CIFAR-100 in the paper).
- ``random_erasing: p``: with probability ``p`` one rectangle of area ``U(0.02, 1/3) H W`` and
  aspect ``exp U(log 0.3, log 1/0.3)`` (10 tries to fit) is erased (Zhong et al. 2020; timm's
  ``RandomErasing``, torchvision's draws): ``random_erasing_mode: pixel`` fills it with noise
  that is ``N(0, 1)`` per pixel after normalisation (timm's ``remode pixel``), ``const`` with
  the mean colour (0 after it). Last, as timm erases after normalising.

Every sample draws from its own generator, seeded with :func:`sample_seed` ``(seed, epoch, i)``
(``i``: its index in the split): the draws depend on nothing else, so two runs of one seed, a
resumed run and an unbroken one, any ``num_workers`` and any number of ranks see the same
images; torch's global generators are never touched. Mixup and CutMix mix whole batches:
the ``mixup`` section (:mod:`snnrun.engine.mixup`).

``augment._target_=my_pkg.MyAugment`` builds the user's augment instead, with the group's other
keys (but ``name``) as its arguments (the built-in's keys, ``crop_padding``... of the group the
override lands on, only where it takes them), held to the same protocol as :class:`ImageAugment`
(:class:`snnrun.core.protocols.Augment`): ``augment(x [N, C, H, W], seeds [N])``; the datasets
call both alike, with the same per-sample seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from snnrun.core import protocols
from snnrun.core.errors import SnnrunError
from snnrun.core.plugin import TARGET, has_target, import_target, instantiate_target, takes

KEYS = (
    "name",
    "crop_padding",
    "flip",
    "autoaugment",
    "randaugment",
    "randaugment_magnitude",
    "cutout",
    "random_erasing",
    "random_erasing_mode",
)
Step = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
_MASK = (1 << 64) - 1


def _mix(z: int) -> int:
    """splitmix64's finaliser: a 64-bit integer → a well-spread 64-bit integer."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s draws in ``epoch`` of a run seeded ``seed``."""
    return _mix(_mix(_mix(seed & _MASK) ^ epoch) ^ index)


def random_crop(img: torch.Tensor, g: torch.Generator, padding: int) -> torch.Tensor:
    H, W = img.shape[-2:]
    i, j = torch.randint(0, 2 * padding + 1, (2,), generator=g).tolist()
    return F.pad(img, (padding,) * 4)[..., i : i + H, j : j + W]


def flip(img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return img.flip(-1) if torch.rand((), generator=g) < 0.5 else img


def torchvision_policy(img: torch.Tensor, g: torch.Generator, policy: Any) -> torch.Tensor:
    """torchvision's ``policy`` (AutoAugment, RandAugment) on ``round(255 x)``; its draws come
    from the CPU generator, seeded here from ``g`` and restored afterwards."""
    pixels = img.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    inner = int(torch.randint(0, 2**62, (), generator=g))
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(inner)
        out = policy(pixels)
    return out.float().div_(255)


def cutout(img: torch.Tensor, g: torch.Generator, length: int, fill: torch.Tensor) -> torch.Tensor:
    H, W = img.shape[-2:]
    y = int(torch.randint(0, H, (), generator=g))
    x = int(torch.randint(0, W, (), generator=g))
    half = length // 2
    img = img.clone()
    img[..., max(0, y - half) : y + half, max(0, x - half) : x + half] = fill
    return img


def random_erasing(img: torch.Tensor, g: torch.Generator, p: float, mean: torch.Tensor,
                   std: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """Erase one rectangle with probability ``p`` (the module docstring), with ``mean + std z``
    (``z ~ N(0, 1)`` per pixel; ``std`` None: the mean colour)."""
    if float(torch.rand((), generator=g)) >= p:
        return img
    from torchvision.transforms import RandomErasing

    inner = int(torch.randint(0, 2**62, (), generator=g))
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(inner)
        i, j, h, w, z = RandomErasing.get_params(img, (0.02, 1 / 3), (0.3, 1 / 0.3), value=None)
    if h == img.shape[-2] and w == img.shape[-1]:  # no rectangle fitted: torchvision's "no erase"
        return img
    img = img.clone()
    img[..., i : i + h, j : j + w] = mean if std is None else mean + std * z
    return img


class ImageAugment:
    """The enabled steps, applied per sample: ``augment(x [N, C, H, W], seeds [N]) -> x'``
    (picklable, for loader workers started by spawn)."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps

    def __call__(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        out = []
        for img, seed in zip(x, seeds):
            g = torch.Generator().manual_seed(seed)
            for step in self.steps:
                img = step(img, g)
            out.append(img)
        return torch.stack(out) if out else x


def build_augment(
    options: dict[str, Any] | None,
    shape: tuple[int, ...],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> protocols.Augment | None:
    """The ``augment`` group's steps for samples ``shape`` (``[C, H, W]``); None when all are
    off. ``mean`` / ``std``: the dataset's normalisation (Cutout's fill, erasing's noise; 0 / 1
    without one). With ``_target_``: the user's augment, checked against the protocol."""
    if has_target(options):
        target = options[TARGET]
        built = import_target(target, "augment")
        own = {k: v for k, v in options.items() if k not in KEYS[1:] or takes(built, k)}
        return protocols.check("augment", instantiate_target(own, "augment"), target)
    options = dict(options or {})
    unknown = sorted(set(options) - set(KEYS))
    if unknown:
        raise SnnrunError(f"unknown augment key(s) {unknown}; known: {', '.join(KEYS[1:])}")
    padding, length = _count(options, "crop_padding"), _count(options, "cutout")
    flips, auto = bool(options.get("flip")), bool(options.get("autoaugment"))
    rand_ops = _count(options, "randaugment")
    erasing = _probability(options, "random_erasing")
    if not (padding or length or flips or auto or rand_ops or erasing):
        return None
    if len(shape) != 3:
        raise SnnrunError(f"augment={options.get('name')} needs images [C, H, W]; this dataset's "
                          f"samples are {list(shape)}: use augment=none")  # fmt: skip
    if auto and shape[0] != 3:
        raise SnnrunError(f"augment.autoaugment needs RGB images [3, H, W], not {list(shape)}; "
                          "set augment.autoaugment=false")  # fmt: skip
    steps: list[Step] = [partial(random_crop, padding=padding)] if padding else []
    steps += [flip] if flips else []
    if auto:
        from torchvision.transforms import AutoAugment, AutoAugmentPolicy

        steps.append(partial(torchvision_policy, policy=AutoAugment(AutoAugmentPolicy.CIFAR10)))
    if rand_ops:
        from torchvision.transforms import RandAugment

        magnitude = options.get("randaugment_magnitude", 9)
        if isinstance(magnitude, bool) or not isinstance(magnitude, int) or not 0 <= magnitude < 31:
            raise SnnrunError(f"augment.randaugment_magnitude must be a whole number in [0, 30], "
                              f"got {magnitude!r}")  # fmt: skip
        policy = RandAugment(num_ops=rand_ops, magnitude=magnitude)
        steps.append(partial(torchvision_policy, policy=policy))
    fill = torch.tensor(list(mean) if mean is not None else [0.0] * shape[0]).view(-1, 1, 1)
    if length:
        steps.append(partial(cutout, length=length, fill=fill))
    if erasing:
        mode = options.get("random_erasing_mode", "pixel")
        if mode not in ("pixel", "const"):
            raise SnnrunError(f"augment.random_erasing_mode must be pixel (noise) or const (the "
                              f"mean colour), got {mode!r}")  # fmt: skip
        scale = torch.tensor(list(std) if std is not None else [1.0] * shape[0]).view(-1, 1, 1)
        steps.append(partial(random_erasing, p=erasing, mean=fill,
                             std=scale if mode == "pixel" else None))  # fmt: skip
    return ImageAugment(steps)


def _probability(options: dict[str, Any], key: str) -> float:
    value = options.get(key) or 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise SnnrunError(f"augment.{key} must be a probability in [0, 1] (0: off), got {value!r}")
    return float(value)


def _count(options: dict[str, Any], key: str) -> int:
    value = options.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SnnrunError(f"augment.{key} must be a whole number >= 0 (0: off), got {value!r}")
    return value
