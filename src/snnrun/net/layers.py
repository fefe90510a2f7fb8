"""The layer registry: config entries → modules that map ``[T, N, ...]`` to ``[T, N, ...]``.

A builder takes the entry's options, the per-sample input shape (``[C, H, W]``, ``[C, L]`` or
``[F]``) and the :class:`Context` (the run's neuron groups and the entry's config path), so sizes
such as ``in_channels`` and ``in_features`` are inferred when the entry leaves them out.
Stateless layers run on ``[T*N, ...]`` folded (:class:`TimeFolded`). Blocks that hold entries of
their own (``sequential``, ``residual``, ``repeat``, ``recurrent``) build them through
:func:`build_layers`, so shapes are inferred, and errors named, at any depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from snnrun.core.compose import FLATTEN, MAX_NESTING, short_path
from snnrun.core.errors import SnnrunError
from snnrun.core.registry import Registry, UnknownNameError
from snnrun.neuron.neurons import SpikingNeuron, Stateful, build_neuron, merge_neuron_options

Shape = tuple[int, ...]
LayerBuilder = Callable[..., nn.Module]  # (options, in_shape, context) -> module

LAYERS: Registry[LayerBuilder] = Registry("layer type")
SUBLISTS = ("layers", "body", "shortcut")  # the entry keys that hold entries of their own
AUTO = "auto"  # model.classes, or one of COUNTS in an entry: the dataset's class count
COUNTS = ("out_features", "out_channels", "classes", "num_classes")


class ModelBuildError(SnnrunError, ValueError):
    """A model config that cannot be built for the dataset's input."""


@dataclass(frozen=True)
class Context:
    """What a layer builder knows besides its options and input shape."""

    neuron_groups: dict[str, Any]  # the run's ``neuron`` and ``surrogate`` groups
    path: str = "model.layers"  # the entry's config path: "model.layers[3].body[1]"
    classes: int | None = None  # the dataset's class count: what a size given as ``auto`` is

    def neuron(self, options: dict[str, Any], in_shape: Shape | None = None) -> SpikingNeuron:
        """A neuron from the groups' settings, overridden by ``options`` (a ``neuron`` entry's);
        ``in_shape`` (per sample) sizes what it learns per channel or neuron."""
        options = dict(options)
        surrogate = options.pop("surrogate", None) or self.neuron_groups["surrogate"]
        merged = merge_neuron_options(self.neuron_groups["neuron"], options)
        return build_neuron(merged, surrogate, in_shape)


@dataclass(frozen=True)
class Entry:
    """What the builder records on every module it built from a config entry."""

    type: str  # the entry's ``type``: which layer builder made it
    path: str  # its config path
    shape: Shape  # its per-sample output shape


def build_layers(
    entries: Sequence[Any], in_shape: Shape, ctx: Context, key: str = ""
) -> tuple[list[nn.Module], Shape]:
    """The modules of the entry list at ``ctx.path`` + ``key``, and their output shape."""
    path = f"{ctx.path}.{key}" if key else ctx.path
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise ModelBuildError(f"{path} must be a list of layer entries, got {entries!r}")
    modules: list[nn.Module] = []
    shape = tuple(in_shape)
    for i, entry in enumerate(entries):
        built, shape = build_entry(entry, shape, replace(ctx, path=f"{path}[{i}]"))
        modules += built
    return modules, shape


def check_nesting(entries: Any, path: str = "model.layers") -> None:
    """Refuse an entry list nested more than :data:`MAX_NESTING` lists deep (the deepest
    nesting and the first entry past the limit named), or one that holds itself; walked
    without recursion."""
    todo: list[tuple[Any, list[str], tuple[int, ...]]] = [(entries, [path], ())]
    deepest, first = 0, None
    while todo:
        items, parts, around = todo.pop()
        if not isinstance(items, Sequence) or isinstance(items, str):
            continue
        if id(items) in around:
            raise ModelBuildError(
                f"{short_path(parts)} is a list around it: a network cannot hold itself; "
                "write the nesting out"
            )
        deepest = max(deepest, len(around) + 1)
        inner = []
        for i, entry in enumerate(items):
            here = [*parts[:-1], f"{parts[-1]}[{i}]"]
            if len(around) >= MAX_NESTING and first is None:
                first = here
            if isinstance(entry, Mapping):
                inner += [
                    (entry[k], [*here, k], (*around, id(items))) for k in SUBLISTS if k in entry
                ]
                inner += [
                    (node["layers"], [*here, "nodes", str(name), "layers"], (*around, id(items)))
                    for name, node in _nodes(entry)
                    if "layers" in node
                ]
        todo += reversed(inner)  # depth first, in config order
    if first is not None:
        raise ModelBuildError(
            f"{path} nests {deepest} lists deep, more than {MAX_NESTING} ({short_path(first)} "
            f"is in list {MAX_NESTING + 1}): {FLATTEN}"
        )


def build_entry(entry: Any, in_shape: Shape, ctx: Context) -> tuple[list[nn.Module], Shape]:
    """The module(s) of one entry (a builder may return an ``nn.Sequential`` to splice in, as
    the ``nir`` entry does), each marked with its :class:`Entry`, and the output shape."""
    if not isinstance(entry, Mapping):
        raise ModelBuildError(f"{ctx.path} must be a mapping like {{type: linear, ...}}: {entry!r}")
    auto = ctx.classes is not None
    options = {
        k: ctx.classes if auto and k in COUNTS and v == AUTO else v for k, v in entry.items()
    }
    layer_type = options.pop("type", None)
    label = f"{ctx.path} ({layer_type})"
    try:
        module = LAYERS.get(layer_type)(options, in_shape, ctx)
    except ModelBuildError:
        raise
    except UnknownNameError as e:
        raise ModelBuildError(f"{label}: {e}") from None
    except (TypeError, ValueError) as e:  # a neuron's error names its key (group or entry)
        given = f"bad options {options}: " if options and layer_type != "neuron" else ""
        raise ModelBuildError(f"{label}: {given}{e}") from None
    parts = list(module) if type(module) is nn.Sequential else [module]
    shape = in_shape
    for part in parts:
        shape = output_shape(part, shape, label)
        if len(parts) == 1 or not isinstance(getattr(part, "snnrun_entry", None), Entry):
            part.snnrun_entry = Entry(layer_type, ctx.path, shape)  # a spliced part keeps its own
    return parts, shape


def output_shape(module: nn.Module, in_shape: Shape, label: str) -> Shape:
    """The per-sample output shape of ``module`` for ``in_shape``: recorded by a block, the
    input's for a neuron, else from a run on a dummy ``[T=1, N=2, *in_shape]`` (an output that
    does not keep ``[T, N]`` in front is refused)."""
    if isinstance(module, SpikingNeuron):
        return in_shape
    recorded = getattr(module, "out_shape", None)
    if recorded is not None:
        return recorded
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, 2, *in_shape))
    except (RuntimeError, ValueError, IndexError, TypeError, AttributeError, KeyError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelBuildError(
            f"{label} cannot take input of shape [T, N, {', '.join(map(str, in_shape))}]: "
            f"{first_line}"
        ) from None
    finally:
        module.train(was_training)
        for m in module.modules():
            if isinstance(m, Stateful):
                m.reset()
    if not isinstance(out, torch.Tensor):
        raise ModelBuildError(f"{label} must return a tensor [T, N, ...], got {type(out).__name__}")
    if tuple(out.shape[:2]) != (1, 2):
        dims = ", ".join(map(str, in_shape))
        raise ModelBuildError(
            f"{label} returns {list(out.shape)} for input [T=1, N=2, {dims}]: it must return "
            "[T, N, ...], time and batch first (a mean over T belongs to the loss, which takes "
            "the network's [T, N, classes])"
        )
    return tuple(out.shape[2:])


def walk_entries(entries: Any) -> Iterator[Mapping[str, Any]]:
    """Every entry of a ``model.layers`` list, nested ones included (depth first)."""
    for entry in entries if isinstance(entries, Sequence) and not isinstance(entries, str) else []:
        if isinstance(entry, Mapping):
            yield entry
            for key in SUBLISTS:
                yield from walk_entries(entry.get(key))
            for _, node in _nodes(entry):  # a graph's nodes: a list, or one entry of their own
                yield from walk_entries(node.get("layers") if "type" not in node else [node])


def _nodes(entry: Mapping[str, Any]) -> list[tuple[Any, Mapping[str, Any]]]:
    """A ``graph`` entry's ``(name, node)`` pairs (none for other entries)."""
    nodes = entry.get("nodes")
    if not isinstance(nodes, Mapping):
        return []
    return [(name, node) for name, node in nodes.items() if isinstance(node, Mapping)]


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


class Mean(nn.Module):
    """The mean over one per-sample axis: ``[T, N, C, L] → [T, N, C]`` for ``dim=-1`` (the
    token average before a transformer's classifier head)."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(self.dim if self.dim < 0 else self.dim + 2)

    def extra_repr(self) -> str:
        return f"dim={self.dim} (per sample)"


def _folded(cls: type[nn.Module], infer: Callable[[Shape], dict[str, Any]] | None = None):
    """A builder for a stateless torch layer, with sizes inferred from the input shape."""

    def build(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
        inferred = infer(in_shape) if infer else {}
        return TimeFolded(cls(**{**inferred, **options}))

    return build


def _channels(shape: Shape) -> dict[str, Any]:
    return {"in_channels": shape[0]}


def _features(shape: Shape) -> dict[str, Any]:
    return {"num_features": shape[0]}


LAYERS.register("conv1d")(_folded(nn.Conv1d, _channels))
LAYERS.register("conv2d")(_folded(nn.Conv2d, _channels))
LAYERS.register("batchnorm1d")(_folded(nn.BatchNorm1d, _features))
LAYERS.register("batchnorm2d")(_folded(nn.BatchNorm2d, _features))
LAYERS.register("layernorm")(_folded(nn.LayerNorm, lambda s: {"normalized_shape": s[-1]}))
LAYERS.register("maxpool1d")(_folded(nn.MaxPool1d))
LAYERS.register("maxpool2d")(_folded(nn.MaxPool2d))
LAYERS.register("avgpool1d")(_folded(nn.AvgPool1d))
LAYERS.register("avgpool2d")(_folded(nn.AvgPool2d))
LAYERS.register("adaptive_avgpool2d")(_folded(nn.AdaptiveAvgPool2d))
LAYERS.register("flatten")(_folded(nn.Flatten))
LAYERS.register("linear")(_folded(nn.Linear, lambda s: {"in_features": s[-1]}))


@LAYERS.register("unflatten")
def _unflatten(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
    """Tokens ``[C, L]`` back to maps ``[C, H, W]``: ``sizes: [H, W]`` (null: square,
    ``H = W = sqrt(L)``), the inverse of ``{type: flatten, start_dim: 2}``."""
    unknown = set(options) - {"sizes"}
    if unknown:
        raise TypeError(f"unflatten takes sizes, got {', '.join(sorted(unknown))}")
    sizes = options.get("sizes")
    if sizes is None:
        side = math.isqrt(in_shape[-1])
        if side * side != in_shape[-1]:
            raise ValueError(f"{in_shape[-1]} tokens are no square; give sizes: [H, W]")
        sizes = [side, side]
    return TimeFolded(nn.Unflatten(-1, tuple(sizes)))


@LAYERS.register("identity")
def _identity(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
    if options:
        raise TypeError(f"identity takes no options, got {', '.join(sorted(options))}")
    return nn.Identity()


@LAYERS.register("mean")
def _mean(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
    return Mean(**options)


@LAYERS.register("dropout")
def _dropout(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
    return MultiStepDropout(**options)


@LAYERS.register("voting")
def _voting(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
    return Voting(**options)


@LAYERS.register("neuron")
def _neuron(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
    """A neuron layer: the ``neuron``/``surrogate`` groups' settings, overridden by the entry."""
    return ctx.neuron(options, in_shape)
