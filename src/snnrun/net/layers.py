"""The layer registry: config entries → modules that map ``[T, N, ...]`` to ``[T, N, ...]``.

A builder takes the entry's options and the per-sample input shape (``[C, H, W]`` or
``[F]``), so sizes such as ``in_channels`` and ``in_features`` are inferred when the entry leaves
them out. Stateless layers run on ``[T*N, ...]`` folded (:class:`TimeFolded`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from snnrun.core.registry import Registry
from snnrun.net.neuron import Stateful, build_neuron, merge_neuron_options

Shape = tuple[int, ...]
LayerBuilder = Callable[..., nn.Module]  # (options, in_shape, neuron_groups) -> module

LAYERS: Registry[LayerBuilder] = Registry("layer type")


class TimeFolded(nn.Module):
    """Run a stateless module on ``[T*N, ...]`` and unfold back to ``[T, N, ...]``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.module(x.flatten(0, 1))
        return y.unflatten(0, x.shape[:2])

    def __repr__(self) -> str:
        return repr(self.module)


class MultiStepDropout(Stateful):
    """Dropout with one mask per sample shared across all T steps (SpikingJelly's multi-step).

    The mask is drawn at the first step after :meth:`reset` and kept, so a network fed one
    step at a time drops the same units at every step too.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p must be in [0, 1), got {p}")
        self.p = p
        self.mask: torch.Tensor | None = None

    def reset(self) -> None:
        self.mask = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.mask is None or self.mask.shape != x.shape[1:]:
            self.mask = torch.empty_like(x[0]).bernoulli_(1.0 - self.p) / (1.0 - self.p)
        return x * self.mask

    def extra_repr(self) -> str:
        return f"p={self.p}, mask shared over T"


class Voting(nn.Module):
    """Average groups of ``k`` neighbouring features: ``[T, N, C] → [T, N, C/k]``."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.k:
            raise ValueError(
                f"voting over groups of {self.k} needs a multiple of {self.k} "
                f"features, got {x.shape[-1]}"
            )
        return x.unflatten(-1, (x.shape[-1] // self.k, self.k)).mean(-1)

    def extra_repr(self) -> str:
        return f"k={self.k}"


def _folded(cls: type[nn.Module], infer: Callable[[Shape], dict[str, Any]] | None = None):
    """A builder for a stateless torch layer, with sizes inferred from the input shape."""

    def build(options: dict[str, Any], in_shape: Shape, neuron_groups: dict[str, Any]) -> nn.Module:
        inferred = infer(in_shape) if infer else {}
        return TimeFolded(cls(**{**inferred, **options}))

    return build


LAYERS.register("conv2d")(_folded(nn.Conv2d, lambda s: {"in_channels": s[0]}))
LAYERS.register("batchnorm2d")(_folded(nn.BatchNorm2d, lambda s: {"num_features": s[0]}))
LAYERS.register("maxpool2d")(_folded(nn.MaxPool2d))
LAYERS.register("avgpool2d")(_folded(nn.AvgPool2d))
LAYERS.register("adaptive_avgpool2d")(_folded(nn.AdaptiveAvgPool2d))
LAYERS.register("flatten")(_folded(nn.Flatten))
LAYERS.register("linear")(_folded(nn.Linear, lambda s: {"in_features": s[-1]}))


@LAYERS.register("dropout")
def _dropout(options: dict[str, Any], in_shape: Shape, neuron_groups: dict[str, Any]) -> nn.Module:
    return MultiStepDropout(**options)


@LAYERS.register("voting")
def _voting(options: dict[str, Any], in_shape: Shape, neuron_groups: dict[str, Any]) -> nn.Module:
    return Voting(**options)


@LAYERS.register("neuron")
def _neuron(options: dict[str, Any], in_shape: Shape, neuron_groups: dict[str, Any]) -> nn.Module:
    """A neuron layer: the ``neuron``/``surrogate`` groups' settings, overridden by the entry."""
    options = dict(options)
    surrogate = options.pop("surrogate", None) or neuron_groups["surrogate"]
    return build_neuron(merge_neuron_options(neuron_groups["neuron"], options), surrogate)
