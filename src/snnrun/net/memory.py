"""Memory plans: spikes saved as bits, activations recomputed in the backward.

A plan is two choices (``conf/memory/``), each leaving the gradients bit-identical:

- ``memory.spikes``: ``float`` (as computed), ``uint8`` or ``bits``: what a layer whose input
  is spikes saves for its backward (``net/spikes.py``). Which tensors are spikes follows from
  the structure (:func:`spike_producers`): a neuron's output (1), a max-pool or a view of one
  (its input's), an ``and``/``iand`` residual of spikes (1), an ``add`` residual (the sum of
  its parts' largest values: counts, kept as bytes).
- ``memory.checkpoint``: ``none``; ``blocks``: every residual, graph, attention, recurrent
  entry and repeat copy (and a ``sequential`` holding none of those but a neuron) keeps only
  its input and re-runs in the backward; ``all``: every layer at any depth (inside residual
  bodies and shortcuts, graph nodes, repeat copies) in segments that end at each neuron, an
  attention or recurrent entry as a whole: the least memory, each layer re-run once. A unit's
  input is saved packed like any spikes. A re-run starts from the states its modules held when
  it first ran (neuron membranes at the unit's first step, a dropout mask, BatchNorm's running
  statistics), and leaves them as the first run did, so BatchNorm's statistics are updated once
  and dropout replays its mask (:func:`checkpointed`); the RNG is replayed by
  ``torch.utils.checkpoint``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MethodType
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from snnrun.net.attention import QKAttention, SpikeDrivenSelfAttention, SpikingSelfAttention
from snnrun.net.blocks import Block, Recurrent, Residual
from snnrun.net.graph import GraphBlock
from snnrun.net.layers import TimeFolded
from snnrun.net.model import SpikingNetwork, label
from snnrun.net.spikes import SPIKE_MODES, SpikeStore, indices_only_forward, mark_output
from snnrun.neuron.neurons import SpikingNeuron

CHECKPOINTS = ("none", "blocks", "all")
UNITS = (Residual, GraphBlock, Recurrent, SpikingSelfAttention, SpikeDrivenSelfAttention,
         QKAttention)  # fmt: skip
KEEPS_SPIKES = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Unflatten)


@dataclass(frozen=True)
class MemoryPlan:
    """What a network keeps for its backward: ``spikes`` and ``checkpoint`` (module doc)."""

    spikes: str = "float"
    checkpoint: str = "none"

    def __post_init__(self) -> None:
        if self.spikes not in SPIKE_MODES:
            raise ValueError(f"memory.spikes must be one of {', '.join(SPIKE_MODES)}")
        if self.checkpoint not in CHECKPOINTS:
            raise ValueError(f"memory.checkpoint must be one of {', '.join(CHECKPOINTS)}")

    def __str__(self) -> str:
        return f"spikes={self.spikes} checkpoint={self.checkpoint}"


def apply_plan(model: SpikingNetwork, plan: MemoryPlan) -> SpikingNetwork:
    """Set ``plan`` on a freshly built ``model`` (once; a copy for another plan)."""
    if plan.spikes != "float":
        model.spike_store = SpikeStore(plan.spikes)
        for module, (largest, name) in spike_producers(model).items():
            module.snnrun_spike_max, module.snnrun_spike_label = largest, name
            module.register_forward_hook(mark_output)
        for module in model.modules():
            if type(module) in (nn.MaxPool1d, nn.MaxPool2d):
                module.forward = MethodType(indices_only_forward, module)
    if plan.checkpoint != "none":
        model.tail = _checkpoint_chain(model.tail, plan.checkpoint)
    model.memory_plan = plan
    return model


# ---- which outputs are spikes ------------------------------------------------------------


def spike_producers(model: SpikingNetwork) -> dict[nn.Module, tuple[int, str]]:
    """Every module whose output holds values ``0..k`` by construction, with ``k`` (1: spikes)
    and its label: each neuron, and what keeps or sums spikes (module doc)."""
    names = {m: label(name) for name, m in model.layers.named_modules()}
    found: dict[nn.Module, tuple[int, str]] = {}

    def kind(module: nn.Module, largest: int | None) -> int | None:
        out = _kind(module, largest, kind)
        if out is not None and not isinstance(module, (Block, nn.Identity)):
            found[module] = (out, names.get(module, type(module).__name__))
        return out

    _chain(list(model.layers), None, kind)
    for module in model.layers.modules():  # neurons inside attentions, graphs, user modules
        if isinstance(module, SpikingNeuron) and module not in found:
            found[module] = (1, names.get(module, type(module).__name__))
    return found


def _chain(modules: Sequence[nn.Module], largest: int | None, kind: Callable) -> int | None:
    for module in modules:
        largest = kind(module, largest)
    return largest


def _kind(module: nn.Module, largest: int | None, kind: Callable) -> int | None:
    """The largest value of ``module``'s output for an input whose largest is ``largest``
    (None: not counts)."""
    if isinstance(module, (SpikingNeuron, Recurrent)):
        return 1
    if isinstance(module, Block):
        return _chain(list(module), largest, kind)
    if isinstance(module, Residual):
        body = _chain(list(module.body), largest, kind)
        shortcut = _chain(list(module.shortcut), largest, kind)
        if body is None or shortcut is None:
            return None
        if module.connect in ("and", "iand"):
            return 1 if body == shortcut == 1 else None
        return body + shortcut if module.connect == "add" else max(body, shortcut)
    if isinstance(module, nn.Identity):
        return largest
    if isinstance(module, TimeFolded) and isinstance(module.module, KEEPS_SPIKES):
        return largest
    return None


# ---- recomputation -----------------------------------------------------------------------


def _checkpoint_chain(layers: list[nn.Module], mode: str) -> list[Callable]:
    """``layers`` as they run under ``mode``: units re-run alone, blocks holding units walked
    into; under ``all`` every block but an attention or recurrent one is walked into (a
    residual's body and shortcut, a graph's nodes) and its layers re-run in segments that end
    at each neuron."""
    out: list[Callable] = []
    segment: list[nn.Module] = []
    for layer in layers:
        if mode == "all" and isinstance(layer, (Block, Residual, GraphBlock)):
            _walk_into(layer, mode)
        elif _is_unit(layer):
            layer.forward = MethodType(_unit_forward, layer)
        elif isinstance(layer, Block) and _holds_unit(layer):
            _walk_into(layer, mode)
        elif mode == "all":
            segment.append(layer)
            if isinstance(layer, SpikingNeuron):
                out.append(Segment(segment))
                segment = []
            continue
        if segment:
            out.append(Segment(segment))
            segment = []
        out.append(layer)
    if segment:
        out.append(Segment(segment))
    return out


def _walk_into(block: nn.Module, mode: str) -> None:
    """Run ``block``'s chains (a block's layers; a residual's body and shortcut; a graph's
    nodes) through :func:`_checkpoint_chain`."""
    if isinstance(block, Residual):
        chains = [block.body, block.shortcut]
    elif isinstance(block, GraphBlock):
        chains = list(block.nodes.values())
    else:
        chains = [block]
    for chain in chains:
        chain.snnrun_steps = _checkpoint_chain(list(chain), mode)
        chain.forward = MethodType(_steps_forward, chain)


def _is_unit(module: nn.Module) -> bool:
    if isinstance(module, UNITS):
        return True
    return isinstance(module, Block) and not _holds_unit(module) and _holds_neuron(module)


def _holds_unit(block: Block) -> bool:
    """A unit inside, or a ``repeat`` (whose copies are the units) at or inside ``block``."""
    return any(isinstance(m, UNITS) or _is_repeat(m) for m in block.modules())


def _is_repeat(module: nn.Module) -> bool:
    entry = getattr(module, "snnrun_entry", None)
    return isinstance(module, Block) and getattr(entry, "type", None) == "repeat"


def _holds_neuron(module: nn.Module) -> bool:
    return any(isinstance(m, SpikingNeuron) for m in module.modules())


class Segment:
    """Consecutive layers run as one recomputed unit (not a module: no new state-dict keys)."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.modules = modules

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return checkpointed(self._run, self.modules, x)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.modules:
            x = module(x)
        return x


def _unit_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return checkpointed(lambda y: type(self).forward(self, y), [self], x)


def _steps_forward(self: Block, x: torch.Tensor) -> torch.Tensor:
    for step in self.snnrun_steps:
        x = step(x)
    return x


_RECOMPUTING = 0  # how many re-runs are under way (in the backward)


def recomputing() -> bool:
    """Whether a block is being re-run in the backward: forward hooks that count what a
    training forward did (``loss.rate_reg``) skip it."""
    return _RECOMPUTING > 0


def checkpointed(
    run: Callable[[torch.Tensor], torch.Tensor], modules: list[nn.Module], x: torch.Tensor
) -> torch.Tensor:
    """``run(x)``, keeping only ``x`` for the backward, which re-runs it from the states that
    ``modules`` held before (their attributes and buffers), then puts back those after."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return run(x)
    before = _states(modules)
    ran = [False]

    def once_or_again(y: torch.Tensor) -> torch.Tensor:
        if not ran[0]:
            ran[0] = True
            return run(y)
        global _RECOMPUTING
        after = _states(modules)
        _restore(before)
        _RECOMPUTING += 1
        try:
            return run(y)
        finally:
            _RECOMPUTING -= 1
            _restore(after)

    return torch.utils.checkpoint.checkpoint(
        once_or_again, x, use_reentrant=False, preserve_rng_state=True
    )


_MODULE_OWN = {*vars(nn.Module()), "forward"}  # nn.Module's own bookkeeping, a unit's forward
State = list[tuple[nn.Module, dict[str, Any], dict[str, torch.Tensor]]]


def _states(modules: list[nn.Module]) -> State:
    """Each module's plain attributes (a neuron's states, a dropout mask) and buffer values."""
    out = []
    for root in modules:
        for m in root.modules():
            attrs = {k: v for k, v in vars(m).items() if k not in _MODULE_OWN}
            buffers = {k: b.detach().clone() for k, b in m._buffers.items() if b is not None}
            out.append((m, attrs, buffers))
    return out


def _restore(state: State) -> None:
    with torch.no_grad():
        for m, attrs, buffers in state:
            vars(m).update(attrs)
            for k, b in buffers.items():
                m._buffers[k].copy_(b)
