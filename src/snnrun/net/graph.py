"""The ``graph`` block: a multi-branch network of named nodes (Inception, NAS cells, DenseNet).

.. code-block:: yaml

    - type: graph
      nodes:
        a: {layers: [{type: conv2d, out_channels: 8, kernel_size: 1}, {type: neuron}]}
        b: {inputs: [input], layers: [{type: conv2d, out_channels: 8, kernel_size: 3}]}
        c: {inputs: [a, b], merge: concat, layers: [{type: neuron}]}
      output: c

Each node merges its ``inputs`` (node names; ``input`` is the block's input; default: the node
declared before it, the first node ``input``) and runs its ``layers`` (or one entry given in
the node itself: ``{type: ..., inputs: ...}``) on the result. ``merge`` joins two or more inputs
over ``[T, N, ...]``: ``add`` (the default) ``a + b + ...``, ``mul`` ``a b ...``, ``and`` the same
on spikes, ``iand`` ``(1 - a) b`` (two inputs, SEW's), ``concat`` along the per-sample ``dim``
(0: channels or features). ``output`` (default: the last node) is the block's output. Shapes are
inferred along the edges; an unknown input, a cycle, a node the output does not use, merged
shapes that disagree and ``and``/``iand`` on an input that is not spikes are one line naming
the node (``model.layers[2].nodes.c``). Nodes run in an order where every input is ready, and a
value is dropped once its last reader has run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from snnrun.net.blocks import Block, ends_in_spikes
from snnrun.net.layers import LAYERS, Context, Entry, ModelBuildError, Shape, build_layers

INPUT = "input"
MERGES = ("add", "mul", "and", "iand", "concat")
NODE_KEYS = ("inputs", "merge", "dim", "layers")


class GraphBlock(nn.Module):
    """Named nodes (:class:`Block` s in ``nodes``) run in ``order``, each on the merge of its
    ``inputs``; ``out_shape``: the output node's per-sample shape."""

    def __init__(
        self,
        nodes: dict[str, Block],
        inputs: dict[str, list[str]],
        merges: dict[str, tuple[str, int]],
        output: str,
        out_shape: Shape,
    ) -> None:
        super().__init__()
        self.nodes = nn.ModuleDict(nodes)
        self.inputs, self.merges, self.output = inputs, merges, output
        self.order = list(nodes)  # built in an order where every input is ready
        self.out_shape = out_shape
        readers = [src for name in self.order for src in inputs[name]]
        self.last_read = {src: i for i, src in enumerate(readers)}  # when a value may go

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, read = {INPUT: x}, 0
        for name in self.order:
            args = [values[src] for src in self.inputs[name]]
            for src in self.inputs[name]:
                if self.last_read[src] == read and src != self.output:
                    values.pop(src)
                read += 1
            merge, dim = self.merges[name]
            values[name] = self.nodes[name](merged(args, merge, dim))
        return values[self.output]

    def extra_repr(self) -> str:
        return f"output={self.output}"

    def spikes_out(self, name: str | None = None) -> bool:
        """Whether node ``name`` (default: the output) gives spikes by construction: its layers
        end in spikes, or it has none and merges spikes only."""
        name = name or self.output
        block = self.nodes[name]
        if len(block):
            return ends_in_spikes(block)
        return all(src != INPUT and self.spikes_out(src) for src in self.inputs[name])


def merged(values: list[torch.Tensor], merge: str, dim: int) -> torch.Tensor:
    """``values`` (each ``[T, N, ...]``) joined by ``merge`` (one value: itself)."""
    if len(values) == 1:
        return values[0]
    if merge == "concat":
        return torch.cat(values, dim + 2)
    if merge == "iand":
        return (1.0 - values[0]) * values[1]
    out = values[0]
    for value in values[1:]:
        out = out + value if merge == "add" else out * value
    return out


def merged_shape(shapes: list[Shape], merge: str, dim: int, label: str) -> Shape:
    """The merge's per-sample shape; shapes that cannot merge are one line naming them."""
    shown = " and ".join(f"[T, N, {', '.join(map(str, s))}]" for s in shapes)
    if merge != "concat":
        if any(s != shapes[0] for s in shapes):
            raise ModelBuildError(f"{label}: merge={merge} needs inputs of one shape, got {shown}")
        return shapes[0]
    rank = len(shapes[0])
    others = lambda s: (*s[:dim], *s[dim + 1 :])  # noqa: E731
    if any(len(s) != rank or others(s) != others(shapes[0]) for s in shapes):
        raise ModelBuildError(f"{label}: merge=concat joins along dim {dim}, so its inputs "
                              f"{shown} must agree on every other dimension")  # fmt: skip
    return (*shapes[0][:dim], sum(s[dim] for s in shapes), *shapes[0][dim + 1 :])


@LAYERS.register("graph")
def _graph(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
    unknown = set(options) - {"nodes", "output"}
    if unknown:
        raise TypeError(f"graph got unknown option(s) {', '.join(sorted(unknown))}; it takes "
                        "nodes, output")  # fmt: skip
    specs = options.get("nodes")
    if not isinstance(specs, Mapping) or not specs:
        raise ModelBuildError(f"{ctx.path} (graph): nodes must map names to nodes ({{name: "
                              f"{{inputs: [...], layers: [...]}}}}), got {specs!r}")  # fmt: skip
    names = list(specs)
    for name in names:
        if not isinstance(name, str) or not name or "." in name or name == INPUT:
            raise ModelBuildError(f"{ctx.path} (graph): {name!r} cannot name a node (a name "
                                  f"without dots, not {INPUT!r}: the block's input)")  # fmt: skip
    inputs = {name: _inputs(specs[name], names, i, ctx) for i, name in enumerate(names)}
    output = options.get("output", names[-1])
    if output not in specs:
        raise ModelBuildError(f"{ctx.path} (graph): output {output!r} is no node; its nodes are "
                              f"{', '.join(names)}")  # fmt: skip
    order = _order(inputs, names, output, ctx.path)
    nodes: dict[str, Block] = {}
    shapes: dict[str, Shape] = {INPUT: tuple(in_shape)}
    spiking = {INPUT: False}  # which values are spikes by construction
    merges: dict[str, tuple[str, int]] = {}
    for name in order:
        spec, label = specs[name], f"{ctx.path}.nodes.{name}"
        merge, dim = _merge(spec, [shapes[s] for s in inputs[name]], label)
        if merge in ("and", "iand"):
            _check_spikes(inputs[name], spiking, label, merge)
        shape = merged_shape([shapes[s] for s in inputs[name]], merge, dim, label)
        layers = spec.get("layers") if "type" not in spec else [_entry_of(spec)]
        block = Block(*build_layers(layers or [], shape, replace(ctx, path=label), "layers"))
        block.snnrun_entry = Entry("node", label, block.out_shape)  # a summary row of its own
        nodes[name], shapes[name], merges[name] = block, block.out_shape, (merge, dim)
        spiking[name] = ends_in_spikes(block) if len(block) else all(
            spiking[s] for s in inputs[name])  # fmt: skip
    return GraphBlock(nodes, {n: inputs[n] for n in order}, merges, output, shapes[output])


def _entry_of(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A node written as one entry (``{type: ..., inputs: ...}``): the entry, without the
    node's keys."""
    return {k: v for k, v in spec.items() if k not in ("inputs", "merge", "dim")}


def _inputs(spec: Any, names: list[str], i: int, ctx: Context) -> list[str]:
    label = f"{ctx.path}.nodes.{names[i]}"
    if not isinstance(spec, Mapping):
        raise ModelBuildError(f"{label} must be a mapping like {{inputs: [a], layers: [...]}}, "
                              f"got {spec!r}")  # fmt: skip
    if "type" not in spec:
        unknown = set(spec) - set(NODE_KEYS)
        if unknown:
            raise ModelBuildError(
                f"{label}: unknown key(s) {', '.join(sorted(unknown))}; a node takes "
                f"{', '.join(NODE_KEYS)} (or one entry's type and keys)"
            )
    given = spec.get("inputs", [names[i - 1]] if i else [INPUT])
    given = [given] if isinstance(given, str) else list(given)
    if not given:
        raise ModelBuildError(f"{label}: inputs is empty; name at least one node (or input)")
    for src in given:
        if src != INPUT and src not in names:
            raise ModelBuildError(f"{label}: input {src!r} is no node; the nodes are "
                                  f"{', '.join(names)} (and input, the block's input)")  # fmt: skip
    return given


def _order(inputs: dict[str, list[str]], names: list[str], output: str, path: str) -> list[str]:
    """The nodes in an order where every input comes first (declaration order where it can);
    a cycle, or a node the output does not read, is one line."""
    needed, todo = set(), [output]
    while todo:
        name = todo.pop()
        if name in needed or name == INPUT:
            continue
        needed.add(name)
        todo += inputs[name]
    unused = [n for n in names if n not in needed]
    if unused:
        raise ModelBuildError(f"{path}.nodes.{unused[0]}: the output {output!r} never reads it; "
                              "feed it into a node the output reads, or drop it")  # fmt: skip
    order: list[str] = []
    while len(order) < len(names):
        ready = [n for n in names if n not in order and all(
            s == INPUT or s in order for s in inputs[n])]  # fmt: skip
        if not ready:
            stuck = next(n for n in names if n not in order)
            raise ModelBuildError(f"{path}.nodes.{stuck}: its inputs form a cycle (a graph's "
                                  "nodes feed forward only; for feedback use a recurrent "
                                  "entry)")  # fmt: skip
        order.append(ready[0])
    return order


def _merge(spec: Mapping[str, Any], shapes: list[Shape], label: str) -> tuple[str, int]:
    merge = spec.get("merge", "add")
    if merge not in MERGES:
        raise ModelBuildError(f"{label}: unknown merge {merge!r}; known: {', '.join(MERGES)}")
    if merge == "iand" and len(shapes) != 2:
        raise ModelBuildError(f"{label}: merge=iand takes two inputs ((1 - a) b), got "
                              f"{len(shapes)}")  # fmt: skip
    dim = spec.get("dim", 0)
    rank = len(shapes[0])
    if isinstance(dim, bool) or not isinstance(dim, int) or not -rank <= dim < rank:
        raise ModelBuildError(f"{label}: dim must be a per-sample dimension, -{rank}..{rank - 1} "
                              f"(0: channels or features), got {dim!r}")  # fmt: skip
    return merge, dim % rank


def _check_spikes(sources: list[str], spiking: dict[str, bool], label: str, merge: str) -> None:
    for src in sources:
        if not spiking[src]:
            raise ModelBuildError(
                f"{label}: merge={merge} acts on spikes, so input {src!r} must end with a "
                "{type: neuron} entry; or use merge=add"
            )
