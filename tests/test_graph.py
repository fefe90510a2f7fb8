"""The ``graph`` block: named nodes merging their inputs (Inception, NAS cells); values against a
handwritten reference, shapes, summary rows, SynOps, errors by node path, step mode, and a
user's Inception network through the command (train, resume, viz, ONNX; NIR refused)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_blocks import BN, HEAD, IF, NEURON, conv, folded, if_neuron, net

from snnrun.engine.monitor import spike_fed
from snnrun.net.graph import GraphBlock
from snnrun.net.layers import ModelBuildError
from snnrun.net.summary import layer_rows
from snnrun.nir.graph import NirError, to_nir

from conftest import (
    assert_one_line_error,
    cli,
    neuron_spikes,
    read_metrics,
    resumed_equals_unbroken,
    train_in_process,
    user_model_args,
)


def inception(merge: str = "concat") -> dict:
    """Three branches of the input, joined, then a 1x1 mix added to the join and fired."""
    return {"type": "graph", "nodes": {
        "a": {"inputs": ["input"], "layers": [conv(2, kernel_size=1, padding=0), NEURON]},
        "b": {"inputs": ["input"], "layers": [conv(3), BN, NEURON]},
        "c": {"inputs": "input", "layers": [conv(2, kernel_size=5, padding=2), NEURON]},
        "cat": {"inputs": ["a", "b", "c"], "merge": merge},
        "mix": {"type": "conv2d", "out_channels": 7, "kernel_size": 1, "bias": False},
        "out": {"inputs": ["mix", "cat"], "layers": [NEURON]},
    }}  # fmt: skip


def lively(model: torch.nn.Module) -> torch.nn.Module:
    """Weights times 4: spikes in every node to compare."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4)
    return model


def test_an_inception_graph_equals_its_handwritten_reference() -> None:
    model = lively(net([conv(2), NEURON, inception(), *HEAD]))
    graph = model.layers[2]
    assert isinstance(graph, GraphBlock) and graph.out_shape == (7, 6, 6)
    x = torch.rand(4, 2, 2, 6, 6, dtype=torch.float64) * 2
    stem = if_neuron(folded(model.layers[0].module, x))
    nodes = graph.nodes
    a = if_neuron(folded(nodes["a"][0].module, stem))
    b = if_neuron(folded(nodes["b"][1].module, folded(nodes["b"][0].module, stem)))
    c = if_neuron(folded(nodes["c"][0].module, stem))
    cat = torch.cat((a, b, c), 2)
    out = if_neuron(folded(nodes["mix"][0].module, cat) + cat)
    with torch.no_grad():
        assert torch.equal(graph(stem), out)
    assert out.sum() > 0


def test_rows_labels_and_synops_follow_the_nodes() -> None:
    model = net([conv(2), NEURON, inception(), *HEAD])
    rows = {r[0]: r[1] for r in layer_rows(model, 4)}
    assert rows["L2 graph(-> out)"] == "[4, N, 7, 6, 6]"
    assert rows["L2.nodes.cat node(concat of a, b, c)"] == "[4, N, 7, 6, 6]"
    assert rows["L2.nodes.out node(add of mix, cat)"] == "[4, N, 7, 6, 6]"
    assert [n for n, _ in model.neurons()] == [
        "L1", "L2.nodes.a.1", "L2.nodes.b.2", "L2.nodes.c.1", "L2.nodes.out.0", "L5"]  # fmt: skip
    nodes = model.layers[2].nodes
    fed = spike_fed(model)
    assert {nodes[n][0].module for n in ("a", "b", "c", "mix")} <= fed  # spikes, and joined ones
    assert model.layers[4].module in fed


def bad(nodes: dict, **graph) -> dict:
    return {"type": "graph", "nodes": nodes, **graph}


def test_a_node_defaults_to_the_one_before_and_graphs_nest() -> None:
    """No ``inputs``: the node declared before (the first: the input); a graph inside a repeat
    and inside a node; ``mul`` and ``and`` of spikes; output defaults to the last node."""
    chain = bad({"p": {"layers": [conv(2), NEURON]}, "q": {"layers": [conv(2), NEURON]},
                 "r": {"inputs": ["p", "q"], "merge": "and"}})  # fmt: skip
    outer = bad({"g": {"layers": [chain]}, "h": {"inputs": ["g", "input"], "merge": "mul"}})
    model = lively(net([conv(2), NEURON, {"type": "repeat", "times": 2, "layers": [outer]}, *HEAD]))
    inner = model.layers[2][0][0].nodes["g"][0]
    assert inner.inputs == {"p": ["input"], "q": ["p"], "r": ["p", "q"]}
    x = torch.rand(3, 2, 2, 6, 6, dtype=torch.float64) * 3
    stem = if_neuron(folded(model.layers[0].module, x))
    p = if_neuron(folded(inner.nodes["p"][0].module, stem))
    q = if_neuron(folded(inner.nodes["q"][0].module, p))
    with torch.no_grad():
        assert torch.equal(inner(stem), p * q)
        assert torch.equal(model.layers[2][0][0](stem), p * q * stem)


def test_step_by_step_equals_multi_step_through_a_graph() -> None:
    layers = [conv(2), NEURON, inception(), *HEAD]
    x = torch.rand(5, 2, 2, 6, 6, dtype=torch.float64) * 3
    with torch.no_grad():
        multi, single = lively(net(layers))(x), lively(net(layers, step_mode="s"))(x)
    assert torch.equal(multi, single) and multi.sum() > 0


@pytest.mark.parametrize(
    ("entry", "needle"),
    [(bad({"a": {"inputs": ["z"], "layers": [conv(2)]}}),
      r"\.nodes\.a: input 'z' is no node; the nodes are a \(and input"),
     (bad({"a": {"inputs": ["b"], "layers": [conv(2)]}, "b": {"inputs": ["a"]}}),
      r"\.nodes\.a: its inputs form a cycle"),
     (bad({"a": {"layers": [conv(2)]}, "b": {"inputs": ["input"], "layers": [conv(2)]}}),
      r"\.nodes\.a: the output 'b' never reads it"),
     (bad({"a": {"layers": [conv(2, stride=2)]}, "b": {"inputs": ["a", "input"]}}),
      r"\.nodes\.b: merge=add needs inputs of one shape, got \[T, N, 2, 3, 3\] and "
      r"\[T, N, 2, 6, 6\]"),
     (bad({"a": {"layers": [conv(2, stride=2)]}, "b": {"inputs": ["a", "input"],
                                                       "merge": "concat"}}),
      r"\.nodes\.b: merge=concat joins along dim 0, so its inputs"),
     (bad({"a": {"layers": [conv(2)]}, "b": {"inputs": ["a", "input"], "merge": "and"}}),
      r"\.nodes\.b: merge=and acts on spikes, so input 'a' must end with a \{type: neuron\}"),
     (bad({"a": {"layers": [conv(2)]}, "b": {"inputs": ["a", "input"], "merge": "or"}}),
      r"\.nodes\.b: unknown merge 'or'; known: add, mul, and, iand, concat"),
     (bad({"a": {"layers": [conv(2)], "kernel": 3}}), r"\.nodes\.a: unknown key\(s\) kernel"),
     (bad({"a": {"layers": [conv(2)]}}, output="z"), r" \(graph\): output 'z' is no node"),
     (bad({"a": {"layers": [{"type": "conv3d"}]}}), r"\.nodes\.a\.layers\[0\] \(conv3d\)"),
     (bad({"a.b": {"layers": [conv(2)]}}), r" \(graph\): 'a\.b' cannot name a node"),
     (bad({"input": {"layers": [conv(2)]}}), r" \(graph\): 'input' cannot name a node")],
)  # fmt: skip
def test_a_bad_graph_names_the_node(entry: dict, needle: str) -> None:
    with pytest.raises(ModelBuildError, match=r"model\.layers\[1\]" + needle):
        net([conv(2), entry, *HEAD])


def add_graph() -> dict:
    """Three branches summed, a branch that reads another's output, the input added twice."""
    return bad({
        "a": {"inputs": ["input"], "layers": [conv(2, kernel_size=1, padding=0), NEURON]},
        "b": {"inputs": ["input"], "layers": [conv(2), BN, NEURON]},
        "c": {"inputs": ["a"], "layers": [conv(2, kernel_size=5, padding=2), BN, NEURON]},
        "s": {"inputs": ["a", "b", "c", "input"]},
        "t": {"inputs": ["s", "input", "input"], "layers": [NEURON]},
    })  # fmt: skip


@pytest.mark.parametrize("kind", ["if", "lif"])
def test_nir_round_trip_of_an_add_graph_gives_the_same_spikes(kind: str, tmp_path: Path) -> None:
    """Merges by ``add`` export as fan-in edges (NIR sums a node's inputs) and read back as a
    graph block: the same spikes at every neuron and the same output."""
    import nir

    from snnrun.net.model import SpikingNetwork
    from snnrun.nir.graph import from_nir

    neuron = {"name": kind, **({"tau": 2.0} if kind == "lif" else {})}
    model = lively(net([conv(2), NEURON, add_graph(), *HEAD], **neuron)).float()
    exported = to_nir(model, (2, 6, 6), 1e-3)
    nir.write(tmp_path / "g.nir", exported.graph)
    groups = {"neuron": {**IF, **neuron}, "surrogate": {"name": "atan", "alpha": 2.0}}
    back = SpikingNetwork(from_nir(nir.read(tmp_path / "g.nir"), (2, 6, 6), groups)).eval()
    assert any(isinstance(m, GraphBlock) for m in back.modules())
    x = torch.rand(4, 3, 2, 6, 6) * (2 if kind == "if" else 6)  # LIF halves its input
    ours, theirs = neuron_spikes(model, x), neuron_spikes(back, x)
    assert len(ours) == len(theirs) == 6 and all(s.sum() > 0 for s in ours[:5])  # the graph
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(model(x), back(x))
    assert not exported.warnings


def test_nir_export_refuses_a_concat_merge_in_one_line() -> None:
    model = net([conv(2), NEURON, inception(), *HEAD])
    with pytest.raises(NirError, match=r"\[2\] \(graph\): node cat merges by concat, which NIR"):
        to_nir(model.float(), (2, 6, 6), 1e-3)


INCEPTION_NET = """\
name: inception_tiny
classes: auto
layers:
  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1, bias: false}
  - {type: batchnorm2d}
  - {type: neuron}
  - {type: maxpool2d, kernel_size: 2, stride: 2}
  - type: graph
    nodes:
      a:
        inputs: [input]
        layers:
          - {type: conv2d, out_channels: 2, kernel_size: 1, bias: false}
          - {type: batchnorm2d}
          - {type: neuron}
      b:
        inputs: [input]
        layers:
          - {type: conv2d, out_channels: 3, kernel_size: 3, padding: 1, bias: false}
          - {type: batchnorm2d}
          - {type: neuron}
      c: {inputs: [input], layers: [{type: maxpool2d, kernel_size: 3, stride: 1, padding: 1}]}
      out: {inputs: [a, b, c], merge: concat}
  - {type: maxpool2d, kernel_size: 2, stride: 2}
  - {type: flatten}
  - {type: linear, out_features: "${model.classes}", bias: false}
  - {type: neuron}
"""


@pytest.fixture
def inception_args(tmp_path: Path) -> list[str]:
    return user_model_args(tmp_path, "inception_tiny", INCEPTION_NET)


def test_a_users_inception_net_trains_resumes_renders_and_exports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, inception_args: list[str], capsys
) -> None:
    """2 epochs unbroken equal 1 resumed to 2; every nested neuron has its firing rate; viz
    renders; ONNX export matches onnxruntime (spikes equal)."""
    whole = resumed_equals_unbroken(monkeypatch, tmp_path, inception_args)
    records = read_metrics(whole)
    rates = sorted(k for k in records[-1] if k.startswith("firing_rate/"))
    assert rates == ["firing_rate/L2", "firing_rate/L4.nodes.a.2", "firing_rate/L4.nodes.b.2",
                     "firing_rate/L8"]  # fmt: skip
    train_in_process(monkeypatch, "viz", str(whole))
    assert list((whole / "figures").glob("*.png"))
    capsys.readouterr()
    train_in_process(monkeypatch, "export", str(whole), "format=onnx")
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out


ADD_NET = INCEPTION_NET.replace("out: {inputs: [a, b, c], merge: concat}",
                                 "out: {inputs: [a, b, input], layers: [{type: neuron}]}").replace(
    "out_channels: 2, kernel_size: 1", "out_channels: 4, kernel_size: 1").replace(
    "out_channels: 3, kernel_size: 3", "out_channels: 4, kernel_size: 3").replace(
    "      c: {inputs: [input], layers: [{type: maxpool2d, kernel_size: 3, stride: 1, "
    "padding: 1}]}\n", "")  # fmt: skip


def test_an_add_graph_exports_to_nir_through_the_command(monkeypatch, tmp_path: Path) -> None:
    """A user's graph of add merges trains, and ``snnrun export format=nir`` writes it; read
    back, its spikes equal the run's network's."""
    import nir

    from snnrun.api import load_run
    from snnrun.net.model import SpikingNetwork
    from snnrun.nir.graph import from_nir
    from snnrun.run.build import neuron_groups

    run = tmp_path / "run"
    args = user_model_args(tmp_path, "add_net", ADD_NET)
    train_in_process(monkeypatch, *args, "epochs=1", f"hydra.run.dir={run}")
    train_in_process(monkeypatch, "export", str(run), "format=nir")
    loaded = load_run(run, "latest", "cpu")
    graph = nir.read(run / "export" / "model.nir")
    back = SpikingNetwork(from_nir(graph, (1, 28, 28), neuron_groups(loaded.config))).eval()
    assert any(isinstance(m, GraphBlock) for m in back.modules())  # a fork of three branches
    x = torch.rand(4, 2, 1, 28, 28) * 3
    ours, theirs = neuron_spikes(loaded.model, x), neuron_spikes(back, x)
    assert len(ours) == len(theirs) and sum(float(s.sum()) for s in ours) > 0
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_a_bad_graph_through_the_command_is_one_line(
    monkeypatch, capsys, tmp_path: Path, inception_args: list[str]
) -> None:
    code, err = cli(monkeypatch, capsys, *inception_args, "model.layers.4.nodes.out.inputs=[a,z]",
                    f"hydra.run.dir={tmp_path / 'bad'}")  # fmt: skip
    assert_one_line_error(code, err, "model.layers[4].nodes.out: input 'z' is no node")
    assert not (tmp_path / "bad").exists()
