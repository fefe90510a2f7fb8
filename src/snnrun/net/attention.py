"""Spiking self-attentions: Spikformer's SSA (Zhou et al., ICLR 2023), the
``spiking_self_attention`` entry; the Spike-driven Transformer's SDSA (Yao et al., NeurIPS
2023), the ``spike_driven_self_attention`` entry (:class:`SpikeDrivenSelfAttention`); and
QKFormer's Q-K attentions (Zhou et al., NeurIPS 2024), the ``qk_token_attention`` and
``qk_channel_attention`` entries (:class:`QKAttention`).

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
        return neuron(_conv_bn(conv, bn, x))

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


class SpikeDrivenSelfAttention(nn.Module):
    """SDSA (Yao et al., NeurIPS 2023) over spikes ``S`` ``[T, N, C, H, W]`` (or tokens
    ``[T, N, C, L]``), with 1x1 convs ``W`` and BatchNorms ``BN``::

        Q = SN_q(BN_q(W_q S)),  K = SN_k(BN_k(W_k S)),  V = SN_v(BN_v(W_v S))       spikes
        KV_c = SN_a(sum over tokens of K_c V_c)       per channel c: [T, N, C, 1, 1]
        Y = BN_p(W_p (Q KV))                          real-valued (``fire``: SN_p(...) spikes)

    No softmax and no products of two real values: ``K V`` and ``Q KV`` are masks. ``SN_a``
    fires at ``attn_v_threshold`` (0.5). The heads only group channels, which the per-channel
    sum makes irrelevant; ``heads`` is checked (it must divide ``C``) for a config that names
    it. SDT puts a neuron before it and adds its real output to the block's input (the membrane
    shortcut): ``{type: residual, body: [{type: neuron}, {type: spike_driven_self_attention}]}``.
    As SpikingJelly 2.0's ``SpikeDrivenSelfAttention`` without its shortcut neuron and sum.
    """

    def __init__(self, channels: int, maps: bool, neuron: NeuronFactory,
                 attn_v_threshold: float = 0.5, fire: bool = False) -> None:  # fmt: skip
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if maps else (nn.Conv1d, nn.BatchNorm1d)
        self.channels = channels
        for name in ("q", "k", "v"):
            self.add_module(f"{name}_conv", conv(channels, channels, 1, bias=False))
            self.add_module(f"{name}_bn", norm(channels))
            self.add_module(f"{name}_neuron", _multi_step(neuron({})))
        self.attn_neuron = _multi_step(neuron({"v_threshold": attn_v_threshold}))
        self.proj_conv, self.proj_bn = conv(channels, channels, 1), norm(channels)
        self.proj_neuron = _multi_step(neuron({})) if fire else None
        self.out_shape: Shape | None = None  # set by the builder

    def _folded(self, name: str, x: torch.Tensor) -> torch.Tensor:
        conv, bn = getattr(self, f"{name}_conv"), getattr(self, f"{name}_bn")
        return _conv_bn(conv, bn, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (4, 5) or x.shape[2] != self.channels:
            raise ValueError(f"spike_driven_self_attention takes [T, N, {self.channels}, ...], "
                             f"got {list(x.shape)}")  # fmt: skip
        q, k, v = (getattr(self, f"{n}_neuron")(self._folded(n, x)) for n in "qkv")
        tokens = tuple(range(3, x.dim()))
        kv = self.attn_neuron((k * v).sum(tokens, keepdim=True))
        y = self._folded("proj", q * kv)
        return y if self.proj_neuron is None else self.proj_neuron(y)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, fire={self.proj_neuron is not None}"


class QKAttention(nn.Module):
    """QKFormer's Q-K attention (Zhou et al., NeurIPS 2024) over spike tokens ``X``
    ``[T, N, C, L]``, with 1x1 conv1d ``W`` and BatchNorms ``BN``::

        [Q; K] = SN_qk(BN_qk(W_qk X))                   [T, N, 2C, L] spikes, Q the first C
        token:   A = SN_a(sum of Q_h over its d channels)    per head h: [T, N, heads, 1, L]
        channel: A = SN_a(sum of Q over the L tokens)        per channel: [T, N, C, 1]
        Y = SN_p(BN_p(W_p (A K)))                        [T, N, C, L] spikes (``fire``: true)

    ``A`` masks ``K``: the token variant keeps or drops whole tokens of each head, the channel
    one whole channels; linear in ``L``. ``SN_a`` fires at ``attn_v_threshold`` (0.5). As
    SpikingJelly 2.0's ``QKAttention`` (``TokenQKAttention``, ``ChannelQKAttention``)."""

    def __init__(self, channels: int, heads: int, kind: str, neuron: NeuronFactory,
                 attn_v_threshold: float = 0.5, fire: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.channels, self.heads, self.kind = channels, heads, kind
        self.qk_conv = nn.Conv1d(channels, 2 * channels, 1, bias=False)
        self.qk_bn = nn.BatchNorm1d(2 * channels)
        self.qk_neuron = _multi_step(neuron({}))
        self.attn_neuron = _multi_step(neuron({"v_threshold": attn_v_threshold}))
        self.proj_conv = nn.Conv1d(channels, channels, 1, bias=False)
        self.proj_bn = nn.BatchNorm1d(channels)
        self.proj_neuron = _multi_step(neuron({})) if fire else None
        self.out_shape: Shape | None = None  # set by the builder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[2] != self.channels:
            raise ValueError(f"qk_{self.kind}_attention takes [T, N, {self.channels}, L], got "
                             f"{list(x.shape)}")  # fmt: skip
        qk = _conv_bn(self.qk_conv, self.qk_bn, x)
        q, k = self.qk_neuron(qk).chunk(2, dim=2)
        if self.kind == "token":
            mask = self.attn_neuron(q.unflatten(2, (self.heads, -1)).sum(3, keepdim=True))
            y = (mask * k.unflatten(2, (self.heads, -1))).flatten(2, 3)
        else:
            y = self.attn_neuron(q.sum(3, keepdim=True)) * k
        y = _conv_bn(self.proj_conv, self.proj_bn, y)
        return y if self.proj_neuron is None else self.proj_neuron(y)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, heads={self.heads}, kind={self.kind}"


QK_OPTIONS = ("heads", "attn_v_threshold", "fire", "neuron")


def _qk_attention(kind: str) -> Callable[[dict[str, Any], Shape, Context], nn.Module]:
    entry = f"qk_{kind}_attention"

    def build(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
        _only(options, QK_OPTIONS, entry)
        label = f"{ctx.path} ({entry})"
        if len(in_shape) != 2:
            raise ModelBuildError(
                f"{label} takes tokens [C, L], got [{', '.join(map(str, in_shape))}]; put "
                "{type: flatten, start_dim: 2} before it (and {type: unflatten} after, for maps)"
            )
        heads = options.get("heads", 8)
        _check_heads(heads, in_shape[0], label)
        neuron = _neuron_factory(options.get("neuron"), ctx, label)
        module = QKAttention(in_shape[0], heads, kind, neuron,
                             attn_v_threshold=options.get("attn_v_threshold", 0.5),
                             fire=bool(options.get("fire", True)))  # fmt: skip
        module.out_shape = tuple(in_shape)
        return module

    return build


LAYERS.register("qk_token_attention")(_qk_attention("token"))
LAYERS.register("qk_channel_attention")(_qk_attention("channel"))

SDSA_OPTIONS = ("heads", "attn_v_threshold", "fire", "neuron")


@LAYERS.register("spike_driven_self_attention")
def _spike_driven_self_attention(options: dict[str, Any], in_shape: Shape,
                                 ctx: Context) -> nn.Module:  # fmt: skip
    _only(options, SDSA_OPTIONS, "spike_driven_self_attention")
    label = f"{ctx.path} (spike_driven_self_attention)"
    if len(in_shape) not in (2, 3):
        raise ModelBuildError(f"{label} takes maps [C, H, W] or tokens [C, L], got "
                              f"[{', '.join(map(str, in_shape))}]")  # fmt: skip
    _check_heads(options.get("heads", 8), in_shape[0], label)
    neuron = _neuron_factory(options.get("neuron"), ctx, label)
    module = SpikeDrivenSelfAttention(in_shape[0], len(in_shape) == 3, neuron,
                                      attn_v_threshold=options.get("attn_v_threshold", 0.5),
                                      fire=bool(options.get("fire", False)))  # fmt: skip
    module.out_shape = tuple(in_shape)
    return module


def _only(options: dict[str, Any], allowed: tuple[str, ...], entry: str) -> None:
    unknown = set(options) - set(allowed)
    if unknown:
        raise TypeError(f"{entry} got unknown option(s) {', '.join(sorted(unknown))}; it takes "
                        f"{', '.join(allowed)}")  # fmt: skip


def _check_heads(heads: Any, channels: int, label: str) -> None:
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1 or channels % heads:
        raise ModelBuildError(
            f"{label}: heads={heads!r} must be a positive integer dividing the {channels} "
            f"channels; pick one of {', '.join(map(str, _divisors(channels)))}"
        )


def _neuron_factory(overrides: Any, ctx: Context, label: str) -> NeuronFactory:
    """The layer's neurons: the run's group with the entry's ``neuron`` mapping over it."""
    overrides = overrides or {}
    if not isinstance(overrides, Mapping):
        raise ModelBuildError(
            f"{label}: neuron must be a mapping of neuron options like {{name: lif, tau: 2.0}}, "
            f"got {overrides!r}"
        )

    def neuron(extra: dict[str, Any]) -> SpikingNeuron:
        return ctx.neuron({**overrides, **extra, "step_mode": "m"})

    return neuron


def _conv_bn(conv: nn.Module, bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``BN(W x)`` over ``[T, N, C, ...]``, the conv and BN on ``[T*N, C, ...]``."""
    return bn(conv(x.flatten(0, 1))).unflatten(0, x.shape[:2])


def _multi_step(neuron: SpikingNeuron) -> SpikingNeuron:
    neuron.step_mode = "m"  # fed [T, N, ...] (T = 1 per call in a step-by-step network)
    return neuron


@LAYERS.register("spiking_self_attention")
def _spiking_self_attention(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
    _only(options, OPTIONS, "spiking_self_attention")
    label = f"{ctx.path} (spiking_self_attention)"
    heads = options.get("heads", 8)
    if len(in_shape) != 2:
        raise ModelBuildError(
            f"{label} takes tokens [C, L], got [{', '.join(map(str, in_shape))}]; put "
            "{type: flatten, start_dim: 2} before it to turn [C, H, W] maps into [C, H*W] tokens"
        )
    _check_heads(heads, in_shape[0], label)
    neuron = _neuron_factory(options.get("neuron"), ctx, label)
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
