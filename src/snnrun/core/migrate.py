"""Reading run configs saved by earlier versions (plain dicts: no torch, so ``snnrun runs``
starts without it)."""

from __future__ import annotations

from typing import Any


def renamed_neuron_keys(config: dict[str, Any]) -> dict[str, Any]:
    """A run config saved before the neuron's ``kind`` key became ``name`` (checkpoint version
    2 and earlier), with the key renamed in the ``neuron`` group and in the model's neuron,
    recurrent and attention entries at any depth. A current config comes back unchanged."""

    def renamed(node: Any, neuron_options: bool) -> Any:
        if isinstance(node, list):
            return [renamed(n, False) for n in node]
        if not isinstance(node, dict):
            return node
        if node.get("type") == "module":  # a user's class: its arguments are its own
            return node
        holds_options = neuron_options or node.get("type") in ("neuron", "recurrent")
        return {
            ("name" if k == "kind" and holds_options else k): renamed(v, k == "neuron")
            for k, v in node.items()
        }

    return {k: renamed(v, k == "neuron") for k, v in config.items()}
