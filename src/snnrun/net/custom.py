"""Your own layers: ``{type: module, _target_: my_pkg.MyLayer, ...kwargs}``.

The class is imported and instantiated by Hydra (``hydra.utils.instantiate``) with the entry's
other keys as keyword arguments, plus ``in_shape`` (the per-sample input shape) when its
``__init__`` takes that name. It must map ``[T, N, ...]`` to ``[T, N, ...]``. Its neurons come
from the run's ``neuron`` / ``surrogate`` groups through :func:`make_neuron`::

    class MyLayer(nn.Module):
        def __init__(self, width: int, in_shape: tuple[int, ...]):
            super().__init__()
            self.fc = nn.Linear(in_shape[-1], width)
            self.spike = make_neuron(v_threshold=0.5)  # the run's neuron kind, tau, backend...

        def forward(self, x):  # [T, N, F]
            return self.spike(self.fc(x))
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from torch import nn

from snnrun.core.errors import SnnrunError, one_line
from snnrun.core.plugin import PluginError, import_target, takes
from snnrun.net.layers import LAYERS, Context, ModelBuildError, Shape
from snnrun.neuron.neurons import SpikingNeuron

_BUILDING: ContextVar[Context | None] = ContextVar("snnrun_building", default=None)


def make_neuron(**options: Any) -> SpikingNeuron:
    """A neuron layer from the run's ``neuron`` / ``surrogate`` groups, ``options`` overriding
    them (``kind``, ``tau``, ``v_threshold``, ``surrogate={name: atan, alpha: 2}``...), as a
    ``{type: neuron, ...}`` entry would get. Call it in a ``module`` entry's ``__init__``."""
    ctx = _BUILDING.get()
    if ctx is None:
        raise SnnrunError(
            "make_neuron() is called while snnrun builds a {type: module} entry (in its "
            "__init__); outside a build, use "
            "snnrun.neuron.neurons.build_neuron(options, surrogate_options)"
        )
    return ctx.neuron(options)


@contextmanager
def building(ctx: Context) -> Iterator[None]:
    """:func:`make_neuron` reads ``ctx``'s groups inside the block."""
    token = _BUILDING.set(ctx)
    try:
        yield
    finally:
        _BUILDING.reset(token)


@LAYERS.register("module")
def _module(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    options = dict(options)
    target = options.pop("_target_", None)
    label = f"{ctx.path} (module)"
    if not target or not isinstance(target, str):
        raise ModelBuildError(f"{label}: give the class as _target_: my_pkg.MyLayer")
    try:
        cls = import_target(target, label)
    except PluginError as e:
        raise ModelBuildError(str(e)) from None
    if takes(cls, "in_shape") and "in_shape" not in options:
        options["in_shape"] = tuple(in_shape)
    try:
        with building(ctx):
            module = instantiate({"_target_": target, **options}, _convert_="all")
    except (InstantiationException, TypeError) as e:
        raise ModelBuildError(f"{label}: {target}({options}) failed: {one_line(e)}") from None
    if not isinstance(module, nn.Module):
        raise ModelBuildError(f"{label}: {target} made a {type(module).__name__}, not an nn.Module")
    return module
