"""The ``readout`` entry: a leaky integrator without spikes, whose membrane is the network's
output (the readout of Cramer et al. 2020 and Zenke & Vogels 2021; NIR's ``LI`` / ``I``).

``{type: readout, kind: li, tau: 20}`` over ``[T, N, ...]`` (the membrane starts at 0 and is kept
between calls until the network resets it, so a network fed one step at a time gets the same)::

    li:   V[t] = V[t-1] + (X[t] - V[t-1]) / tau     (LIF's charge with decay_input; no spike)
    sum:  V[t] = V[t-1] + X[t]                       (IF's charge: the running sum)

The charge is the neurons' own equation (:func:`snnrun.neuron.dynamics.charge`). Train it with a
loss on the membrane: ``loss=ce_max_membrane`` or ``loss=ce_last_membrane``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from snnrun.net.layers import LAYERS, Context, Shape
from snnrun.neuron.contract import Stateful
from snnrun.neuron.dynamics import Dynamics, charge

KINDS = ("li", "sum")


class Readout(Stateful):
    """The membrane ``V [T, N, ...]`` of a non-spiking integrator of ``X [T, N, ...]``."""

    def __init__(self, kind: str = "li", tau: float | None = None) -> None:
        """``tau``: li's time constant in steps (default 2); sum has none (it does not leak)."""
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"readout kind must be li or sum, got {kind!r}; set kind: li")
        if kind == "sum" and tau is not None:
            raise ValueError(f"readout sum has no tau (it does not leak), got tau={tau}; "
                             "drop tau, or set kind: li for a leaky readout")  # fmt: skip
        tau = float(tau) if tau is not None else 2.0
        if kind == "li" and not (tau > 1.0 and math.isfinite(tau)):
            raise ValueError(f"readout li needs tau > 1 (steps), got {tau:g}; set tau: 2.0")
        self.kind, self.tau = kind, tau
        self.dynamics = Dynamics("lif" if kind == "li" else "if", v_reset=None)
        self.v: torch.Tensor | None = None

    def reset(self) -> None:
        self.v = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.v if self.v is not None else torch.zeros_like(x[0])
        k = 1.0 / self.tau if self.kind == "li" else None
        out = []
        for x_t in x:
            v = charge(self.dynamics, v, x_t, k)
            out.append(v)
        self.v = v
        return torch.stack(out)

    def extra_repr(self) -> str:
        return f"kind={self.kind}" + (f", tau={self.tau:g}" if self.kind == "li" else "")


@LAYERS.register("readout")
def _readout(options: dict[str, Any], in_shape: Shape, ctx: Context) -> Readout:
    return Readout(**options)
