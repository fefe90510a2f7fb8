"""The registered surrogate formulas compiled for Triton: ``surrogate_grad(x, alpha, SG)``.

Each surrogate in :data:`snnrun.net.surrogate.SURROGATES` is ONE Python function written in the
``tl`` dialect (see :mod:`snnrun.net.surrogate`). This module does not re-type them: it rebuilds
each function from the same code object with the global ``tl`` bound to ``triton.language`` instead
of the torch shim, and wraps the copy with ``triton.jit``. ``JITFunction`` reads the source through
``inspect`` (the file and line of the original), and keeps the text from the first line that starts
with ``def`` on, which drops the ``@surrogate(...)`` registration line above it.

The kernels pick the formula at compile time: ``SG`` is the surrogate's stable ``code`` (a
constexpr), and :func:`surrogate_grad` is a constexpr if-chain over the codes, so a kernel
contains only the one formula it uses; the parameter ``alpha`` is a runtime float (changing it
does not recompile). A surrogate registered without a branch here stops the kernel's compilation
at the ``tl.static_assert`` of the else-branch; :func:`surrogate_code` makes the same check in
Python, and the dispatch test runs every registered surrogate.

Importing this module imports Triton; :mod:`snnrun.kernels` imports it lazily.
"""

from __future__ import annotations

import types

import triton
import triton.language as tl

from snnrun.net.surrogate import SURROGATES


def jit_copy(name: str) -> triton.runtime.JITFunction:
    """``triton.jit`` of the registered formula ``name`` with ``tl`` rebound to triton.language."""
    formula = SURROGATES.get(name).formula
    scope = {"tl": tl, "__name__": __name__, "__builtins__": __builtins__}
    copy = types.FunctionType(
        formula.__code__, scope, formula.__name__, formula.__defaults__, formula.__closure__
    )
    copy.__qualname__ = f"sg_{formula.__name__}"
    copy.__doc__ = formula.__doc__
    return triton.jit(copy)


def _code(name: str) -> tl.constexpr:
    return tl.constexpr(SURROGATES.get(name).code)


# The jitted copies, under fixed names (the dispatch below calls them by these names).
sg_atan = jit_copy("atan")
sg_sigmoid = jit_copy("sigmoid")
sg_fast_sigmoid = jit_copy("fast_sigmoid")
sg_piecewise_quadratic = jit_copy("piecewise_quadratic")
sg_erf = jit_copy("erf")
sg_soft_sign = jit_copy("soft_sign")
sg_triangle = jit_copy("triangle")
sg_rectangle = jit_copy("rectangle")

# Their registry codes, as compile-time constants for the if-chain.
SG_ATAN = _code("atan")
SG_SIGMOID = _code("sigmoid")
SG_FAST_SIGMOID = _code("fast_sigmoid")
SG_PIECEWISE_QUADRATIC = _code("piecewise_quadratic")
SG_ERF = _code("erf")
SG_SOFT_SIGN = _code("soft_sign")
SG_TRIANGLE = _code("triangle")
SG_RECTANGLE = _code("rectangle")

#: The surrogates that have a branch in :func:`surrogate_grad` (keep in step with it).
KERNEL_SURROGATES: tuple[str, ...] = (
    "atan",
    "sigmoid",
    "fast_sigmoid",
    "piecewise_quadratic",
    "erf",
    "soft_sign",
    "triangle",
    "rectangle",
)


@triton.jit
def surrogate_grad(x, alpha, SG: tl.constexpr):
    """``g'(x)`` of the surrogate with code ``SG`` (float32 ``x`` [BLOCK], runtime ``alpha``)."""
    if SG == SG_ATAN:
        g = sg_atan(x, alpha)
    elif SG == SG_SIGMOID:
        g = sg_sigmoid(x, alpha)
    elif SG == SG_FAST_SIGMOID:
        g = sg_fast_sigmoid(x, alpha)
    elif SG == SG_PIECEWISE_QUADRATIC:
        g = sg_piecewise_quadratic(x, alpha)
    elif SG == SG_ERF:
        g = sg_erf(x, alpha)
    elif SG == SG_SOFT_SIGN:
        g = sg_soft_sign(x, alpha)
    elif SG == SG_TRIANGLE:
        g = sg_triangle(x, alpha)
    elif SG == SG_RECTANGLE:
        g = sg_rectangle(x, alpha)
    else:
        tl.static_assert(False, "surrogate code without a Triton branch (kernels/surrogate_jit.py)")
        g = x
    return g


def surrogate_code(name: str) -> int:
    """The constexpr ``SG`` for surrogate ``name``; refuses one that has no kernel branch."""
    if name not in KERNEL_SURROGATES:
        raise NotImplementedError(
            f"surrogate {name!r} has no branch in snnrun.kernels.surrogate_jit.surrogate_grad; "
            "add its jitted copy and a branch there (or use neuron.backend=torch)"
        )
    return SURROGATES.get(name).code
