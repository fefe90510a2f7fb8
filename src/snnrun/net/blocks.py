"""Blocks: entries that hold entries — ``sequential``, ``repeat``, ``residual``, ``recurrent``.

Every block builds its sub-lists through :func:`~snnrun.net.layers.build_layers`, so shapes are
inferred and errors named (``model.layers[3].body[1]``) at any depth, and records its output
shape (``out_shape``) so that the builder never runs it on a dummy input.

- ``{type: sequential, layers: [...]}``: the layers in order.
- ``{type: repeat, times: n, layers: [...]}``: ``n`` copies of the layers, each with its own
  parameters (built ``n`` times from the config); ``times: 0`` is the identity. Its size is
  estimated from its first two copies before the rest are built, and refused above
  :data:`MAX_REPEAT_MODULES` modules or :data:`MAX_REPEAT_PARAMETERS` parameters; a stop request
  (SIGTERM) ends the build between copies.
- ``{type: residual, body: [...], shortcut: [...], connect: add}``:
  ``y = connect(body(x), shortcut(x))``; ``shortcut`` defaults to the identity. The connects
  (:data:`CONNECTS`) are SEW-ResNet's (Fang et al., NeurIPS 2021, eq. 8-10) with ``A = body(x)``
  and ``S = shortcut(x)``: ``add`` ``A + S``, ``and`` ``A S``, ``iand`` ``(1 - A) S``. ``and`` and
  ``iand`` need spikes: the body must end with a neuron. ``concat`` joins ``[A, S]`` along the
  per-sample dimension ``dim`` (0, the default: channels or features; DenseNet's connection):
  the shapes must agree elsewhere.
- ``{type: recurrent, layers: [...], ...neuron options}``: a neuron fed its own spikes of the
  previous step through the ``layers`` (the projection, e.g. a ``linear`` or a ``conv2d`` that
  keeps the shape; a ``linear`` or conv there keeps it unless told otherwise):
  ``S[t] = neuron(X[t] + P(S[t-1]))``, ``S[-1] = 0``. snnTorch's ``RLeaky`` (``all_to_all``,
  linear or convolutional) with ``neuron=leaky``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from snnrun.core.registry import Registry
from snnrun.core.stop import check_stop
from snnrun.net.layers import LAYERS, Context, ModelBuildError, Shape, build_layers
from snnrun.neuron.neurons import SpikingNeuron, Stateful

CONNECTS: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("connect")
CONNECTS.register("add")(lambda a, s: a + s)
CONNECTS.register("and")(lambda a, s: a * s)
CONNECTS.register("iand")(lambda a, s: (1.0 - a) * s)
CONNECTS.register("concat")(lambda a, s: torch.cat((a, s), 2))  # dim 0; Residual keeps its dim
SPIKE_CONNECTS = ("and", "iand")  # defined on spikes only

# A repeat's bounds, far above the zoo's largest networks (sew_resnet34: 259 modules;
# spiking_vgg11: 129 million parameters): a typo'd ``times`` must not build for minutes.
MAX_REPEAT_MODULES = 100_000
MAX_REPEAT_PARAMETERS = 10_000_000_000  # 40 GB of float32 weights


class Block(nn.Sequential):
    """Layers in order over ``[T, N, ...]`` (a ``sequential`` or ``repeat`` entry; a copy of a
    ``repeat``); ``out_shape``: the per-sample output shape."""

    def __init__(self, layers: list[nn.Module], out_shape: Shape) -> None:
        super().__init__(*layers)
        self.out_shape = out_shape


class Residual(nn.Module):
    """``connect(body(x), shortcut(x))`` over ``[T, N, ...]``; ``dim``: the per-sample
    dimension ``concat`` joins along (0 or more)."""

    def __init__(self, body: Block, shortcut: Block, connect: str, dim: int = 0) -> None:
        super().__init__()
        self.body, self.shortcut = body, shortcut
        self.connect, self.dim = connect, dim
        self._connect = CONNECTS.get(connect)
        self.out_shape = body.out_shape
        if connect == "concat":
            joined = body.out_shape[dim] + shortcut.out_shape[dim]
            self.out_shape = (*body.out_shape[:dim], joined, *body.out_shape[dim + 1 :])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.connect == "concat":
            return torch.cat((self.body(x), self.shortcut(x)), self.dim + 2)
        return self._connect(self.body(x), self.shortcut(x))

    def extra_repr(self) -> str:
        return f"connect={self.connect}" + (f", dim={self.dim}" if self.connect == "concat" else "")


class Recurrent(Stateful):
    """``S[t] = neuron(X[t] + P(S[t-1]))`` over ``[T, N, ...]``, ``S[-1] = 0``.

    The time loop runs here, one step at a time (the neuron keeps its membrane between steps),
    since step ``t`` needs the spikes of ``t-1``: no backend fuses it over time. The last spikes
    are kept until :meth:`reset`, so a network fed one step at a time gives the same result.
    """

    def __init__(self, neuron: SpikingNeuron, projection: Block) -> None:
        super().__init__()
        neuron.step_mode = "m"  # fed [1, N, ...] per step
        self.neuron, self.projection = neuron, projection
        self.spikes: torch.Tensor | None = None

    def reset(self) -> None:
        self.spikes = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spikes = self.spikes if self.spikes is not None else torch.zeros_like(x[:1])
        out = []
        for t in range(x.shape[0]):
            spikes = self.neuron(x[t : t + 1] + self.projection(spikes))
            out.append(spikes)
        self.spikes = spikes
        return torch.cat(out)


def ends_in_spikes(block: nn.Module) -> bool:
    """Whether a block's output is spikes by construction: it ends with a neuron, a recurrent
    entry, or a block (an ``and``/``iand`` residual, a ``concat`` of spikes, a graph whose
    output node does) that does."""
    if isinstance(block, (SpikingNeuron, Recurrent)):
        return True
    spikes_out = getattr(block, "spikes_out", None)  # a graph block says it itself
    if callable(spikes_out):
        return bool(spikes_out())
    if isinstance(block, Residual):
        if block.connect == "concat":
            return ends_in_spikes(block.body) and ends_in_spikes(block.shortcut)
        return block.connect in SPIKE_CONNECTS
    if isinstance(block, Block):
        return len(block) > 0 and ends_in_spikes(block[-1])
    return False


def _only(options: dict[str, Any], kind: str, allowed: tuple[str, ...]) -> None:
    unknown = set(options) - set(allowed)
    if unknown:
        raise TypeError(
            f"{kind} got unknown option(s) {', '.join(sorted(unknown))}; "
            f"it takes {', '.join(allowed)}"
        )


@LAYERS.register("sequential")
def _sequential(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
    _only(options, "sequential", ("layers",))
    return Block(*build_layers(options.get("layers", []), in_shape, ctx, "layers"))


@LAYERS.register("repeat")
def _repeat(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
    _only(options, "repeat", ("times", "layers"))
    times = options.get("times")
    if not isinstance(times, int) or isinstance(times, bool) or times < 0:
        raise ModelBuildError(
            f"{ctx.path} (repeat): times must be a non-negative integer, got {times!r}"
        )
    copies, shape = [], in_shape
    for i in range(times):
        check_stop()  # SIGTERM ends a long build between copies
        copy = Block(*build_layers(options.get("layers", []), shape, ctx, "layers"))
        copies.append(copy)
        shape = copy.out_shape
        if i == min(times, 2) - 1:
            _check_repeat_size(f"{ctx.path} (repeat)", times, copies)
    return Block(copies, shape)


def _check_repeat_size(label: str, times: int, copies: list[Block]) -> None:
    """Refuse a repeat whose ``times`` copies would be too large, estimated from the first (which
    may change the shape) and the second (what every later copy repeats)."""

    def size(block: Block) -> tuple[int, int]:
        return sum(1 for _ in block.modules()), sum(p.numel() for p in block.parameters())

    (m1, p1), (m2, p2) = size(copies[0]), size(copies[-1])
    modules, params = m1 + (times - 1) * m2, p1 + (times - 1) * p2
    if modules > MAX_REPEAT_MODULES or params > MAX_REPEAT_PARAMETERS:
        raise ModelBuildError(
            f"{label}: times={times:,} would build about {modules:,} modules and {params:,} "
            f"parameters; a repeat builds at most {MAX_REPEAT_MODULES:,} modules and "
            f"{MAX_REPEAT_PARAMETERS:,} parameters (the zoo's largest networks: 259 modules, "
            "129 million parameters): lower times"
        )


@LAYERS.register("residual")
def _residual(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
    _only(options, "residual", ("body", "shortcut", "connect", "dim"))
    connect = options.get("connect", "add")
    CONNECTS.get(connect)
    body = Block(*build_layers(options.get("body") or [], in_shape, ctx, "body"))
    shortcut = Block(*build_layers(options.get("shortcut") or [], in_shape, ctx, "shortcut"))
    label = f"{ctx.path} (residual)"
    if connect == "concat":
        dim = _concat_dim(options.get("dim", 0), body.out_shape, shortcut.out_shape, label)
        return Residual(body, shortcut, connect, dim)
    if "dim" in options:
        raise ModelBuildError(f"{label}: dim is the dimension connect=concat joins along; "
                              f"connect={connect} takes none: drop dim")  # fmt: skip
    if body.out_shape != shortcut.out_shape:
        raise ModelBuildError(
            f"{label}: body gives [T, N, {', '.join(map(str, body.out_shape))}] but shortcut "
            f"gives [T, N, {', '.join(map(str, shortcut.out_shape))}]; make the shortcut match "
            "(e.g. a strided 1x1 conv2d + batchnorm2d)"
        )
    if connect in SPIKE_CONNECTS and not ends_in_spikes(body):
        raise ModelBuildError(
            f"{label}: connect={connect} acts on spikes, so the body must end with a "
            "{type: neuron} entry; or use connect=add"
        )
    return Residual(body, shortcut, connect)


def _concat_dim(dim: Any, body: Shape, shortcut: Shape, label: str) -> int:
    """``dim`` as a per-sample index (-1: the last); the branches must agree on every other
    dimension: else one line naming both shapes."""
    rank = len(body)
    if isinstance(dim, bool) or not isinstance(dim, int) or not -rank <= dim < rank:
        raise ModelBuildError(f"{label}: dim must be a per-sample dimension of [T, N, "
                              f"{', '.join(map(str, body))}], -{rank}..{rank - 1} (0: channels or "
                              f"features), got {dim!r}")  # fmt: skip
    dim %= rank
    others = lambda shape: (*shape[:dim], *shape[dim + 1 :])  # noqa: E731
    if len(shortcut) != rank or others(body) != others(shortcut):
        raise ModelBuildError(
            f"{label}: connect=concat joins along dim {dim}, so body [T, N, "
            f"{', '.join(map(str, body))}] and shortcut [T, N, {', '.join(map(str, shortcut))}] "
            "must agree on every other dimension"
        )
    return dim


def _keeping_shape(entry: Any, in_shape: Shape) -> Any:
    """A projection entry's size defaults: a ``linear`` keeps the features, a ``conv1d`` /
    ``conv2d`` the channels and (``padding: same``) the size."""
    if not isinstance(entry, dict):
        return entry
    if entry.get("type") == "linear":
        return {"out_features": in_shape[-1], **entry}
    if entry.get("type") in ("conv1d", "conv2d"):
        return {"out_channels": in_shape[0], "padding": "same", **entry}
    return entry


@LAYERS.register("recurrent")
def _recurrent(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
    options = dict(options)
    entries = options.pop("layers", None)
    if not entries:
        raise ModelBuildError(
            f"{ctx.path} (recurrent): give the projection of the spikes of step t-1 as "
            "layers: [{type: linear}] (or [{type: conv2d, kernel_size: 3}])"
        )
    entries = [_keeping_shape(e, in_shape) for e in entries]
    projection = Block(*build_layers(entries, in_shape, ctx, "layers"))
    if projection.out_shape != tuple(in_shape):
        raise ModelBuildError(
            f"{ctx.path} (recurrent): the projection maps [T, N, {', '.join(map(str, in_shape))}]"
            f" to [T, N, {', '.join(map(str, projection.out_shape))}]; it must keep the shape "
            "(out_features / out_channels equal to the input's, padding that keeps the size)"
        )
    if options.get("name", ctx.neuron_groups["neuron"]["name"]) == "psn":
        raise ModelBuildError(
            f"{ctx.path} (recurrent): psn computes all T steps at once and cannot be fed its own "
            "spikes step by step; pick a neuron with a state (name: lif, leaky, alif, ...)"
        )
    recurrent = Recurrent(ctx.neuron(options, in_shape), projection)
    recurrent.out_shape = tuple(in_shape)  # never run on a dummy input at build time
    return recurrent
