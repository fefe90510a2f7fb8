"""What the test pass counts every epoch: firing rates, synaptic operations and energy.

Monitors hook the network only while :func:`monitoring` is active (the test pass), keep their
sums on the device (no host sync per batch) and read them once in :meth:`Monitor.summary`,
summed over ranks under torchrun (the record covers the whole test set).

- ``firing_rate``: per neuron layer, ``firing_rate/<label>`` = spikes / (neurons x steps), the
  label naming it at any depth (``L3``, ``L4.body.2``, ``L5.q_neuron``),
  with a one-line warning for a silent or saturated layer; the first pass with a silent layer
  adds one note on the usual causes that apply (the threshold against the input's scale,
  BatchNorm statistics from few training batches, T short for ``tau``) and what to try.
- ``synops``: per sample, over the synaptic layers (conv1d, conv2d, linear) as they actually run:
  an input that is all 0/1 (spikes) costs accumulates, ``AC = sum_inputs spike x fan-out``
  (exact at borders: per-site spike counts times each site's precomputed coverage); any other
  input costs multiply-accumulates, ``MAC = outputs x fan-in`` per executed call (a
  direct-encoded image's first conv runs once, not T times). A layer fed by a neuron (directly,
  or through max pooling or flattening) is known to get spikes; the others are checked per
  call. ``synops/ann_mac`` is the same network run once as an
  ANN. Energy: ``E = mac_pj MAC + ac_pj AC`` (45 nm defaults, Horowitz 2014), ``energy/snn_uj``
  beside ``energy/ann_uj``. BatchNorm, pooling and neuron updates are not counted (BN folds
  into the convolution at inference).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snnrun.core import protocols
from snnrun.core.distributed import sum_over_ranks
from snnrun.core.errors import SnnrunError
from snnrun.core.plugin import has_target, import_target, instantiate_target, takes
from snnrun.core.progress import console
from snnrun.core.registry import Registry
from snnrun.net.attention import QKAttention, SpikeDrivenSelfAttention, SpikingSelfAttention
from snnrun.net.blocks import Block, Recurrent, Residual
from snnrun.net.graph import INPUT, GraphBlock
from snnrun.net.layers import TimeFolded
from snnrun.net.model import SpikingNetwork
from snnrun.neuron.neurons import SpikingNeuron
from snnrun.neuron.state_neurons import PSNNeuron


class Monitor:
    """Counts something over one pass; hooks live between :meth:`attach` and :meth:`detach`."""

    def __init__(self) -> None:
        self._handles: list[Any] = []

    def attach(self) -> None:
        raise NotImplementedError

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def summary(self) -> dict[str, float]:
        raise NotImplementedError


MONITORS: Registry[type[Monitor]] = Registry("monitor counter")


def neuron_layers(model: nn.Module) -> list[tuple[str, SpikingNeuron]]:
    """``(label, layer)`` of every neuron at any depth: ``L3``, ``L4.body.2``..."""
    if isinstance(model, SpikingNetwork):
        return model.neurons()
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SpikingNeuron)]


@MONITORS.register("firing_rate")
class FiringRates(Monitor):
    """Mean firing rate of every neuron layer."""

    def __init__(
        self, model: nn.Module, silent_below: float = 1e-3, saturated_above: float = 0.9, **_: Any
    ) -> None:
        super().__init__()
        self.model = model
        self.neurons = neuron_layers(model)
        self.silent_below, self.saturated_above = silent_below, saturated_above
        self.spikes: dict[str, torch.Tensor | float] = {}
        self.count: dict[str, int] = {}
        self.steps = 0  # T of the last multi-step call (0: unknown)
        self.hinted = False  # the silent-layer note is given once per run

    def attach(self) -> None:
        self.spikes = {i: 0.0 for i, _ in self.neurons}
        self.count = {i: 0 for i, _ in self.neurons}
        for i, module in self.neurons:
            self._handles.append(module.register_forward_hook(self._hook(i)))

    def _hook(self, i: str):
        def hook(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            self.spikes[i] = self.spikes[i] + out.detach().float().sum()
            self.count[i] += out.numel()
            if getattr(module, "step_mode", "m") == "m":
                self.steps = out.shape[0]

        return hook

    def summary(self) -> dict[str, float]:
        ids = [i for i, _ in self.neurons]
        if not ids:
            return {}
        device = next((t.device for t in self.spikes.values() if torch.is_tensor(t)), "cpu")
        sums = torch.stack([torch.as_tensor(self.spikes[i], device=device).double() for i in ids])
        counts = torch.tensor([float(self.count[i]) for i in ids], device=device).double()
        totals = sum_over_ranks(torch.stack([sums, counts])).tolist()  # the one sync
        rates = {i: s / c for i, s, c in zip(ids, *totals) if c}
        self._warn(rates)
        return {f"firing_rate/{i}": r for i, r in rates.items()}

    def _warn(self, rates: dict[str, float]) -> None:
        for i, rate in rates.items():
            if rate < self.silent_below or rate > self.saturated_above:
                state = "silent" if rate < self.silent_below else "saturated"
                console.print(
                    f"[yellow]warning:[/] neuron layer {i} is {state} (firing rate {rate:.4f}; "
                    f"warned below {self.silent_below} / above {self.saturated_above})"
                )
        layers = dict(self.neurons)
        silent = [layers[i] for i, rate in rates.items() if rate < self.silent_below]
        if silent and not self.hinted:
            self.hinted = True
            causes = silent_causes(silent, self.model, self.steps)
            console.print(
                f"[yellow]note:[/] silent layers usually come from one of: {'; '.join(causes)}",
                highlight=False,
            )


SETTLED = 0.05  # BatchNorm's running statistics are settled once their start weighs less


def silent_causes(silent: list[SpikingNeuron], model: nn.Module, steps: int) -> list[str]:
    """What usually silences ``silent`` layers, and what to try: the threshold against the
    input's scale; BatchNorm statistics from few training batches (the test pass normalises
    with them); ``T`` (``steps``) short for ``tau`` (a leak that also scales the input)."""
    thresholds = sorted({m.dynamics.v_threshold for m in silent if not isinstance(m, PSNNeuron)})
    shown = "/".join(f"{t:g}" for t in thresholds)
    causes = [
        f"v_threshold={shown} above what the input reaches (try a lower neuron.v_threshold, "
        "or larger inputs)"
        if thresholds
        else "inputs too small for psn's learned bias, which starts at -1 (try larger inputs)"
    ]
    seen = [
        int(m.num_batches_tracked)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.num_batches_tracked is not None
        and m.momentum is not None
        and (1.0 - m.momentum) ** int(m.num_batches_tracked) > SETTLED
    ]
    if seen:
        n = min(seen)
        causes.append(
            f"BatchNorm's running statistics, which the test pass uses, from only {n} training "
            f"batch{'es' if n != 1 else ''} (train more steps)"
        )
    taus = [1.0 / float(torch.as_tensor(m.decay()).mean()) for m in silent if _leaks_input(m)]
    if steps and taus:
        tau = max(taus)
        reached = 1.0 - (1.0 - 1.0 / tau) ** steps
        if reached < 0.5:
            causes.append(
                f"T={steps} steps, short for tau={tau:g}: a steady input charges to "
                f"{reached:.0%} of its level by the last step (raise T or lower neuron.tau)"
            )
    return causes


def _leaks_input(m: SpikingNeuron) -> bool:
    """A LIF-kind layer whose charge is ``(1 - 1/tau)`` of the last plus ``1/tau`` of the input."""
    return m.dynamics.kind == "lif" and m.dynamics.decay_input and m.decay() is not None


@MONITORS.register("synops")
class SynapticOps(Monitor):
    """ACs and MACs per sample of the synaptic layers, the ANN MAC count, and energy."""

    def __init__(self, model: nn.Module, mac_pj: float = 4.6, ac_pj: float = 0.9, **_: Any) -> None:
        super().__init__()
        self.model = model
        refuse_uncounted(model)
        self.synapses = [m for m in model.modules() if isinstance(m, SYNAPTIC)]
        self.spike_fed = spike_fed(model)
        self.mac_pj, self.ac_pj = mac_pj, ac_pj
        self.samples = 0
        self.acs: torch.Tensor | float = 0.0
        self.macs: torch.Tensor | float = 0.0
        self.ann_macs: dict[int, int] = {}

    def attach(self) -> None:
        self.samples, self.acs, self.macs = 0, 0.0, 0.0
        self._handles.append(self.model.register_forward_pre_hook(self._count_samples))
        for j, module in enumerate(self.synapses):
            self._handles.append(module.register_forward_hook(self._hook(j)))

    def _count_samples(self, module: nn.Module, args: Any) -> None:
        self.samples += args[0].shape[1]  # [T, N, ...]

    def _hook(self, j: int):
        def hook(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            x = args[0].detach()
            fan_in = _fan_in(module)
            self.ann_macs[j] = out[0].numel() * fan_in  # one sample, one step
            if module in self.spike_fed:  # spikes, or spike counts after a residual add
                counts = x.sum(dim=0, dtype=torch.float32)  # [C, H, W], [C, L] or [F]
                self.acs = self.acs + _accumulates(module, counts, x.shape)
                return
            per_site = (x != 0).sum(dim=0, dtype=torch.float32)
            acs = _accumulates(module, per_site, x.shape)
            spikes = per_site.sum() == (x == 1).sum()  # every nonzero input is a 1
            dense = float(out.numel() * fan_in)
            self.acs = self.acs + torch.where(spikes, acs, 0.0)
            self.macs = self.macs + torch.where(spikes, 0.0, dense)

        return hook

    def summary(self) -> dict[str, float]:
        acs = torch.as_tensor(self.acs).double()
        macs = torch.as_tensor(self.macs, device=acs.device).double()
        samples = torch.tensor(float(self.samples), device=acs.device).double()
        acs, macs, samples = sum_over_ranks(torch.stack([acs, macs, samples])).tolist()
        if not samples:
            return {}
        ac, mac = acs / samples, macs / samples
        ann = float(sum(self.ann_macs.values()))
        snn_uj = (self.mac_pj * mac + self.ac_pj * ac) * 1e-6
        return {
            "synops/ac": ac,
            "synops/mac": mac,
            "synops/ann_mac": ann,
            "energy/snn_uj": snn_uj,
            "energy/ann_uj": self.mac_pj * ann * 1e-6,
        }


SPIKES_PASS = (nn.MaxPool1d, nn.MaxPool2d, nn.Flatten, nn.Unflatten, nn.Identity)  # spikes stay
# The layer types SynOps counts (the one place that knows them: _fan_in and _accumulates below).
SYNAPTIC = (nn.Conv1d, nn.Conv2d, nn.Linear)
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def refuse_uncounted(model: nn.Module) -> None:
    """A layer that multiplies its input by a weight matrix or kernel but is not in
    :data:`SYNAPTIC` would be skipped silently: refuse it as one line instead."""
    for name, module in model.named_modules():
        if isinstance(module, (SYNAPTIC, _NORMS, SpikingNeuron)):  # psn's [T, T]: a neuron update
            continue
        weight = module._parameters.get("weight")
        if isinstance(module, nn.modules.conv._ConvNd) or (weight is not None and weight.ndim >= 2):
            raise SnnrunError(
                f"SynOps cannot count layer {name} ({type(module).__name__}): add it to SYNAPTIC "
                "in engine/monitor.py, or leave synops out (monitor.counters=[firing_rate] or "
                "monitor=none)"
            )


def spike_fed(model: nn.Module) -> set[nn.Module]:
    """The synaptic layers of a :class:`~snnrun.net.model.SpikingNetwork` whose input is
    spikes by construction: a neuron's output, directly or through max pooling, flattening,
    blocks, a residual connect of spikes (``add`` gives spike counts, still accumulates), a
    graph node merging spikes only, or a recurrent projection (fed the spikes of the step
    before)."""
    fed: set[nn.Module] = set()
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.Sequential):
        _spikes_out(layers, False, fed)
    return fed


def _spikes_out(module: nn.Module, spikes_in: bool, fed: set[nn.Module]) -> bool:
    """Whether ``module`` outputs spikes (or spike counts) given whether its input is; adds the
    synaptic layers inside it that get spikes to ``fed``."""
    if isinstance(module, SpikingNeuron):
        return True
    if isinstance(module, Recurrent):
        _spikes_out(module.projection, True, fed)
        return True
    if isinstance(module, SpikingSelfAttention):  # Q/K/V read the input, the projection spikes
        if spikes_in:
            fed.update((module.q_conv, module.k_conv, module.v_conv))
        fed.add(module.proj_conv)
        return True
    if isinstance(module, SpikeDrivenSelfAttention | QKAttention):  # the projection reads masks
        if spikes_in:
            inputs = ("qk",) if isinstance(module, QKAttention) else ("q", "k", "v")
            fed.update(getattr(module, f"{name}_conv") for name in inputs)
        fed.add(module.proj_conv)
        return module.proj_neuron is not None
    if isinstance(module, Residual):
        body = _spikes_out(module.body, spikes_in, fed)
        return _spikes_out(module.shortcut, spikes_in, fed) and body
    if isinstance(module, GraphBlock):  # a node gets spikes when every input it merges is
        spiking = {INPUT: spikes_in}
        for name in module.order:
            merged = all(spiking[src] for src in module.inputs[name])
            spiking[name] = _spikes_out(module.nodes[name], merged, fed)
        return spiking[module.output]
    if type(module) in (nn.Sequential, Block):
        for layer in module:
            spikes_in = _spikes_out(layer, spikes_in, fed)
        return spikes_in
    inner = module.module if isinstance(module, TimeFolded) else module
    if isinstance(inner, SYNAPTIC) and spikes_in:
        fed.add(inner)
    return spikes_in and isinstance(inner, SPIKES_PASS)


def _fan_in(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    return module.weight[0].numel()  # in_channels / groups x kernel area


def _accumulates(module: nn.Module, per_site: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum over nonzero inputs of their fan-out, exactly (borders, stride, groups).

    ``per_site``: nonzero inputs per site, summed over the batch (``[C, H, W]`` or ``[F]``). A
    conv input at ``(h, w)`` reaches ``coverage[h, w]`` output positions in each of the
    ``C_out / groups`` channels of its group; ``coverage`` depends only on the geometry.
    """
    if isinstance(module, nn.Linear):
        return per_site.sum() * module.out_features
    assert isinstance(module, (nn.Conv1d, nn.Conv2d))
    size = tuple(shape[-len(module.kernel_size) :])
    cover = _coverage(module, size, per_site.device)
    return (per_site.sum(0) * cover).sum() * (module.out_channels // module.groups)


_COVERAGE: dict[tuple[Any, ...], torch.Tensor] = {}


def _coverage(conv: nn.Module, size: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``[H, W]`` (``[L]``): how many output positions of ``conv`` read each input position."""
    key = (conv.kernel_size, conv.stride, conv.padding, conv.dilation, size, str(device))
    if key not in _COVERAGE:
        ones = torch.ones(1, 1, *size, device=device, requires_grad=True)
        kernel = torch.ones(1, 1, *conv.kernel_size, device=device)
        convolve = F.conv1d if len(size) == 1 else F.conv2d
        with torch.enable_grad():  # d(sum of outputs)/d(input) counts the reads
            out = convolve(ones, kernel, None, conv.stride, conv.padding, conv.dilation)
            (cover,) = torch.autograd.grad(out.sum(), ones)
        _COVERAGE[key] = cover[0, 0]
    return _COVERAGE[key]


def build_monitors(options: dict[str, Any], model: nn.Module) -> list[Any]:
    """The ``monitor`` group: ``counters`` names registered monitors; the rest are options.

    With ``_target_``, the user's monitor (``Monitor(model, **keys)``,
    :class:`snnrun.core.protocols.Monitor`) runs after the counters, if any are named: the keys
    the counters read (``silent_below``, ``mac_pj``...) go to them, and to the user's class
    only when its signature names them; every other key is its argument."""
    options = {k: v for k, v in options.items() if k != "name"}
    counters = options.pop("counters", None) or []
    built: list[Any] = [MONITORS.get(name)(model, **options) for name in counters]
    if has_target(options):
        target = options["_target_"]
        cls = import_target(target, "monitor")
        mine = {k: v for k, v in options.items() if k not in _counter_keys() or takes(cls, k)}
        built.append(protocols.check("monitor", instantiate_target(mine, "monitor", model), target))
    return built


def _counter_keys() -> set[str]:
    """The keyword arguments the registered monitors take (besides the model)."""
    keys = set()
    for name in MONITORS.names():
        params = inspect.signature(MONITORS.get(name)).parameters.values()
        keys |= {p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD} - {"model"}
    return keys


class _Active:
    def __init__(self, monitors: list[Monitor]) -> None:
        self.monitors = monitors

    def summary(self) -> dict[str, float]:
        return {k: v for m in self.monitors for k, v in m.summary().items()}


@contextmanager
def monitoring(monitors: list[Monitor]) -> Iterator[_Active]:
    """Hooks attached for the block; ``summary()`` reads every count once."""
    for m in monitors:
        m.attach()
    try:
        yield _Active(monitors)
    finally:
        for m in monitors:
            m.detach()
