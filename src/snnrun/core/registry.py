"""Name → builder registries: the one place config names are looked up.

Each concept (layer, neuron, surrogate, dataset, encoder, loss, optimizer, scheduler, precision,
backend) owns one :class:`Registry`. Entries register themselves with a decorator next to their
definition; an unknown name raises with the list of registered names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from snnrun.core.errors import SnnrunError

T = TypeVar("T")


class UnknownNameError(SnnrunError, KeyError):
    """A config asked for a name that no entry registered."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class Registry(Generic[T]):
    """A named table of builders, filled by the :meth:`register` decorator."""

    def __init__(self, concept: str) -> None:
        self.concept = concept  # what it holds: "layer", "neuron", "surrogate", ...
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@LAYERS.register("conv2d")`` puts the object under ``name``."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.concept} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The entry called ``name``; unknown names list what is known."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise UnknownNameError(f"unknown {self.concept} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)
