"""Two neurons of your own, each its states and one step (``snnrun.Neuron``).

snnrun neuron._target_=plugins.neuron.QIF neuron.backend=triton
snnrun --config-dir examples/conf neuron=izhikevich
"""

from __future__ import annotations

import snnrun
from snnrun import tl


class QIF(snnrun.Neuron):
    """Quadratic integrate-and-fire: V += (V (V - v_c) + X) / tau, spike at V >= v_th."""

    STATES = {"v": 0.0}  # initial values; the state `v` is the membrane the monitors show

    def __init__(self, tau: float = 2.0, v_c: float = 0.5, **kw):
        super().__init__(**kw)  # v_threshold, surrogate, backend, step_mode, store_v_seq
        self.tau, self.v_c = tau, v_c  # numbers: constants of the compiled kernel

    def step(self, x, states, params):  # elementwise over [N, ...]
        v = states["v"]
        h = v + (v * (v - self.v_c) + x) / self.tau
        s = self.fire(h - self.v_threshold)  # Heaviside, with the run's surrogate gradient
        return s, {"v": h * (1.0 - s)}


class Izhikevich(snnrun.Neuron):
    """Izhikevich (2003), Euler steps of ``dt`` ms, the input times ``gain``::

    V' = 0.04 V^2 + 5 V + 140 - U + gain X,   U' = a (b V - U)
    spike at V >= v_peak:  V <- c,  U <- U + d
    """

    STATES = {"v": -65.0, "u": -13.0}

    def __init__(self, a=0.02, b=0.2, c=-65.0, d=8.0, dt=0.5, gain=20.0, v_peak=30.0, **kw):
        super().__init__(**kw)
        self.a, self.b, self.c, self.d = a, b, c, d
        self.dt, self.gain, self.v_peak = dt, gain, v_peak

    def step(self, x, states, params):
        v, u = states["v"], states["u"]
        h = v + self.dt * (0.04 * v * v + 5.0 * v + 140.0 - u + self.gain * x)
        s = self.fire(h - self.v_peak)
        u = u + self.dt * self.a * (self.b * v - u) + self.d * s
        return s, {"v": tl.where(s > 0.0, self.c, h), "u": u}
