"""Spiking self-attention (Spikformer, Zhou et al., ICLR 2023): the ``spiking_self_attention``
layer entry.

Tokens are channels first, ``X`` ``[T, N, C, L]`` (SpikingJelly's ``[T, B, C, N]``; a
``{type: flatten, start_dim: 2}`` entry turns ``[C, H, W]`` maps into ``[C, H*W]`` tokens).
With ``SN`` a spiking neuron, ``BN`` a BatchNorm1d and ``W`` a 1x1 conv1d (a linear map of the
channels, applied to every token)::

    Q = SN_q(BN_q(W_q X)),  K = SN_k(BN_k(W_k X)),  V = SN_v(BN_v(W_v X))   [T, N, C, L] spikes
    A_h = s * V_h K_h^T Q_h           per head h, Q_h, K_h, V_h [d, L], d = C / heads  -> [d, L]
        (= (s * Q'_h K'_h^T V'_h)^T for tokens-first Q' = Q_h^T: attention without softmax)
    Y = SN_p(BN_p(W_p SN_a(A)))                                             [T, N, C, L] spikes

``s`` is a fixed scale (0.125) and ``SN_a`` fires at its own threshold (0.5), as in Spikformer
and SpikingJelly's ``SpikingSelfAttention`` (whose fused ``qkv`` conv + BN equals the three
here: its weights split in three). ``V_h K_h^T`` (``[d, d]``) is formed first, as SpikingJelly
does: ``O(d^2 L)`` rather than ``O(d L^2)``.

Entry options: ``heads`` (8, must divide ``C``), ``scale`` (0.125), ``attn_v_threshold`` (0.5),
``qkv_bias`` / ``proj_bias`` (false: the conv biases), ``neuron`` (a mapping merged over the
run's neuron group for all five neurons, e.g. ``{name: lif, tau: 2.0}``; ``attn_v_threshold``
then sets ``SN_a``'s threshold). The neurons are multi-step (``step_mode='m'``) whatever the
group says: the layer reshapes its input; in a network fed one step at a time it gets
``T = 1`` per call and its neurons keep their membranes between calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from snnrun.net.layers import LAYERS, Context, ModelBuildError, Shape
from snnrun.neuron.neurons import SpikingNeuron

NeuronFactory = Callable[[dict[str, Any]], SpikingNeuron]  # overrides -> neuron
OPTIONS = ("heads", "scale", "attn_v_threshold", "qkv_bias", "proj_bias", "neuron")


class SpikingSelfAttention(nn.Module):
    """Spikformer's SSA over ``[T, N, C, L]`` → ``[T, N, C, L]`` (see the module docstring).

    Submodules ``{q,k,v,proj}_conv`` (``nn.Conv1d`` 1x1), ``{q,k,v,proj}_bn``,
    ``{q,k,v,proj}_neuron`` and ``attn_neuron``, named so that monitors read ``L5.q_neuron``.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        neuron: NeuronFactory,
        scale: float = 0.125,
        attn_v_threshold: float = 0.5,
        qkv_bias: bool = False,
        proj_bias: bool = False,
    ) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"heads={heads} must divide the {channels} channels")
        self.channels, self.heads, self.scale = channels, heads, float(scale)
        for name in ("q", "k", "v"):
            self._add_branch(name, qkv_bias, neuron({}))
        self.attn_neuron = _multi_step(neuron({"v_threshold": attn_v_threshold}))
        self._add_branch("proj", proj_bias, neuron({}))
        self.out_shape: Shape | None = None  # set by the builder

    def _add_branch(self, name: str, bias: bool, neuron: SpikingNeuron) -> None:
        """``{name}_conv`` (1x1), ``{name}_bn`` and ``{name}_neuron``."""
        self.add_module(f"{name}_conv", nn.Conv1d(self.channels, self.channels, 1, bias=bias))
        self.add_module(f"{name}_bn", nn.BatchNorm1d(self.channels))
        self.add_module(f"{name}_neuron", _multi_step(neuron))

    def _branch(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``SN(BN(W x))`` of branch ``name`` over ``[T, N, C, L]`` (conv and BN on
        ``[T*N, C, L]``)."""
        conv, bn, neuron = (getattr(self, f"{name}_{part}") for part in ("conv", "bn", "neuron"))
        return neuron(bn(conv(x.flatten(0, 1))).unflatten(0, x.shape[:2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[2] != self.channels:
            raise ValueError(
                f"spiking_self_attention takes [T, N, {self.channels}, L], got {list(x.shape)}"
            )
        q, k, v = (self._branch(name, x).unflatten(2, (self.heads, -1)) for name in "qkv")
        attn = (v @ k.transpose(-2, -1)) @ q * self.scale  # [T, N, heads, d, L]
        return self._branch("proj", self.attn_neuron(attn.flatten(2, 3)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, heads={self.heads}, scale={self.scale:g}"


def _multi_step(neuron: SpikingNeuron) -> SpikingNeuron:
    neuron.step_mode = "m"  # fed [T, N, ...] (T = 1 per call in a step-by-step network)
    return neuron


@LAYERS.register("spiking_self_attention")
def _spiking_self_attention(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise TypeError(
            f"spiking_self_attention got unknown option(s) {', '.join(sorted(unknown))}; "
            f"it takes {', '.join(OPTIONS)}"
        )
    label = f"{ctx.path} (spiking_self_attention)"
    heads = options.get("heads", 8)
    overrides = options.get("neuron") or {}
    if len(in_shape) != 2:
        raise ModelBuildError(
            f"{label} takes tokens [C, L], got [{', '.join(map(str, in_shape))}]; put "
            "{type: flatten, start_dim: 2} before it to turn [C, H, W] maps into [C, H*W] tokens"
        )
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1 or in_shape[0] % heads:
        raise ModelBuildError(
            f"{label}: heads={heads!r} must be a positive integer dividing the {in_shape[0]} "
            f"channels; pick one of {', '.join(map(str, _divisors(in_shape[0])))}"
        )
    if not isinstance(overrides, Mapping):
        raise ModelBuildError(
            f"{label}: neuron must be a mapping of neuron options like {{name: lif, tau: 2.0}}, "
            f"got {overrides!r}"
        )

    def neuron(extra: dict[str, Any]) -> SpikingNeuron:
        return ctx.neuron({**overrides, **extra, "step_mode": "m"})

    module = SpikingSelfAttention(
        in_shape[0],
        heads,
        neuron,
        scale=options.get("scale", 0.125),
        attn_v_threshold=options.get("attn_v_threshold", 0.5),
        qkv_bias=options.get("qkv_bias", False),
        proj_bias=options.get("proj_bias", False),
    )
    module.out_shape = tuple(in_shape)
    return module


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
