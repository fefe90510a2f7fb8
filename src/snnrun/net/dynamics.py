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

The equations live here once: :func:`charge` and :func:`fire_and_reset` (the reference loop,
autograd through them), :func:`next_v` and the derivatives :func:`dv_dh`, :func:`dh_dk` (what
the handwritten backward of :mod:`snnrun.net.neuron_loop` reads). A backend is a function with
the :data:`Backend` signature, registered in :data:`BACKENDS`; the neuron layer picks one when it
is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from snnrun.core.registry import Registry
from snnrun.net.surrogate import Surrogate

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

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown neuron dynamics {self.kind!r}; known: {', '.join(KINDS)}")

    @property
    def hard_reset(self) -> bool:
        return self.v_reset is not None and self.kind != "leaky"

    @property
    def v_rest(self) -> float:
        """The initial membrane ``V[-1]``: ``V_reset`` for hard reset, else 0."""
        return self.v_reset if self.hard_reset else 0.0


Decay = float | torch.Tensor | None  # k = 1/tau (lif), beta (leaky), unused (if)
BackendResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
# (x_seq [T, N, ...], v_init [N, ...], decay, dynamics, store_v_seq) -> (spikes, v_last, v_seq)
Backend = Callable[[torch.Tensor, torch.Tensor, Decay, Dynamics, bool], BackendResult]

BACKENDS: Registry[Backend] = Registry("neuron backend")


def charge(dyn: Dynamics, v: torch.Tensor, x: torch.Tensor, decay: Decay) -> torch.Tensor:
    """``H[t]`` from ``V[t-1]`` and ``X[t]`` (see the module docstring)."""
    if dyn.kind == "if":
        return v + x
    if dyn.kind == "lif":
        v_r = dyn.v_rest
        if dyn.decay_input:
            return v + (x - (v - v_r)) * decay
        return v - (v - v_r) * decay + x
    reset = (v >= dyn.v_threshold).to(v.dtype)  # leaky: previous spike, no gradient
    return decay * v + x - dyn.v_threshold * reset


def fire_and_reset(dyn: Dynamics, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S[t], V[t])`` from ``H[t]``."""
    s = dyn.surrogate(h - dyn.v_threshold)
    if dyn.kind == "leaky":
        return s, h
    s_r = s.detach() if dyn.detach_reset else s
    if dyn.hard_reset:
        return s, h * (1.0 - s_r) + dyn.v_reset * s_r
    return s, h - dyn.v_threshold * s_r


# --- the handwritten backward's view of the same step (boolean spikes, derivatives) -------
def next_v(dyn: Dynamics, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``V[t]`` from ``H[t]`` and the boolean spike ``S[t]`` (values as the reference's)."""
    if dyn.kind == "leaky":
        return h
    if dyn.hard_reset:
        return torch.where(s, dyn.v_reset, h)
    return h - dyn.v_threshold * s.to(h.dtype)


def v_after(dyn: Dynamics, h: torch.Tensor) -> torch.Tensor:
    """``V[t]`` from ``H[t]`` alone (the spike is ``H[t] >= V_th``)."""
    return next_v(dyn, h, h >= dyn.v_threshold)


def dv_dh(dyn: Dynamics, h: torch.Tensor, s: torch.Tensor, sg: torch.Tensor) -> torch.Tensor | None:
    """``dV[t]/dH[t]`` through the reset; None where it is 1."""
    if dyn.kind == "leaky" or (not dyn.hard_reset and dyn.detach_reset):
        return None
    if dyn.hard_reset:
        keep = (~s).to(h.dtype)
        return keep if dyn.detach_reset else keep.addcmul_(dyn.v_reset - h, sg)
    return 1.0 - dyn.v_threshold * sg


def dh_dk(dyn: Dynamics, v_prev: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``dH[t]/dk`` for a learned decay."""
    if dyn.kind == "leaky":
        return v_prev
    if dyn.decay_input:
        return x - (v_prev - dyn.v_rest)
    return dyn.v_rest - v_prev


@BACKENDS.register("autograd")
def reference_loop(
    x_seq: torch.Tensor, v: torch.Tensor, decay: Decay, dyn: Dynamics, store_v_seq: bool
) -> BackendResult:
    """Reference multi-step update: a Python loop over T, autograd through every op.

    The ``autograd`` backend; the default ``torch`` backend (:mod:`snnrun.net.neuron_loop`) computes
    the same values with a handwritten backward, and the tests hold both to this one."""
    spikes, v_seq = [], []
    for x in x_seq:
        s, v = fire_and_reset(dyn, charge(dyn, v, x, decay))
        spikes.append(s)
        if store_v_seq:
            v_seq.append(v)
    return torch.stack(spikes), v, torch.stack(v_seq) if store_v_seq else None
