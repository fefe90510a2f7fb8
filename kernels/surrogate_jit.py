"""The registered surrogate formulas compiled for Triton: ``surrogate_grad(x, alpha, SG)``.

Each surrogate in :data:`snnrun.neuron.surrogate.SURROGATES` is ONE Python function written in the
``tl`` dialect (see :mod:`snnrun.neuron.dialect`). This module does not re-type them: it compiles
each with :func:`snnrun.kernels.dialect.jit_copy`.

The kernels pick the formula at compile time: ``SG`` is the surrogate's stable ``code`` (a
constexpr), and :func:`surrogate_grad` is a constexpr if-chain over the codes, so a kernel
contains only the one formula it uses; the parameter ``alpha`` is a runtime float (changing it
does not recompile). A surrogate registered without a branch here stops the kernel's compilation
at the ``tl.static_assert`` of the else-branch; :func:`surrogate_code` makes the same check in
Python, and the dispatch test runs every registered surrogate.

A user's surrogate (``surrogate._target_``, code < 0) reaches the kernels as its formula itself:
:func:`kernel_sg` turns its code into its jitted copy, a constexpr ``SG`` that
:func:`surrogate_grad` calls (Triton keys the compiled kernel on that copy's source, so an edited
formula recompiles).

Importing this module imports Triton; :mod:`snnrun.kernels` imports it lazily.
"""

from __future__ import annotations

import triton
import triton.language as tl

from snnrun.kernels.dialect import jit_copy
from snnrun.neuron.surrogate import SURROGATES, USER_SPECS


def _jit(name: str) -> triton.runtime.JITFunction:
    """The registered formula ``name``, compiled."""
    return jit_copy(SURROGATES.get(name).formula, f"sg_{name}")


def _code(name: str) -> tl.constexpr:
    return tl.constexpr(SURROGATES.get(name).code)


# The jitted copies, under fixed names (the dispatch below calls them by these names).
sg_atan = _jit("atan")
sg_sigmoid = _jit("sigmoid")
sg_fast_sigmoid = _jit("fast_sigmoid")
sg_piecewise_quadratic = _jit("piecewise_quadratic")
sg_erf = _jit("erf")
sg_soft_sign = _jit("soft_sign")
sg_triangle = _jit("triangle")
sg_rectangle = _jit("rectangle")

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


@triton.constexpr_function
def is_formula(sg):
    """Whether the constexpr ``SG`` is a user's jitted formula (not a registered code)."""
    return callable(sg)


@triton.jit
def surrogate_grad(x, alpha, SG: tl.constexpr):
    """``g'(x)`` of the surrogate with code ``SG``, or of the user's formula ``SG``
    (:func:`kernel_sg`) (float32 ``x`` [BLOCK], runtime ``alpha``)."""
    if is_formula(SG):
        g = SG(x, alpha)
    elif SG == SG_ATAN:
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


_USER_JIT: dict[int, triton.runtime.JITFunction] = {}


def kernel_sg(code: int) -> int | triton.runtime.JITFunction:
    """The kernels' ``SG`` for a surrogate's code: a registered code itself, a user's formula
    (code < 0) compiled (once per process)."""
    if code >= 0:
        return code
    if code not in _USER_JIT:
        spec = USER_SPECS[code]
        _USER_JIT[code] = jit_copy(spec.formula, f"sg_user_{spec.name}")
    return _USER_JIT[code]


def surrogate_code(name: str) -> int:
    """The constexpr ``SG`` for surrogate ``name``; refuses one that has no kernel branch."""
    if name not in KERNEL_SURROGATES:
        raise NotImplementedError(
            f"surrogate {name!r} has no branch in snnrun.kernels.surrogate_jit.surrogate_grad; "
            "add its jitted copy and a branch there (or use neuron.backend=torch)"
        )
    return SURROGATES.get(name).code
