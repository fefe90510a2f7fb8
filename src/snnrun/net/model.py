"""Build a spiking network from a model config: a list of layer entries.

``model.layers`` is a list like ``[{type: conv2d, out_channels: 16, kernel_size: 3}, {type: neuron},
...]``. The builder threads the per-sample shape through the layers (so sizes are inferred and a
mismatch names the layer), and checks the output matches the dataset's class count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from snnrun.core.errors import SnnrunError
from snnrun.core.registry import UnknownNameError
from snnrun.net.layers import LAYERS, Shape
from snnrun.net.neuron import SpikingNeuron, reset_states


class ModelBuildError(SnnrunError, ValueError):
    """A model config that cannot be built for the dataset's input."""


class SpikingNetwork(nn.Module):
    """A stack of layers over ``[T, N, ...]``; output ``[T, N, classes]``.

    Each forward starts from fresh states. When the input is the same at every step (a
    direct-encoded image, expanded over T with stride 0), the stateless layers before the first
    neuron run once and their output is broadcast over T: the same outputs and gradients, T
    times less work for the first convolution (BatchNorm there updates its running variance
    from N instead of T*N copies of the same values). A network with ``step_mode='s'`` neurons
    is fed one step at a time instead, every layer keeping its state between steps.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        names: Sequence[str],
        shapes: Sequence[Shape] | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.names = list(names)
        self.shapes = list(shapes) if shapes is not None else None  # per-sample output shapes
        neurons = [i for i, m in enumerate(layers) if isinstance(m, SpikingNeuron)]
        self.static_head = neurons[0] if neurons else len(layers)
        self.step_by_step = any(layers[i].step_mode == "s" for i in neurons)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        reset_states(self)
        if self.step_by_step:
            return torch.cat([self.layers(x_seq[t : t + 1]) for t in range(x_seq.shape[0])])
        start = 0
        if x_seq.shape[0] > 1 and x_seq.stride(0) == 0:
            head = self.layers[: self.static_head](x_seq[:1])
            x_seq = head.expand(x_seq.shape[0], *head.shape[1:])
            start = self.static_head
        return self.layers[start:](x_seq)


def build_model(
    model_cfg: dict[str, Any],
    neuron_groups: dict[str, Any],
    in_shape: Shape,
    num_classes: int,
) -> SpikingNetwork:
    """The network for ``model_cfg['layers']``; ``neuron_groups``: the run's ``neuron`` and
    ``surrogate`` groups, which every neuron entry falls back to."""
    layers, names, shapes, shape = [], [], [], tuple(in_shape)
    for i, entry in enumerate(model_cfg["layers"]):
        options = dict(entry)
        kind = options.pop("type", None)
        label = f"model layer {i} ({kind})"
        try:
            module = LAYERS.get(kind)(options, shape, neuron_groups)
        except UnknownNameError as e:
            raise ModelBuildError(f"{label}: {e}") from None
        except (TypeError, ValueError) as e:
            raise ModelBuildError(f"{label}: bad options {options}: {e}") from None
        for part in module if isinstance(module, nn.Sequential) else [module]:
            shape = _output_shape(part, shape, label)  # a Sequential joins layer by layer
            layers.append(part)
            names.append(kind)
            shapes.append(shape)
    if shape != (num_classes,):
        raise ModelBuildError(
            f"model output per sample is {list(shape)} but the dataset has {num_classes} classes: "
            f"make the last layers produce {num_classes} features"
        )
    return SpikingNetwork(layers, names, shapes)


def _output_shape(module: nn.Module, in_shape: Shape, label: str) -> Shape:
    """Run ``module`` on a dummy ``[T=1, N=2, *in_shape]`` to learn its output shape.

    Neurons keep their input's shape and are not run (their backend may need the device).
    """
    if isinstance(module, SpikingNeuron):
        return in_shape
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, 2, *in_shape))
    except (RuntimeError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0]
        raise ModelBuildError(
            f"{label} cannot take input of shape [T, N, {', '.join(map(str, in_shape))}]: "
            f"{first_line}"
        ) from None
    finally:
        module.train(was_training)
        reset_states(module)
    return tuple(out.shape[2:])
