"""Build a spiking network from a model config: a list of layer entries, which may nest.

``model.layers`` is a list like ``[{type: conv2d, out_channels: 16, kernel_size: 3}, {type: neuron},
{type: residual, body: [...]}, ...]``. The builder threads the per-sample shape through every
entry, at any depth (so sizes are inferred and a mismatch names the entry's path), and checks
the output matches the dataset's class count; ``model.classes: auto`` (and a layer's
``out_features: auto``) is that count. Every module built from an entry carries its
:class:`~snnrun.net.layers.Entry` (type, config path, output shape).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from snnrun.net import attention, blocks, custom, graph, readout  # noqa: F401  (their entries)
from snnrun.net.blocks import Block
from snnrun.net.layers import (
    AUTO,
    Context,
    Entry,
    ModelBuildError,
    Shape,
    build_layers,
    check_nesting,
)
from snnrun.net.spikes import SpikeStore
from snnrun.neuron.neurons import SpikingNeuron, reset_states

__all__ = ["ModelBuildError", "SpikingNetwork", "build_model", "label"]


def label(name: str) -> str:
    """A module's name in the network (``layers.3.body.1``) as runs name it: ``L3.body.1``."""
    return "L" + name.removeprefix("layers.")


class SpikingNetwork(nn.Module):
    """A stack of layers over ``[T, N, ...]``; output ``[T, N, classes]``.

    Each forward starts from fresh states. When the input is the same at every step (a
    direct-encoded image, expanded over T with stride 0), the layers before the first one that
    depends on time (holds a neuron, or is a user module; looking inside a leading
    ``sequential`` such as a zoo network's stem) run once and their output is broadcast over T:
    the same outputs and gradients, T times less work for the first convolution (BatchNorm there
    updates its running variance from N instead of T*N copies of the same values). A network
    with ``step_mode='s'`` neurons is fed one step at a time instead, every layer keeping its
    state between steps.
    """

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.head, self.tail = split_static(list(self.layers))
        self.step_by_step = any(m.step_mode == "s" for _, m in self.neurons())
        self.spike_store: SpikeStore | None = None  # set by net/memory.apply_plan
        self.memory_plan: Any = None  # the MemoryPlan applied (net/memory.py)

    @property
    def static_head(self) -> int:
        """How many layers run once for direct input (a leading block's own counted inside)."""
        return len(self.head)

    def entries(self) -> list[tuple[str, nn.Module, Entry]]:
        """``(label, module, entry)`` for every module built from a config entry, in config
        order (a block before its contents)."""
        return [
            (label(name), m, m.snnrun_entry)
            for name, m in self.layers.named_modules()
            if isinstance(getattr(m, "snnrun_entry", None), Entry)
        ]

    def neurons(self) -> list[tuple[str, SpikingNeuron]]:
        """``(label, layer)`` for every neuron layer at any depth, in order."""
        return [
            (label(name), m)
            for name, m in self.layers.named_modules()
            if isinstance(m, SpikingNeuron)
        ]

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        reset_states(self)
        if self.spike_store is None:
            return self._forward(x_seq)
        with self.spike_store.region():
            return self._forward(x_seq)

    def _forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if self.step_by_step:
            return torch.cat([self.layers(x_seq[t : t + 1]) for t in range(x_seq.shape[0])])
        if x_seq.shape[0] == 1 or x_seq.stride(0) != 0 or not self.head:
            out = x_seq
            for layer in [*self.head, *self.tail]:
                out = layer(out)
            return out
        head = x_seq[:1]
        for layer in self.head:
            head = layer(head)
        out = head.expand(x_seq.shape[0], *head.shape[1:])
        for layer in self.tail:
            out = layer(out)
        return out


def split_static(layers: list[nn.Module]) -> tuple[list[nn.Module], list[nn.Module]]:
    """(head, tail): the leading layers that do not depend on time, looking inside a leading
    ``sequential`` / ``repeat`` block (a zoo network's stem), and the layers after them."""
    for i, layer in enumerate(layers):
        if not _depends_on_time(layer):
            continue
        if type(layer) is Block:
            inner_head, inner_tail = split_static(list(layer))
            return layers[:i] + inner_head, inner_tail + layers[i + 1 :]
        return layers[:i], layers[i:]
    return layers, []


def _depends_on_time(module: nn.Module) -> bool:
    """A neuron inside, or a user module (which may keep state of its own)."""
    for m in module.modules():
        entry = getattr(m, "snnrun_entry", None)
        if isinstance(m, SpikingNeuron) or (entry is not None and entry.type == "module"):
            return True
    return False


def build_model(
    model_options: dict[str, Any],
    neuron_groups: dict[str, Any],
    in_shape: Shape,
    num_classes: int,
) -> SpikingNetwork:
    """The network for ``model_options['layers']``; ``neuron_groups``: the run's ``neuron`` and
    ``surrogate`` groups, which every neuron entry falls back to. ``model.classes`` is ``auto``
    (absent: the same) or must equal the dataset's ``num_classes``; a layer size given as
    ``auto`` (``out_features: ${model.classes}``) is the dataset's count."""
    _check_classes(model_options.get("classes", AUTO), num_classes)
    check_nesting(model_options["layers"])
    ctx = Context(neuron_groups, classes=num_classes)
    layers, shape = build_layers(model_options["layers"], tuple(in_shape), ctx)
    if shape != (num_classes,):
        raise ModelBuildError(
            f"model output per sample is {list(shape)} but the dataset has {num_classes} classes: "
            f"make the last layers produce {num_classes} features (out_features: auto takes the "
            "dataset's count)"
        )
    return SpikingNetwork(layers)


def _check_classes(classes: Any, num_classes: int) -> None:
    """``model.classes``: ``auto``, or the dataset's class count."""
    if classes == AUTO:
        return
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise ModelBuildError(
            f"model.classes must be auto or a number of classes, got {classes!r}; "
            "model.classes=auto takes the dataset's count"
        )
    if classes != num_classes:
        raise ModelBuildError(
            f"model.classes={classes} but the dataset has {num_classes} classes: set "
            "model.classes=auto (the dataset's count), or pick the dataset it was meant for"
        )
