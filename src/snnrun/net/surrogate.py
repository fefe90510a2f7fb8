"""Surrogate gradients of the spike: forward is Heaviside, backward a smooth g'(x).

``S = Heaviside(x)`` with ``x = H - V_th`` (a spike when ``H >= V_th``); the backward pass uses
``dS/dx ≈ g'(x)``. Every surrogate is ONE formula below, written in the math dialect of
:mod:`snnrun.net.dialect`: the torch backends call it on tensors, the Triton kernels compile the
very same function (``snnrun.kernels.surrogate_jit``). Formulas take their parameter as a
runtime value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from snnrun.core.registry import Registry
from snnrun.net.dialect import tl


@dataclass(frozen=True)
class SurrogateSpec:
    """A registered surrogate: its name, parameter name/default, and derivative formula."""

    name: str
    param: str
    default: float
    formula: Callable  # g'(x, param) in the tl dialect
    code: int  # compile-time id for the Triton kernels


SURROGATES: Registry[SurrogateSpec] = Registry("surrogate")


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
    """A surrogate choice with its parameter value: ``spike = Surrogate('atan', 2.0)(x)``."""

    name: str
    value: float

    @property
    def spec(self) -> SurrogateSpec:
        return SURROGATES.get(self.name)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Spike ``(x >= 0)`` whose gradient is ``g'(x)``."""
        return _SpikeFunction.apply(x, self.spec.formula, self.value)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """g'(x) itself."""
        return self.spec.formula(x, self.value)

    def __repr__(self) -> str:
        return f"{self.name}({self.spec.param}={self.value:g})"


def build_surrogate(options) -> Surrogate:
    """From the ``surrogate`` config group: ``{name: atan, alpha: 2.0}``."""
    spec = SURROGATES.get(options["name"])
    value = options.get(spec.param, spec.default)
    return Surrogate(spec.name, float(value))
