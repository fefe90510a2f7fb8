"""A compact model summary: one row per layer (output ``[T, N, ...]``, parameters, neuron).

Printed once when a run starts, in place of the module repr (``print(run.model)`` in Python,
or ``snnrun --cfg job`` for the config, still show everything).
"""

from __future__ import annotations

from rich.table import Table
from torch import nn

from snnrun.net.model import SpikingNetwork
from snnrun.net.neuron import SpikingNeuron


def layer_rows(model: SpikingNetwork, T: int) -> list[tuple[str, str, str, str]]:
    """(layer, output ``[T, N, ...]``, parameters, neuron) for each layer of ``model``."""
    shapes = model.shapes or [None] * len(model.layers)
    rows = []
    for i, (name, layer, shape) in enumerate(zip(model.names, model.layers, shapes)):
        out = "-" if shape is None else "[" + ", ".join(map(str, (T, "N", *shape))) + "]"
        params = sum(p.numel() for p in layer.parameters())
        rows.append((f"L{i} {name}", out, f"{params:,}", _neuron(layer)))
    return rows


def _neuron(layer: nn.Module) -> str:
    """``lif tau=2 soft atan, torch``-like: what a reader needs to know of a neuron layer."""
    if not isinstance(layer, SpikingNeuron):
        return ""
    d = layer.dynamics
    reset = "subtract" if d.kind == "leaky" else ("hard" if d.hard_reset else "soft")
    decay = " ".join(p.split(" (")[0] for p in layer._decay_repr() if not p.startswith("decay_"))
    kind = type(layer).__name__.removesuffix("Neuron").lower()
    parts = [kind, decay, f"v_th={d.v_threshold:g}", reset, d.surrogate.name]
    return " ".join(p for p in parts if p) + f", {layer.backend}"


def summary_table(model: SpikingNetwork, T: int) -> Table:
    """The rows as a borderless rich table."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("layer", "output", "params", "neuron"):
        table.add_column(column, justify="right" if column == "params" else "left")
    for row in layer_rows(model, T):
        table.add_row(*row)
    return table
