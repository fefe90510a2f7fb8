# The tl-dialect equations branch on compile-time codes with if-statements (Triton compiles them).
# ruff: noqa: SIM102, SIM108
"""Neuron dynamics shared by every backend, and the PyTorch reference time loop.

One step of a neuron layer (SpikingJelly's charge → fire → reset), elementwise over ``[N, ...]``:

- charge, by ``kind``:
  - ``if``:    ``H[t] = V[t-1] + X[t]``
  - ``lif``:   ``H[t] = V[t-1] + k (X[t] - (V[t-1] - V_r))``   (``decay_input``)
               ``H[t] = V[t-1] - k (V[t-1] - V_r) + X[t]``       (otherwise)
    with ``k = 1/tau`` (fixed for LIF, ``sigmoid(w)`` for PLIF) and ``V_r = V_reset`` (0 when soft).
  - ``leaky``: ``H[t] = beta V[t-1] + X[t] - V_th R[t]`` with the detached
    ``R[t] = Heaviside(V[t-1] - V_th)`` (snnTorch ``Leaky``: subtractive reset, decided by the
    previous membrane).
- fire: ``S[t] = Heaviside(H[t] - V_th)``, gradient ``g'(H[t] - V_th)`` from the surrogate.
- reset: hard ``V[t] = H[t] (1 - S[t]) + V_reset S[t]``; soft (``v_reset=None``)
  ``V[t] = H[t] - V_th S[t]``; ``detach_reset`` cuts the gradient through that ``S``.
  ``leaky`` keeps ``V[t] = H[t]`` (its reset happens in the next charge).

The equations are written here once, in the math dialect of :mod:`snnrun.neuron.dialect`
(``eq_charge``, ``eq_reset`` and the derivatives ``eq_dv_dh``, ``eq_dh_dv``, ``eq_dh_dx``,
``eq_dh_dk``), with the kind as a compile-time code (``Dynamics.code``: 0 if, 1 lif, 2 leaky).
:func:`membrane_step` is the step of those neurons (``MembraneNeuron.step``, on tensors and on a
trace); the handwritten backward of :mod:`snnrun.neuron.neuron_loop` and the one-membrane Triton
kernels (``kernels/neuron_kernels.py`` compiles these very functions) run the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from snnrun.neuron.dialect import tl
from snnrun.neuron.surrogate import Surrogate

KINDS = ("if", "lif", "leaky")
ATAN = Surrogate("atan", 2.0)


@dataclass(frozen=True)
class Dynamics:
    """The fixed description of one neuron layer's update (everything but learned tensors)."""

    kind: str
    v_threshold: float = 1.0
    v_reset: float | None = 0.0
    detach_reset: bool = False
    decay_input: bool = True
    surrogate: Surrogate = ATAN

    # derived once (the torch backends read them at every step of every layer)
    hard_reset: bool = field(init=False, repr=False, compare=False)
    code: int = field(init=False, repr=False, compare=False)
    """The kind as the equations' compile-time ``KIND``: 0 if, 1 lif, 2 leaky."""
    reset_code: int = field(init=False, repr=False, compare=False)
    """The reset as the equations' compile-time ``RESET``: 0 soft, 1 hard, 2 hard to 0 (the
    default ``V_reset``, whose ``V_reset S`` term the equations drop)."""
    v_rest: float = field(init=False, repr=False, compare=False)
    """The initial membrane ``V[-1]``: ``V_reset`` for hard reset, else 0."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown neuron dynamics {self.kind!r}; known: {', '.join(KINDS)}")
        hard = self.v_reset is not None and self.kind != "leaky"
        derived = {
            "hard_reset": hard,
            "code": KINDS.index(self.kind),
            "reset_code": (2 if self.v_reset == 0.0 else 1) if hard else 0,
            "v_rest": self.v_reset if hard else 0.0,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)


Decay = float | torch.Tensor | None  # k = 1/tau (lif), beta (leaky), unused (if)
MembraneResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""A one-membrane loop's ``(spikes [T, N, ...], V[T-1], V after each step or None)``."""


# --- the equations, in the tl dialect: KIND 0 if, 1 lif, 2 leaky; k the decay; V_r = v_rest --
def eq_charge(v, x, k, v_th, v_r, KIND: tl.constexpr, DECAY_INPUT: tl.constexpr,
              RESET: tl.constexpr):  # fmt: skip
    """``H[t]`` from ``V[t-1] = v`` and ``X[t] = x`` (``V_r`` is 0 unless ``RESET`` is 1)."""
    if KIND == 0:
        h = v + x
    elif KIND == 1:
        d = v  # V[t-1] - V_r, where V_r is 0
        if RESET == 1:
            d = v - v_r
        if DECAY_INPUT:
            h = v + (x - d) * k
        else:
            h = v - d * k + x
    else:
        h = k * v + x
        h = tl.where(v >= v_th, h - v_th, h)  # leaky's reset, decided by V[t-1]: no gradient
    return h


def eq_reset(h, s, v_th, v_reset, KIND: tl.constexpr, RESET: tl.constexpr):
    """``V[t]`` from ``H[t]`` and the spike ``S[t]`` (0 or 1, as a float); ``RESET``: 0 soft,
    1 hard, 2 hard to 0 (two fewer passes; the same values)."""
    if KIND == 2:
        v = h
    elif RESET == 2:
        v = h * (1.0 - s)
    elif RESET == 1:
        v = h * (1.0 - s) + v_reset * s
    else:
        v = h - v_th * s
    return v


def eq_dv_dh(h, s, sg, v_th, v_reset, KIND: tl.constexpr, RESET: tl.constexpr,
             DETACH: tl.constexpr):  # fmt: skip
    """``dV[t]/dH[t]`` through the reset (the spike's part by ``sg = g'(H - V_th)``)."""
    if KIND == 2:
        d = tl.zeros_like(h) + 1.0
    elif RESET:
        if DETACH:
            d = 1.0 - s
        elif RESET == 2:
            d = (1.0 - s) - h * sg
        else:
            d = (1.0 - s) + (v_reset - h) * sg
    else:
        if DETACH:
            d = tl.zeros_like(h) + 1.0
        else:
            d = 1.0 - v_th * sg
    return d


def eq_dh_dv(k, KIND: tl.constexpr):
    """``dH[t]/dV[t-1]``: if 1, lif ``1 - k``, leaky ``k`` (its reset term is detached)."""
    if KIND == 0:
        a = 1.0
    elif KIND == 1:
        a = 1.0 - k
    else:
        a = k
    return a


def eq_dh_dx(k, KIND: tl.constexpr, DECAY_INPUT: tl.constexpr):
    """``dH[t]/dX[t]``: ``k`` for lif with decay_input, else 1."""
    b = 1.0
    if KIND == 1:
        if DECAY_INPUT:
            b = k
    return b


def eq_dh_dk(v, x, v_r, KIND: tl.constexpr, DECAY_INPUT: tl.constexpr):
    """``dH[t]/dk`` at ``V[t-1] = v``, ``X[t] = x`` (for a learned decay)."""
    if KIND == 2:
        d = v
    elif DECAY_INPUT:
        d = x - (v - v_r)
    else:
        d = v_r - v
    return d


# --- the equations for one layer's Dynamics, on torch tensors ---------------------------------
def charge(dyn: Dynamics, v: torch.Tensor, x: torch.Tensor, decay: Decay) -> torch.Tensor:
    """``H[t]`` from ``V[t-1]`` and ``X[t]`` (see the module docstring)."""
    return eq_charge(v, x, decay, dyn.v_threshold, dyn.v_rest, dyn.code, dyn.decay_input,
                     dyn.reset_code)  # fmt: skip


def reset(dyn: Dynamics, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``V[t]`` from ``H[t]`` and the float spike ``S[t]`` (autograd flows through ``s``)."""
    return eq_reset(h, s, dyn.v_threshold, dyn.v_reset, dyn.code, dyn.reset_code)


def membrane_step(dyn: Dynamics, x: Any, v: Any, k: Any, v_th: Any) -> tuple[Any, Any]:
    """``(S[t], V[t])`` from ``X[t] = x`` and ``V[t-1] = v``: charge, fire, reset, with the
    decay ``k`` and threshold ``v_th`` as values (numbers, tensors of any shape that broadcasts,
    or traced ones): the step of if, lif, plif and leaky."""
    h = eq_charge(v, x, k, v_th, dyn.v_rest, dyn.code, dyn.decay_input, dyn.reset_code)
    s = dyn.surrogate(h - v_th)
    kept = tl.detach(s) if dyn.detach_reset else s
    return s, eq_reset(h, kept, v_th, dyn.v_reset, dyn.code, dyn.reset_code)


# --- the handwritten backward's view of the same step (boolean spikes, derivatives) -------
def next_v(dyn: Dynamics, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``V[t]`` from ``H[t]`` and the spike ``S[t]`` (0/1 in ``h``'s dtype; no graph)."""
    return h if dyn.kind == "leaky" else reset(dyn, h, s)


def v_after(dyn: Dynamics, h: torch.Tensor) -> torch.Tensor:
    """``V[t]`` from ``H[t]`` alone (the spike is ``H[t] >= V_th``)."""
    return next_v(dyn, h, (h >= dyn.v_threshold).to(h.dtype))


def dv_dh(dyn: Dynamics, h: torch.Tensor, s: torch.Tensor, sg: torch.Tensor) -> torch.Tensor | None:
    """``dV[t]/dH[t]`` for the spike ``s`` (boolean, or 0/1 in ``h``'s dtype); None where it is
    1."""
    if dyn.kind == "leaky" or (not dyn.hard_reset and dyn.detach_reset):
        return None
    return eq_dv_dh(h, s.to(h.dtype), sg, dyn.v_threshold, dyn.v_reset, dyn.code,
                    dyn.reset_code, dyn.detach_reset)  # fmt: skip


def dh_dv(dyn: Dynamics, decay: Decay) -> Decay:
    """``dH[t]/dV[t-1]`` (a float or the decay tensor)."""
    return eq_dh_dv(decay, dyn.code)


def dh_dx(dyn: Dynamics, decay: Decay) -> Decay:
    """``dH[t]/dX[t]`` (a float or the decay tensor)."""
    return eq_dh_dx(decay, dyn.code, dyn.decay_input)


def dh_dk(dyn: Dynamics, v_prev: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``dH[t]/dk`` for a learned decay."""
    return eq_dh_dk(v_prev, x, dyn.v_rest, dyn.code, dyn.decay_input)


def reference_loop(
    x_seq: torch.Tensor, v: torch.Tensor, decay: Decay, dyn: Dynamics, store_v_seq: bool
) -> MembraneResult:
    """Reference multi-step update of one membrane: a Python loop over T of
    :func:`membrane_step`, autograd through every op (the ``autograd`` backend's loop over such a
    layer's step, without the layer: the tests and benchmarks hold the handwritten backward and
    the one-membrane kernels to it)."""
    spikes, v_seq = [], []
    for x in x_seq:
        s, v = membrane_step(dyn, x, v, decay, dyn.v_threshold)
        spikes.append(s)
        if store_v_seq:
            v_seq.append(v)
    return torch.stack(spikes), v, torch.stack(v_seq) if store_v_seq else None
