"""Surrogate gradients of the spike: forward is Heaviside, backward a smooth g'(x).

``S = Heaviside(x)`` with ``x = H - V_th`` (a spike when ``H >= V_th``); the backward pass uses
``dS/dx ≈ g'(x)``. Every surrogate is ONE formula below, written in the math dialect of
:mod:`snnrun.neuron.dialect`: the torch backends call it on tensors, the Triton kernels compile the
very same function (``snnrun.kernels.surrogate_jit``). Formulas take their parameter as a
runtime value.

A user's surrogate is the same: ``surrogate._target_=my_pkg.my_grad`` names a function
``g'(x, <param>)`` in the dialect, imported (never called to build anything); its parameter is
its second argument, set by the group key of that name (its default otherwise). A built-in's
parameter key of another name (``alpha`` of the ``atan`` group an inline override lands on) is
ignored; any other key is refused. A built-in is a registered :class:`SurrogateSpec`, a user's
an imported one (:func:`user_spec`, codes < 0).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from snnrun.core.errors import one_line
from snnrun.core.plugin import TARGET, PluginError, has_target, import_target
from snnrun.core.registry import Registry
from snnrun.neuron.dialect import Var, tl


@dataclass(frozen=True)
class SurrogateSpec:
    """A surrogate: its name, parameter name/default, and derivative formula (registered, or a
    user's: :func:`user_spec`)."""

    name: str
    param: str
    default: float | None  # None: a user's formula without one (the group must set it)
    formula: Callable  # g'(x, param) in the tl dialect
    code: int  # compile-time id for the Triton kernels: >= 0 registered, < 0 a user's


SURROGATES: Registry[SurrogateSpec] = Registry("surrogate")
USER_SPECS: dict[int, SurrogateSpec] = {}  # the user formulas imported in this process, by code


def surrogate(name: str, param: str, default: float) -> Callable[[Callable], Callable]:
    """Register ``formula(x, param) -> g'(x)`` under ``name``."""

    def add(formula: Callable) -> Callable:
        spec = SurrogateSpec(name, param, default, formula, code=len(SURROGATES.names()))
        SURROGATES.register(name)(spec)
        return formula

    return add


@surrogate("atan", "alpha", 2.0)
def atan(x, alpha):
    """g'(x) = alpha/2 / (1 + (pi/2 * alpha * x)^2)   (SpikingJelly ATan)."""
    z = 1.5707963267948966 * alpha * x
    return alpha * 0.5 / (1.0 + z * z)


@surrogate("sigmoid", "alpha", 4.0)
def sigmoid(x, alpha):
    """g'(x) = alpha * sig(alpha x) * (1 - sig(alpha x))."""
    sg = tl.sigmoid(alpha * x)
    return alpha * sg * (1.0 - sg)


@surrogate("fast_sigmoid", "slope", 25.0)
def fast_sigmoid(x, slope):
    """g'(x) = 1 / (slope * |x| + 1)^2   (snnTorch fast_sigmoid, SuperSpike)."""
    d = slope * tl.abs(x) + 1.0
    return 1.0 / (d * d)


@surrogate("piecewise_quadratic", "alpha", 1.0)
def piecewise_quadratic(x, alpha):
    """g'(x) = alpha - alpha^2 |x| for |x| <= 1/alpha, else 0."""
    ax = tl.abs(x)
    return tl.where(ax <= 1.0 / alpha, alpha - alpha * alpha * ax, 0.0 * x)


@surrogate("erf", "alpha", 2.0)
def erf(x, alpha):
    """g'(x) = alpha / sqrt(pi) * exp(-(alpha x)^2)."""
    z = alpha * x
    return alpha * 0.5641895835477563 * tl.exp(-z * z)


@surrogate("soft_sign", "alpha", 2.0)
def soft_sign(x, alpha):
    """g'(x) = alpha / (2 (1 + |alpha x|)^2)."""
    d = 1.0 + tl.abs(alpha * x)
    return alpha * 0.5 / (d * d)


@surrogate("triangle", "gamma", 1.0)
def triangle(x, gamma):
    """g'(x) = gamma * max(0, 1 - |x|): a triangle of height gamma and half-width 1."""
    return tl.maximum(gamma * (1.0 - tl.abs(x)), 0.0 * x)


@surrogate("rectangle", "width", 1.0)
def rectangle(x, width):
    """g'(x) = 1/width for |x| < width/2, else 0."""
    return tl.where(tl.abs(x) < 0.5 * width, 1.0 / width + 0.0 * x, 0.0 * x)


class _SpikeFunction(torch.autograd.Function):
    """Heaviside forward, surrogate backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, formula: Callable, param: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.formula, ctx.param = formula, param
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_s: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_s * ctx.formula(x, ctx.param), None, None


@dataclass(frozen=True)
class Surrogate:
    """A surrogate choice with its parameter value: ``spike = Surrogate('atan', 2.0)(x)``;
    ``spec`` is the registered one of ``name`` unless given (a user's, :func:`user_spec`)."""

    name: str
    value: float
    spec: SurrogateSpec = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.spec is None:
            object.__setattr__(self, "spec", SURROGATES.get(self.name))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Spike ``(x >= 0)`` whose gradient is ``g'(x)`` (on a traced step's value: the trace's
        ``fire``, whose gradient the kernels take from the layer's surrogate)."""
        if isinstance(x, Var):
            return x.trace.op("fire", x)
        return _SpikeFunction.apply(x, self.spec.formula, self.value)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """g'(x) itself."""
        return self.spec.formula(x, self.value)

    def __repr__(self) -> str:
        return f"{self.name}({self.spec.param}={self.value:g})"


def build_surrogate(options: Mapping[str, Any]) -> Surrogate:
    """From the ``surrogate`` config group: ``{name: atan, alpha: 2.0}``, or a user's
    ``{_target_: my_pkg.my_grad, alpha: 3.0}`` (``name`` then only labels the group)."""
    if not has_target(options):
        spec = SURROGATES.get(options["name"])
        return Surrogate(spec.name, float(options.get(spec.param, spec.default)), spec)
    spec = user_spec(options[TARGET])
    what = f"surrogate: {options[TARGET]}"
    builtin = {s.param for s in map(SURROGATES.get, SURROGATES.names())}  # the group's, inline
    extra = sorted(set(options) - {TARGET, "name", spec.param} - builtin)
    if extra:
        raise PluginError(f"{what} takes one parameter, {spec.param}, not {', '.join(extra)}; "
                          f"set surrogate.{spec.param} instead")  # fmt: skip
    value = options.get(spec.param, spec.default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PluginError(f"{what}: its parameter {spec.param} needs a number; set "
                          f"surrogate.{spec.param} (got {value!r})")  # fmt: skip
    return Surrogate(spec.name, float(value), spec)


def user_spec(target: str) -> SurrogateSpec:
    """The user's formula ``target`` (``my_pkg.my_grad``), imported and checked: it takes
    exactly ``(x, param)`` and gives a tensor of ``x``'s shape on a probe; one
    :class:`~snnrun.core.plugin.PluginError` otherwise. The same formula keeps one code."""
    formula = import_target(target, "surrogate")
    for spec in USER_SPECS.values():
        if spec.formula is formula:
            return spec
    what = f"surrogate: {target}"
    param, default = _parameter(formula, what)
    spec = SurrogateSpec(formula.__name__, param, default, formula, code=-1 - len(USER_SPECS))
    _probe(spec, what)
    USER_SPECS[spec.code] = spec
    return spec


def _parameter(formula: Any, what: str) -> tuple[str, float | None]:
    """The name and default of the formula's parameter, its second of exactly two arguments."""
    shape = "a function g'(x, param) in the tl dialect (snnrun.neuron.dialect)"
    if not inspect.isfunction(formula):
        kind = "a class" if inspect.isclass(formula) else f"a {type(formula).__name__}"
        raise PluginError(f"{what} must be {shape}, not {kind}")
    params = list(inspect.signature(formula).parameters.values())
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(params) != 2 or params[1].kind not in plain:
        raise PluginError(f"{what} must be {shape}: it takes exactly (x, param), got "
                          f"({', '.join(map(str, params))})")  # fmt: skip
    names = sorted(set(inspect.getclosurevars(formula).globals) - {"tl"})
    if names:
        raise PluginError(f"{what} reads {', '.join(names)}; a surrogate may read only tl (the "
                          "dialect of snnrun.neuron.dialect: the Triton kernels compile it with tl "
                          "alone)")  # fmt: skip
    default = params[1].default
    return params[1].name, None if default is inspect.Parameter.empty else default


def _probe(spec: SurrogateSpec, what: str) -> None:
    """``g'`` on a small tensor gives a tensor of its shape."""
    x = torch.linspace(-2.0, 2.0, 7)
    value = spec.default if isinstance(spec.default, (int, float)) else 1.0
    try:
        out = spec.formula(x, float(value))
    except Exception as e:  # the user's code
        raise PluginError(f"{what}({spec.param}={value:g}) failed on a probe tensor: "
                          f"{type(e).__name__}: {one_line(e)}; write it in the tl dialect "
                          "(snnrun.neuron.dialect)") from None  # fmt: skip
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = f"shape {list(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise PluginError(f"{what} must return a tensor of x's shape [7] on a probe x, "
                          f"got {got}")  # fmt: skip
