"""``loss.rate_reg``: the activity regulariser of Zenke & Vogels (Neural Computation 2021; also
Cramer et al. 2020 on SHD), added to any loss while training.

For each regulated neuron layer with spike counts ``z [N, M]`` (``z = sum_t S[t]`` per sample
and neuron, the layer's output ``S [T, N, ...]`` flattened):

    lower = lower_strength * mean_{n,i} relu(lower - z[n, i])^2      (per neuron: none silent)
    upper = upper_strength * mean_n relu(mean_i z[n, i] - upper)^2   (per layer: few spikes)

and the loss is ``task + sum over layers (lower + upper)``. ``lower`` and ``upper`` count
spikes per sample (not rates: scale them with T); a strength 0 turns its bound off. ``layers``
names the layers (``L2``, ``L4.body.1``: the firing-rate monitors' names); null: every neuron
layer (name the hidden ones when the output layer spikes). The validation and test losses are
the task's alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snnrun.core.errors import SnnrunError
from snnrun.engine.monitor import neuron_layers
from snnrun.net.memory import recomputing

KEYS = ("lower", "lower_strength", "upper", "upper_strength", "layers")


class RateRegularizer:
    """Counts each regulated layer's spikes in every training forward (forward hooks) and
    turns them into the penalty of the module docstring."""

    def __init__(self, lower: float = 0.0, lower_strength: float = 0.0, upper: float = 0.0,
                 upper_strength: float = 0.0,
                 layers: Sequence[str] | None = None) -> None:  # fmt: skip
        for key, value in (("lower", lower), ("lower_strength", lower_strength),
                           ("upper", upper), ("upper_strength", upper_strength)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise SnnrunError(f"loss.rate_reg.{key} must be a number >= 0, got {value!r}")
        self.lower, self.lower_strength = float(lower), float(lower_strength)
        self.upper, self.upper_strength = float(upper), float(upper_strength)
        self.layers = list(layers) if layers is not None else None
        self.counts: dict[str, torch.Tensor] = {}

    @property
    def on(self) -> bool:
        return bool(self.lower_strength or self.upper_strength)

    def attach(self, model: nn.Module) -> None:
        """Hook the regulated layers of ``model``; an unknown layer name is one line."""
        found = dict(neuron_layers(model))
        names = self.layers if self.layers is not None else list(found)
        unknown = [n for n in names if n not in found]
        if unknown:
            raise SnnrunError(f"loss.rate_reg.layers names no neuron layer {unknown}; this "
                              f"network's are {', '.join(found) or 'none'}")  # fmt: skip
        if not names:
            raise SnnrunError("loss.rate_reg regulates spiking layers; this network has none")
        model.register_forward_pre_hook(lambda module, args: self.counts.clear())
        for name in names:
            found[name].register_forward_hook(self._counter(name))

    def _counter(self, name: str) -> Any:
        def count(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            if not (module.training and torch.is_grad_enabled()) or recomputing():
                return
            spikes = out.sum(0) if getattr(module, "step_mode", "m") == "m" else out
            spikes = spikes.flatten(1).float()
            self.counts[name] = self.counts[name] + spikes if name in self.counts else spikes

        return count

    def penalty(self) -> torch.Tensor | float:
        """The summed penalty of the last training forward (0.0 outside training)."""
        total: torch.Tensor | float = 0.0
        for z in self.counts.values():
            if self.lower_strength:
                total = total + self.lower_strength * F.relu(self.lower - z).square().mean()
            if self.upper_strength:
                excess = F.relu(z.mean(1) - self.upper)
                total = total + self.upper_strength * excess.square().mean()
        return total


def build_rate_reg(options: dict[str, Any] | None) -> RateRegularizer | None:
    """``loss.rate_reg``'s regulariser; None when absent or both strengths are 0."""
    if not options:
        return None
    unknown = sorted(set(options) - set(KEYS))
    if unknown:
        raise SnnrunError(f"unknown loss.rate_reg key(s) {unknown}; known: {', '.join(KEYS)}")
    regularizer = RateRegularizer(**options)
    return regularizer if regularizer.on else None
