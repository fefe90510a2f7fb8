"""Your neuron: its states, its parameters and one step (``snnrun.Neuron``, the public base).

A neuron written this way runs on every backend from that one definition:

- ``autograd``: the reference loop over :meth:`Neuron.step`, autograd through every op;
- ``torch``: one autograd node per layer that keeps the states every few steps and recomputes
  the rest in the backward (:mod:`snnrun.neuron.state_loop`): nothing ``[T, N, ...]`` is saved but
  the input;
- ``triton``: fused forward and backward kernels that ``snnrun.kernels`` writes from a trace of
  the step (``kernels/step_kernels.py``), the gradient included, so no derivative is written by
  hand (CUDA, or the CPU interpreter under ``TRITON_INTERPRET=1``; the torch backend elsewhere).

It also gets step modes ``s`` and ``m``, the ``recurrent`` entry, the monitors, figures and
summary (the membrane is the state named ``v``, else the first), checkpoints and resume
(its ``nn.Parameter`` s and buffers are the module's). ``examples/plugins/neuron.py`` holds two
(QIF and Izhikevich); README "Your own neuron" shows one whole.

``step`` is elementwise over ``[N, ...]`` and written in the ``tl`` dialect
(:mod:`snnrun.neuron.dialect`): arithmetic, comparisons, ``tl.where`` ... but no Python ``if`` on a
value. Numbers on ``self`` (``self.tau``) are constants of the compiled kernel; what is learned,
or a tensor, comes through :meth:`Neuron.params` (a scalar, or a tensor that broadcasts to the
step's ``[N, ...]``). An ``__init__`` that takes ``in_shape`` gets the layer's per-sample input
shape (``[C, H, W]``, ``[F]``), to size a parameter per channel or per neuron.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch

from snnrun.neuron.dynamics import ATAN, Dynamics
from snnrun.neuron.neurons import COMMON_OPTIONS
from snnrun.neuron.state_loop import State
from snnrun.neuron.state_neurons import StateNeuron
from snnrun.neuron.surrogate import Surrogate

StepResult = tuple[torch.Tensor, dict[str, Any]]  # (S[t], the new states by name)


class Neuron(StateNeuron):
    """A neuron defined by ``STATES`` (names and initial values), :meth:`params` and
    :meth:`step` (see the module docstring)."""

    STATES: ClassVar[dict[str, float]] = {"v": 0.0}
    OPTIONS = COMMON_OPTIONS

    def __init__(
        self,
        v_threshold: float = 1.0,
        surrogate: Surrogate = ATAN,
        backend: str = "torch",
        step_mode: str = "m",
        store_v_seq: bool = False,
    ) -> None:
        dyn = Dynamics("if", v_threshold=float(v_threshold), v_reset=None, surrogate=surrogate)
        super().__init__(dyn, backend=backend, step_mode=step_mode, store_v_seq=store_v_seq)
        self.v_threshold = dyn.v_threshold
        if not self.STATES:
            raise TypeError(f"{type(self).__name__}.STATES names no state; give {{'v': 0.0}}")
        membrane = "v" if "v" in self.STATES else next(iter(self.STATES))
        self.state_names = (*(n for n in self.STATES if n != membrane), membrane)

    # --- what a user writes ----------------------------------------------------------------
    def params(self) -> dict[str, Any]:  # type: ignore[override]
        """The step's ``params``: learned or tensor values by name (none by default)."""
        return {}

    def step(self, x: Any, states: dict[str, Any], params: dict[str, Any]) -> StepResult:  # type: ignore[override]
        """``(S[t], new states)`` from ``X[t]`` and the states after step t-1."""
        raise NotImplementedError(f"{type(self).__name__} must define step(x, states, params)")

    # --- how snnrun runs it ----------------------------------------------------------------
    def initial_state(self, x: torch.Tensor) -> State:
        return tuple(torch.full_like(x, float(self.STATES[n])) for n in self.state_names)

    def flat_params(self) -> tuple[list[str], list[Any]]:
        """The names and values of :meth:`params`, in order."""
        params = self.params()
        return list(params), list(params.values())

    def flat_step(self, x: Any, state: State, values: list[Any]) -> tuple[Any, State]:
        """:meth:`step` on the states as a tuple in ``state_names`` order (the membrane last)."""
        names = getattr(self, "_param_names", None)  # set by forward; a bare trace asks
        names = list(self.params()) if names is None else names
        s, new = self.step(x, dict(zip(self.state_names, state)), dict(zip(names, values)))
        if not isinstance(new, dict) or set(new) != set(self.state_names):
            got = sorted(new) if isinstance(new, dict) else type(new).__name__
            raise TypeError(
                f"{type(self).__name__}.step must return (spikes, {{state: value}}) with the "
                f"states {sorted(self.state_names)}, got {got}"
            )
        return s, tuple(new[n] for n in self.state_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._param_names, values = self.flat_params()
        return self.run(x, self.flat_step, values)

    def reset_kind(self) -> str:
        return ""  # the step says how it resets

    def _decay_repr(self) -> list[str]:
        own = inspect.signature(type(self).__init__).parameters
        numbers = {k: getattr(self, k, None) for k in own if k != "v_threshold"}
        return [f"{k}={v:g}" for k, v in numbers.items() if isinstance(v, (int, float))]

    def charge_seq(self, x: torch.Tensor, v_after: torch.Tensor) -> torch.Tensor:
        """What the output figure draws against ``v_threshold``: the membrane after each step."""
        return v_after
