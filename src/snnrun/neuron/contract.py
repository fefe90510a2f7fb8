"""The neuron contract: a neuron is its states, its parameters and one step.

Every neuron with a state, snnrun's (``if``, ``lif``, ``plif``, ``leaky``, ``alif``,
``synaptic``) and yours (``snnrun.Neuron``), defines the same three things:

- ``STATES``: its state variables and their initial values (the membrane is ``v``, else the
  first);
- :meth:`SpikingNeuron.params`: its parameters by name, numbers or tensors (learned ones are
  ``nn.Parameter`` s of the module, of shape ``()``, per channel ``[C, 1, ...]`` or per neuron);
- :meth:`SpikingNeuron.step` ``(x, states, params) -> (S, new states)``: one step, elementwise
  over ``[N, ...]``, written in the ``tl`` dialect (:mod:`snnrun.neuron.dialect`) and firing
  through :meth:`SpikingNeuron.fire` (the run's surrogate).

One registry, :data:`snnrun.neuron.state_loop.BACKENDS`, runs that step over ``[T, N, ...]``:

- ``autograd``: the reference loop over the step, autograd through every op;
- ``torch``: one autograd node per layer. A neuron whose step is the one-membrane equations of
  :mod:`snnrun.neuron.dynamics` (:meth:`SpikingNeuron.closed_form`: if, lif, plif, leaky with
  numbers or a learned decay per layer) gets their handwritten backward
  (:mod:`snnrun.neuron.neuron_loop`); every other one the chunked-recompute node, which keeps the
  states every few steps and recomputes the rest (nothing ``[T, N, ...]`` saved but the input);
- ``triton``: fused kernels (``snnrun.kernels``): the one-membrane kernels, or kernels written
  from a trace of the step, the gradient included (CUDA, or the CPU interpreter under
  ``TRITON_INTERPRET=1``; the torch backend elsewhere).

It also gets step modes ``s`` and ``m``, the ``recurrent`` entry, the monitors, figures and
summary, checkpoints and resume (its ``nn.Parameter`` s and buffers are the module's).
``examples/plugins/neuron.py`` holds two of yours (QIF and Izhikevich); README "Your own neuron"
shows one whole.

In ``step`` there is no Python ``if`` on a value (``tl.where`` instead). Numbers on ``self``
(``self.tau``) are constants of the compiled kernel; what is learned, or a tensor, comes through
``params()`` (a scalar, or a tensor that broadcasts to the step's ``[N, ...]``). An ``__init__``
that takes ``in_shape`` gets the layer's per-sample input shape (``[C, H, W]``, ``[F]``), to size
a parameter per channel or per neuron.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from snnrun.neuron.dynamics import ATAN, Dynamics
from snnrun.neuron.state_loop import BACKENDS, State, run_states
from snnrun.neuron.surrogate import Surrogate

StepResult = tuple[Any, dict[str, Any]]  # (S[t], the new states by name)
COMMON_OPTIONS = ("v_threshold", "surrogate", "backend", "step_mode", "store_v_seq")


class Stateful(nn.Module):
    """A layer with memory across time steps; :meth:`reset` forgets it."""

    def reset(self) -> None:
        raise NotImplementedError


class SpikingNeuron(Stateful):
    """A neuron layer: ``STATES``, :meth:`params` and :meth:`step` (the module docstring), run
    over time by its backend; it keeps its states between calls until :meth:`reset`.

    ``step_mode='m'`` takes ``[T, N, ...]``; ``'s'`` one step ``[N, ...]`` per call, with the
    same results. ``self.v`` is the membrane after the last step, ``self.v_seq`` (with
    ``store_v_seq``) the membrane after each step ``[T, N, ...]``."""

    STATES: ClassVar[dict[str, float]] = {"v": 0.0}
    OPTIONS: tuple[str, ...] = (*COMMON_OPTIONS, "v_reset", "detach_reset")
    """The config keys this neuron takes (besides ``name``)."""

    def __init__(
        self,
        dynamics: Dynamics,
        backend: str = "torch",
        step_mode: str = "m",
        store_v_seq: bool = False,
    ) -> None:
        super().__init__()
        if step_mode not in ("s", "m"):
            raise ValueError(f"step_mode must be 's' or 'm', got {step_mode!r}")
        BACKENDS.get(backend)  # an unknown backend fails at build, naming the known ones
        self.dynamics = dynamics
        self.backend = backend
        self.step_mode = step_mode
        self.store_v_seq = store_v_seq
        self.learn_tau: str | None = None
        self.learn_threshold: str | None = None
        self.reset()

    # --- what a neuron defines -------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The step's ``params``: numbers, or tensors (learned ones included), by name."""
        return {}

    def step(self, x: Any, states: dict[str, Any], params: dict[str, Any]) -> StepResult:
        """``(S[t], new states)`` from ``X[t]`` and the states after step t-1."""
        raise NotImplementedError(f"{type(self).__name__} must define step(x, states, params)")

    def fire(self, z: Any) -> Any:
        """The spike ``Heaviside(z)``, with the run's surrogate gradient ``g'(z)``."""
        return self.dynamics.surrogate(z)

    def closed_form(self) -> Dynamics | None:
        """The one-membrane equations this layer's step is, with ``params()`` ``{k, v_th}`` and
        ``v_th`` a number, for which the backends have a handwritten backward and kernel; None
        (the default): the backends run :meth:`step` itself."""
        return None

    # --- how snnrun runs it ----------------------------------------------------------------
    @property
    def state_names(self) -> tuple[str, ...]:
        """``STATES``' names, the membrane last (the order of the backends' state tuple)."""
        membrane = "v" if "v" in self.STATES else next(iter(self.STATES))
        return (*(n for n in self.STATES if n != membrane), membrane)

    def initial_state(self, x: torch.Tensor) -> State:
        """The states before step 0, each ``like`` one step of the input ``x``."""
        return tuple(torch.full_like(x, float(self.STATES[n])) for n in self.state_names)

    def flat_step(self, x: Any, state: State, values: list[Any]) -> tuple[Any, State]:
        """:meth:`step` on the states as a tuple in :attr:`state_names` order and the
        parameter values in :meth:`params` order (what the backends call)."""
        names = self.__dict__.get("_names")  # (states, params): set by forward; a bare trace asks
        states, params = names if names is not None else (self.state_names, list(self.params()))
        s, new = self.step(x, dict(zip(states, state)), dict(zip(params, values)))
        if not isinstance(new, dict) or new.keys() != self.STATES.keys():
            got = sorted(new) if isinstance(new, dict) else type(new).__name__
            raise TypeError(
                f"{type(self).__name__}.step must return (spikes, {{state: value}}) with the "
                f"states {sorted(self.STATES)}, got {got}"
            )
        return s, tuple(new[n] for n in states)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Spikes for ``x`` (``[T, N, ...]``, or ``[N, ...]`` when step_mode='s'), stepping from
        the kept states (or the initial ones)."""
        params = self.params()
        self._names, values = (self.state_names, list(params)), list(params.values())
        x_seq = x.unsqueeze(0) if self.step_mode == "s" else x
        state = self.state if self.state is not None else self.initial_state(x_seq[0])
        spikes, self.state, v_seq = run_states(self, x_seq, state, values, self.flat_step)
        self.v = self.state[-1]
        if self.store_v_seq:
            self._keep_v_seq(v_seq)
        return spikes[0] if self.step_mode == "s" else spikes

    def reset(self) -> None:
        """Forget the states (the initial ones on the next call)."""
        self.state: State | None = None
        self.v: torch.Tensor | None = None
        self.v_seq: torch.Tensor | None = None

    def _keep_v_seq(self, v_seq: torch.Tensor) -> None:
        if self.step_mode == "m" or self.v_seq is None:
            self.v_seq = v_seq
        else:
            self.v_seq = torch.cat([self.v_seq, v_seq])

    # --- how the summary and the figures show it -------------------------------------------
    def reset_kind(self) -> str:
        """``hard``, ``soft`` or ``subtract`` (decided by the previous membrane)."""
        d = self.dynamics
        return "subtract" if d.kind == "leaky" else ("hard" if d.hard_reset else "soft")

    def charge_seq(self, x: torch.Tensor, v_after: torch.Tensor) -> torch.Tensor:
        """What the output figure draws against ``v_threshold``, ``[T, ...]``, from the inputs
        ``x`` and the membrane after each step: here that membrane."""
        return v_after

    def extra_repr(self) -> str:
        d = self.dynamics
        reset = "soft" if not d.hard_reset else f"hard(v_reset={d.v_reset:g})"
        learned = f" (learned per {self.learn_threshold})" if self.learn_threshold else ""
        parts = [
            f"v_threshold={d.v_threshold:g}{learned}",
            f"reset={reset if d.kind != 'leaky' else 'subtract'}",
            *self._decay_repr(),
            f"detach_reset={d.detach_reset}" if d.kind != "leaky" else None,
            f"surrogate={d.surrogate!r}",
            f"step_mode={self.step_mode}",
            f"backend={self.backend}",
        ]
        return ", ".join(p for p in parts if p)

    def _decay_repr(self) -> list[str]:
        return []


class Neuron(SpikingNeuron):
    """``snnrun.Neuron``, the base of your own neuron: write ``STATES``, ``params()`` (if it has
    any) and ``step`` (the module docstring); ``__init__`` takes the run's ``v_threshold``,
    ``surrogate``, ``backend``, ``step_mode`` and ``store_v_seq`` (pass them on with ``**kw``)."""

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

    def reset_kind(self) -> str:
        return ""  # the step says how it resets

    def _decay_repr(self) -> list[str]:
        own = inspect.signature(type(self).__init__).parameters
        numbers = {k: getattr(self, k, None) for k in own if k != "v_threshold"}
        return [f"{k}={v:g}" for k, v in numbers.items() if isinstance(v, (int, float))]
