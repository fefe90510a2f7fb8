"""NIR for the neurons beyond one membrane: ``synaptic`` ↔ NIR's ``CubaLIF`` both ways, against
snnTorch's own NIR import and export; ``alif`` and ``psn`` refused in one line.

- Round trip: a ``linear → synaptic → linear → synaptic`` network (one alpha learned and moved)
  written, read back with ``from_nir``: the same alpha / beta to the bit, the same spikes.
- snnrun → NIR → snnTorch: snnTorch reads the file's alpha, beta and threshold; its importer
  builds reset-to-zero Synaptics (NIR's CubaLIF resets to ``v_reset``), which agree with snnrun
  up to each neuron's first spike; a snnTorch ``Synaptic`` with its default (subtractive) reset
  made from the imported parameters gives snnrun's spikes exactly.
- snnTorch → NIR → snnrun: a snnTorch ``Synaptic`` network (default reset) exported by snnTorch
  runs in snnrun with the same spikes.

Random real inputs: no membrane lands exactly on the threshold, where snnrun fires (``>=``) and
snnTorch / NIR do not (``>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nir
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from snnrun.net.model import SpikingNetwork, build_model
from snnrun.neuron.state_neurons import SynapticNeuron
from snnrun.nir import graph as nir_graph
from snnrun.run.build import neuron_groups

from conftest import compose, lively, neuron_spikes

T, N, F, HIDDEN, CLASSES = 18, 64, 20, 32, 5


def _groups() -> dict[str, Any]:
    return neuron_groups(OmegaConf.to_container(compose([]), resolve=True))  # type: ignore[arg-type]


def _synaptic_net(groups: dict[str, Any], **neuron: Any) -> SpikingNetwork:
    """``linear → synaptic → linear → synaptic`` with lively weights, in eval mode."""
    syn = {"type": "neuron", "name": "synaptic", "alpha": 0.7, "beta": 0.85, **neuron}
    layers = [
        {"type": "linear", "out_features": HIDDEN},
        syn,
        {"type": "linear", "out_features": CLASSES},
        syn,
    ]
    torch.manual_seed(0)
    net = lively(build_model({"layers": layers}, groups, (F,), CLASSES), 2.0)
    return net.eval()


def _inputs() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(T, N, F) * 1.5


def _write_read(graph: Any, path: Path) -> Any:
    nir.write(path, graph)
    return nir.read(path)


def _assert_equal(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    assert len(ours) == len(theirs) == 2
    assert all(0.02 < float(s.mean()) < 0.98 for s in ours), (
        "silent or saturated layers prove nothing"
    )
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.equal(a, b.to(a.dtype)), (
            f"neuron layer {i}: {(a != b).float().mean():.2e} differ"
        )


def test_synaptic_round_trip_gives_the_same_spikes(tmp_path: Path) -> None:
    groups = _groups()
    net = _synaptic_net(groups, learn_alpha=True)
    first = next(m for m in net.modules() if isinstance(m, SynapticNeuron))
    with torch.no_grad():
        first.alpha.fill_(0.3137)  # learned: exports as it is now (float32 taus would lose it)
    exported = nir_graph.to_nir(net, (F,))
    assert [type(n).__name__ for n in exported.graph.nodes.values()].count("CubaLIF") == 2
    assert sum("subtract" in w for w in exported.warnings) == 2  # NIR's reset is to v_reset
    both = r"model\.layers\[1\] \(neuron\), model\.layers\[3\] \(neuron\): synaptic"
    with pytest.raises(nir_graph.NirError, match=rf"^cannot write 2 entries as NIR: \(1\) {both}"):
        nir_graph.to_nir(net, (F,), strict=True)
    back = SpikingNetwork(
        nir_graph.from_nir(_write_read(exported.graph, tmp_path / "m.nir"), (F,), groups)
    ).eval()
    ours = [m for m in net.modules() if isinstance(m, SynapticNeuron)]
    theirs = [m for m in back.modules() if isinstance(m, SynapticNeuron)]
    assert len(theirs) == 2
    for a, b in zip(ours, theirs):
        assert (a.alpha.item(), a.beta.item()) == (b.alpha.item(), b.beta.item())
        assert isinstance(b.alpha, nn.Parameter) == isinstance(a.alpha, nn.Parameter)
    x = _inputs()
    _assert_equal(neuron_spikes(net, x), neuron_spikes(back, x))


@pytest.mark.peers
def test_cubalif_is_written_as_snntorch_writes_it() -> None:
    """``tau_syn = dt/(1-alpha)``, ``tau_mem = dt/(1-beta)``, ``w_in = tau_syn/dt``,
    ``r = tau_mem/dt``, ``v_leak = v_reset = 0``, as snnTorch's exporter for its Synaptic."""
    snn = pytest.importorskip("snntorch")
    from snntorch.export_nir import _extract_snntorch_module

    dt = nir_graph.DT
    net = _synaptic_net(_groups(), v_threshold=1.25)
    ours = nir_graph.to_nir(net, (F,), dt=dt).graph.nodes["L1_synaptic"]
    theirs = _extract_snntorch_module(
        snn.Synaptic(
            alpha=torch.full((HIDDEN,), 0.7),
            beta=torch.full((HIDDEN,), 0.85),
            threshold=torch.full((HIDDEN,), 1.25),
        )
    )
    for name in ("tau_syn", "tau_mem", "r", "w_in", "v_leak", "v_threshold", "v_reset"):
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-6)


def _snntorch_spikes(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Per snnTorch Synaptic layer: its spikes ``[T, N, ...]``, stepping ``x`` one step at a
    time."""
    snn = pytest.importorskip("snntorch")
    from snntorch import utils

    layers = [m for m in net.modules() if isinstance(m, snn.Synaptic)]
    seen: list[list[torch.Tensor]] = [[] for _ in layers]

    def keep(i: int):
        def hook(m: nn.Module, args: Any, out: Any) -> None:
            seen[i].append(out[0] if isinstance(out, tuple) else out)

        return hook

    hooks = [m.register_forward_hook(keep(i)) for i, m in enumerate(layers)]
    utils.reset(net)
    try:
        with torch.no_grad():
            for x_t in x:
                net(x_t)
    finally:
        for h in hooks:
            h.remove()
    return [torch.stack(s) for s in seen]


def _before_first_spike(s: torch.Tensor) -> torch.Tensor:
    """``[T, ...]`` mask: the steps up to and including each neuron's first spike."""
    return (s.cumsum(0) - s) == 0


@pytest.mark.peers
def test_snntorch_reads_snnruns_cubalif(tmp_path: Path) -> None:
    snn = pytest.importorskip("snntorch")
    from snntorch.import_nir import import_from_nir

    net = _synaptic_net(_groups())
    path = tmp_path / "synaptic.nir"
    nir.write(path, nir_graph.to_nir(net, (F,)).graph)
    peer = import_from_nir(nir.read(path))
    x = _inputs()
    ours = neuron_spikes(net, x)
    for m in peer.children():
        if isinstance(m, snn.Synaptic):  # the file's numbers, in snnTorch's units
            assert (m.alpha.item(), m.beta.item(), m.threshold.item()) == pytest.approx(
                (0.7, 0.85, 1.0), rel=1e-6
            )
    as_imported = _snntorch_spikes(peer, x)  # reset to zero: NIR's CubaLIF
    first = _before_first_spike(ours[0])
    assert torch.equal(ours[0][first], as_imported[0][first])
    assert any(not torch.equal(a, b) for a, b in zip(ours, as_imported))  # the resets differ
    equal = [round(float((a == b).float().mean()), 3) for a, b in zip(ours, as_imported)]
    print("snnrun -> snnTorch as imported (reset to zero), equal spikes per layer:", equal)
    _assert_equal(ours, _snntorch_spikes(_subtracting(peer), x))


def _subtracting(peer: nn.Module) -> nn.Module:
    """snnTorch's imported Synaptics (reset to zero) replaced by snnTorch's own Synaptic with its
    default subtractive reset, from the imported alpha, beta and threshold."""
    snn = pytest.importorskip("snntorch")
    for name, m in list(peer.named_children()):
        if isinstance(m, snn.Synaptic):
            setattr(peer, name, snn.Synaptic(m.alpha, m.beta, m.threshold, init_hidden=True))
    return peer


@pytest.mark.peers
def test_input_gains_divide_the_threshold_as_snntorch_does() -> None:
    """A CubaLIF with ``w_in = 1`` (input gain ``dt/tau_syn = 1/4``): snnrun, like snnTorch,
    reads it with the threshold divided by the gain; the same spikes."""
    pytest.importorskip("snntorch")
    from snntorch.import_nir import import_from_nir

    torch.manual_seed(3)
    cuba = _cubalif(HIDDEN)
    cuba.w_in, cuba.v_threshold = np.ones(HIDDEN), np.full(HIDDEN, 0.3)
    graph = _graph(nir.Linear(weight=torch.randn(HIDDEN, F).numpy() * 2.0), cuba)
    ours = SpikingNetwork(nir_graph.from_nir(graph, (F,), _groups())).eval()
    neuron = next(m for m in ours.modules() if isinstance(m, SynapticNeuron))
    assert neuron.dynamics.v_threshold == pytest.approx(0.3 * 4, rel=1e-6)
    x = _inputs()
    peer = _subtracting(import_from_nir(graph))
    (a,), (b,) = neuron_spikes(ours, x), _snntorch_spikes(peer, x)
    assert 0.02 < float(a.mean()) < 0.98 and torch.equal(a, b)


def _snntorch_synaptic_net() -> nn.Module:
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(2)

    def synaptic(n: int, **kw: Any) -> nn.Module:  # vectors: NIR's per-neuron arrays
        alpha, beta = torch.full((n,), 0.75), torch.full((n,), 0.8)
        return snn.Synaptic(alpha, beta, threshold=torch.ones(n), init_hidden=True, **kw)

    net = nn.Sequential(
        nn.Linear(F, HIDDEN),
        synaptic(HIDDEN),
        nn.Linear(HIDDEN, CLASSES),
        synaptic(CLASSES, output=True),
    )
    return lively(net, 2.0)


@pytest.mark.peers
@pytest.mark.filterwarnings("ignore:nirtorch.extract_nir_graph:DeprecationWarning")
def test_snnrun_reads_snntorchs_cubalif(tmp_path: Path) -> None:
    """snnTorch writes its (subtractive-reset) Synaptic as CubaLIF; snnrun reads CubaLIF as that
    Synaptic: the same spikes as the snnTorch network itself."""
    pytest.importorskip("snntorch")
    from snntorch.export_nir import export_to_nir

    peer = _snntorch_synaptic_net()
    graph = export_to_nir(peer, torch.zeros(1, F), ignore_dims=[0])
    assert sum(isinstance(n, nir.CubaLIF) for n in graph.nodes.values()) == 2
    layers = nir_graph.from_nir(_write_read(graph, tmp_path / "peer.nir"), (F,), _groups())
    ours = SpikingNetwork(layers).eval()
    x = _inputs()
    _assert_equal(neuron_spikes(ours, x), _snntorch_spikes(peer, x))


@pytest.mark.parametrize(
    ("kind", "options", "why"),
    [
        ("alif", {"tau_adapt": 50.0}, "adaptive threshold"),
        ("psn", {"T": 4}, "one matrix product over all T steps"),
    ],
)
def test_alif_and_psn_are_refused_in_one_line(kind: str, options: dict, why: str) -> None:
    layers = [
        {"type": "linear", "out_features": 8},
        {"type": "neuron", "name": kind, **options},
        {"type": "linear", "out_features": CLASSES},
    ]
    net = build_model({"layers": layers}, _groups(), (F,), CLASSES)
    with pytest.raises(nir_graph.NirError) as error:
        nir_graph.to_nir(net, (F,))
    message = str(error.value)
    assert "\n" not in message
    for needle in ("model.layers[1] (neuron)", f"{kind} (", why, "synaptic"):
        assert needle in message, (needle, message)


def _cubalif(n: int, **change: float) -> Any:
    """A CubaLIF of ``n`` neurons with unit input gains at dt = 1e-4 (alpha 0.75, beta 0.8)."""
    ones = np.ones(n)
    values = {"tau_syn": 4e-4, "tau_mem": 5e-4, "v_leak": 0.0, "v_reset": 0.0, **change}
    params = {k: v * ones for k, v in values.items()}
    params["r"], params["w_in"] = params["tau_mem"] / 1e-4, params["tau_syn"] / 1e-4
    return nir.CubaLIF(v_threshold=ones, **params)


def _graph(*nodes: Any) -> Any:
    """``Input → nodes... → Output`` (named ``n0``, ``n1``, ...)."""
    names = [f"n{i}" for i in range(len(nodes))]
    first, last = nodes[0], nodes[-1]
    shape = (
        np.array(first.weight.shape[1:]) if hasattr(first, "weight") else first.input_type["input"]
    )
    return nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": shape}),
            **dict(zip(names, nodes)),
            "output": nir.Output(output_type={"output": last.output_type["output"]}),
        },
        edges=list(zip(["input", *names], [*names, "output"])),
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"v_reset": 0.5}, "v_reset=0.5"),
        ({"v_leak": -0.2}, "v_leak=-0.2"),
        ({"tau_syn": 5e-5}, r"tau_syn/dt = 0.5 steps"),
    ],
)
def test_cubalif_that_synaptic_cannot_express_is_refused(change: dict, match: str) -> None:
    with pytest.raises(nir_graph.NirError, match=match) as error:
        nir_graph.from_nir(_graph(_cubalif(4, **change)), (4,), _groups())
    assert "\n" not in str(error.value) and "'n0' (CubaLIF)" in str(error.value)
