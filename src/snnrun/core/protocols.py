"""What your code must provide in each config group: the protocols of the ``_target_`` doors.

Shapes: ``T`` time steps, ``N`` the batch, ``...`` one sample's shape. A group config (or an
override such as ``loss._target_=my_pkg.TET``) with ``_target_`` builds the user's object with
the group's other keys as keyword arguments (:mod:`snnrun.core.plugin`); the built-ins are
written to the same protocols. :func:`check` holds an object to its group's protocol when the
run is built, before its first record or checkpoint: a missing method, a wrong signature or a
missing attribute is one line naming the group, the class and what is missing (a fresh run
refused there leaves no run dir behind).

- ``loss``: :class:`Loss`.
- ``dataset``: the target is called with the group's keys and returns :class:`DatasetSplits`.
- ``encoder``: :class:`Encoder`.
- ``optimizer``: ``Optimizer(params, **keys)``, a ``torch.optim.Optimizer`` (:class:`Optimizer`).
- ``scheduler``: ``Scheduler(optimizer, **keys)``, stepped once per epoch (:class:`Scheduler`).
- ``augment``: :class:`Augment` (static images, training split only).
- ``monitor``: ``Monitor(model, **keys)`` (:class:`Monitor`), over every test pass.
- ``surrogate``: a function ``g'(x, <param>)`` in the ``tl`` dialect of
  :mod:`snnrun.neuron.dialect` (see :mod:`snnrun.neuron.surrogate`), so the Triton kernels
  compile it.
- ``neuron``: a ``snnrun.Neuron`` subclass (:mod:`snnrun.neuron.contract`).
- ``callbacks``: subclasses of ``snnrun.Callback``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from snnrun.core.plugin import PluginError

if TYPE_CHECKING:
    import torch


@runtime_checkable
class Loss(Protocol):
    """``loss(out [T, N, classes], y [N]) -> scalar tensor``; ``out`` is the network's output
    spikes (or what your readout makes); with mixup or cutmix on (``mixup``), ``y`` is soft
    targets ``[N, classes]`` (rows summing to 1; ``snnrun.engine.loss.targets`` makes one-hot
    rows of labels). An optional ``predict(out) -> [N]`` picks each
    sample's class for the accuracy; without it, the argmax of the mean over T. The first
    call's result is checked (a 0-dim tensor; ``predict``: ``[N]``); a loss that is an
    ``nn.Module`` is moved to the output's device."""

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


class DatasetSplits(Protocol):
    """What a ``dataset`` target returns: ``train`` and ``test`` (torch Datasets of ``(x, y)``,
    ``x`` one sample as a float tensor, ``y`` an int class), ``sample_shape`` (one sample's
    shape, ``(C, H, W)`` for images; for sequences one step's, without T) and ``num_classes``;
    optional ``val`` (a held-out split; else ``dataset.val_fraction`` cuts one from train),
    ``class_names``, ``targets`` (the labels, else read by one pass when a hold-out needs them)
    and ``sequence`` (True when samples are ``[T, ...]`` already)."""

    train: Any
    test: Any
    sample_shape: Sequence[int]
    num_classes: int


@runtime_checkable
class Encoder(Protocol):
    """``encoder(x [N, ...], T) -> [T, N, ...]``: a batch from the loader to the network's
    input sequence (a sequence dataset's batch is ``[N, T, ...]``). An optional ``sequence``
    attribute (True: takes ``[N, T, ...]``; False: static ``[N, ...]``) is checked against the
    data; a plain function is built with ``_partial_: true``."""

    def __call__(self, x: torch.Tensor, T: int) -> torch.Tensor: ...


@runtime_checkable
class Optimizer(Protocol):
    """``Optimizer(params, **keys)``: a ``torch.optim.Optimizer`` (its ``param_groups`` and
    ``state_dict`` go into every checkpoint); ``clip_grad_norm`` is the trainer's, never
    passed."""

    param_groups: list[dict[str, Any]]

    def step(self, closure: Any = None) -> Any: ...
    def zero_grad(self, set_to_none: bool = True) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


@runtime_checkable
class Scheduler(Protocol):
    """``Scheduler(optimizer, **keys)``: stepped once per epoch, or after every optimizer step
    when it has ``per_step = True``; its state is checkpointed."""

    def step(self) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


@runtime_checkable
class Augment(Protocol):
    """``augment(x [N, C, H, W], seeds [N]) -> [N, C, H, W]`` on training images (the event
    augment takes ``[N, T, ...]`` alike); draw each
    sample's randomness from ``torch.Generator().manual_seed(seeds[i])`` (seeded by run seed,
    epoch and sample index), so a resumed run draws what an unbroken one does. It must pickle
    (loader workers)."""

    def __call__(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor: ...


@runtime_checkable
class Monitor(Protocol):
    """``Monitor(model, **keys)`` (``model`` positional): ``attach()`` before a test pass
    (register hooks on ``model``), ``detach()`` after it, ``summary() -> {key: float}`` (keys
    join the epoch's record). The built-in ``counters`` named in the same group still run; the
    keys they read go to them, and to your class only where its signature names them."""

    def attach(self) -> None: ...
    def detach(self) -> None: ...
    def summary(self) -> dict[str, float]: ...


PROTOCOLS: dict[str, type] = {
    "loss": Loss,
    "dataset": DatasetSplits,
    "encoder": Encoder,
    "optimizer": Optimizer,
    "scheduler": Scheduler,
    "augment": Augment,
    "monitor": Monitor,
}


def check(group: str, obj: Any, target: str | None = None) -> Any:
    """``obj`` (built for ``group`` from ``target``) has every member of the group's protocol,
    each method taking the protocol's positional arguments; else one :class:`PluginError`."""
    protocol = PROTOCOLS[group]
    what = f"{group}: {target or type(obj).__name__}"
    for name in _members(protocol):
        wanted = getattr(protocol, name, None)
        if name == "__call__" and not callable(obj):
            raise PluginError(f"{what} is not callable; the {group} protocol is "
                              f"{_signature(protocol, name)} (snnrun.core.protocols)")  # fmt: skip
        if not hasattr(obj, name):
            raise PluginError(f"{what} has no {name!r}; the {group} protocol needs "
                              f"{_shown(protocol, name)} (snnrun.core.protocols)")  # fmt: skip
        if callable(wanted) and not _accepts(getattr(obj, name), _positional(wanted)):
            called = what if name == "__call__" else f"{what}.{name}"
            raise PluginError(f"{called} cannot be called as {_signature(protocol, name)} "
                              f"(the {group} protocol, snnrun.core.protocols)")  # fmt: skip
    return obj


def _members(protocol: type) -> list[str]:
    """The protocol's own methods and annotated attributes, in order."""
    names = [n for n, v in vars(protocol).items()
             if callable(v) and (n == "__call__" or not n.startswith("_"))]  # fmt: skip
    return names + list(inspect.get_annotations(protocol))


def _positional(method: Any) -> int:
    """How many positional arguments the protocol's method takes (``self`` not counted; only
    those without a default are required)."""
    params = list(inspect.signature(method).parameters.values())[1:]
    return sum(p.default is inspect.Parameter.empty for p in params)


def _accepts(bound: Any, n: int) -> bool:
    """Whether ``bound(*n positional arguments)`` binds."""
    try:
        inspect.signature(bound).bind(*range(n))
    except TypeError:
        return False
    except ValueError:  # no signature (a builtin): assume it does
        return True
    return True


def _signature(protocol: type, name: str) -> str:
    params = list(inspect.signature(getattr(protocol, name)).parameters)[1:]
    call = protocol.__name__.lower() if name == "__call__" else f"obj.{name}"
    return f"{call}({', '.join(params)})"


def _shown(protocol: type, name: str) -> str:
    member = vars(protocol).get(name)
    return _signature(protocol, name) if callable(member) else f"an attribute {name}"
