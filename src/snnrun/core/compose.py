"""Composing ``conf/`` outside Hydra's main (pre-checks, resume, tools).

``hydra.searchpath=[file://...]`` overrides and ``--config-dir DIR`` (``-cd``) are honoured,
so configs kept outside the package (``model=<your model>``) compose here as in a run. A file
that nests too deep to load, or holds a YAML alias of a node around it, is one line naming it.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from snnrun.core.errors import SnnrunError

CONFIG_MODULE = "snnrun.conf"
MAX_NESTING = 32  # lists inside lists (model.layers and its blocks' lists): loading takes ~48
FLATTEN = "put a block's layers in its parent's list, or repeat them (type: repeat)"


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
        try:
            return compose(config_name="config", overrides=task)
        except RecursionError as e:
            raise SnnrunError(_too_deep(_file_being_loaded(e))) from None


def short_path(parts: list[str]) -> str:
    """``parts`` joined by dots, a run of three or more equal parts as ``(.part)×n``:
    ``model.layers[2](.layers[0])×32``."""
    text = ""
    for part, run in itertools.groupby(parts):
        n = len(list(run))
        text += f"(.{part})×{n}" if n >= 3 else "".join(f".{part}" for _ in range(n))
    return text.removeprefix(".")


def _file_being_loaded(error: BaseException) -> str | None:
    """The YAML file ``OmegaConf.load`` was reading when ``error`` was raised, if any."""
    found, tb = None, error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "load" and "file_" in tb.tb_frame.f_locals:
            found = tb.tb_frame.f_locals["file_"]
        tb = tb.tb_next
    return None if found is None else str(getattr(found, "name", found))


def _too_deep(file: str | None) -> str:
    """Why ``file`` could not be loaded: the alias that holds a node around it, or the nesting."""
    try:
        text = Path(file).read_text(encoding="utf-8") if file else ""
    except OSError:
        text = ""
    fault = _nesting_fault(text) if text else None
    if fault is None:
        where = f"{file} " if file else "the config "
        return (
            f"{where}nests too deep to load (or a YAML alias stands for a node around it); "
            f"nest lists at most {MAX_NESTING} deep"
        )
    if fault.startswith("*"):
        return f"{file}: the YAML alias {fault}: a config cannot hold itself; write it out"
    return f"{file} {fault}: {FLATTEN}"


class _Node:
    """An open mapping or list while a YAML text is parsed: its path and where it stands."""

    def __init__(self, path: list[str], is_list: bool, anchor: str | None) -> None:
        self.path, self.is_list, self.anchor = path, is_list, anchor
        self.index, self.key = 0, None  # a list's next item; a mapping's key read, or None

    def child(self) -> list[str]:
        """The path of the node that comes next inside this one."""
        if not self.is_list:
            return [*self.path, str(self.key)]
        last = self.path[-1] if self.path else ""
        return [*self.path[:-1], f"{last}[{self.index}]"]

    def done(self) -> None:
        """A node inside ended: a list counts one more item, a mapping waits for a key."""
        self.index += self.is_list
        self.key = None


def _nesting_fault(text: str) -> str | None:
    """What makes a YAML text too deep to load, read from its parse events (which recurse
    nowhere): ``*a at <path> refers to &a (at <path>), a node around it``, or ``nests <n> lists
    deep, ...`` naming the first node past :data:`MAX_NESTING` lists; None if neither."""
    import yaml

    stack: list[_Node] = []
    lists, deepest, first = 0, 0, None
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionEndEvent):
            lists -= stack.pop().is_list
            if stack:
                stack[-1].done()
        elif isinstance(event, yaml.NodeEvent):
            if stack and not stack[-1].is_list and stack[-1].key is None:
                stack[-1].key = getattr(event, "value", "?")  # a mapping's (scalar) key
                continue
            path = stack[-1].child() if stack else []
            if lists > MAX_NESTING and first is None:
                first = path
            around = [n for n in stack if n.anchor and n.anchor == event.anchor]
            if isinstance(event, yaml.AliasEvent) and around:
                held = short_path(around[0].path) or "the top"
                return (
                    f"*{event.anchor} at {short_path(path)} refers to &{event.anchor} "
                    f"(at {held}), a node around it"
                )
            if isinstance(event, yaml.CollectionStartEvent):
                is_list = isinstance(event, yaml.SequenceStartEvent)
                stack.append(_Node(path, is_list, event.anchor))
                lists += is_list
                deepest = max(deepest, lists)
            elif stack:
                stack[-1].done()
    if first is None:
        return None
    return (
        f"nests {deepest} lists deep, more than {MAX_NESTING} ({short_path(first)} is in list "
        f"{MAX_NESTING + 1})"
    )


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
