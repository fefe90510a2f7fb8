"""snnrun ↔ NIR (the Neuromorphic Intermediate Representation): one table, both directions.

:data:`TABLE` has one row per snnrun layer: the NIR node(s) it becomes (:func:`to_nir`) and the
snnrun layer a NIR node becomes again (:func:`from_nir`), like SpikingJelly's ``map_dict``.
``docs/nir.md`` says which rows are exact and which are not.

Time. NIR neurons are continuous-time equations; one snnrun step is one forward-Euler step of
length ``dt`` (default :data:`DT` = 1e-4 s, the value snnTorch and SpikingJelly write):

- IF, ``dv/dt = R I``: ``R = 1/dt`` gives ``V[t] = V[t-1] + X[t]``.
- LIF, ``tau dv/dt = (v_leak - v) + R I`` with ``tau = tau_steps dt`` and ``v_leak = V_reset``:
  ``V[t] = V[t-1] + (V_reset - V[t-1]) / tau_steps + (R / tau_steps) X[t]``, so ``R = 1`` is
  ``decay_input=true`` and ``R = tau_steps`` is ``decay_input=false``. PLIF writes its learned
  ``tau_steps = 1 / sigmoid(w)``.
- snnTorch's Leaky (``leaky``), as snnTorch writes it: ``tau = dt / (1 - beta)``, ``R = tau/dt``,
  ``v_leak = v_reset = 0``.
- snnTorch's Synaptic (``synaptic``) as NIR's CubaLIF, as snnTorch writes it:
  ``tau_syn = dt / (1 - alpha)``, ``tau_mem = dt / (1 - beta)``, ``w_in = tau_syn/dt``,
  ``R = tau_mem/dt`` (unit input gains), ``v_leak = v_reset = 0``. ``alif`` and ``psn`` are
  refused: NIR has no adaptive-threshold or parallel (all-steps-at-once) neuron.

NIR has no subtractive ("soft") reset: such neurons (``v_reset: null``, ``leaky``,
``synaptic``) are written as NIR's reset-to-``v_reset`` node with ``snnrun_reset: subtract`` in
the node's metadata, read back exactly by snnrun, and with a warning (``strict=True``: refused).
BatchNorm is folded into the convolution before it; dropout is the identity at inference and is
left out; ``voting`` is a ``Linear`` of ``1/k`` blocks; a max pool over spikes is ``SumPool2d``
then ``Threshold(0.5)`` (exact on 0/1 inputs). Every node written by snnrun names its row in
``metadata["snnrun_layer"]``.

Blocks. ``sequential`` and ``repeat`` blocks export their contents in order, at any depth; a
``residual`` with ``connect: add`` is a fork: the body's and the shortcut's last nodes (an
identity shortcut: the node before the fork) both have an edge into the node after the
residual, which sums its inputs, as NIR defines. Where that sum feeds a further fork, ends a
branch or ends the graph, it is one ``Scale`` of ones (``snnrun_layer: add``), read back as
nothing, so that every merge has two inputs. A ``graph`` block whose merges are all ``add``
exports the same way: each node's inputs have edges into its first node. Import reads a fork of
two branches that merge again as a ``Residual`` block, and any other fork (more branches,
branches that fork again, merges of several) up to the node where all its branches meet as a
``GraphBlock``. ``and`` / ``iand`` / ``concat`` / ``mul`` merges, ``recurrent`` and ``module``
entries, and any layer without a row are refused, naming the entry's config path.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from snnrun.core.errors import SnnrunError, one_line
from snnrun.net.blocks import Block, Recurrent, Residual
from snnrun.net.graph import INPUT, GraphBlock
from snnrun.net.layers import (
    LAYERS,
    Context,
    Entry,
    MultiStepDropout,
    Shape,
    TimeFolded,
    Voting,
    walk_entries,
)
from snnrun.net.readout import Readout
from snnrun.neuron.contract import Neuron
from snnrun.neuron.neurons import IFNeuron, LeakyNeuron, LIFNeuron, PLIFNeuron, SpikingNeuron
from snnrun.neuron.state_neurons import ALIFNeuron, PSNNeuron, SynapticNeuron

DT = 1e-4  # seconds per step, as snnTorch and SpikingJelly write NIR
LAYER_KEY = "snnrun_layer"  # node metadata: the snnrun row that wrote the node
RESET_KEY = "snnrun_reset"  # node metadata: "subtract" for a soft reset NIR cannot express


class NirError(SnnrunError):
    """A network or NIR graph that the mapping cannot carry over."""


# --- export: snnrun layers → NIR nodes ------------------------------------------------------------
@dataclass
class ExportStep:
    """What an exporter knows about the layer it writes."""

    label: str  # "model.layers[3].body[1] (neuron)"
    shape: Shape  # per-sample input shape
    dt: float
    strict: bool
    spikes_in: bool  # the input is 0/1 (a neuron layer's output, maybe pooled or flattened)
    nodes: list[Any]  # the nodes written so far (BatchNorm folds into the last one)
    warnings: list[str]


def _meta(name: str, **extra: Any) -> dict[str, Any]:
    return {LAYER_KEY: name, **extra}


def _full(shape: Shape, value: float) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def _full64(shape: Shape, value: float) -> np.ndarray:
    """float64: a time constant from which ``1 - dt/tau`` gives a float32 decay back exactly."""
    return np.full(shape, value, dtype=np.float64)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_to(m: nn.Conv2d, s: ExportStep) -> list[Any]:
    if m.padding_mode != "zeros":
        raise NirError(f"{s.label}: NIR convolutions pad with zeros, not {m.padding_mode!r}")
    bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels, np.float32)
    padding = m.padding if isinstance(m.padding, str) else _pair(m.padding)
    return [
        nir.Conv2d(
            input_shape=tuple(s.shape[1:]),
            weight=_np(m.weight),
            stride=m.stride,
            padding=padding,
            dilation=m.dilation,
            groups=m.groups,
            bias=bias,
            metadata=_meta("conv2d"),
        )
    ]


def _linear_to(m: nn.Linear, s: ExportStep) -> list[Any]:
    if m.bias is None:
        return [nir.Linear(weight=_np(m.weight), metadata=_meta("linear"))]
    return [nir.Affine(weight=_np(m.weight), bias=_np(m.bias), metadata=_meta("linear"))]


def _batchnorm_to(m: nn.BatchNorm2d, s: ExportStep) -> list[Any]:
    """Fold ``y = (x - mean) / sqrt(var + eps) * gamma + beta`` into the conv just written."""
    conv = s.nodes[-1] if s.nodes else None
    if not isinstance(conv, nir.Conv2d) or conv.metadata.get("bn_folded"):
        raise NirError(
            f"{s.label}: BatchNorm exports folded into the conv2d just before it, "
            "and this one follows no convolution; move it after a conv2d"
        )
    if m.running_mean is None:
        raise NirError(f"{s.label}: BatchNorm without running statistics cannot be folded")
    var, mean = m.running_var.detach().double(), m.running_mean.detach().double()
    gamma = m.weight.detach().double() if m.weight is not None else torch.ones_like(var)
    beta = m.bias.detach().double() if m.bias is not None else torch.zeros_like(var)
    scale = (gamma / torch.sqrt(var + m.eps)).numpy()
    conv.weight = (conv.weight * scale[:, None, None, None]).astype(np.float32)
    conv.bias = ((conv.bias - mean.numpy()) * scale + beta.numpy()).astype(np.float32)
    conv.metadata["bn_folded"] = 1
    return []


def _pool_args(m: nn.Module, s: ExportStep) -> dict[str, np.ndarray]:
    if getattr(m, "ceil_mode", False) or _pair(getattr(m, "dilation", 1)) != (1, 1):
        raise NirError(f"{s.label}: NIR pools have no ceil_mode or dilation; turn them off")
    kernel = _pair(m.kernel_size)
    stride = _pair(m.stride if m.stride is not None else m.kernel_size)
    return {
        "kernel_size": np.array(kernel),
        "stride": np.array(stride),
        "padding": np.array(_pair(m.padding)),
    }


def _avgpool_to(m: nn.AvgPool2d, s: ExportStep) -> list[Any]:
    args = _pool_args(m, s)
    if m.divisor_override is not None or (args["padding"].any() and not m.count_include_pad):
        raise NirError(
            f"{s.label}: NIR's AvgPool2d divides by the kernel area; drop "
            "divisor_override / count_include_pad=false"
        )
    return [nir.AvgPool2d(**args, metadata=_meta("avgpool2d"))]


def _adaptive_avgpool_to(m: nn.AdaptiveAvgPool2d, s: ExportStep) -> list[Any]:
    size, out = s.shape[1:], _pair(m.output_size if m.output_size is not None else s.shape[1])
    if any(o is None or n % o for n, o in zip(size, out)):
        raise NirError(
            f"{s.label}: adaptive_avgpool2d to {list(out)} from {list(size)} is no "
            "fixed window; use sizes that divide the input, or avgpool2d"
        )
    kernel = np.array([n // o for n, o in zip(size, out)])
    return [
        nir.AvgPool2d(
            kernel_size=kernel,
            stride=kernel,
            padding=np.zeros(2, np.int64),
            metadata=_meta("avgpool2d"),
        )
    ]


def _maxpool_to(m: nn.MaxPool2d, s: ExportStep) -> list[Any]:
    """Over 0/1 spikes, ``max = Heaviside(sum - 0.5)``: NIR's SumPool2d then Threshold."""
    if not s.spikes_in:
        raise NirError(
            f"{s.label}: NIR has no max pooling; a maxpool2d over spikes (after a "
            "neuron layer) exports exactly, this one pools real values: move it "
            "after the neuron layer, or use avgpool2d"
        )
    args = _pool_args(m, s)
    k, st, p = args["kernel_size"], args["stride"], args["padding"]
    out = [(n + 2 * p[i] - k[i]) // st[i] + 1 for i, n in enumerate(s.shape[1:])]
    return [
        nir.SumPool2d(**args, metadata=_meta("maxpool2d")),
        nir.Threshold(threshold=_full((s.shape[0], *out), 0.5), metadata=_meta("maxpool2d")),
    ]


def _flatten_to(m: nn.Flatten, s: ExportStep) -> list[Any]:
    start = m.start_dim - 1 if m.start_dim > 0 else m.start_dim  # NIR shapes have no batch dim
    end = m.end_dim - 1 if m.end_dim > 0 else m.end_dim
    return [
        nir.Flatten(
            input_type={"input": np.array(s.shape)},
            start_dim=start,
            end_dim=end,
            metadata=_meta("flatten"),
        )
    ]


def _dropout_to(m: MultiStepDropout, s: ExportStep) -> list[Any]:
    return []  # the identity at inference


def _identity_to(m: nn.Identity, s: ExportStep) -> list[Any]:
    return []


def _voting_to(m: Voting, s: ExportStep) -> list[Any]:
    """Averaging groups of ``k`` neighbours is a Linear with ``1/k`` blocks."""
    (features,) = s.shape
    weight = np.kron(np.eye(features // m.k, dtype=np.float32), _full((1, m.k), 1.0 / m.k))
    return [nir.Linear(weight=weight, metadata=_meta("voting", k=m.k))]


def _readout_to(m: Readout, s: ExportStep) -> list[Any]:
    """``li``: NIR's ``LI`` with ``tau = tau dt``, ``r = 1``, ``v_leak = 0``
    (``V += dt/tau (X - V)``); ``sum``: NIR's ``I`` with ``r = 1/dt`` (``V += r dt X``)."""
    if m.kind == "li":
        return [
            nir.LI(
                tau=_full64(s.shape, m.tau * s.dt),  # float32 would read back as 3.0000002
                r=_full(s.shape, 1.0),
                v_leak=_full(s.shape, 0.0),
                metadata=_meta("readout"),
            )
        ]
    return [nir.I(r=_full(s.shape, 1.0 / s.dt), metadata=_meta("readout"))]


def _reset(m: SpikingNeuron, s: ExportStep, neuron: str) -> tuple[float, dict[str, Any]]:
    """(NIR's v_reset, metadata) for a neuron; a soft reset is warned about (or refused)."""
    d = m.dynamics
    if d.hard_reset:
        return d.v_reset, _meta(neuron)
    why = {
        "leaky": "snnTorch's Leaky resets by subtraction",
        "synaptic": "synaptic (snnTorch's Synaptic) resets by subtraction",
    }.get(neuron, "v_reset=null")
    if s.strict:
        raise NirError(
            f"{s.label}: {why} but NIR's neurons reset to v_reset, so strict=true writes "
            "nothing; train with a hard reset (neuron.v_reset=0.0) to export strictly, or export "
            f"without strict=true (the node then carries {RESET_KEY}=subtract in its metadata: "
            "snnrun reads it back exactly, other tools reset to 0)"
        )
    s.warnings.append(
        f"{s.label}: {why} but NIR's neurons reset to v_reset; written with "
        f"{RESET_KEY}=subtract in the node's metadata (snnrun reads it back exactly, other "
        "tools reset to 0)"
    )
    return 0.0, _meta(neuron, **{RESET_KEY: "subtract"})


def _if_to(m: IFNeuron, s: ExportStep) -> list[Any]:
    v_reset, meta = _reset(m, s, "if")
    return [
        nir.IF(
            r=_full(s.shape, 1.0 / s.dt),
            v_threshold=_full(s.shape, m.dynamics.v_threshold),
            v_reset=_full(s.shape, v_reset),
            metadata=meta,
        )
    ]


def _fixed(m: SpikingNeuron, s: ExportStep) -> None:
    """Refuse a neuron that learned its tau or threshold per channel or neuron (one line)."""
    if m.learn_tau or m.learn_threshold:
        raise NirError(
            f"{s.label}: a learned tau or threshold (neuron.learn_tau, neuron.learn_threshold) "
            "has no NIR export yet; export a run trained without them"
        )


def _lif_node(tau_steps: float, m: SpikingNeuron, s: ExportStep, neuron: str) -> list[Any]:
    _fixed(m, s)
    v_reset, meta = _reset(m, s, neuron)
    r = 1.0 if m.dynamics.decay_input else tau_steps
    thr = m.dynamics.v_threshold
    return [
        nir.LIF(
            tau=_full(s.shape, tau_steps * s.dt),
            r=_full(s.shape, r),
            v_leak=_full(s.shape, v_reset),
            v_threshold=_full(s.shape, thr),
            v_reset=_full(s.shape, v_reset),
            metadata=meta,
        )
    ]


def _lif_to(m: LIFNeuron, s: ExportStep) -> list[Any]:
    return _lif_node(m.tau, m, s, "lif")


def _plif_to(m: PLIFNeuron, s: ExportStep) -> list[Any]:
    return _lif_node(1.0 / m.decay().item(), m, s, "plif")


def _leaky_to(m: LeakyNeuron, s: ExportStep) -> list[Any]:
    """snnTorch's own mapping: ``tau = dt / (1 - beta)``, ``R = tau / dt``."""
    _fixed(m, s)
    beta = m.decay().item()
    if beta >= 1.0:
        raise NirError(f"{s.label}: leaky with beta=1 has no leak (no finite NIR tau)")
    _, meta = _reset(m, s, "leaky")
    tau = s.dt / (1.0 - beta)
    return [
        nir.LIF(
            tau=_full(s.shape, tau),
            r=_full(s.shape, tau / s.dt),
            v_leak=_full(s.shape, 0),
            v_threshold=_full(s.shape, m.dynamics.v_threshold),
            v_reset=_full(s.shape, 0.0),
            metadata=meta,
        )
    ]


def _synaptic_to(m: SynapticNeuron, s: ExportStep) -> list[Any]:
    """snnTorch's own mapping to CubaLIF: ``tau_syn = dt/(1-alpha)``, ``tau_mem = dt/(1-beta)``,
    ``w_in = tau_syn/dt``, ``R = tau_mem/dt``; learned alpha / beta as they are now (clamped)."""
    alpha, beta = (float(p.detach()) for p in m.params().values())
    for name, value in (("alpha", alpha), ("beta", beta)):
        if value >= 1.0:
            raise NirError(
                f"{s.label}: synaptic with {name}=1 does not decay (no finite NIR time "
                f"constant); give {name} < 1"
            )
    _, meta = _reset(m, s, "synaptic")
    meta.update(learn_alpha=int(m.learn_alpha), learn_beta=int(m.learn_beta))
    tau_syn, tau_mem = s.dt / (1.0 - alpha), s.dt / (1.0 - beta)
    return [
        nir.CubaLIF(
            tau_syn=_full64(s.shape, tau_syn),
            tau_mem=_full64(s.shape, tau_mem),
            r=_full64(s.shape, tau_mem / s.dt),
            v_leak=_full64(s.shape, 0.0),
            v_threshold=_full64(s.shape, m.dynamics.v_threshold),
            v_reset=_full64(s.shape, 0.0),
            w_in=_full64(s.shape, tau_syn / s.dt),
            metadata=meta,
        )
    ]


# refused with their reason: neurons NIR has no node for
_NO_NODE: dict[type[nn.Module], str] = {
    ALIFNeuron: "alif (adaptive threshold) has no NIR node: NIR's neurons fire at a fixed "
    "threshold, none that rises with each spike",
    PSNNeuron: "psn (parallel spiking neuron) has no NIR node: its charge is one matrix product "
    "over all T steps, and NIR's neurons step in time",
}


# --- import: NIR nodes → snnrun layers ------------------------------------------------------------
@dataclass
class ImportStep:
    """What an importer knows about the node it reads."""

    label: str  # "NIR node 'lif_1' (LIF)"
    shape: Shape  # per-sample input shape
    dt: float
    neuron_groups: dict[str, Any]  # the run's neuron / surrogate groups (backend, step mode...)
    following: Any = None  # the next node in the chain


def _layer(layer_type: str, options: dict[str, Any], s: ImportStep) -> nn.Module:
    return LAYERS.get(layer_type)(options, s.shape, Context(s.neuron_groups))


def _ints(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in np.atleast_1d(np.asarray(v)))


def _spatial(v: Any) -> int | tuple[int, int] | str:
    if isinstance(v, (str, bytes)):
        return v.decode() if isinstance(v, bytes) else v
    ints = _ints(v)
    return ints[0] if len(ints) == 1 else (ints[0], ints[1])


def _set(param: torch.Tensor, value: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(param.shape))


def _conv_from(node: Any, s: ImportStep) -> list[nn.Module]:
    w = np.asarray(node.weight)
    if w.ndim != 4:
        raise NirError(f"{s.label}: weight of shape {list(w.shape)} is no 2-d convolution")
    layer = _layer(
        "conv2d",
        {
            "out_channels": w.shape[0],
            "kernel_size": tuple(w.shape[2:]),
            "stride": _spatial(node.stride),
            "padding": _spatial(node.padding),
            "dilation": _spatial(node.dilation),
            "groups": int(node.groups),
            "bias": True,
        },
        s,
    )
    _set(layer.module.weight, w)
    _set(layer.module.bias, node.bias)
    return [layer]


def _linear_from(node: Any, s: ImportStep) -> list[nn.Module]:
    w, bias = np.asarray(node.weight), getattr(node, "bias", None)
    if node.metadata.get(LAYER_KEY) == "voting":
        return [_layer("voting", {"k": int(node.metadata["k"])}, s)]
    if w.ndim != 2:
        raise NirError(f"{s.label}: weight of shape {list(w.shape)}; snnrun reads 2-d weights")
    layer = _layer("linear", {"out_features": w.shape[0], "bias": bias is not None}, s)
    _set(layer.module.weight, w)
    if bias is not None:
        _set(layer.module.bias, bias)
    return [layer]


def _pool_options(node: Any) -> dict[str, Any]:
    return {
        "kernel_size": _spatial(node.kernel_size),
        "stride": _spatial(node.stride),
        "padding": _spatial(node.padding),
    }


def _avgpool_from(node: Any, s: ImportStep) -> list[nn.Module]:
    return [_layer("avgpool2d", _pool_options(node), s)]


def _sumpool_from(node: Any, s: ImportStep) -> list[nn.Module]:
    """A SumPool2d, or with the Threshold after it that snnrun wrote, a max pool over spikes."""
    nxt = s.following
    if node.metadata.get(LAYER_KEY) == "maxpool2d" and isinstance(nxt, nir.Threshold):
        return [_layer("maxpool2d", _pool_options(node), s)]
    options = _pool_options(node)
    kernel = options["kernel_size"]
    area = kernel * kernel if isinstance(kernel, int) else kernel[0] * kernel[1]
    return [_layer("avgpool2d", {**options, "divisor_override": area}, s)]  # sum = area x mean


def _threshold_from(node: Any, s: ImportStep) -> list[nn.Module]:
    if node.metadata.get(LAYER_KEY) == "maxpool2d":
        return []  # the second half of a max pool over spikes
    raise NirError(
        f"{s.label}: a bare Threshold (Heaviside) has no snnrun layer; only snnrun's "
        "max pool over spikes (SumPool2d then Threshold) reads back"
    )


def _scale_from(node: Any, s: ImportStep) -> list[nn.Module]:
    """A ``Scale`` of ones: the node where a residual's branches meet (NIR sums its inputs)."""
    if np.all(np.asarray(node.scale) == 1.0):
        return []
    raise NirError(
        f"{s.label}: a Scale other than ones has no snnrun layer; snnrun reads the all-ones "
        "Scale it writes where a residual's branches meet"
    )


def _flatten_from(node: Any, s: ImportStep) -> list[nn.Module]:
    start, end = int(node.start_dim), int(node.end_dim)
    return [
        _layer(
            "flatten",
            {
                "start_dim": start + 1 if start >= 0 else start,
                "end_dim": end + 1 if end >= 0 else end,
            },
            s,
        )
    ]


def _scalar(node: Any, name: str, s: ImportStep) -> float:
    """One value for the whole layer (snnrun neurons share their parameters)."""
    values = np.asarray(getattr(node, name), dtype=np.float64).ravel()
    if values.size == 0 or not np.allclose(values, values[0], rtol=1e-6, atol=0.0):
        raise NirError(
            f"{s.label}: {name} differs between neurons; snnrun neurons share one {name} per layer"
        )
    return float(values[0])


def _readout_from(node: Any, s: ImportStep) -> list[nn.Module]:
    """NIR's ``LI`` (``r = 1``, ``v_leak = 0``, ``tau > dt``) or ``I`` (``r dt = 1``) as a
    ``readout`` entry."""
    if isinstance(node, nir.I):
        gain = _scalar(node, "r", s) * s.dt
        if not np.isclose(gain, 1.0, rtol=1e-6):
            raise NirError(f"{s.label}: I with r x dt = {gain:g}; snnrun's readout sum has 1")
        return [_layer("readout", {"kind": "sum"}, s)]
    tau_steps = _scalar(node, "tau", s) / s.dt
    r, v_leak = _scalar(node, "r", s), _scalar(node, "v_leak", s)
    if not (tau_steps > 1.0 and math.isfinite(tau_steps)):
        raise NirError(f"{s.label}: tau/dt = {tau_steps:g} steps; snnrun's readout needs tau > dt")
    if not np.isclose(r, 1.0, rtol=1e-6) or v_leak != 0.0:
        raise NirError(
            f"{s.label}: LI with r={r:g}, v_leak={v_leak:g}; snnrun's readout li has r = 1 and "
            "v_leak = 0"
        )
    return [_layer("readout", {"kind": "li", "tau": _f32(tau_steps)}, s)]


def _neuron(options: dict[str, Any], s: ImportStep) -> SpikingNeuron:
    return _layer("neuron", options, s)  # backend, step mode, surrogate: the run's groups


def _if_from(node: Any, s: ImportStep) -> list[nn.Module]:
    """``V += r dt X``: with ``a = r dt != 1`` the threshold and reset are divided by ``a``."""
    gain = _scalar(node, "r", s) * s.dt
    if gain <= 0:
        raise NirError(f"{s.label}: r x dt = {gain:g}; snnrun's IF needs a positive input gain")
    thr, v_reset = _scalar(node, "v_threshold", s), _scalar(node, "v_reset", s)
    soft = node.metadata.get(RESET_KEY) == "subtract"
    return [
        _neuron(
            {
                "name": "if",
                "v_threshold": _f32(thr / gain),
                "v_reset": None if soft else _f32(v_reset / gain),
            },
            s,
        )
    ]


def _f32(x: float) -> float:
    """``x`` at float32 precision, as the neurons compute: a ratio such as ``tau / dt`` that came
    out as ``2.0000000000000004`` is 2 again."""
    return float(np.float32(x))


def _lif_from(node: Any, s: ImportStep) -> list[nn.Module]:
    """``V += k (v_leak - V) + k r X`` with ``k = dt / tau``: decay_input when ``r = 1``, else
    ``decay_input=false`` with the potentials divided by the input gain ``k r``."""
    tau_steps = _scalar(node, "tau", s) / s.dt
    if tau_steps <= 1.0 or not math.isfinite(tau_steps):
        raise NirError(f"{s.label}: tau/dt = {tau_steps:g} steps; snnrun's LIF needs tau > dt")
    r, k = _scalar(node, "r", s), 1.0 / tau_steps
    v_leak, v_reset = _scalar(node, "v_leak", s), _scalar(node, "v_reset", s)
    thr = _scalar(node, "v_threshold", s)
    meta, soft = node.metadata, node.metadata.get(RESET_KEY) == "subtract"
    if meta.get(LAYER_KEY) == "leaky" and np.isclose(r, tau_steps) and v_leak == 0.0:
        beta = float(np.float32(1.0 - k))
        return [_neuron({"name": "leaky", "beta": beta, "v_threshold": thr}, s)]
    if not np.isclose(v_leak, 0.0 if soft else v_reset, rtol=1e-6, atol=1e-12):
        raise NirError(
            f"{s.label}: v_leak={v_leak:g} but v_reset={v_reset:g}; snnrun's LIF "
            "leaks towards v_reset"
        )
    decay_input, gain = np.isclose(r, 1.0, rtol=1e-6), 1.0
    if not decay_input:
        gain = r * k  # 1 when r = tau_steps
        gain = 1.0 if np.isclose(gain, 1.0, rtol=1e-6) else gain
    options = {
        "decay_input": bool(decay_input),
        "v_threshold": _f32(thr / gain),
        "v_reset": None if soft else _f32(v_reset / gain),
    }
    if meta.get(LAYER_KEY) == "plif":
        neuron = _neuron({"name": "plif", "init_tau": tau_steps, **options}, s)
        _set(neuron.w, np.array(-math.log(tau_steps - 1.0)))
        return [neuron]
    return [_neuron({"name": "lif", "tau": _f32(tau_steps), **options}, s)]


def _unit(gain: float) -> float:
    """1 for a gain within float rounding of it (``tau/dt x dt/tau``)."""
    return 1.0 if np.isclose(gain, 1.0, rtol=1e-6) else gain


def _synaptic_from(node: Any, s: ImportStep) -> list[nn.Module]:
    """snnTorch's reading: ``alpha = 1 - dt/tau_syn``, ``beta = 1 - dt/tau_mem``, and snnTorch's
    Synaptic's subtractive reset (NIR's reset to ``v_reset = 0`` is not expressible). Input gains
    ``g = (w_in dt/tau_syn)(R dt/tau_mem) != 1`` divide the threshold: the same spikes."""
    decays = {}
    for name in ("tau_syn", "tau_mem"):
        tau = _scalar(node, name, s)
        if not (math.isfinite(tau) and tau >= s.dt * (1 - 1e-6)):  # float32's dt is < dt
            raise NirError(
                f"{s.label}: {name}/dt = {tau / s.dt:g} steps; snnrun's synaptic needs a finite "
                "time constant of at least one step dt"
            )
        decays[name] = max(0.0, 1.0 - s.dt / tau)
    v_leak, v_reset = _scalar(node, "v_leak", s), _scalar(node, "v_reset", s)
    if v_leak != 0.0 or v_reset != 0.0:
        raise NirError(
            f"{s.label}: v_leak={v_leak:g}, v_reset={v_reset:g}; snnrun's synaptic leaks towards "
            "0 and resets by subtracting the threshold (snnTorch's Synaptic): it reads "
            "CubaLIF with v_leak = v_reset = 0"
        )
    gain = _unit(_scalar(node, "w_in", s) * s.dt / _scalar(node, "tau_syn", s)) * _unit(
        _scalar(node, "r", s) * s.dt / _scalar(node, "tau_mem", s)
    )
    if not (math.isfinite(gain) and gain > 0):
        raise NirError(
            f"{s.label}: input gain w_in R dt^2/(tau_syn tau_mem) = {gain:g}; "
            "snnrun's synaptic needs a positive one"
        )
    meta = node.metadata
    options = {
        "name": "synaptic",
        "alpha": _f32(decays["tau_syn"]),
        "beta": _f32(decays["tau_mem"]),
        "v_threshold": _f32(_scalar(node, "v_threshold", s) / gain),
        "learn_alpha": bool(meta.get("learn_alpha", 0)),
        "learn_beta": bool(meta.get("learn_beta", 0)),
    }
    return [_neuron(options, s)]


# --- the table ------------------------------------------------------------------------------------
Exporter = Callable[[Any, ExportStep], list[Any]]
Importer = Callable[[Any, ImportStep], list[nn.Module]]


@dataclass(frozen=True)
class Row:
    """One snnrun layer ↔ NIR node(s) mapping."""

    name: str  # the snnrun layer type (or neuron name)
    layer: type[nn.Module] | None  # the module snnrun builds (None: import only)
    nodes: tuple[str, ...]  # the NIR node types it becomes / is read from
    export: Exporter | None
    load: Importer | None = None
    keeps_spikes: bool = False  # 0/1 in gives 0/1 out (for the max-pool-over-spikes check)
    note: str = ""


TABLE: tuple[Row, ...] = (
    Row("conv2d", nn.Conv2d, ("Conv2d",), _conv_to, _conv_from),
    Row("batchnorm2d", nn.BatchNorm2d, (), _batchnorm_to, note="folded into the conv before it"),
    Row("linear", nn.Linear, ("Linear", "Affine"), _linear_to, _linear_from),
    Row("avgpool2d", nn.AvgPool2d, ("AvgPool2d",), _avgpool_to, _avgpool_from),
    Row("adaptive_avgpool2d", nn.AdaptiveAvgPool2d, ("AvgPool2d",), _adaptive_avgpool_to),
    Row(
        "maxpool2d",
        nn.MaxPool2d,
        ("SumPool2d", "Threshold"),
        _maxpool_to,
        None,
        keeps_spikes=True,
        note="over spikes only: SumPool2d then Threshold(0.5)",
    ),
    Row("sumpool2d", None, ("SumPool2d",), None, _sumpool_from, note="avgpool2d x kernel area"),
    Row("threshold", None, ("Threshold",), None, _threshold_from),
    Row("flatten", nn.Flatten, ("Flatten",), _flatten_to, _flatten_from, keeps_spikes=True),
    Row("dropout", MultiStepDropout, (), _dropout_to, keeps_spikes=True, note="left out"),
    Row("identity", nn.Identity, (), _identity_to, keeps_spikes=True, note="left out"),
    Row("add", None, ("Scale",), None, _scale_from, note="a residual's sum: Scale of ones"),
    Row("voting", Voting, ("Linear",), _voting_to, _linear_from, note="Linear of 1/k blocks"),
    Row("readout", Readout, ("LI", "I"), _readout_to, _readout_from, note="li <-> LI, sum <-> I"),
    Row("if", IFNeuron, ("IF",), _if_to, _if_from),
    Row("lif", LIFNeuron, ("LIF",), _lif_to, _lif_from),
    Row("plif", PLIFNeuron, ("LIF",), _plif_to, _lif_from, note="learned tau written as tau"),
    Row("leaky", LeakyNeuron, ("LIF",), _leaky_to, _lif_from, note="snnTorch's beta <-> tau"),
    Row(
        "synaptic",
        SynapticNeuron,
        ("CubaLIF",),
        _synaptic_to,
        _synaptic_from,
        note="snnTorch's alpha, beta <-> tau_syn, tau_mem",
    ),
)
_EXPORTS = {row.layer: row for row in TABLE if row.export is not None}
# a node is read by the first row that loads its type; the loader picks by the node's metadata
_IMPORTS = {n: row for row in reversed(TABLE) if row.load is not None for n in row.nodes}


# --- whole networks: export ---------------------------------------------------------------------
@dataclass
class Exported:
    """A network as a NIR graph, and what did not map one-to-one."""

    graph: Any
    warnings: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # "L3.body.1 conv2d -> Conv2d" per layer


@dataclass(frozen=True)
class _Point:
    """Where an export stands: the node(s) whose outputs, summed, are the value here."""

    sources: tuple[str, ...]  # several: the branches of the residual ``merge`` meet here
    shape: Shape  # per-sample
    spikes: bool  # the value is 0/1
    chain: tuple[Any, ...] = ()  # nodes written in one line since the last fork or merge
    merge: str = ""  # the label of the residual whose branches ``sources`` are
    blocked: bool = False  # the entry just before could not be written


def _sum_node(shape: Shape) -> Any:
    """``y = x`` summed over the incoming edges: a ``Scale`` of ones, read back as nothing."""
    return nir.Scale(scale=_full(shape, 1.0), metadata=_meta("add"))


def _node_name(label: str, row: str, j: int) -> str:
    """``L3.body.1_conv2d`` (``_1``, ``_2`` for a layer's further nodes)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", f"{label}_{row}" + (f"_{j}" if j else ""))


def _where(m: nn.Module, label: str) -> str:
    """A module as errors name it: its entry's config path and type, ``model.layers[3].body[1]
    (neuron)`` (a module built from no entry: its label and class)."""
    entry = getattr(m, "snnrun_entry", None)
    return f"{entry.path} ({entry.type})" if entry else f"{label} ({type(m).__name__})"


def _named(where: str, why: str) -> str:
    return f"{where}: {why}" if where else why


class _Writer:
    """A network's modules as NIR nodes and edges, depth first: blocks in order, a residual as
    two branches whose last edges meet at the next node (NIR sums a node's inputs). An entry that
    cannot be written is kept in :attr:`blocked` and passed over, so that one export names them
    all (:meth:`refuse`)."""

    def __init__(self, in_shape: Shape, dt: float, strict: bool, out: Exported) -> None:
        self.dt, self.strict, self.out = dt, strict, out
        self.nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(in_shape)})}
        self.edges: list[tuple[str, str]] = []
        self.blocked: list[tuple[str, str]] = []  # (where, why) per entry that cannot be written

    def add(self, name: str, node: Any, at: _Point) -> _Point:
        """``node``, fed by every source at ``at``."""
        self.nodes[name] = node
        self.edges += [(src, name) for src in at.sources]
        return replace(at, sources=(name,), chain=(*at.chain, node), merge="", blocked=False)

    def summed(self, at: _Point) -> _Point:
        """The sum at ``at`` as one node, where it feeds several (a residual's two branches) or
        ends the graph: computed once."""
        if len(at.sources) == 1:
            return at
        self.out.layers.append(f"{at.merge} add -> Scale (ones: the sum of the branches)")
        return replace(self.add(f"{at.merge}_add", _sum_node(at.shape), at), chain=())

    def module(self, m: nn.Module, label: str, at: _Point) -> _Point:
        """``m`` written after ``at``; one that cannot be is recorded and passed over."""
        where = _where(m, label)
        try:
            return self.written(m, label, where, at)
        except NirError as e:
            why = str(e).removeprefix(f"{where}: ")
            self.blocked.append((where if why != str(e) else "", why))
            inner = m.module if isinstance(m, TimeFolded) else m
            entry = getattr(m, "snnrun_entry", None)
            shape = entry.shape if entry is not None else _shape_after(m, at.shape)
            spikes = isinstance(inner, SpikingNeuron)
            return replace(at, shape=shape, spikes=spikes, chain=(), blocked=True)

    def refuse(self) -> None:
        """One :class:`NirError` for every entry that cannot be written: the one's own message,
        or ``cannot write N entries as NIR: (1) ...; (2) ...`` with the entries that share a
        reason named together."""
        if len(self.blocked) == 1:
            raise NirError(_named(*self.blocked[0]))
        if self.blocked:
            reasons: dict[str, list[str]] = {}
            for where, why in self.blocked:
                reasons.setdefault(why, []).append(where)
            listed = "; ".join(
                f"({i}) {_named(', '.join(w for w in wheres if w), why)}"
                for i, (why, wheres) in enumerate(reasons.items(), 1)
            )
            raise NirError(f"cannot write {len(self.blocked)} entries as NIR: {listed}")

    def written(self, m: nn.Module, label: str, where: str, at: _Point) -> _Point:
        entry = getattr(m, "snnrun_entry", None)
        if entry is not None and entry.type == "module":
            raise NirError(
                f"{where}: a user module ({type(m).__name__}) has no NIR mapping; export "
                "covers snnrun's own layer entries (docs/nir.md lists them)"
            )
        if type(m) is Residual:
            return self.residual(m, label, where, at)
        if isinstance(m, GraphBlock):
            return self.graph_block(m, label, where, at)
        if type(m) in (Block, nn.Sequential):
            return self.children(m, label, at)
        if isinstance(m, Recurrent):
            raise NirError(
                f"{where}: snnrun writes no NIR cycles, so a recurrent block (its spikes of "
                "step t-1 fed back through the projection) does not export; export a network "
                "without recurrent entries"
            )
        return self.leaf(m, label, where, at)

    def children(self, block: nn.Module, label: str, at: _Point) -> _Point:
        for name, m in block.named_children():
            at = self.module(m, f"{label}.{name}", at)
        return at

    def residual(self, m: Residual, label: str, where: str, at: _Point) -> _Point:
        """``body(x) + shortcut(x)``: both branches start at one node and end in one node each;
        their edges meet at the node after the residual (an identity shortcut is a direct edge)."""
        if m.connect != "add":
            what = "joins the branches" if m.connect == "concat" else "multiplies spikes"
            raise NirError(
                f"{where}: connect={m.connect} {what} and NIR has no node for that; only "
                "connect=add exports (the branches' edges meet at one node, which sums them)"
            )
        fork = replace(self.summed(at), chain=())
        body = self.summed(self.children(m.body, f"{label}.body", fork))
        shortcut = self.summed(self.children(m.shortcut, f"{label}.shortcut", fork))
        if shortcut.sources == body.sources:  # neither branch wrote a node: x + x
            shortcut = self.add(f"{label}.shortcut_identity", _sum_node(fork.shape), shortcut)
            self.out.layers.append(f"{label}.shortcut identity -> Scale (ones: x + x)")
        self.out.layers.append(f"{label} residual(add) -> edges of both branches into one node")
        return _Point((*body.sources, *shortcut.sources), body.shape, False, (), label)

    def graph_block(self, m: GraphBlock, label: str, where: str, at: _Point) -> _Point:
        """Each node after its inputs: their edges meet at the node's first NIR node, which sums
        them (an input that is itself a sum is one ``Scale`` of ones first; the same input twice,
        one more); only ``merge: add`` exports."""
        for name in m.order:
            merge = m.merges[name][0]
            if len(m.inputs[name]) > 1 and merge != "add":
                raise NirError(f"{where}: node {name} merges by {merge}, which NIR has no node "
                               "for; only merge=add exports (the inputs' edges meet at one "
                               "node, which sums them)")  # fmt: skip
        points = {INPUT: replace(self.summed(at), chain=())}
        for name in m.order:
            here, sources = f"{label}.nodes.{name}", []
            for i, src in enumerate(m.inputs[name]):
                point = points[src] = replace(self.summed(points[src]), chain=())
                if point.sources[0] in sources:  # x + x: a second, identical edge is no sum
                    point = self.add(f"{here}.input{i}", _sum_node(point.shape), point)
                sources += point.sources
            first = points[m.inputs[name][0]]
            spikes = first.spikes and len(sources) == 1
            start = _Point(tuple(sources), first.shape, spikes, (), here)
            points[name] = self.children(m.nodes[name], here, start)
        self.out.layers.append(f"{label} graph -> its nodes, each input's edges into one node")
        return points[m.output]

    def leaf(self, m: nn.Module, label: str, where: str, at: _Point) -> _Point:
        module = m.module if isinstance(m, TimeFolded) else m
        row = _EXPORTS.get(type(module))
        if type(module) in _NO_NODE:
            neurons = ", ".join(r.name for r in TABLE if r.export and _is_neuron(r.layer))
            raise NirError(f"{where}: {_NO_NODE[type(module)]}; neurons that export: {neurons}")
        if row is None and isinstance(module, Neuron):
            neurons = ", ".join(r.name for r in TABLE if r.export and _is_neuron(r.layer))
            raise NirError(
                f"{where}: {type(module).__name__} is your own neuron (snnrun.Neuron), which NIR "
                f"has no node for; neurons that export: {neurons}"
            )
        if row is None:
            raise NirError(
                f"{where}: snnrun writes no NIR node for {type(module).__name__}; the layers "
                f"that export are {', '.join(sorted(r.name for r in TABLE if r.export))}, in "
                "sequential, repeat, residual (connect=add) and graph (merge=add) blocks"
            )
        if at.blocked and type(module) is nn.BatchNorm2d:  # it folds into the entry passed over
            return replace(at, blocked=False)
        step = ExportStep(
            where, at.shape, self.dt, self.strict, at.spikes, list(at.chain), self.out.warnings
        )
        written = row.export(module, step)
        for j, node in enumerate(written):
            at = self.add(_node_name(label, row.name, j), node, at)
        became = ", ".join(type(n).__name__ for n in written) or row.note or "nothing"
        self.out.layers.append(f"{label} {row.name} -> {became}")
        spikes = isinstance(module, SpikingNeuron) or (row.keeps_spikes and at.spikes)
        return replace(at, shape=_shape_after(m, at.shape), spikes=spikes)

    def graph(self, at: _Point) -> Any:
        nodes = {**self.nodes, "output": nir.Output(output_type={"output": np.array(at.shape)})}
        return nir.NIRGraph(nodes=nodes, edges=[*self.edges, *((s, "output") for s in at.sources)])


def to_nir(
    model: nn.Module,
    in_shape: Shape,
    dt: float = DT,
    strict: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Exported:
    """The NIR graph of a :class:`~snnrun.net.model.SpikingNetwork` (weights as they are now).

    ``in_shape`` is one sample's shape (``[C, H, W]`` or ``[F]``). Blocks export their contents
    at any depth; a residual ``add`` becomes two branches whose edges meet at one node. The
    layers NIR cannot express are one :class:`NirError` naming each one's config path.
    """
    if not dt > 0:
        raise NirError(f"dt={dt}; give a positive time step in seconds (default {DT})")
    out = Exported(graph=None)
    writer = _Writer(tuple(in_shape), dt, strict, out)
    was_training = model.training
    model.eval()  # the shape probes must not update BatchNorm's statistics
    try:
        at = _Point(("input",), tuple(in_shape), False)
        for name, m in model.layers.named_children():
            at = writer.module(m, f"L{name}", at)
        at = writer.summed(at)
    finally:
        model.train(was_training)
    writer.refuse()
    out.graph = writer.graph(at)
    out.graph.metadata = {"source": "snnrun", "dt": float(dt), **(metadata or {})}
    return out


def _is_neuron(layer: type[nn.Module] | None) -> bool:
    return layer is not None and issubclass(layer, SpikingNeuron)


def _shape_after(layer: nn.Module, shape: Shape) -> Shape:
    if isinstance(layer, SpikingNeuron):
        return shape
    with torch.no_grad():
        return tuple(layer(torch.zeros(1, 1, *shape)).shape[2:])


# --- whole networks: import ---------------------------------------------------------------------
def _cycle(after: dict[str, list[str]], start: str) -> list[str]:
    """A cycle reachable from ``start``, as its nodes in order; ``[]`` when there is none."""
    path, on_path, done = [start], {start}, set()
    stack = [iter(after.get(start, []))]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            on_path.discard(node := path.pop())
            done.add(node)
        elif child in on_path:
            return path[path.index(child) :]
        elif child not in done:
            stack.append(iter(after.get(child, [])))
            path.append(child)
            on_path.add(child)
    return []


def _layer_type(module: nn.Module) -> str:
    """The layer type an imported module would have in a config."""
    if isinstance(module, SpikingNeuron):
        return "neuron"
    inner = module.module if isinstance(module, TimeFolded) else module
    row = _EXPORTS.get(type(inner))
    return row.name if row else type(inner).__name__.lower()


class _Reader:
    """A NIR graph as snnrun layers: chains, and forks whose branches merge again at one node
    (two: a residual ``add``, one branch may be a direct edge; more, or forks within: a graph
    block), nested at any depth."""

    def __init__(self, graph: Any, dt: float, neuron_groups: dict[str, Any], path: str) -> None:
        self.nodes, self.dt, self.groups, self.path = graph.nodes, dt, neuron_groups, path
        self.kinds = {k: type(n).__name__ for k, n in graph.nodes.items()}
        self.after: dict[str, list[str]] = {}
        self.before: dict[str, list[str]] = {}
        for a, b in graph.edges:
            for end in (a, b):
                if end not in self.nodes:
                    raise NirError(f"a NIR edge ({a!r}, {b!r}) names no node {end!r}")
            self.after.setdefault(a, []).append(b)
            self.before.setdefault(b, []).append(a)
        starts = [k for k, t in self.kinds.items() if t == "Input"]
        if len(starts) != 1:
            raise NirError(
                f"the NIR graph has {len(starts)} Input nodes; snnrun reads graphs with one input"
            )
        self.start = starts[0]
        loop = _cycle(self.after, self.start)
        if loop:
            names = " -> ".join(repr(n) for n in [*loop, loop[0]])
            raise NirError(
                f"the NIR graph loops ({names}: a recurrent connection); snnrun reads "
                "feed-forward graphs: chains, and branches that merge again (residual blocks)"
            )

    def name(self, node: str) -> str:
        return f"NIR node {node!r} ({self.kinds[node]})"

    def line(self, node: str, shape: Shape) -> tuple[list[nn.Module], Shape, str | None]:
        """The layers after ``node`` up to the Output (``None``), or up to a node where branches
        merge (its name: the join of the caller's fork)."""
        layers: list[nn.Module] = []
        while self.kinds[node] != "Output":
            nxt = self.after.get(node, [])
            if len(nxt) == 1 and len(self.before[nxt[0]]) > 1:
                return layers, shape, nxt[0]
            if len(nxt) >= 2:
                block, node = self.fork(node, shape)
                layers.append(block)
                shape = block.out_shape
            elif len(nxt) == 1:
                node = nxt[0]
            else:
                raise NirError(
                    f"{self.name(node)} feeds {len(nxt)} nodes; snnrun reads chains, and forks "
                    "into two branches that merge again (residual blocks)"
                    if nxt
                    else f"{self.name(node)} leads nowhere (no edge out, and it is no Output)"
                )
            if self.kinds[node] != "Output":
                more, shape = self.read(node, shape)
                layers += more
        return layers, shape, None

    def fork(self, fork: str, shape: Shape) -> tuple[nn.Module, str]:
        """The branches from ``fork`` up to the node where they all merge: a two-branch fork as
        a ``Residual``; any other (more branches, forks inside, merges of several) as a
        ``GraphBlock``; the node they merge at."""
        if len(self.after[fork]) == 2:
            try:
                return self.residual(fork, shape)
            except NirError as refusal:
                try:
                    return self.region(fork, shape)
                except NirError:
                    raise refusal from None
        return self.region(fork, shape)

    def region(self, fork: str, shape: Shape) -> tuple[GraphBlock, str]:
        """The nodes after ``fork`` up to the first node every one of its branches reaches (the
        join), as a graph block whose output is the join's sum of its inputs."""
        done, pending, order = {fork}, dict.fromkeys(self.after[fork]), []
        while True:
            ready = [n for n in pending if all(p in done for p in self.before[n])]
            if not ready:
                outside = next(p for n in pending for p in self.before[n] if p not in done)
                raise NirError(
                    f"the branches from {self.name(fork)} merge with {self.name(outside)}, "
                    "which does not branch from it; snnrun reads branches that merge again"
                )
            node = ready[0]
            if len(pending) == 1:  # every open edge ends here: the join
                break
            if self.kinds[node] == "Output":
                raise NirError(
                    f"the branches from {self.name(fork)} end at the Output before they merge; "
                    "snnrun reads branches that merge again at one node"
                )
            del pending[node]
            done.add(node)
            order.append(node)
            pending.update(dict.fromkeys(self.after.get(node, [])))
        return self.graph_of(fork, order, node, shape), node

    def graph_of(self, fork: str, order: list[str], join: str, shape: Shape) -> GraphBlock:
        """A graph block of the NIR nodes ``order`` between ``fork`` and ``join``."""
        key = {fork: INPUT}
        for n in [*order, join]:  # module names: no dots, each its own (the join's: "join")
            name = "join" if n == join else re.sub(r"[^A-Za-z0-9_]", "_", n)
            while name in key.values() or (n != join and name == "join"):
                name += "_"
            key[n] = name
        shapes = {INPUT: shape}
        nodes: dict[str, Block] = {}
        inputs: dict[str, list[str]] = {}
        for name in [*order, join]:
            sources = [key[p] for p in self.before[name]]
            given = {shapes[s] for s in sources}
            if len(given) != 1:
                shown = ", ".join(str(list(g)) for g in given)
                raise NirError(f"{self.name(name)} sums inputs of shapes {shown}; they must match")
            merged = shapes[sources[0]]
            modules, out = self.read(name, merged) if name != join else ([], merged)
            node = key[name]
            nodes[node], inputs[node], shapes[node] = Block(modules, out), sources, out
            nodes[node].snnrun_entry = Entry("node", f"{self.path}:{name}", out)
        merges = {n: ("add", 0) for n in nodes}
        block = GraphBlock(nodes, inputs, merges, key[join], shapes[key[join]])
        block.snnrun_entry = Entry("graph", f"{self.path}:{fork}..{join}", block.out_shape)
        return block

    def branch(self, first: str, shape: Shape) -> tuple[list[nn.Module], Shape, str | None]:
        """One branch of a fork, from its ``first`` node to the node where it merges."""
        if len(self.before[first]) > 1:  # a direct edge: the identity
            return [], shape, first
        layers, shape = self.read(first, shape)
        more, shape, end = self.line(first, shape)
        return layers + more, shape, end

    def residual(self, fork: str, shape: Shape) -> tuple[Residual, str]:
        """The two branches from ``fork`` as ``Residual(body, shortcut, "add")`` (a direct
        edge is the shortcut, else the first edge is the body), and the node they merge at."""
        (a, a_shape, a_end), (b, b_shape, b_end) = (
            self.branch(first, shape) for first in self.after[fork]
        )
        if a_end is None or a_end != b_end:
            ends = ", ".join("the Output" if e is None else repr(e) for e in (a_end, b_end))
            raise NirError(
                f"the two branches from {self.name(fork)} end at {ends}; snnrun reads "
                "branches that merge again at one node (residual blocks)"
            )
        if len(self.before[a_end]) != 2:
            raise NirError(
                f"{self.name(a_end)} sums {len(self.before[a_end])} inputs; snnrun reads merges "
                "of the two branches of one fork (residual blocks)"
            )
        if a_shape != b_shape:
            raise NirError(
                f"the branches from {self.name(fork)} give {list(a_shape)} and {list(b_shape)}; "
                f"{self.name(a_end)} sums them, so they must match"
            )
        body, shortcut = (b, a) if b and not a else (a, b)
        residual = Residual(Block(body, a_shape), Block(shortcut, a_shape), "add")
        residual.snnrun_entry = Entry("residual", f"{self.path}:{fork}..{a_end}", a_shape)
        return residual, a_end

    def read(self, name: str, shape: Shape) -> tuple[list[nn.Module], Shape]:
        """The snnrun layer(s) of one node, each marked with an :class:`Entry` naming it."""
        node, label = self.nodes[name], self.name(name)
        row = _IMPORTS.get(self.kinds[name])
        if row is None:
            raise NirError(
                f"{label} has no snnrun layer; snnrun reads {', '.join(sorted(_IMPORTS))}"
            )
        nxt = self.after.get(name, [])
        following = self.nodes[nxt[0]] if len(nxt) == 1 else None
        if not isinstance(getattr(node, "metadata", None), dict):
            node.metadata = {}
        modules = row.load(node, ImportStep(label, shape, self.dt, self.groups, following))
        for module in modules:
            shape = _checked_shape(module, shape, label)
            module.snnrun_entry = Entry(_layer_type(module), f"{self.path}:{name}", shape)
        return modules, shape


def from_nir(
    graph: Any,
    in_shape: Shape,
    neuron_groups: dict[str, Any],
    dt: float | None = None,
    path: str = "nir",
) -> list[nn.Module]:
    """snnrun layers for a NIR graph, given one sample's shape and the run's ``neuron`` /
    ``surrogate`` groups (backend, step mode, surrogate of the neurons).

    The graph is a chain in which a node may fork into branches that merge again at one node
    (NIR sums its inputs): two branches as a :class:`~snnrun.net.blocks.Residual` ``add``, any
    other fork as a :class:`~snnrun.net.graph.GraphBlock`, at any depth.
    Cycles, several inputs and other shapes are one :class:`NirError`. ``dt`` defaults to the
    graph's own ``metadata["dt"]`` (snnrun writes it), else :data:`DT`. Every module is marked
    with an :class:`Entry` whose path is ``path:<node name>``.
    """
    dt = float(dt if dt is not None else (graph.metadata or {}).get("dt", DT))
    reader = _Reader(graph, dt, neuron_groups, path)
    layers, _, stop = reader.line(reader.start, tuple(in_shape))
    if stop is not None:
        raise NirError(
            f"{reader.name(stop)} sums {len(reader.before[stop])} inputs that do not branch "
            "from one node before it; snnrun reads merges of the two branches of one fork"
        )
    return layers


def _checked_shape(module: nn.Module, shape: Shape, label: str) -> Shape:
    try:
        return _shape_after(module, shape)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise NirError(
            f"{label} cannot take input [{', '.join(map(str, shape))}]: {first}"
        ) from None


def read(path: str | Path) -> Any:
    """A NIR file as a graph; a missing or unreadable file is one line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise NirError(f"NIR file {path} does not exist; give model.path=<file.nir>")
    try:
        return nir.read(path)
    except Exception as e:  # h5py and nir raise many kinds
        raise NirError(f"cannot read {path} as NIR: {one_line(e)}") from None


@LAYERS.register("nir")
def _nir_layers(options: dict[str, Any], in_shape: Shape, ctx: Context) -> nn.Module:
    """``{type: nir, path: <file.nir>, dt: null}``: the graph's layers, one by one (the model
    builder splices an ``nn.Sequential`` into the network)."""
    options = dict(options)
    path, dt = options.pop("path", None), options.pop("dt", None)
    sha256 = options.pop("sha256", None)
    if options:
        raise TypeError(f"nir layer got unknown option(s): {', '.join(sorted(options))}")
    if not path:
        raise NirError("model=nir needs model.path=<file.nir>")
    if sha256 and Path(path).expanduser().is_file() and _sha256(path) != sha256:
        raise NirError(
            f"NIR file {path} changed since the run was built from it (its sha256 is not the "
            "run's); put back the file the run was trained on"
        )
    return nn.Sequential(*from_nir(read(path), in_shape, ctx.neuron_groups, dt, ctx.path))


def pin_files(model_options: dict[str, Any]) -> None:
    """Make every ``nir`` entry's path absolute and record the file's SHA-256 in the entry
    (once, at a fresh start), so that a resume, ``eval`` or ``load_run`` run from any folder
    rebuilds from the same file, and an edited file is refused rather than used."""
    for entry in walk_entries(model_options.get("layers")):
        if entry.get("type") == "nir" and entry.get("path"):
            entry["path"] = os.path.abspath(os.path.expanduser(entry["path"]))
            if not entry.get("sha256") and Path(entry["path"]).is_file():
                entry["sha256"] = _sha256(entry["path"])


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()
