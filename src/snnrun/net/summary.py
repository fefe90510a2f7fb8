"""A compact model summary: one row per layer (output ``[T, N, ...]``, parameters, neuron),
totals, and an estimated activation memory per sample.

Printed once when a run starts, in place of the module repr (``print(run.model)`` in Python,
or ``snnrun --cfg job`` for the config, still show everything), and saved in the run dir as
``summary.md``. The estimate counts every layer's output ``[T, ...]`` of one sample in float32:
what training keeps for the backward pass, to within the backends' own state (the handwritten
torch backend keeps ``H`` per neuron layer, the Triton one float32 checkpoints every 8 steps).
"""

from __future__ import annotations

import math

from rich.table import Table
from torch import nn

from snnrun.net.blocks import Block, Recurrent, Residual
from snnrun.net.graph import GraphBlock
from snnrun.net.model import SpikingNetwork
from snnrun.neuron.neurons import SpikingNeuron

BLOCKS = (Block, Residual, GraphBlock)  # rows whose output another row already counts


def layer_rows(model: SpikingNetwork, T: int) -> list[tuple[str, str, str, str]]:
    """(layer, output ``[T, N, ...]``, parameters, neuron) for each entry of ``model``, blocks
    before their contents (a block's parameters include its contents')."""
    rows = []
    for name, layer, entry in model.entries():
        out = "[" + ", ".join(map(str, (T, "N", *entry.shape))) + "]"
        params = sum(p.numel() for p in layer.parameters())
        what = entry.type + (f"({layer.connect})" if isinstance(layer, Residual) else "")
        if isinstance(layer, GraphBlock):
            what += f"(-> {layer.output})"
        elif entry.type == "node":
            what = _node(model, name, layer)
        rows.append((f"{name} {what}", out, f"{params:,}", _neuron(layer)))
    return rows


def _node(model: SpikingNetwork, label: str, node: nn.Module) -> str:
    """``node(concat of a, b)``: a graph node's row says what it merges."""
    graph_label, _, name = label.rpartition(".nodes.")
    graph = next(m for n, m, _ in model.entries() if n == graph_label)
    inputs = graph.inputs[name]
    merge = f"{graph.merges[name][0]} of " if len(inputs) > 1 else ""
    return f"node({merge}{', '.join(inputs)})"


def _neuron(layer: nn.Module) -> str:
    """``lif tau=2 soft atan, torch``-like: what a reader needs to know of a neuron layer."""
    if isinstance(layer, Recurrent):
        layer = layer.neuron
    if not isinstance(layer, SpikingNeuron):
        return ""
    d = layer.dynamics
    reset = layer.reset_kind()
    decay = " ".join(_short(p) for p in layer._decay_repr() if not p.startswith("decay_"))
    kind = type(layer).__name__.removesuffix("Neuron").lower()
    v_th = f"v_th={d.v_threshold:g}" + (
        f"/{layer.learn_threshold}" if layer.learn_threshold else ""
    )
    parts = [kind, decay, v_th, reset, d.surrogate.name]
    return " ".join(p for p in parts if p) + f", {layer.backend}"


def _short(part: str) -> str:
    """``tau=2 (learned per channel)`` as ``tau=2/channel``; other notes dropped."""
    value, _, note = part.partition(" (")
    return f"{value}/{note.removeprefix('learned per ').rstrip(')')}" if "per " in note else value


def summary_table(model: SpikingNetwork, T: int) -> Table:
    """The rows as a borderless rich table."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("layer", "output", "params", "neuron"):
        table.add_column(column, justify="right" if column == "params" else "left")
    for row in layer_rows(model, T):
        table.add_row(*row)
    return table


def totals(model: SpikingNetwork, T: int) -> dict[str, int]:
    """Parameters (all, trainable), neuron layers, and the estimated activation bytes per
    sample: every layer's output over ``T`` steps in float32."""
    leaves = [e.shape for _, m, e in model.entries() if not isinstance(m, BLOCKS)]
    activations = sum(T * math.prod(shape) for shape in leaves) * 4
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "neuron_layers": len(model.neurons()),
        "activation_bytes_per_sample": activations,
    }


def markdown(model: SpikingNetwork, T: int) -> str:
    """The summary as a markdown table with its totals (the run dir's ``summary.md``)."""
    lines = ["| layer | output | params | neuron |", "| --- | --- | ---: | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in layer_rows(model, T)]
    t = totals(model, T)
    lines += [
        "",
        f"- parameters: {t['parameters']:,} ({t['trainable']:,} trainable)",
        f"- neuron layers: {t['neuron_layers']}",
        f"- activations per sample at T={T}: {t['activation_bytes_per_sample'] / 2**20:.2f} MiB "
        "(every layer's output in float32; an estimate of what training keeps)",
    ]
    return "\n".join(lines) + "\n"
