"""NIR export and import (``snnrun.nir.graph``, ``snnrun export``, ``model=nir``).

- Round trip: every zoo model NIR can express is written with ``nir.write``, read back with
  ``nir.read``, rebuilt in snnrun, and gives the same spikes in every neuron layer on the same
  input (BatchNorm folded into the conv: equal to float tolerance, in practice every spike).
  ``snntorch_csnn`` (a max pool over real values) and strict soft-reset exports are refused as
  one line naming the layer.
- Cross-library (``peers``): snnrun's graph run by snnTorch's NIR importer, and a snnTorch
  network's graph run by snnrun, for T steps; per neuron layer the share of equal spikes and the
  largest membrane difference. Where the semantics differ (snnTorch imports every LIF as
  reset-to-zero, fires on ``>`` where snnrun fires on ``>=``, refuses NIR's IF with ``r != 1``)
  the tests show the difference; ``docs/nir.md`` states it.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import nir
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from snnrun.api import build_network, load_run
from snnrun.cli import command as cli
from snnrun.cli import export as export_verb
from snnrun.core.errors import SnnrunError
from snnrun.net.model import SpikingNetwork
from snnrun.neuron.neurons import SpikingNeuron
from snnrun.nir import graph as nir_graph
from snnrun.run.build import neuron_groups
from snnrun.run.checkpoint import load_checkpoint
from snnrun.run.rundir import CHECKPOINTS, RunDir

from conftest import TINY, compose, lively, make_read_only, neuron_spikes, train_tiny
from conftest import cli as run_cli

T, N = 6, 16


def _conf(overrides: list[str]) -> dict[str, Any]:
    return OmegaConf.to_container(compose(overrides), resolve=True)  # type: ignore[return-value]


def _net(overrides: list[str], shape: tuple[int, ...], classes: int) -> SpikingNetwork:
    """A zoo model with random weights made lively, random BN statistics, in eval mode."""
    torch.manual_seed(0)
    net = build_network(_conf(overrides), {"sample_shape": list(shape), "num_classes": classes})
    return lively(net, 3.0).eval()


def _round_trip(net: SpikingNetwork, shape: tuple[int, ...], tmp_path: Path, conf: dict):
    exported = nir_graph.to_nir(net, shape)
    path = tmp_path / "model.nir"
    nir.write(path, exported.graph)
    layers = nir_graph.from_nir(nir.read(path), shape, neuron_groups(conf))
    return exported, SpikingNetwork(layers).eval()


ZOO = {  # model: (overrides, sample shape, classes)
    "fc": (["model=fc", "neuron=if"], (1, 28, 28), 10),
    "csnn": (["model=csnn", "model.channels=4", "neuron=lif"], (1, 28, 28), 10),
    "csnn_plif": (["model=csnn", "model.channels=4", "neuron=plif"], (1, 28, 28), 10),
    "mlp": (["model=mlp", "model.hidden=32", "neuron=lif", "neuron.decay_input=false"], (70,), 20),
    "fc_leaky": (["model=fc", "neuron=leaky"], (1, 28, 28), 10),
    "plif_net": (["model=plif_net", "model.channels=4", "neuron=plif"], (2, 32, 32), 11),
}


@pytest.mark.parametrize("name", list(ZOO))
def test_round_trip_gives_the_same_spikes(name: str, tmp_path: Path) -> None:
    overrides, shape, classes = ZOO[name]
    net = _net(overrides, shape, classes)
    exported, back = _round_trip(net, shape, tmp_path, _conf(overrides))
    x = torch.rand(T, N, *shape) * 2.0
    ours, theirs = neuron_spikes(net, x), neuron_spikes(back, x)
    assert len(ours) == len(theirs) > 0
    assert sum(float(s.mean()) for s in ours) > 0.05, "a silent network proves nothing"
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.equal(a, b), f"neuron layer {i}: {(a != b).float().mean():.2e} differ"
    with torch.no_grad():
        assert torch.equal(net(x), back(x))
    kinds = {type(m) for m in net.modules() if isinstance(m, SpikingNeuron)}
    assert kinds == {type(m) for m in back.modules() if isinstance(m, SpikingNeuron)}
    assert any("subtract" in w for w in exported.warnings) == (name == "fc_leaky")


def test_export_writes_the_documented_nodes(tmp_path: Path) -> None:
    """csnn: BN folded into the conv (with a bias), max pool over spikes as SumPool2d +
    Threshold, LIF with tau = tau_steps x dt, r = 1 (decay_input) and v_leak = v_reset."""
    overrides, shape, classes = ZOO["csnn"]
    graph = nir_graph.to_nir(_net(overrides, shape, classes), shape).graph
    kinds = [type(n).__name__ for n in graph.nodes.values()]
    assert kinds == [
        "Input",
        "Conv2d",
        "LIF",
        "SumPool2d",
        "Threshold",
        "Conv2d",
        "LIF",
        "SumPool2d",
        "Threshold",
        "Flatten",
        "Linear",
        "LIF",
        "Linear",
        "LIF",
        "Output",
    ]
    lif = graph.nodes["L2_lif"]
    np.testing.assert_allclose(lif.tau, 2.0 * nir_graph.DT)
    assert (lif.r == 1).all() and (lif.v_leak == 0).all() and (lif.v_threshold == 1).all()
    assert graph.nodes["L0_conv2d"].bias.any()  # BN's shift
    assert graph.metadata["dt"] == nir_graph.DT


def test_snntorch_csnn_and_strict_soft_reset_are_refused() -> None:
    overrides, shape, classes = ["model=snntorch_csnn"], (1, 28, 28), 10
    with pytest.raises(
        nir_graph.NirError,
        match=r"model\.layers\[1\] \(maxpool2d\), model\.layers\[4\] \(maxpool2d\): NIR has no max",
    ):
        nir_graph.to_nir(_net(overrides, shape, classes), shape)
    soft = _net(["model=fc", "neuron=lif", "neuron.v_reset=null"], shape, classes)
    with pytest.raises(nir_graph.NirError, match=r"model\.layers\[2\] \(neuron\): v_reset=null"):
        nir_graph.to_nir(soft, shape, strict=True)
    leaky = _net(["model=fc", "neuron=leaky"], shape, classes)
    with pytest.raises(nir_graph.NirError, match=r"model\.layers\[2\] .* resets by subtraction"):
        nir_graph.to_nir(leaky, shape, strict=True)


def _graph(*nodes: Any, edges: list[tuple[str, str]] | None = None) -> nir.NIRGraph:
    named = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        **{f"n{i}": n for i, n in enumerate(nodes)},
        "output": nir.Output(output_type={"output": np.array([4])}),
    }
    order = list(named)
    return nir.NIRGraph(named, edges or list(itertools.pairwise(order)), type_check=False)


def _lif(tau: Any = 2e-4) -> nir.LIF:
    ones = np.ones(4, np.float32)
    return nir.LIF(tau=tau * ones, r=ones, v_leak=0 * ones, v_threshold=ones, v_reset=0 * ones)


def test_import_refuses_what_snnrun_cannot_build() -> None:
    groups = neuron_groups(_conf([]))
    w = np.eye(4, dtype=np.float32)
    delay = nir.Delay(delay=np.ones(4))
    li = nir.LI(tau=np.full(4, 2e-4), r=np.full(4, 2.0), v_leak=np.zeros(4))
    cases = [
        (_graph(nir.Linear(weight=w), delay), r"'n1' \(Delay\) has no snnrun layer"),
        (_graph(nir.Linear(weight=w), li), "LI with r=2, v_leak=0; snnrun's readout li has r = 1"),
        (
            _graph(nir.Linear(weight=w), _lif(np.array([2e-4, 2e-4, 3e-4, 2e-4]))),
            "tau differs between neurons",
        ),
        (
            _graph(
                nir.Linear(weight=w),
                _lif(),
                edges=[("input", "n0"), ("n0", "n1"), ("n1", "n0"), ("n1", "output")],
            ),
            r"the NIR graph loops \('n0' -> 'n1' -> 'n0': a recurrent connection\)",
        ),
    ]
    for graph, match in cases:
        with pytest.raises(nir_graph.NirError, match=match):
            nir_graph.from_nir(graph, (4,), groups)


def test_import_scales_a_general_input_gain() -> None:
    """NIR's LIF with r = 3 (neither 1 nor tau/dt) and IF with r = 1 (as snnTorch writes it)
    become snnrun neurons with the potentials divided by the input gain: the same spikes."""
    groups = neuron_groups(_conf([]))
    ones = np.ones(4, np.float32)
    lif = nir.LIF(tau=4e-4 * ones, r=3 * ones, v_leak=0 * ones, v_threshold=ones, v_reset=0 * ones)
    net = SpikingNetwork(nir_graph.from_nir(_graph(lif), (4,), groups))
    x = torch.rand(20, 8, 4)
    v, ref = torch.zeros(8, 4), []
    for t in range(20):  # NIR's forward Euler, reset to 0 on v > threshold
        v = v + 0.25 * (0 - v + 3 * x[t])
        s = (v > 1).float()
        v = v * (1 - s)
        ref.append(s)
    with torch.no_grad():
        assert torch.equal(net(x), torch.stack(ref))
    integrator = nir.IF(r=ones, v_threshold=ones, v_reset=0 * ones)
    (neuron,) = nir_graph.from_nir(_graph(integrator), (4,), groups)
    assert neuron.dynamics.v_threshold == pytest.approx(1 / nir_graph.DT)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    limits = ("dataset.train_limit=64", "dataset.test_limit=32")
    return train_tiny(tmp_path_factory.mktemp("nir"), *limits)


def test_export_command_and_model_nir(run_dir: Path) -> None:
    """``snnrun export`` writes export/model.nir; ``model=nir model.path=...`` builds the same
    network from it (the run's neurons, its weights) with the model builder."""
    export_verb.main([str(run_dir), "format=nir"])
    path = run_dir / "export" / "model.nir"
    graph = nir.read(path)
    run = load_run(run_dir)
    assert graph.metadata["run_id"] == run.rundir.read_info()["run_id"]
    assert graph.metadata["T"] == run.config["T"]
    conf = _conf(["model=nir", f"model.path={path}", "neuron=if"])
    rebuilt = build_network(conf, run.data).eval()
    x = torch.rand(1, 8, 1, 28, 28).expand(4, 8, 1, 28, 28) * 2  # direct encoding: static head
    for a, b in zip(neuron_spikes(run.model, x), neuron_spikes(rebuilt, x)):
        assert torch.equal(a, b)


def test_model_nir_relative_path_is_pinned_for_every_later_reader(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``model.path`` given relative (and interpolated into the layer entry) is absolute in the
    run's config, with the file's SHA-256: eval from another folder (holding another file of that
    name) builds the same network, and an edited file is refused as one line instead of used."""
    export_verb.main([str(run_dir), "format=nir"])
    work = tmp_path / "work"
    work.mkdir()
    (work / "model.nir").write_bytes((run_dir / "export" / "model.nir").read_bytes())
    tiny = [a for a in TINY if not a.startswith("model.")]
    args = ["model=nir", "model.path=model.nir", "dataset.train_limit=64",
            "dataset.test_limit=32", "optimizer.lr=0", "hydra.run.dir=nirrun"]  # fmt: skip
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "argv", ["snnrun", *tiny, *args])
    cli.main()
    entry = RunDir(work / "nirrun").read_config()["model"]["layers"][0]
    assert entry["path"] == str(work / "model.nir") and len(entry["sha256"]) == 64
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "model.nir").write_bytes(b"another file of the same name")
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "argv", ["snnrun", "eval", str(work / "nirrun")])
    cli.main()  # reads the run's own file
    graph = nir.read(work / "model.nir")
    next(n for n in graph.nodes.values() if hasattr(n, "weight")).weight[...] += 1.0
    nir.write(work / "model.nir", graph)
    capsys.readouterr()
    code, err = run_cli(monkeypatch, capsys, "eval", str(work / "nirrun"))
    assert code == 2 and "changed since the run was built" in err and err.count("\n") == 1


def _soft_reset_copy(run_dir: Path, dst: Path) -> Path:
    """The run dir (without export/) as if trained with neuron.v_reset=null (same weights)."""
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("export"))
    for name in CHECKPOINTS.values():
        payload = load_checkpoint(dst / name)
        payload["config"]["neuron"]["v_reset"] = None
        torch.save(payload, dst / name)
    return dst


def test_export_strict_refusal_says_nothing_was_written(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``strict=true`` on a soft reset: one line that says nothing was written (and how the
    file would be written without strict), and indeed no export/ folder."""
    soft = _soft_reset_copy(run_dir, tmp_path / "soft")
    code, err = run_cli(monkeypatch, capsys, "export", str(soft), "format=nir", "strict=true")
    assert code == 2 and err.count("\n") == 1, err
    assert "v_reset=null" in err and "strict=true writes nothing" in err
    assert "written with" not in err and "without strict=true" in err
    assert not (soft / "export").exists()


def test_export_elsewhere_and_whole_or_not_at_all(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A read-only run dir: one line naming export/ and out=, not hydra.run.dir; ``out=<dir>``
    writes there (the epoch counted from 1); a write that fails (full disk) leaves the earlier
    model.nir whole and no temporary file."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("export"))
    make_read_only(monkeypatch, run)
    code, err = run_cli(monkeypatch, capsys, "export", str(run), "format=nir")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"snnrun: error: cannot write {run / 'export'}: Read-only")
    assert "out=<dir>" in err and "hydra.run.dir" not in err

    elsewhere = tmp_path / "nir"
    monkeypatch.setattr(sys, "argv", [*sys.argv, f"out={elsewhere}"])
    cli.main()
    assert load_run(run).epoch == 1 and "(best weights, epoch 1," in capsys.readouterr().out
    assert nir.read(elsewhere / "model.nir").nodes and not (run / "export").exists()
    before = (elsewhere / "model.nir").read_bytes()

    def disk_full(path: Path, graph: object) -> None:
        Path(path).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(nir, "write", disk_full)
    with pytest.raises(SystemExit):
        cli.main()
    err = capsys.readouterr().err
    assert "No space left on device; free disk space, or pass out=<dir>" in err
    assert (elsewhere / "model.nir").read_bytes() == before
    assert [p.name for p in elsewhere.iterdir()] == ["model.nir"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["format=tflite"], "format='tflite'; use nir or onnx"),
        ([], "export needs format=nir"),
        (["format=nir", "dt=0"], "dt='0'; use a positive number"),
        (["format=nir", "level=3"], "export has no key 'level'"),
    ],
)
def test_export_bad_arguments(args: list[str], match: str, tmp_path: Path) -> None:
    with pytest.raises(SnnrunError, match=match):
        export_verb.parse_args([str(tmp_path), *args])


# --- cross-library: snnTorch ---------------------------------------------------------------------
def _snntorch() -> Any:
    return pytest.importorskip("snntorch")


def _run_snntorch(net: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per snnTorch Leaky layer: spikes and membranes ``[T, N, ...]`` over the steps of ``x``."""
    snn = _snntorch()
    from snntorch import utils

    leaky = [m for m in net.modules() if isinstance(m, snn.Leaky)]
    spikes: list[list[torch.Tensor]] = [[] for _ in leaky]
    mems: list[list[torch.Tensor]] = [[] for _ in leaky]

    def keep(i: int):
        def hook(m: nn.Module, args: Any, out: Any) -> None:
            spikes[i].append(out[0] if isinstance(out, tuple) else out)
            mems[i].append(m.mem.detach().clone())

        return hook

    hooks = [m.register_forward_hook(keep(i)) for i, m in enumerate(leaky)]
    utils.reset(net)
    try:
        with torch.no_grad():
            for t in range(x.shape[0]):
                net(x[t])
    finally:
        for h in hooks:
            h.remove()
    return [torch.stack(s) for s in spikes], [torch.stack(v) for v in mems]


def _ours(net: SpikingNetwork, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    neurons = [m for m in net.modules() if isinstance(m, SpikingNeuron)]
    for m in neurons:
        m.store_v_seq = True
    spikes = neuron_spikes(net, x)
    return spikes, [m.v_seq for m in neurons]


def agreement(a: list[torch.Tensor], b: list[torch.Tensor], va, vb) -> list[tuple[float, float]]:
    """Per layer: (share of equal spikes, largest membrane difference where neither spiked:
    snnTorch keeps a spiking neuron's membrane until its reset at the next step)."""
    quiet = [(s == 0) & (t == 0) for s, t in zip(a, b)]
    return [
        (float((s == t).float().mean()), float(((u - w).abs() * q).max()))
        for s, t, u, w, q in zip(a, b, va, vb, quiet)
    ]


@pytest.mark.peers
def test_snntorch_runs_snnruns_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """snnrun lif (hard reset, decay_input) → NIR → snnTorch: snnTorch makes a Leaky with
    beta = 1 - 1/tau and, since R dt/tau = 1/tau != 1, divides the threshold by 1/tau (its
    membrane is ours x tau): the same spikes, membranes equal to float rounding. Leaky (soft
    reset) and IF do not carry over: snnTorch resets every LIF to zero and refuses IF's r = 1/dt."""
    _snntorch()
    from snntorch.import_nir import import_from_nir

    shape = (40,)
    x = torch.rand(T * 3, 64, *shape) * 1.5
    report = {}
    for name in ("lif", "leaky"):
        net = _net(
            ["model=mlp", "model.hidden=48", "model.classes=10", f"neuron={name}"], shape, 10
        )
        path = tmp_path / f"{name}.nir"
        nir.write(path, nir_graph.to_nir(net, shape).graph)
        peer = import_from_nir(nir.read(path))
        (s_ours, v_ours), (s_peer, v_peer) = _ours(net, x), _run_snntorch(peer, x)
        scale = 2.0 if name == "lif" else 1.0  # snnTorch's membrane in its own units
        report[name] = agreement(s_ours, s_peer, v_ours, [v / scale for v in v_peer])
        assert sum(float(s.mean()) for s in s_ours) > 0.05
    print("snnrun -> snnTorch (equal spikes, max |dV|) per layer:", report)
    for equal, dv in report["lif"]:
        assert equal == 1.0 and dv < 1e-5
    assert min(e for e, _ in report["leaky"]) < 1.0  # subtract vs reset-to-zero
    net = _net(["model=fc", "neuron=if"], (1, 28, 28), 10)
    with pytest.raises(AssertionError, match="r != 1"):  # snnTorch reads NIR's IF as r = 1 only
        import_from_nir(nir_graph.to_nir(net, (1, 28, 28)).graph)


def _snntorch_net(reset: str) -> nn.Module:
    snn = _snntorch()
    torch.manual_seed(1)

    def leaky(n: int, **kw: Any) -> nn.Module:  # vector parameters: NIR's per-neuron arrays
        return snn.Leaky(
            beta=torch.full((n,), 0.8),
            threshold=torch.ones(n),
            init_hidden=True,
            reset_mechanism=reset,
            **kw,
        )

    net = nn.Sequential(nn.Linear(20, 32), leaky(32), nn.Linear(32, 5), leaky(5, output=True))
    return lively(net, 2.0)


@pytest.mark.peers
@pytest.mark.filterwarnings("ignore:nirtorch.extract_nir_graph:DeprecationWarning")
def test_snnrun_runs_snntorchs_graph(tmp_path: Path) -> None:
    """A snnTorch network → snnTorch's NIR export → snnrun. NIR's LIF resets to v_reset: a
    snnTorch Leaky with reset_mechanism='zero' gives the same spikes in snnrun (up to exact
    threshold ties: snnTorch fires on U > thr, snnrun on U >= thr); its default subtractive
    reset does not survive the NIR file (snnTorch itself reads it back as reset-to-zero)."""
    _snntorch()
    from snntorch.export_nir import export_to_nir

    x = torch.rand(T * 3, 64, 20) * 1.5
    groups = neuron_groups(_conf([]))
    report = {}
    for reset in ("zero", "subtract"):
        peer = _snntorch_net(reset)
        graph = export_to_nir(peer, torch.zeros(1, 20), ignore_dims=[0])
        path = tmp_path / f"{reset}.nir"
        nir.write(path, graph)
        layers = nir_graph.from_nir(nir.read(path), (20,), groups)
        ours = SpikingNetwork(layers).eval()
        (s_ours, v_ours), (s_peer, v_peer) = _ours(ours, x), _run_snntorch(peer, x)
        report[reset] = agreement(s_ours, s_peer, v_ours, v_peer)
        assert sum(float(s.mean()) for s in s_peer) > 0.05
    print("snnTorch -> snnrun (equal spikes, max |dV|) per layer:", report)
    for equal, dv in report["zero"]:
        assert equal == 1.0 and dv < 1e-5
    assert min(e for e, _ in report["subtract"]) < 1.0


@pytest.mark.peers
def test_threshold_ties_differ() -> None:
    """A membrane exactly at the threshold: snnrun (and SpikingJelly) fire (``>=``); NIR's
    definition and snnTorch do not (``>``)."""
    _snntorch()
    from snntorch.import_nir import import_from_nir

    ones = np.ones(4, np.float32)
    lif = nir.LIF(tau=2e-4 * ones, r=2 * ones, v_leak=0 * ones, v_threshold=ones, v_reset=0 * ones)
    graph = _graph(nir.Linear(weight=np.eye(4, dtype=np.float32)), lif)
    x = torch.ones(1, 1, 4)  # V = 0 + 1 = threshold at the first step
    ours = SpikingNetwork(nir_graph.from_nir(graph, (4,), neuron_groups(_conf([]))))
    with torch.no_grad():
        assert ours(x).sum() == 4
    peer = import_from_nir(graph)
    spikes, _ = _run_snntorch(peer, x)
    assert spikes[0].sum() == 0
