"""NIR export and import of nested networks (``snnrun.nir.graph``): blocks, residuals, refusals.

- Round trip: residual networks built by snnrun's model builder (a spiking-ResNet block, a
  strided 1x1 conv + BN shortcut, two residuals in a row, residuals nested in a body and in a
  ``repeat``) are written with ``nir.write``, read back with ``nir.read`` + ``from_nir`` and
  give the same spikes in every neuron layer in eval mode (BatchNorm folded into the conv).
- The graph: a residual ``add`` is a fork whose branches' edges meet at one node (NIR sums a
  node's inputs); a sum that feeds another fork or ends the graph is one ``Scale`` of ones.
- Refusals are one line naming the entry's config path: ``and`` / ``iand``, ``recurrent``,
  ``module``, a layer with no row; on import: cycles, three-way forks, branches that never
  merge, a node that sums three inputs.
- The command: ``snnrun export <run dir> format=nir`` on a run trained with a residual model,
  read back with ``model=nir``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import nir
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from snnrun.api import build_network, load_run
from snnrun.net.blocks import Residual
from snnrun.net.layers import Entry
from snnrun.net.model import SpikingNetwork, build_model
from snnrun.neuron.neurons import SpikingNeuron
from snnrun.nir import graph as nir_graph
from snnrun.run.build import neuron_groups

from conftest import TINY, compose, lively, neuron_spikes, train_in_process

T, N = 6, 8
SHAPE, CLASSES = (2, 8, 8), 5


def conv(channels: int, kernel: int = 3, stride: int = 1) -> dict[str, Any]:
    pad = kernel // 2
    return {
        "type": "conv2d",
        "out_channels": channels,
        "kernel_size": kernel,
        "stride": stride,
        "padding": pad,
        "bias": False,
    }


BN, NEURON = {"type": "batchnorm2d"}, {"type": "neuron"}


def resnet_block(channels: int, stride: int = 1, shortcut: list | None = None) -> dict[str, Any]:
    """Spiking ResNet's basic block: conv-bn-neuron-conv-bn, added to the shortcut."""
    body = [conv(channels, 3, stride), BN, NEURON, conv(channels), BN]
    return {"type": "residual", "body": body, "shortcut": shortcut or [], "connect": "add"}


def sew_block(channels: int) -> dict[str, Any]:
    """SEW-ResNet's: conv-bn-neuron, added to the (identity) shortcut, no neuron after."""
    return {"type": "residual", "body": [conv(channels), BN, NEURON]}


HEAD = [conv(4), BN, NEURON]
TAIL = [{"type": "flatten"}, {"type": "linear", "out_features": CLASSES}, NEURON]
NETS = {
    "resnet_block": [*HEAD, resnet_block(4), NEURON, *TAIL],
    "strided_shortcut": [*HEAD, resnet_block(8, 2, [conv(8, 1, 2), BN]), NEURON, *TAIL],
    "two_in_a_row": [*HEAD, sew_block(4), sew_block(4), *TAIL],
    "nested": [
        *HEAD,
        {
            "type": "repeat",
            "times": 2,
            "layers": [
                {
                    "type": "residual",
                    "body": [
                        {"type": "sequential", "layers": [conv(4), BN]},
                        NEURON,
                        sew_block(4),
                    ],
                },
            ],
        },
        NEURON,
        {"type": "residual", "body": [{"type": "dropout", "p": 0.1}]},  # writes no node: x + x
        *TAIL,
    ],
    "residual_ends_the_net": [
        *HEAD,
        {"type": "flatten"},
        {
            "type": "residual",
            "body": [{"type": "linear", "out_features": 16}, NEURON],
            "shortcut": [{"type": "linear", "out_features": 16}, NEURON],
        },
        {"type": "linear", "out_features": 15},
        NEURON,
        {
            "type": "residual",
            "body": [{"type": "voting", "k": 3}, {"type": "neuron", "v_threshold": 0.3}],
            "shortcut": [{"type": "voting", "k": 3}, {"type": "neuron", "v_threshold": 0.2}],
        },
    ],
}


def _groups(kind: str = "if") -> dict[str, Any]:
    conf = OmegaConf.to_container(compose([f"neuron={kind}"]), resolve=True)
    return neuron_groups(conf)  # type: ignore[arg-type]


def _build(layers: list[dict[str, Any]], kind: str = "if") -> SpikingNetwork:
    """The network with random weights made lively (LIF halves its input: more so), random BN
    statistics, in eval mode."""
    torch.manual_seed(0)
    net = build_model({"layers": layers}, _groups(kind), SHAPE, CLASSES)
    return lively(net, 3.0 if kind == "if" else 10.0).eval()


def _round_trip(net: SpikingNetwork, tmp_path: Path, kind: str = "if"):
    exported = nir_graph.to_nir(net, SHAPE)
    path = tmp_path / "model.nir"
    nir.write(path, exported.graph)
    back = nir_graph.from_nir(nir.read(path), SHAPE, _groups(kind))
    return exported, SpikingNetwork(back).eval()


def _count_neurons(net: nn.Module) -> int:
    return sum(isinstance(m, SpikingNeuron) for m in net.modules())


def _residuals(net: nn.Module) -> list[Residual]:
    return [m for m in net.modules() if isinstance(m, Residual)]


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("kind", ["if", "lif"])
def test_residual_round_trip_gives_the_same_spikes(name: str, kind: str, tmp_path: Path) -> None:
    net = _build(NETS[name], kind)
    exported, back = _round_trip(net, tmp_path, kind)
    x = torch.rand(T, N, *SHAPE) * 2.0
    ours, theirs = neuron_spikes(net, x), neuron_spikes(back, x)
    assert len(ours) == len(theirs) > 0
    rates = [float(s.mean()) for s in ours]
    assert min(rates) > 0.0 and sum(rates) / len(rates) > 0.05, "silent layers prove nothing"
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.equal(a, b), f"neuron layer {i}: {(a != b).float().mean():.2e} differ"
    with torch.no_grad():
        assert torch.equal(net(x), back(x))
    assert len(_residuals(back)) == len(_residuals(net)) > 0
    for ours_r, back_r in zip(_residuals(net), _residuals(back)):
        assert back_r.connect == "add"
        for branch in ("body", "shortcut"):
            assert _count_neurons(getattr(back_r, branch)) == _count_neurons(
                getattr(ours_r, branch)
            )
    assert not exported.warnings


def _degree(graph: Any) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    after: dict[str, list[str]] = {}
    before: dict[str, list[str]] = {}
    for a, b in graph.edges:
        after.setdefault(a, []).append(b)
        before.setdefault(b, []).append(a)
    return after, before


def test_resnet_block_is_a_fork_with_fan_in() -> None:
    """The body's last conv (BN folded) and the identity shortcut (a direct edge from the
    neuron before the block) both feed the neuron after it; nodes are named by label path."""
    exported = nir_graph.to_nir(_build(NETS["resnet_block"]), SHAPE)
    graph = exported.graph
    after, before = _degree(graph)
    assert sorted(after["L2_if"]) == ["L3.body.0_conv2d", "L4_if"]
    assert sorted(before["L4_if"]) == ["L2_if", "L3.body.3_conv2d"]
    assert graph.nodes["L3.body.3_conv2d"].metadata.get("bn_folded") == 1
    assert not any(isinstance(n, nir.Scale) for n in graph.nodes.values())
    assert "L3.body.0 conv2d -> Conv2d" in exported.layers
    assert "L3.body.1 batchnorm2d -> folded into the conv before it" in exported.layers


def test_a_sum_that_feeds_two_nodes_is_one_scale_node() -> None:
    """Two SEW blocks in a row: the first block's sum feeds the second block's body and
    shortcut, so it is written once as a Scale of ones; the second's sum feeds the flatten."""
    graph = nir_graph.to_nir(_build(NETS["two_in_a_row"]), SHAPE).graph
    after, before = _degree(graph)
    scales = {k: n for k, n in graph.nodes.items() if isinstance(n, nir.Scale)}
    assert list(scales) == ["L3_add"]
    assert (
        scales["L3_add"].metadata["snnrun_layer"] == "add" and (scales["L3_add"].scale == 1).all()
    )
    assert sorted(before["L3_add"]) == ["L2_if", "L3.body.2_if"]
    assert sorted(after["L3_add"]) == ["L4.body.0_conv2d", "L5_flatten"]
    assert sorted(before["L5_flatten"]) == ["L3_add", "L4.body.2_if"]


def test_imported_parts_carry_entries(tmp_path: Path) -> None:
    """Nested parts of an imported residual carry an Entry naming the NIR node they came
    from, so summaries and monitors label them."""
    _, back = _round_trip(_build(NETS["strided_shortcut"]), tmp_path)
    residual = next(m for m in back.layers if isinstance(m, Residual))
    assert residual.snnrun_entry.type == "residual"
    assert residual.snnrun_entry.path == "nir:L2_if..L4_if"
    kinds = [m.snnrun_entry.type for m in residual.shortcut]
    assert (
        kinds == ["conv2d"] and residual.shortcut[0].snnrun_entry.path == "nir:L3.shortcut.0_conv2d"
    )
    assert residual.shortcut[0].snnrun_entry.shape == (8, 4, 4)
    labels = [label for label, _, _ in back.entries()]
    assert {"L2", "L2.body.1", "L2.shortcut.0"} <= set(labels)  # BN folded: one layer less


class Made(nn.Module):
    """A layer the export table does not know (as another helper's attention layer would be)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _made_up() -> SpikingNetwork:
    net = _build([*HEAD, *TAIL])
    made = Made()
    made.snnrun_entry = Entry("spiking_self_attention", "model.layers[3]", (4, 8, 8))
    return SpikingNetwork([*net.layers[:3], made, *net.layers[3:]]).eval()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: _build([*HEAD, {**sew_block(4), "connect": "and"}, *TAIL]),
            r"^model\.layers\[3\] \(residual\): connect=and multiplies spikes",
        ),
        (
            lambda: _build(
                [
                    *HEAD,
                    {
                        "type": "sequential",
                        "layers": [
                            {**resnet_block(4), "body": [conv(4), NEURON], "connect": "iand"}
                        ],
                    },
                    *TAIL,
                ]
            ),
            r"^model\.layers\[3\]\.layers\[0\] \(residual\): connect=iand multiplies spikes",
        ),
        (
            lambda: _build(
                [
                    *HEAD,
                    {"type": "flatten"},
                    {"type": "recurrent", "layers": [{"type": "linear"}]},
                    {"type": "linear", "out_features": CLASSES},
                    NEURON,
                ]
            ),
            r"^model\.layers\[4\] \(recurrent\): snnrun writes no NIR cycles",
        ),
        (
            lambda: _build(
                [
                    *HEAD,
                    {
                        "type": "residual",
                        "body": [{"type": "module", "_target_": "torch.nn.Identity"}],
                    },
                    *TAIL,
                ]
            ),
            r"^model\.layers\[3\]\.body\[0\] \(module\): a user module \(Identity\) has no NIR",
        ),
        (
            _made_up,
            r"^model\.layers\[3\] \(spiking_self_attention\): snnrun writes no NIR node for "
            r"Made; the layers that export are .*conv2d",
        ),
        (
            lambda: _build(
                [
                    *HEAD,
                    {
                        "type": "residual",
                        "body": [
                            {"type": "flatten"},
                            {"type": "layernorm"},
                            {"type": "linear", "out_features": 256},
                        ],
                        "shortcut": [{"type": "flatten"}],
                    },
                    *TAIL[1:],
                ]
            ),
            r"^model\.layers\[3\]\.body\[1\] \(layernorm\): snnrun writes no NIR node for "
            "LayerNorm",
        ),
        (
            lambda: _build([*HEAD, {"type": "residual", "body": [BN, NEURON]}, *TAIL]),
            r"^model\.layers\[3\]\.body\[0\] \(batchnorm2d\): BatchNorm exports folded",
        ),
    ],
    ids=["and", "iand", "recurrent", "module", "made_up", "layernorm", "bn_across_a_fork"],
)
def test_export_refusals_name_the_entry(make: Any, match: str) -> None:
    with pytest.raises(nir_graph.NirError, match=match) as e:
        nir_graph.to_nir(make(), SHAPE)
    assert "\n" not in str(e.value)


def _graph(nodes: dict[str, Any], edges: list[tuple[str, str]]) -> nir.NIRGraph:
    named = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        **nodes,
        "output": nir.Output(output_type={"output": np.array([4])}),
    }
    return nir.NIRGraph(named, edges, type_check=False)


def _lin(scale: float = 1.0) -> nir.Linear:
    return nir.Linear(weight=scale * np.eye(4, dtype=np.float32))


def _if() -> nir.IF:
    ones = np.ones(4, np.float32)
    return nir.IF(r=ones / nir_graph.DT, v_threshold=ones, v_reset=0 * ones)


def _chain(*names: str) -> list[tuple[str, str]]:
    return list(itertools.pairwise(names))


def test_import_reads_foreign_residual_graphs() -> None:
    """A residual whose merge node is the Output, and one whose shortcut edge is listed first:
    read as Residual blocks (the direct edge is the shortcut) that compute the NIR sum."""
    groups = _groups()
    nodes = {"a": _lin(2.0), "b": _if()}
    edges = [("input", "output"), ("input", "a"), *_chain("a", "b", "output")]
    (residual,) = nir_graph.from_nir(_graph(nodes, edges), (4,), groups)
    assert isinstance(residual, Residual) and len(residual.body) == 2 and not residual.shortcut
    net = SpikingNetwork([residual]).eval()
    x = torch.rand(5, 3, 4)
    with torch.no_grad():
        assert torch.equal(net(x), x + SpikingNetwork(list(residual.body))(x))


@pytest.mark.parametrize(
    "edges",
    [
        [("input", "a"), ("input", "b"), ("input", "c"), *_chain("a", "s"), *_chain("b", "s"),
         *_chain("c", "s"), ("s", "output")],
        [("input", "f"), ("f", "a"), ("f", "b"), ("a", "s"), ("b", "s"), ("input", "s"),
         ("s", "output")],
    ],
    ids=["three_way_fork", "fork_inside_a_fork"],
)  # fmt: skip
def test_import_reads_other_forks_as_a_graph_block(edges: list[tuple[str, str]]) -> None:
    """Three branches of one fork, or a fork whose branch forks again, all summed at one node:
    one graph block whose output sums them (every Linear the identity here: 3 x)."""
    from snnrun.net.graph import GraphBlock

    names = {a for a, _ in edges} | {b for _, b in edges}
    nodes = {n: _lin() for n in names - {"input", "output", "s"}}
    (block,) = nir_graph.from_nir(_graph({**nodes, "s": nir.Scale(scale=np.ones(4))}, edges),
                                  (4,), _groups())  # fmt: skip
    assert isinstance(block, GraphBlock) and block.output == "join"
    x = torch.rand(5, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(SpikingNetwork([block]).eval()(x), 3 * x)


@pytest.mark.parametrize(
    ("nodes", "edges", "match"),
    [
        (
            {"a": _lin(), "b": _if(), "c": _lin()},
            [*_chain("input", "a", "b", "c", "output"), ("c", "a")],
            r"the NIR graph loops \('a' -> 'b' -> 'c' -> 'a': a recurrent connection\)",
        ),
        (
            {"a": _lin(), "b": _if(), "output2": nir.Output(output_type={"output": np.array([4])})},
            [("input", "a"), ("input", "b"), ("a", "output"), ("b", "output2")],
            r"the two branches from NIR node 'input' \(Input\) end at the Output, the Output",
        ),
        (
            {"a": _lin(), "b": _lin(), "s": nir.Scale(scale=2 * np.ones(4))},
            [("input", "a"), ("input", "b"), ("a", "s"), ("b", "s"), ("s", "output")],
            r"NIR node 's' \(Scale\): a Scale other than ones has no snnrun layer",
        ),
        (
            {"a": _lin(), "z": _lin()},
            [("input", "a"), ("a", "output"), ("z", "output")],
            r"NIR node 'output' \(Output\) sums 2 inputs that do not branch from one node",
        ),
    ],
    ids=["cycle", "no_merge", "scale", "orphan_input"],
)
def test_import_refusals_are_one_line(
    nodes: dict[str, Any], edges: list[tuple[str, str]], match: str
) -> None:
    with pytest.raises(nir_graph.NirError, match=match) as e:
        nir_graph.from_nir(_graph(nodes, edges), (4,), _groups())
    assert "\n" not in str(e.value)


# --- the command --------------------------------------------------------------------------------
RESIDUAL_MODEL = (
    "model.layers=["
    "{type: conv2d, out_channels: 4, kernel_size: 3, stride: 2, padding: 1, bias: false},"
    "{type: batchnorm2d}, {type: neuron},"
    "{type: residual, body: ["
    "{type: conv2d, out_channels: 4, kernel_size: 3, padding: 1, bias: false},"
    "{type: batchnorm2d}, {type: neuron},"
    "{type: conv2d, out_channels: 4, kernel_size: 3, padding: 1, bias: false},"
    "{type: batchnorm2d}]}, {type: neuron},"
    "{type: residual, body: ["
    "{type: conv2d, out_channels: 8, kernel_size: 3, stride: 2, padding: 1, bias: false},"
    "{type: batchnorm2d}, {type: neuron}], shortcut: ["
    "{type: conv2d, out_channels: 8, kernel_size: 1, stride: 2, bias: false},"
    "{type: batchnorm2d}, {type: neuron}]},"
    "{type: avgpool2d, kernel_size: 7}, {type: flatten},"
    "{type: linear, out_features: 10}, {type: neuron}]"
)


def test_export_command_on_a_residual_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A run trained with a residual model: ``snnrun export`` writes its graph (labels in the
    printed lines), and ``model=nir`` rebuilds a network with the same spikes."""
    run_dir = tmp_path / "run"
    limits = ("dataset.train_limit=64", "dataset.test_limit=32")
    train_in_process(monkeypatch, *TINY, *limits, RESIDUAL_MODEL, f"hydra.run.dir={run_dir}")
    capsys.readouterr()
    train_in_process(monkeypatch, "export", str(run_dir), "format=nir")
    out = capsys.readouterr().out
    assert "L3.body.0 conv2d -> Conv2d" in out and "L5 residual(add) ->" in out
    path = run_dir / "export" / "model.nir"
    graph = nir.read(path)
    assert any(len(v) == 2 for v in _degree(graph)[1].values())  # a node sums two inputs
    run = load_run(run_dir)
    conf = OmegaConf.to_container(
        compose(["model=nir", f"model.path={path}", "neuron=if"]), resolve=True
    )
    rebuilt = build_network(conf, run.data).eval()  # type: ignore[arg-type]
    first = rebuilt.entries()[0][2]  # a spliced part keeps the entry its NIR node gave it
    assert first.type == "conv2d" and first.path.startswith("model.layers[0]:")
    assert len(_residuals(rebuilt)) == 2
    x = torch.rand(1, 8, 1, 28, 28).expand(4, 8, 1, 28, 28) * 2  # direct encoding: static head
    ours, theirs = neuron_spikes(run.model, x), neuron_spikes(rebuilt, x)
    assert len(ours) == len(theirs) == 6 and sum(float(s.mean()) for s in ours) > 0.05
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
