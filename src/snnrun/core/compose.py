"""Composing ``conf/`` outside Hydra's main (pre-checks, resume, tools).

``hydra.searchpath=[file://...]`` overrides and ``--config-dir DIR`` (``-cd``) are honoured,
so configs kept outside the package (``model=<your model>``) compose here as in a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

CONFIG_MODULE = "snnrun.conf"


def config_dir_overrides(args: list[str]) -> list[str]:
    """``--config-dir DIR`` / ``-cd DIR`` / ``--config-dir=DIR`` as a searchpath override."""
    dirs = []
    for i, a in enumerate(args):
        if a in ("--config-dir", "-cd") and i + 1 < len(args):
            dirs.append(args[i + 1])
        elif a.startswith("--config-dir="):
            dirs.append(a.split("=", 1)[1])
    if not dirs:
        return []
    paths = ",".join(f"file://{Path(d).expanduser().resolve()}" for d in dirs)
    return [f"hydra.searchpath=[{paths}]"]


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose ``conf/config.yaml`` with ``overrides``; of the hydra.* overrides only
    ``hydra.searchpath`` is kept (it decides where configs are found)."""
    task = [
        o
        for o in overrides
        if not o.lstrip("+~").startswith("hydra.") or o.startswith("hydra.searchpath=")
    ]
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="config", overrides=task)


def flatten(node: Any, lists: bool = False, prefix: str = "") -> dict[str, Any]:
    """A config as ``{dotted key: leaf}``; ``lists``: into list items too (``model.layers.0.type``),
    else a list is one leaf (how a resume compares configs)."""
    if isinstance(node, dict):
        items = node.items()
    elif lists and isinstance(node, list):
        items = enumerate(node)
    else:
        return {prefix[:-1]: node}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(flatten(v, lists, f"{prefix}{k}."))
    return out
