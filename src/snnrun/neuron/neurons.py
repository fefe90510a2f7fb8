"""The built-in neurons of one membrane, ``if``, ``lif``, ``plif`` and ``leaky``, the neuron
registry (``NEURONS``) and how a layer is built from the config.

Each is a :class:`~snnrun.neuron.contract.SpikingNeuron` (its states, parameters and one step;
the contract a user's ``snnrun.Neuron`` follows): :class:`MembraneNeuron` steps the equations of
:mod:`snnrun.neuron.dynamics` and says so (``closed_form``), so the ``torch`` and ``triton``
backends give it their handwritten backward and one-membrane kernels.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from snnrun.core.plugin import TARGET, PluginError, has_target, import_target
from snnrun.core.registry import Registry
from snnrun.neuron.contract import COMMON_OPTIONS, SpikingNeuron, Stateful, StepResult
from snnrun.neuron.dynamics import Decay, Dynamics, charge, membrane_step
from snnrun.neuron.surrogate import Surrogate, build_surrogate

__all__ = ["NEURONS", "SpikingNeuron", "Stateful", "build_neuron", "reset_states"]

NEURONS: Registry[type[SpikingNeuron]] = Registry("neuron")
LEARN_OPTIONS = ("learn_tau", "learn_threshold")
LEARN_MODES = ("layer", "channel", "neuron")


class MembraneNeuron(SpikingNeuron):
    """A neuron of one membrane ``v`` whose step is the equations of
    :mod:`snnrun.neuron.dynamics` (:func:`~snnrun.neuron.dynamics.membrane_step`: charge, fire,
    reset) with ``params`` ``{k: the decay, v_th: the threshold}``: if, lif, plif, leaky (and
    alif's charge and reset)."""

    def __init__(self, dynamics: Dynamics, **layer: Any) -> None:
        super().__init__(dynamics, **layer)
        self.STATES = {"v": dynamics.v_rest}  # V[-1] = V_reset (hard reset), else 0

    def learn(self, tau_init: float | None, learn_tau: Any, learn_threshold: Any,
              in_shape: Sequence[int] | None) -> None:  # fmt: skip
        """``learn_tau`` / ``learn_threshold`` (``layer``, ``channel`` or ``neuron``): the
        decay's parameter ``w`` (starting at ``tau_init``; None: the subclass keeps its own) and
        the threshold ``v_th`` become parameters of that shape."""
        name = type(self).__name__.removesuffix("Neuron").lower()
        self.learn_tau, self.learn_threshold = learn_tau or None, learn_threshold or None
        if self.learn_tau and tau_init is not None:
            shape = learned_shape(name, "learn_tau", self.learn_tau, in_shape)
            self.w = nn.Parameter(torch.full(shape, tau_init))
        if self.learn_threshold:
            shape = learned_shape(name, "learn_threshold", self.learn_threshold, in_shape)
            self.v_th = nn.Parameter(torch.full(shape, self.dynamics.v_threshold))

    def decay(self) -> Decay:
        """The decay the charge equation reads (``k = 1/tau`` or ``beta``); None for IF."""
        return None

    def threshold(self) -> float | torch.Tensor:
        """``V_th``: the learned one (:meth:`learn`), else the number."""
        return self.v_th if self.learn_threshold else self.dynamics.v_threshold

    def params(self) -> dict[str, Any]:
        return {"k": self.decay(), "v_th": self.threshold()}

    def step(self, x: Any, states: dict[str, Any], params: dict[str, Any]) -> StepResult:
        s, v = membrane_step(self.dynamics, x, states["v"], params["k"], params["v_th"])
        return s, {"v": v}

    def closed_form(self) -> Dynamics | None:
        """The equations, unless a value is learned per channel or neuron or the threshold is
        learned (then the backends run the step: chunked recompute, traced kernels)."""
        return None if self.learn_tau or self.learn_threshold else self.dynamics

    def charge_seq(self, x: torch.Tensor, v_after: torch.Tensor) -> torch.Tensor:
        """``H[t]``, the membrane before step t's reset, ``[T, ...]``, from the inputs ``x`` and
        ``V`` after each step (``V[-1] = V_rest``): the layer's own charge equation."""
        v_before = torch.cat([torch.full_like(v_after[:1], self.dynamics.v_rest), v_after[:-1]])
        return charge(self.dynamics, v_before, x, self.decay())


@NEURONS.register("if")
class IFNeuron(MembraneNeuron):
    """Integrate-and-fire: ``H[t] = V[t-1] + X[t]``."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(make_dynamics("if", kw), **layer_options(kw))


@NEURONS.register("lif")
class LIFNeuron(MembraneNeuron):
    """Leaky integrate-and-fire with a fixed ``tau`` (``k = 1/tau``)."""

    OPTIONS = (*SpikingNeuron.OPTIONS, "tau", "decay_input", *LEARN_OPTIONS)

    def __init__(
        self,
        tau: float = 2.0,
        learn_tau: str | None = None,
        learn_threshold: str | None = None,
        in_shape: Sequence[int] | None = None,
        **kw: Any,
    ) -> None:
        tau = checked("lif", "tau", tau, "> 1")
        super().__init__(make_dynamics("lif", kw), **layer_options(kw))
        self.tau = tau
        self.learn(-math.log(tau - 1.0), learn_tau, learn_threshold, in_shape)

    def decay(self) -> Decay:
        """``1/tau``; learned (``learn_tau``): ``sigmoid(w)``, ``w`` starting at
        ``-log(tau - 1)`` as PLIF's."""
        return self.w.sigmoid() if self.learn_tau else 1.0 / self.tau

    def _decay_repr(self) -> list[str]:
        learned = f" (learned per {self.learn_tau})" if self.learn_tau else ""
        return [f"tau={self.tau:g}{learned}", f"decay_input={self.dynamics.decay_input}"]


@NEURONS.register("plif")
class PLIFNeuron(MembraneNeuron):
    """Parametric LIF (Fang et al. 2021): ``k = 1/tau = sigmoid(w)``, one learned ``w`` per layer.

    ``w`` starts at ``-log(init_tau - 1)`` so that ``1/tau = 1/init_tau``.
    """

    OPTIONS = (*SpikingNeuron.OPTIONS, "init_tau", "decay_input")

    def __init__(self, init_tau: float = 2.0, **kw: Any) -> None:
        init_tau = checked("plif", "init_tau", init_tau, "> 1")
        super().__init__(make_dynamics("lif", kw, "plif"), **layer_options(kw))
        self.w = nn.Parameter(torch.tensor(-math.log(init_tau - 1.0)))

    def decay(self) -> Decay:
        return self.w.sigmoid()

    def _decay_repr(self) -> list[str]:
        tau = 1.0 / self.w.detach().sigmoid().item()
        return [f"tau={tau:.4g} (learned)", f"decay_input={self.dynamics.decay_input}"]


@NEURONS.register("leaky")
class LeakyNeuron(MembraneNeuron):
    """snnTorch ``Leaky``: ``U[t] = beta U[t-1] + X[t] - U_thr R[t]``, beta in [0, 1] (a
    learned beta is clamped there)."""

    OPTIONS = (*COMMON_OPTIONS, "beta", "learn_beta", *LEARN_OPTIONS)

    def __init__(
        self,
        beta: float = 0.5,
        learn_beta: bool = False,
        learn_tau: str | None = None,
        learn_threshold: str | None = None,
        in_shape: Sequence[int] | None = None,
        **kw: Any,
    ) -> None:
        kw = {**kw, "v_reset": None, "detach_reset": True}
        super().__init__(make_dynamics("leaky", kw), **layer_options(kw))
        beta = checked("leaky", "beta", beta, "in [0, 1]")
        if learn_beta and learn_tau:
            raise ValueError("leaky: learn_beta and learn_tau both learn beta; set one of them")
        self.learn(None, learn_tau, learn_threshold, in_shape)
        shape = learned_shape("leaky", "learn_tau", learn_tau, in_shape) if learn_tau else ()
        beta_t = torch.full(shape, beta)
        self.learn_beta = bool(learn_beta or learn_tau)
        if self.learn_beta:
            self.beta = nn.Parameter(beta_t)  # learn_tau: beta per layer / channel / neuron
        else:
            self.register_buffer("beta", beta_t)

    def decay(self) -> Decay:
        return self.beta.clamp(0.0, 1.0)

    def _decay_repr(self) -> list[str]:
        shown = self.beta.flatten()[0].item()
        per = f" per {self.learn_tau}" if self.learn_tau else ""
        return [f"beta={shown:g}" + (f" (learned{per})" if self.learn_beta else "")]


def learned_shape(
    neuron: str, key: str, mode: Any, in_shape: Sequence[int] | None
) -> tuple[int, ...]:
    """The shape of a value learned per ``mode`` for inputs ``[T, N, *in_shape]``: ``()``
    (``layer``), ``[C, 1, ...]`` (``channel``: the first per-sample axis) or ``in_shape``
    (``neuron``)."""
    if mode not in LEARN_MODES:
        raise ValueError(
            f"{neuron} needs {key} one of layer, channel, neuron (or null), got {mode!r}; set "
            f"neuron.{key}"
        )
    if mode == "layer":
        return ()
    if in_shape is None:
        raise ValueError(
            f"{neuron}: {key}={mode} needs the layer's input shape, which snnrun gives to neuron "
            f"and recurrent entries; set {key}: layer (or null) here, or pass in_shape"
        )
    shape = tuple(int(d) for d in in_shape)
    return shape if mode == "neuron" else (shape[0], *(1,) * (len(shape) - 1))


LAYER_KEYS = ("backend", "step_mode", "store_v_seq")
_DYNAMICS_KEYS = ("v_threshold", "v_reset", "detach_reset", "decay_input", "surrogate")


_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "> 0": (lambda v: v > 0.0, "above 0"),
    "> 1": (lambda v: v > 1.0, "above 1"),
    "in [0, 1]": (lambda v: 0.0 <= v <= 1.0, "between 0 and 1"),
}


def checked(neuron: str, key: str, value: Any, wanted: str) -> float:
    """``value`` as a float, or a ValueError naming the key, the value, the range ``wanted``
    (a key of :data:`_RANGES`) and the fix: a neuron never clamps what the config gives."""
    ok, fix = _RANGES[wanted]
    number = float(value)
    if not ok(number):
        raise ValueError(
            f"{neuron} needs {key} {wanted}, got {value!r}; set neuron.{key} (or the entry's "
            f"{key}) {fix}"
        )
    return number


def layer_options(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: kw[k] for k in LAYER_KEYS if k in kw}


def make_dynamics(kind: str, kw: dict[str, Any], neuron: str | None = None) -> Dynamics:
    """The equations of ``kind`` from the options; ``neuron`` (default: ``kind``) is the name
    an unknown option's error gives."""
    unknown = set(kw) - set(LAYER_KEYS) - set(_DYNAMICS_KEYS)
    if unknown:
        raise TypeError(f"{neuron or kind} has no option {', '.join(sorted(unknown))}")
    fields = {k: kw[k] for k in _DYNAMICS_KEYS if k in kw}
    if "v_threshold" in fields:
        fields["v_threshold"] = float(fields["v_threshold"])
    if fields.get("v_reset") is not None:
        fields["v_reset"] = float(fields["v_reset"])
    return Dynamics(kind=kind, **fields)


OLD_KEY = (
    "the neuron key 'kind' is now 'name', as in every config group: write neuron.name=lif, "
    "{type: neuron, name: lif}"
)


def build_neuron(
    options: dict[str, Any],
    surrogate_options: dict[str, Any],
    in_shape: Sequence[int] | None = None,
) -> SpikingNeuron:
    """A neuron layer from the ``neuron`` group (``name`` picks the class, or ``_target_`` names
    a user's ``snnrun.Neuron``: it gets the keys its ``__init__`` takes) and a surrogate;
    ``in_shape`` (per sample) goes to a class that takes it (to size learned values)."""
    options = dict(options)
    if "kind" in options:
        raise TypeError(OLD_KEY)
    surrogate: Surrogate = build_surrogate(surrogate_options)
    if has_target(options):
        cls = user_neuron(options.pop(TARGET))
        options.pop("name", None)
        options = {k: v for k, v in options.items() if k in accepted(cls)}
    else:
        cls = NEURONS.get(options.pop("name"))
    if in_shape is not None and "in_shape" in accepted(cls):
        options["in_shape"] = tuple(in_shape)
    return cls(surrogate=surrogate, **options)


def user_neuron(target: str) -> type[SpikingNeuron]:
    """The class ``target`` names, held to the neuron protocol: a ``snnrun.Neuron`` subclass."""
    cls = import_target(target, "neuron")
    if not (isinstance(cls, type) and issubclass(cls, SpikingNeuron)):
        raise PluginError(
            f"neuron: {target} is not a snnrun.Neuron subclass; subclass snnrun.Neuron and give "
            "it STATES and step(x, states, params)"
        )
    return cls


def accepted(cls: type) -> set[str]:
    """The keyword arguments ``cls(...)`` takes: its ``__init__``'s, and its bases' through
    ``**kw``."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is nn.Module:
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names - {"self"}


def merge_neuron_options(group: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """A model entry's neuron settings: over the run's ``neuron`` group when the entry names the
    group's neuron (or none); when it names another, over that neuron's own defaults, keeping
    of the group only how the run runs its neurons (:data:`LAYER_KEYS`: ``backend``,
    ``step_mode``, ``store_v_seq``). ``{type: recurrent, name: alif}`` in a ``neuron=lif`` run
    is an ALIF with ALIF's ``tau`` 20 and soft reset, not LIF's ``tau`` 2 and hard reset."""
    if "kind" in entry or "kind" in group:
        raise TypeError(OLD_KEY)
    known = {"name", TARGET, *(k for n in NEURONS.names() for k in NEURONS.get(n).OPTIONS)}
    unknown = [] if TARGET in group else sorted(set(group) - known)
    if unknown:  # another neuron's key stays unused: a recipe's neuron may be switched
        keys = ", ".join(f"neuron.{k}" for k in unknown)
        own = ", ".join(NEURONS.get(group["name"]).OPTIONS)
        raise TypeError(
            f"no neuron reads {keys}; remove or respell it ({group['name']}'s keys: {own})"
        )
    name = entry.get("name", group.get("name"))
    if TARGET not in entry and ("name" not in entry or (name == group.get("name")
                                                        and TARGET not in group)):  # fmt: skip
        return {**group, **entry, "name": name}
    kept = {k: v for k, v in group.items() if k in LAYER_KEYS}
    if TARGET in entry:  # a user's neuron in one entry: its own defaults too
        return {**kept, **entry}
    accepted = NEURONS.get(name).OPTIONS
    return {**{k: v for k, v in kept.items() if k in accepted}, **entry, "name": name}


def reset_states(module: nn.Module) -> None:
    """Reset every stateful layer (neurons, time-shared dropout masks) inside ``module``."""
    for m in module.modules():
        if isinstance(m, Stateful):
            m.reset()
