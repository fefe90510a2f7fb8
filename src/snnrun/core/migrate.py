"""Reading run configs saved by earlier versions (plain dicts: no torch, so ``snnrun runs``
starts without it)."""

from __future__ import annotations

from collections.abc import Callable
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


def explicit_entry_neurons(
    config: dict[str, Any], options_of: Callable[[str], tuple[str, ...]]
) -> dict[str, Any]:
    """A run config saved before an entry that names another neuron started from that neuron's
    own defaults (checkpoint version 3 and earlier): such entries (``neuron``, ``recurrent``, an
    attention's ``neuron`` mapping, at any depth) get, written out, the keys of the run's
    ``neuron`` group that the named neuron accepts (``options_of(name)``), as they took them then.
    The network it builds is the one the run trained."""
    group = config.get("neuron") or {}
    if "name" not in group or "model" not in config:
        return config

    def explicit(entry: dict[str, Any]) -> dict[str, Any]:
        name = entry.get("name", group["name"])
        if name == group["name"] or "_target_" in entry:
            return entry
        try:
            accepted = options_of(name)
        except Exception:
            return entry
        return {**{k: v for k, v in group.items() if k in accepted}, **entry}

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict) or node.get("type") == "module":
            return node
        node = {k: walk(v) for k, v in node.items()}
        if node.get("type") in ("neuron", "recurrent"):
            node = explicit(node)
        if isinstance(node.get("neuron"), dict) and node.get("type") is not None:
            node["neuron"] = explicit(node["neuron"])  # spiking_self_attention's neurons
        return node

    return {**config, "model": walk(config["model"])}
