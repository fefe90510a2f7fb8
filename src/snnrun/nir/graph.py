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

NIR has no subtractive ("soft") reset: such neurons (``v_reset: null``, ``leaky``) are written
as NIR's reset-to-``v_reset`` node with ``snnrun_reset: subtract`` in the node's metadata, read
back exactly by snnrun, and with a warning (``strict=True``: refused). BatchNorm is folded into
the convolution before it; dropout is the identity at inference and is left out; ``voting`` is a
``Linear`` of ``1/k`` blocks; a max pool over spikes is ``SumPool2d`` then ``Threshold(0.5)``
(exact on 0/1 inputs). Every node written by snnrun names its row in ``metadata["snnrun_layer"]``.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from snnrun.core.errors import SnnrunError, one_line
from snnrun.net.layers import (
    LAYERS,
    Context,
    MultiStepDropout,
    Shape,
    TimeFolded,
    Voting,
    walk_entries,
)
from snnrun.net.neuron import IFNeuron, LeakyNeuron, LIFNeuron, PLIFNeuron, SpikingNeuron

DT = 1e-4  # seconds per step, as snnTorch and SpikingJelly write NIR
LAYER_KEY = "snnrun_layer"  # node metadata: the snnrun row that wrote the node
RESET_KEY = "snnrun_reset"  # node metadata: "subtract" for a soft reset NIR cannot express


class NirError(SnnrunError):
    """A network or NIR graph that the mapping cannot carry over."""


# --- export: snnrun layers → NIR nodes ------------------------------------------------------------
@dataclass
class ExportStep:
    """What an exporter knows about the layer it writes."""

    label: str  # "model layer 3 (neuron)"
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


def _voting_to(m: Voting, s: ExportStep) -> list[Any]:
    """Averaging groups of ``k`` neighbours is a Linear with ``1/k`` blocks."""
    (features,) = s.shape
    weight = np.kron(np.eye(features // m.k, dtype=np.float32), _full((1, m.k), 1.0 / m.k))
    return [nir.Linear(weight=weight, metadata=_meta("voting", k=m.k))]


def _reset(m: SpikingNeuron, s: ExportStep, kind: str) -> tuple[float, dict[str, Any]]:
    """(NIR's v_reset, metadata) for a neuron; a soft reset is warned about (or refused)."""
    d = m.dynamics
    if d.hard_reset:
        return d.v_reset, _meta(kind)
    why = "snnTorch's Leaky resets by subtraction" if kind == "leaky" else "v_reset=null"
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
    return 0.0, _meta(kind, **{RESET_KEY: "subtract"})


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


def _lif_node(tau_steps: float, m: SpikingNeuron, s: ExportStep, kind: str) -> list[Any]:
    v_reset, meta = _reset(m, s, kind)
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


# --- import: NIR nodes → snnrun layers ------------------------------------------------------------
@dataclass
class ImportStep:
    """What an importer knows about the node it reads."""

    label: str  # "NIR node 'lif_1' (LIF)"
    shape: Shape  # per-sample input shape
    dt: float
    neuron_groups: dict[str, Any]  # the run's neuron / surrogate groups (backend, step mode...)
    following: Any = None  # the next node in the chain


def _layer(kind: str, options: dict[str, Any], s: ImportStep) -> nn.Module:
    return LAYERS.get(kind)(options, s.shape, Context(s.neuron_groups))


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
                "kind": "if",
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
        return [_neuron({"kind": "leaky", "beta": beta, "v_threshold": thr}, s)]
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
        neuron = _neuron({"kind": "plif", "init_tau": tau_steps, **options}, s)
        _set(neuron.w, np.array(-math.log(tau_steps - 1.0)))
        return [neuron]
    return [_neuron({"kind": "lif", "tau": _f32(tau_steps), **options}, s)]


# --- the table ------------------------------------------------------------------------------------
Exporter = Callable[[Any, ExportStep], list[Any]]
Importer = Callable[[Any, ImportStep], list[nn.Module]]


@dataclass(frozen=True)
class Row:
    """One snnrun layer ↔ NIR node(s) mapping."""

    name: str  # the snnrun layer type (or neuron kind)
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
    Row("voting", Voting, ("Linear",), _voting_to, _linear_from, note="Linear of 1/k blocks"),
    Row("if", IFNeuron, ("IF",), _if_to, _if_from),
    Row("lif", LIFNeuron, ("LIF",), _lif_to, _lif_from),
    Row("plif", PLIFNeuron, ("LIF",), _plif_to, _lif_from, note="learned tau written as tau"),
    Row("leaky", LeakyNeuron, ("LIF",), _leaky_to, _lif_from, note="snnTorch's beta <-> tau"),
)
_EXPORTS = {row.layer: row for row in TABLE if row.export is not None}
# a node is read by the first row that loads its type; the loader picks by the node's metadata
_IMPORTS = {n: row for row in reversed(TABLE) if row.load is not None for n in row.nodes}


# --- whole networks -----------------------------------------------------------------------------
@dataclass
class Exported:
    """A network as a NIR graph, and what did not map one-to-one."""

    graph: Any
    warnings: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # "L0 conv2d -> conv2d" per node


def to_nir(
    model: nn.Module,
    in_shape: Shape,
    dt: float = DT,
    strict: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Exported:
    """The NIR graph of a :class:`~snnrun.net.model.SpikingNetwork` (weights as they are now).

    ``in_shape`` is one sample's shape (``[C, H, W]`` or ``[F]``). A layer NIR cannot express
    is one :class:`NirError` naming it.
    """
    if not dt > 0:
        raise NirError(f"dt={dt}; give a positive time step in seconds (default {DT})")
    names = [getattr(m, "snnrun_entry", None) for m in model.layers]
    names = [e.kind if e else type(m).__name__ for e, m in zip(names, model.layers)]
    out = Exported(graph=None)
    was_training = model.training
    model.eval()  # the shape probes must not update BatchNorm's statistics
    try:
        nodes, shape = _export_layers(model, names, tuple(in_shape), dt, strict, out)
    finally:
        model.train(was_training)
    graph_nodes = {
        "input": nir.Input(input_type={"input": np.array(in_shape)}),
        **dict(nodes),
        "output": nir.Output(output_type={"output": np.array(shape)}),
    }
    order = list(graph_nodes)
    graph = nir.NIRGraph(nodes=graph_nodes, edges=list(itertools.pairwise(order)))
    graph.metadata = {"source": "snnrun", "dt": float(dt), **(metadata or {})}
    out.graph = graph
    return out


def _export_layers(
    model: nn.Module, names: list[str], shape: Shape, dt: float, strict: bool, out: Exported
) -> tuple[list[tuple[str, Any]], Shape]:
    """``(node name, node)`` for every layer, and the network's output shape."""
    nodes: list[tuple[str, Any]] = []
    spikes = False
    for i, (kind, layer) in enumerate(zip(names, model.layers)):
        module = layer.module if isinstance(layer, TimeFolded) else layer
        label = f"model layer {i} ({kind})"
        row = _EXPORTS.get(type(module))
        if row is None:
            raise NirError(
                f"{label}: NIR has no node for {type(module).__name__}; the layers "
                f"that export are {', '.join(sorted(r.name for r in TABLE if r.export))}"
            )
        step = ExportStep(label, shape, dt, strict, spikes, [n for _, n in nodes], out.warnings)
        written = row.export(module, step)
        for j, node in enumerate(written):
            nodes.append((f"L{i}_{row.name}" + (f"_{j}" if j else ""), node))
        became = ", ".join(type(n).__name__ for n in written) or row.note or "nothing"
        out.layers.append(f"L{i} {row.name} -> {became}")
        spikes = isinstance(module, SpikingNeuron) or (row.keeps_spikes and spikes)
        shape = _shape_after(layer, shape)
    return nodes, shape


def _shape_after(layer: nn.Module, shape: Shape) -> Shape:
    if isinstance(layer, SpikingNeuron):
        return shape
    with torch.no_grad():
        return tuple(layer(torch.zeros(1, 1, *shape)).shape[2:])


def chain(graph: Any) -> list[tuple[str, Any]]:
    """The graph's nodes from its Input to its Output, which must form one chain."""
    kinds = {k: type(n).__name__ for k, n in graph.nodes.items()}
    starts = [k for k, t in kinds.items() if t == "Input"]
    if len(starts) != 1:
        raise NirError(
            f"the NIR graph has {len(starts)} Input nodes; snnrun reads graphs with one input"
        )
    after: dict[str, list[str]] = {}
    before: dict[str, int] = {}
    for a, b in graph.edges:
        after.setdefault(a, []).append(b)
        before[b] = before.get(b, 0) + 1
    order, node = [], starts[0]
    while kinds[node] != "Output":
        nxt = after.get(node, [])
        if len(nxt) != 1 or before.get(nxt[0], 0) != 1 or nxt[0] in order:
            raise NirError(
                f"NIR node {node!r} ({kinds[node]}) branches, merges or loops; snnrun "
                "builds feed-forward chains (no recurrence or skip connections)"
            )
        node = nxt[0]
        order.append(node)
    return [(k, graph.nodes[k]) for k in order[:-1]]


def from_nir(
    graph: Any, in_shape: Shape, neuron_groups: dict[str, Any], dt: float | None = None
) -> list[nn.Module]:
    """snnrun layers for a NIR graph (a feed-forward chain), given one sample's shape and the
    run's ``neuron`` / ``surrogate`` groups (backend, step mode, surrogate of the neurons).

    ``dt`` defaults to the graph's own ``metadata["dt"]`` (snnrun writes it), else :data:`DT`.
    """
    dt = float(dt if dt is not None else (graph.metadata or {}).get("dt", DT))
    steps = chain(graph)
    layers: list[nn.Module] = []
    shape = tuple(in_shape)
    for i, (name, node) in enumerate(steps):
        kind = type(node).__name__
        label = f"NIR node {name!r} ({kind})"
        row = _IMPORTS.get(kind)
        if row is None:
            known = ", ".join(sorted(_IMPORTS))
            raise NirError(f"{label} has no snnrun layer; snnrun reads {known}")
        following = steps[i + 1][1] if i + 1 < len(steps) else None
        if not isinstance(getattr(node, "metadata", None), dict):
            node.metadata = {}
        for module in row.load(node, ImportStep(label, shape, dt, neuron_groups, following)):
            layers.append(module)
            shape = _checked_shape(module, shape, label)
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
    return nn.Sequential(*from_nir(read(path), in_shape, ctx.neuron_groups, dt))


def pin_files(model_conf: dict[str, Any]) -> None:
    """Make every ``nir`` entry's path absolute and record the file's SHA-256 in the entry
    (once, at a fresh start), so that a resume, ``eval`` or ``load_run`` run from any folder
    rebuilds from the same file, and an edited file is refused rather than used."""
    for entry in walk_entries(model_conf.get("layers")):
        if entry.get("type") == "nir" and entry.get("path"):
            entry["path"] = os.path.abspath(os.path.expanduser(entry["path"]))
            if not entry.get("sha256") and Path(entry["path"]).is_file():
                entry["sha256"] = _sha256(entry["path"])


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()
