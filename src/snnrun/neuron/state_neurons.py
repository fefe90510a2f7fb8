"""Neurons beyond one membrane: ``alif`` (adaptive threshold), ``synaptic`` (a synaptic current
before the membrane) and ``psn`` (parallel: no state, no reset).

``alif`` and ``synaptic`` are each defined once, by their ``STATES``, ``params`` and one
``step`` in the ``tl`` dialect (the contract of :mod:`snnrun.neuron.contract`, as a user's
:class:`snnrun.Neuron`), which every backend runs: the ``autograd`` reference loop, the ``torch``
chunked-recompute node, the ``triton`` kernels written from its trace. ``psn`` is one matrix
product over the time axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from snnrun.core.errors import SnnrunError
from snnrun.neuron.contract import COMMON_OPTIONS, SpikingNeuron, StepResult
from snnrun.neuron.dialect import tl
from snnrun.neuron.dynamics import Decay, Dynamics, charge, eq_reset
from snnrun.neuron.neurons import (
    LAYER_KEYS,
    LEARN_OPTIONS,
    NEURONS,
    MembraneNeuron,
    checked,
    layer_options,
    make_dynamics,
)


@NEURONS.register("alif")
class ALIFNeuron(MembraneNeuron):
    """LIF with an adaptive threshold: the ALIF neuron of the LSNN (Bellec et al., NeurIPS 2018;
    e-prop, Nat. Commun. 2020, Methods, "ALIF")::

        H[t]     = the LIF charge of V[t-1] and X[t] (k = 1/tau, decay_input)
        a[t]     = rho a[t-1] + S[t-1],  rho = exp(-1/tau_adapt),  a[0] = 0
        theta[t] = v_th + beta_a a[t]          (the paper's A = v_th + beta a)
        S[t]     = Heaviside(H[t] - theta[t])  (surrogate gradient, through a too)
        V[t]     = H[t] - v_th S[t]            (soft: v_reset null, e-prop's reset)
                 | H[t] (1 - S[t]) + V_reset S[t]   (hard)

    ``tau_adapt`` and ``tau`` are in steps. The states are ``a`` (``a[t+1]`` after step t)
    and ``v``.
    """

    OPTIONS = (*SpikingNeuron.OPTIONS, "tau", "decay_input", "tau_adapt", "beta_a", *LEARN_OPTIONS)

    def __init__(
        self,
        tau: float = 20.0,
        tau_adapt: float = 200.0,
        beta_a: float = 1.8,
        learn_tau: str | None = None,
        learn_threshold: str | None = None,
        in_shape: Sequence[int] | None = None,
        **kw: Any,
    ) -> None:
        tau = checked("alif", "tau", tau, "> 1")
        tau_adapt = checked("alif", "tau_adapt", tau_adapt, "> 0")
        kw = {"v_reset": None, **kw}  # soft by default (e-prop's reset), as conf/neuron/alif.yaml
        super().__init__(make_dynamics("lif", kw, "alif"), **layer_options(kw))
        self.tau, self.tau_adapt, self.beta_a = tau, tau_adapt, float(beta_a)
        self.rho = math.exp(-1.0 / self.tau_adapt)
        self.learn(-math.log(tau - 1.0), learn_tau, learn_threshold, in_shape)
        self.STATES = {"a": 0.0, "v": self.dynamics.v_rest}

    def decay(self) -> Decay:
        """``1/tau``; learned (``learn_tau``): ``sigmoid(w)``."""
        return self.w.sigmoid() if self.learn_tau else 1.0 / self.tau

    def step(self, x: Any, states: dict[str, Any], params: dict[str, Any]) -> StepResult:
        a, v, k, v_th, dyn = states["a"], states["v"], params["k"], params["v_th"], self.dynamics
        h = charge(dyn, v, x, k)
        s = self.fire(h - (v_th + self.beta_a * a))
        kept = tl.detach(s) if dyn.detach_reset else s
        v = eq_reset(h, kept, v_th, dyn.v_reset, dyn.code, dyn.reset_code)
        return s, {"a": self.rho * a + s, "v": v}

    def closed_form(self) -> Dynamics | None:
        return None  # its threshold adapts: the backends run the step

    def _decay_repr(self) -> list[str]:
        learned = f" (learned per {self.learn_tau})" if self.learn_tau else ""
        return [
            f"tau={self.tau:g}{learned}",
            f"tau_adapt={self.tau_adapt:g}",
            f"beta_a={self.beta_a:g}",
        ]

    def charge_seq(self, x: torch.Tensor, v_after: torch.Tensor) -> torch.Tensor:
        """What the output figure draws against ``v_threshold``: ``H[t] - beta_a a[t]``, the
        charge less the adaptation's rise of the threshold, so that a spike is where it reaches
        ``v_threshold`` (``a`` re-run from 0, as at the start of every batch), ``[T, ...]``."""
        h = super().charge_seq(x, v_after)
        shown, params = torch.empty_like(h), self.params()
        states = {"a": torch.zeros_like(h[0]), "v": torch.full_like(h[0], self.dynamics.v_rest)}
        with torch.no_grad():
            for t in range(h.shape[0]):  # a[t] from the step itself
                shown[t] = h[t] - self.beta_a * states["a"]
                _, states = self.step(x[t], states, params)
        return shown


@NEURONS.register("synaptic")
class SynapticNeuron(SpikingNeuron):
    """snnTorch 1.0's ``Synaptic`` (current-based LIF; NIR's ``CubaLIF``)::

        I[t] = alpha I[t-1] + X[t]
        V[t] = beta V[t-1] + I[t] - V_th R[t],  R[t] = Heaviside(V[t-1] - V_th) (detached)
        S[t] = Heaviside(V[t] - V_th)

    ``alpha`` and ``beta`` in [0, 1] (learned with ``learn_alpha`` / ``learn_beta``, and clamped
    there); the reset subtracts the threshold, decided by the previous membrane, as ``leaky`` does.
    The states are ``i`` and ``v``, both 0 at first.
    """

    STATES: ClassVar[dict[str, float]] = {"i": 0.0, "v": 0.0}

    OPTIONS = (*COMMON_OPTIONS, "alpha", "beta", "learn_alpha", "learn_beta")

    def __init__(
        self,
        alpha: float = 0.9,
        beta: float = 0.8,
        learn_alpha: bool = False,
        learn_beta: bool = False,
        **kw: Any,
    ) -> None:
        fixed = {"v_reset", "detach_reset", "decay_input"} & set(kw)
        if fixed:  # its reset subtracts the threshold, decided by the previous membrane
            raise TypeError(f"synaptic takes no {', '.join(sorted(fixed))}")
        kw = {**kw, "v_reset": None, "detach_reset": True}
        super().__init__(make_dynamics("leaky", kw, "synaptic"), **layer_options(kw))
        self.learn_alpha, self.learn_beta = learn_alpha, learn_beta
        for name, value, learn in (("alpha", alpha, learn_alpha), ("beta", beta, learn_beta)):
            tensor = torch.tensor(checked("synaptic", name, value, "in [0, 1]"))
            if learn:
                setattr(self, name, nn.Parameter(tensor))
            else:
                self.register_buffer(name, tensor)

    def decay(self) -> Decay:
        return self.beta.clamp(0.0, 1.0)

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha.clamp(0.0, 1.0), "beta": self.beta.clamp(0.0, 1.0)}

    def step(self, x: Any, states: dict[str, Any], params: dict[str, Any]) -> StepResult:
        i = params["alpha"] * states["i"] + x
        h = charge(self.dynamics, states["v"], i, params["beta"])  # leaky's: beta V + I - V_th R
        return self.fire(h - self.dynamics.v_threshold), {"i": i, "v": h}

    def _decay_repr(self) -> list[str]:
        learned = {True: " (learned)", False: ""}
        return [
            f"alpha={self.alpha.item():g}{learned[self.learn_alpha]}",
            f"beta={self.beta.item():g}{learned[self.learn_beta]}",
        ]


@NEURONS.register("psn")
class PSNNeuron(SpikingNeuron):
    """The parallel spiking neuron (PSN; Fang et al., NeurIPS 2023; SpikingJelly 2.0's ``PSN``)::

        H = W X + b    over the time axis: W [T, T], b [T] learned, X [T, N*...]
        S = Heaviside(H)  (the surrogate's gradient)

    No state and no reset: every step in one matrix product. ``W`` starts Kaiming-uniform
    (``a = sqrt(5)``) and ``b`` at -1 (a threshold of 1), as in SpikingJelly. ``causal=true``
    masks ``W`` to its lower triangle, so that ``H[t]`` reads only ``X[0..t]``. T is fixed when
    the layer is built (the run's ``T``); another T is one line.
    """

    OPTIONS = ("T", "causal", "surrogate", "backend", "step_mode", "store_v_seq")

    def __init__(self, T: int, causal: bool = False, **kw: Any) -> None:
        if kw.get("step_mode", "m") != "m":
            raise ValueError("psn computes all T steps at once: it needs step_mode=m")
        if not isinstance(T, int) or T < 1:
            raise ValueError(f"psn needs T >= 1 steps (T: ${{T}}, the run's), got {T!r}")
        unknown = set(kw) - {"surrogate", *LAYER_KEYS}
        if unknown:  # its threshold is the learned bias; it has no reset
            raise TypeError(f"psn takes no {', '.join(sorted(unknown))}")
        super().__init__(make_dynamics("if", {"v_threshold": 0.0, **kw}), **layer_options(kw))
        self.T, self.causal = T, bool(causal)
        self.weight = nn.Parameter(torch.empty(T, T))
        self.bias = nn.Parameter(torch.full((T, 1), -1.0))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.register_buffer("mask", torch.ones(T, T).tril() if causal else torch.ones(T, T))

    def charge_seq(self, x: torch.Tensor, v_after: torch.Tensor | None = None) -> torch.Tensor:
        """``H = W X + b``, ``[T, N, ...]``."""
        if x.shape[0] != self.T:
            raise SnnrunError(
                f"psn was built for T={self.T} steps and gets {x.shape[0]}; run it at T={self.T} "
                "(a psn entry of your own takes the run's T as T: ${T})"
            )
        h = torch.addmm(self.bias.to(x.dtype), (self.weight * self.mask).to(x.dtype), x.flatten(1))
        return h.view(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.charge_seq(x)
        if self.store_v_seq:
            self.v_seq = h
        return self.dynamics.surrogate(h)

    def reset_kind(self) -> str:
        return "none"

    def _decay_repr(self) -> list[str]:
        return [f"T={self.T}", "causal" if self.causal else ""]

    def extra_repr(self) -> str:
        return f"T={self.T}, causal={self.causal}, surrogate={self.dynamics.surrogate!r}"
