"""The small math dialect in which the neurons' equations and the surrogates are written, once.

A formula reads the global ``tl`` and uses only: arithmetic and comparisons, literal numbers,
``if`` on its compile-time arguments (annotated ``tl.constexpr``; plain Python values here), and
``tl.exp``, ``tl.abs``, ``tl.sigmoid``, ``tl.where``, ``tl.maximum``, ``tl.minimum``,
``tl.zeros_like`` (a neuron's step may also call ``tl.detach``: no gradient through its value).
Here ``tl`` is :class:`TorchMath`, which reads a formula two ways:

- on torch tensors: the reference loop and the torch backends run it;
- on :class:`Var` s: :class:`Trace` records the formula's operations, from which
  ``snnrun.kernels`` writes a neuron's fused Triton kernels and their gradient
  (``kernels/step_kernels.py``).

``snnrun.kernels.dialect.jit_copy`` compiles a formula itself with ``tl`` bound to
``triton.language`` (the built-in equations and the surrogates).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from snnrun.core.errors import SnnrunError

Operand = Any  # a Var, a torch tensor or a Python number


class DialectError(SnnrunError, TypeError):
    """A step that the trace cannot follow (Python ``if`` on a value, a function outside ``tl``)."""


class Trace:
    """The operations of one traced step, in order: ``(out, op, args)``; ``args`` are
    :class:`Var` s, Python numbers, or (for ``pow``) an integer exponent."""

    def __init__(self) -> None:
        self.ops: list[tuple[Var, str, tuple[Any, ...]]] = []

    def input(self, name: str) -> Var:
        return Var(self, name)

    def op(self, op: str, *args: Any) -> Var:
        out = Var(self, f"t{len(self.ops)}")
        for a in args:
            if isinstance(a, torch.Tensor):
                raise DialectError(
                    "a neuron's step mixes a torch tensor into its equations; give it through "
                    "params() (or as a Python number)"
                )
        self.ops.append((out, op, args))
        return out


class Var:
    """A value of a traced step (see :class:`Trace`): operators record themselves."""

    __slots__ = ("name", "trace")
    __hash__ = object.__hash__

    def __init__(self, trace: Trace, name: str) -> None:
        self.trace, self.name = trace, name

    def __repr__(self) -> str:
        return self.name

    def _op(self, op: str, *args: Any) -> Var:
        return self.trace.op(op, *args)

    def __add__(self, o: Operand) -> Var:
        return self._op("add", self, o)

    def __radd__(self, o: Operand) -> Var:
        return self._op("add", o, self)

    def __sub__(self, o: Operand) -> Var:
        return self._op("sub", self, o)

    def __rsub__(self, o: Operand) -> Var:
        return self._op("sub", o, self)

    def __mul__(self, o: Operand) -> Var:
        return self._op("mul", self, o)

    def __rmul__(self, o: Operand) -> Var:
        return self._op("mul", o, self)

    def __truediv__(self, o: Operand) -> Var:
        return self._op("div", self, o)

    def __rtruediv__(self, o: Operand) -> Var:
        return self._op("div", o, self)

    def __neg__(self) -> Var:
        return self._op("neg", self)

    def __pos__(self) -> Var:
        return self

    def __pow__(self, n: Any) -> Var:
        if not isinstance(n, int) or n < 1:
            raise DialectError(f"a traced step raises only to whole powers >= 1, got ** {n!r}")
        out = self
        for _ in range(n - 1):
            out = out * self
        return out

    def __lt__(self, o: Operand) -> Var:
        return self._op("lt", self, o)

    def __le__(self, o: Operand) -> Var:
        return self._op("le", self, o)

    def __gt__(self, o: Operand) -> Var:
        return self._op("gt", self, o)

    def __ge__(self, o: Operand) -> Var:
        return self._op("ge", self, o)

    def __and__(self, o: Operand) -> Var:
        return self._op("and", self, o)

    def __or__(self, o: Operand) -> Var:
        return self._op("or", self, o)

    def detach(self) -> Var:
        """No gradient through this value (as ``torch.Tensor.detach``)."""
        return self._op("detach", self)

    def __bool__(self) -> bool:
        raise DialectError(
            "a neuron's step branches with Python (if/and/or/min/max) on a value that changes per "
            "neuron; write tl.where(cond, a, b), tl.maximum, tl.minimum, or & and | instead"
        )

    def __float__(self) -> float:
        raise DialectError(
            "a neuron's step calls float() or a math function on a traced value; use tl.exp, "
            "tl.abs, tl.sigmoid ... (the tl dialect), which both torch and Triton run"
        )


def _dual(name: str, on_tensors: Callable[..., Any], on_numbers: Callable[..., Any] | None = None):
    """``tl.<name>``: recorded on a :class:`Var`, ``on_tensors`` on tensors (``on_numbers`` when
    every argument is a Python number)."""

    def fn(*args: Any) -> Any:
        for a in args:
            if isinstance(a, Var):
                return a.trace.op(name, *args)
        if on_numbers is not None and not any(isinstance(a, torch.Tensor) for a in args):
            return on_numbers(*args)
        return on_tensors(*args)

    fn.__name__ = name
    return staticmethod(fn)


def _tensors(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn`` with its number arguments as tensors like its tensor one (``torch.maximum`` takes
    no Python number)."""

    def on_tensors(*args: Any) -> torch.Tensor:
        like = next(a for a in args if isinstance(a, torch.Tensor))
        return fn(*(a if isinstance(a, torch.Tensor) else like.new_tensor(a) for a in args))

    return on_tensors


def _sigmoid(a: float) -> float:
    return 1.0 / (1.0 + math.exp(-a))


class TorchMath:
    """The ``tl`` dialect on torch tensors, Python numbers and traced :class:`Var` s."""

    exp = _dual("exp", torch.exp, math.exp)
    abs = _dual("abs", torch.abs, abs)
    sigmoid = _dual("sigmoid", torch.sigmoid, _sigmoid)
    where = _dual("where", torch.where)
    maximum = _dual("maximum", _tensors(torch.maximum), max)
    minimum = _dual("minimum", _tensors(torch.minimum), min)
    zeros_like = _dual("zeros_like", torch.zeros_like)
    detach = _dual("detach", torch.Tensor.detach, lambda a: a)
    constexpr = None  # an annotation only (the formulas' modules defer annotations)


tl = TorchMath
