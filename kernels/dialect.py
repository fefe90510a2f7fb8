"""Compile a formula of the ``tl`` dialect (:mod:`snnrun.neuron.dialect`) for the Triton kernels.

The formula is not re-typed: :func:`jit_copy` rebuilds the function from its code object with the
global ``tl`` bound to ``triton.language`` instead of the torch shim, and wraps the copy with
``triton.jit``. ``JITFunction`` reads the source through ``inspect`` (the file and line of the
original) and keeps the text from the first line that starts with ``def``, which drops a
registration decorator above it; compile-time arguments keep their ``tl.constexpr`` annotations.

Importing this module imports Triton; :mod:`snnrun.kernels` imports it lazily.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import triton
import triton.language as tl


def jit_copy(formula: Callable, name: str | None = None) -> triton.runtime.JITFunction:
    """``triton.jit`` of ``formula`` with ``tl`` rebound to triton.language."""
    scope = {"tl": tl, "__name__": __name__, "__builtins__": __builtins__}
    copy = types.FunctionType(
        formula.__code__, scope, formula.__name__, formula.__defaults__, formula.__closure__
    )
    copy.__qualname__ = name or formula.__name__
    copy.__doc__ = formula.__doc__
    copy.__annotations__ = dict(formula.__annotations__)
    return triton.jit(copy)
