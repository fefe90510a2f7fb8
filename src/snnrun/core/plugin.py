"""Your own code in a config group: ``_target_: my_pkg.Thing`` (the doors).

A group's options (or a ``{type: module}`` layer entry) that carry ``_target_`` build the user's
object with Hydra's ``instantiate``: the other keys are its keyword arguments, and ``name`` only
labels it (in the summary and ``snnrun runs``). The target is imported here first, so that a
missing package, module or attribute is one line naming it (and ``PYTHONPATH``) instead of
Hydra's traceback. Every module imported this way is remembered with its file and SHA-256 for
``run.json`` (:func:`user_modules`). What the built object must provide is its group's protocol
(:mod:`snnrun.core.protocols`), checked when the run is built, before its first record.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import inspect
import sys
from collections.abc import Mapping
from typing import Any

from snnrun.core.errors import SnnrunError, one_line

TARGET = "_target_"
_IMPORTED: dict[str, str] = {}  # module name -> its file, for every target imported


class PluginError(SnnrunError):
    """A user's ``_target_`` cannot be imported or built, or breaks its group's protocol."""


def has_target(options: Any) -> bool:
    """Whether a group's options (or an entry) name the user's code by ``_target_``."""
    return isinstance(options, Mapping) and options.get(TARGET) is not None


def import_target(target: Any, label: str) -> Any:
    """``pkg.module.Name`` → the object: the longest importable module, then its attributes. A
    module that imports but lacks the attribute is named as such, with close names; ``label``
    says where the target was given (``loss``, ``model.layers[2] (module)``)."""
    if not isinstance(target, str) or len(target.split(".")) < 2:
        raise PluginError(f"{label}: give _target_ as the full path of a class or function, "
                          f"as my_pkg.MyThing (got {target!r})")  # fmt: skip
    parts = target.split(".")
    obj, found = _longest_module(parts, label)
    for i in range(found, len(parts)):
        if not hasattr(obj, parts[i]):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(parts[i], names, n=3)
            hint = f" (close: {', '.join(close)})" if close else ""
            raise PluginError(f"{label}: {'.'.join(parts[:i])} was found but has no attribute "
                              f"{parts[i]}{hint}; check _target_")  # fmt: skip
        obj = getattr(obj, parts[i])
    return obj


def _longest_module(parts: list[str], label: str) -> tuple[Any, int]:
    """The module named by the longest prefix of ``parts`` (short of the last) that imports,
    and how many parts it took; an import error inside a module is its own line."""
    for n in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:n])
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and (module + ".").startswith(e.name + "."):
                continue  # this prefix is no module: try a shorter one
            raise PluginError(f"{label}: importing {module} failed ({one_line(e)})") from None
        except Exception as e:  # the user's module failed while importing
            raise PluginError(f"{label}: importing {module} failed "
                              f"({type(e).__name__}: {one_line(e)})") from None  # fmt: skip
        _remember(module)
        return found, n
    raise PluginError(f"{label}: cannot import {'.'.join(parts)} (no module named "
                      f"{parts[0]!r}); put its package on PYTHONPATH")  # fmt: skip


def _remember(module: str) -> None:
    """Record a user module's file (snnrun's own and installed packages' too: harmless)."""
    file = getattr(sys.modules.get(module), "__file__", None)
    if file:
        _IMPORTED[module] = file


def instantiate_target(options: Mapping[str, Any], label: str, *args: Any, **extra: Any) -> Any:
    """Build ``options[_target_]`` with ``options``' other keys (but ``name``) and ``extra`` as
    keyword arguments, ``args`` first (``params`` for an optimizer, ``optimizer`` for a
    scheduler); nested ``_target_`` mappings are built too. A failed call is one line."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    target = options[TARGET]
    import_target(target, label)  # one line for what Hydra would bury in a traceback
    kwargs = {k: v for k, v in options.items() if k not in (TARGET, "name")}
    try:
        return instantiate({TARGET: target, **kwargs}, *args, _convert_="all", **extra)
    except (InstantiationException, TypeError, ValueError) as e:
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise PluginError(f"{label}: {target}({shown}) failed: {one_line(e)}") from None


def takes(obj: Any, name: str) -> bool:
    """Whether calling ``obj`` accepts a keyword ``name``."""
    try:
        return name in inspect.signature(obj).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def user_modules(config: Any) -> dict[str, dict[str, str]]:
    """The modules the ``_target_`` strings of ``config`` (a run config, at any depth) were
    imported from, outside snnrun: ``{module: {"file", "sha256"}}`` (for ``run.json``'s
    provenance; another run's targets imported earlier in the process are not this run's)."""
    targets = set(_targets(config))
    found = {}
    for module, file in sorted(_IMPORTED.items()):
        if module == "snnrun" or module.startswith("snnrun."):
            continue
        if not any(t.startswith(module + ".") for t in targets):
            continue
        try:
            with open(file, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            continue
        found[module] = {"file": file, "sha256": digest}
    return found


def _targets(node: Any) -> list[str]:
    """Every ``_target_`` string in a nested config."""
    if isinstance(node, Mapping):
        own = [node[TARGET]] if isinstance(node.get(TARGET), str) else []
        return own + [t for v in node.values() for t in _targets(v)]
    if isinstance(node, list):
        return [t for v in node for t in _targets(v)]
    return []
