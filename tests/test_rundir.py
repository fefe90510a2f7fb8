"""The run dir as data: layout, `snnrun.load_run`, counters (firing rates, SynOps), W&B
artifacts; config and resume checks that keep a run's record true."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import snnrun
from snnrun.cli.command import main
from snnrun.core.errors import SnnrunError
from snnrun.data.encoder import build_encoder
from snnrun.engine.monitor import FiringRates, SynapticOps, monitoring, spike_fed
from snnrun.net.layers import TimeFolded
from snnrun.net.model import SpikingNetwork, build_model
from snnrun.neuron.neurons import IFNeuron
from snnrun.run.build import neuron_groups
from snnrun.run.rundir import RunDir
from snnrun.run.wandb_files import artifact_records

from conftest import (
    TINY,
    assert_one_line_error,
    cli,
    compose,
    needs_shared,
    read_metrics,
    run_snnrun,
)


def train(monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["snnrun", *args])
    main()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("api") / "run"
    run_snnrun([*TINY, "epochs=2", "logger=wandb", f"hydra.run.dir={run_dir}"], cwd=run_dir.parent)
    return run_dir


def test_run_dir_holds_config_and_identity(trained) -> None:
    rundir = RunDir(trained)
    config, info = rundir.read_config(), rundir.read_info()
    assert config["T"] == 4 and config["model"]["channels"] == 4
    assert info["data"]["sample_shape"] == [1, 28, 28] and info["data"]["num_classes"] == 10
    assert rundir.load_checkpoint("latest")["run_id"] == info["run_id"] == rundir.read_wandb_id()


def test_load_run_rebuilds_the_network_without_data(trained, monkeypatch) -> None:
    """The best checkpoint's network, rebuilt from the run dir alone, reproduces its test acc."""
    from snnrun.data.dataset import DATASETS

    monkeypatch.setattr(DATASETS, "get", lambda *a: pytest.fail("loaded data"))
    run = snnrun.load_run(trained)
    monkeypatch.undo()
    assert run.which == "best" and run.metrics == read_metrics(trained)
    best = max(run.metrics, key=lambda r: r["test_acc"])
    assert run.epoch == best["epoch"] + 1 and run.record == best  # the file counts from 0
    test = run.splits().test
    encode = build_encoder(run.config["encoder"])
    with torch.no_grad():
        x, y = test.images.float() / 255, test.labels
        correct = sum(
            int((run.model(encode(x[i : i + 64], 4)).mean(0).argmax(-1) == y[i : i + 64]).sum())
            for i in range(0, len(y), 64)
        )
    assert correct / len(y) == best["test_acc"]
    latest = snnrun.load_run(trained / "checkpoint_latest.pt")
    assert latest.which == "latest" and latest.epoch == 2 and latest.record == run.metrics[-1]


def test_checkpoints_are_wandb_artifacts(trained) -> None:
    """``logger.checkpoints=latest_best``: the best, then the latest checkpoint, once."""
    files = sorted(trained.glob("wandb/offline-run-*/run-*.wandb"))
    records = [a for f in files for a in artifact_records(f)]
    run_id = RunDir(trained).read_info()["run_id"]
    best = max(read_metrics(trained), key=lambda r: r["test_acc"])["epoch"]
    assert [r["name"] for r in records] == [f"model-{run_id}"] * len({best, 1})
    assert all(r["type"] == "model" and r["files"] == ["checkpoint.pt"] for r in records)
    assert {"latest", "epoch-1"} <= set(records[-1]["aliases"])
    assert {"best", f"epoch-{best}"} <= set(records[0]["aliases"])


def test_resume_from_a_wandb_artifact(monkeypatch, capsys, tmp_path, trained) -> None:
    """resume=wandb:<entity>/<project>/<id> fetches the latest checkpoint artifact into a new
    run dir and continues the same W&B run (W&B's API faked at the network boundary)."""
    import wandb

    run_id = RunDir(trained).read_info()["run_id"]
    asked = []

    class Artifact:
        def download(self, root: str) -> str:
            shutil.copy2(trained / "checkpoint_latest.pt", Path(root) / "checkpoint.pt")
            return root

    class Api:
        def artifact(self, name: str, type: str | None = None) -> Artifact:
            asked.append(name)
            return Artifact()

    monkeypatch.setattr(wandb, "Api", Api)
    new = tmp_path / "fetched"
    train(monkeypatch, f"resume=wandb:me/snnrun/{run_id}", f"hydra.run.dir={new}", "epochs=3")
    assert asked == [f"me/snnrun/model-{run_id}:latest"]
    history = read_metrics(new)
    assert [r["epoch"] for r in history] == [0, 1, 2] and history[:2] == read_metrics(trained)
    assert RunDir(new).read_wandb_id() == run_id == RunDir(new).read_info()["run_id"]
    code, err = cli(monkeypatch, capsys, "resume=wandb:me/snnrun")
    assert_one_line_error(code, err, "resume=wandb:<entity>/<project>/<run id>")


def test_metrics_carry_firing_rates_and_synops(trained) -> None:
    record = read_metrics(trained)[-1]
    rates = [k for k in record if k.startswith("firing_rate/L")]
    assert rates == ["firing_rate/L2", "firing_rate/L6", "firing_rate/L10", "firing_rate/L12"]
    assert all(0.0 <= record[k] <= 1.0 for k in rates)
    # the first conv sees the real-valued image once (static head): 4 x 28 x 28 outputs x 9
    assert record["synops/mac"] == 4 * 28 * 28 * 9
    assert record["energy/ann_uj"] == pytest.approx(4.6e-6 * record["synops/ann_mac"])


def tiny_net() -> SpikingNetwork:
    """conv(1→2, 3x3, pad 1) → IF → linear(32→3) → IF, weights chosen so counts are known."""
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    linear = nn.Linear(32, 3, bias=False)
    nn.init.constant_(conv.weight, 1.0)
    nn.init.constant_(linear.weight, 0.1)
    layers = [TimeFolded(conv), IFNeuron(), TimeFolded(nn.Flatten()), TimeFolded(linear),
              IFNeuron()]  # fmt: skip
    return SpikingNetwork(layers)


def test_a_synaptic_layer_synops_does_not_know_is_refused_not_skipped() -> None:
    """A conv variant outside ``SYNAPTIC`` would be skipped silently: one line naming it and
    the fix; norms (weights of one dimension) are no synapses."""
    net = tiny_net()
    net.layers.insert(1, TimeFolded(nn.BatchNorm2d(2)))
    SynapticOps(net)  # counted as before
    net.layers.append(TimeFolded(nn.Conv3d(3, 3, 1)))
    with pytest.raises(
        SnnrunError, match=r"SynOps cannot count layer layers\.6\.module \(Conv3d\)"
    ):
        SynapticOps(net)


def test_layers_fed_by_neurons_are_known_to_get_spikes() -> None:
    """The csnn's synapses after a neuron (through max pool and flatten) skip the per-call
    0/1 check; the first conv (fed by the encoder) and a layer after BatchNorm do not."""
    conf = compose(["model=csnn", "model.channels=4"])
    model = build_model(conf["model"], neuron_groups(conf), (1, 28, 28), 10)
    synapses = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert [m in spike_fed(model) for m in synapses] == [False, True, True, True]
    bn_after_neuron = tiny_net()
    bn_after_neuron.layers.insert(2, TimeFolded(torch.nn.BatchNorm2d(2)))
    assert spike_fed(bn_after_neuron) == set()


def test_synops_equal_a_hand_count() -> None:
    """One input spike in a corner of a 4x4 map reaches the 2x2 outputs around it in both
    channels: 8 ACs. Each conv output that spikes reaches the 3 linear outputs."""
    net = tiny_net()
    x = torch.zeros(2, 1, 1, 4, 4)  # [T=2, N=1, C, H, W], a real copy per step: not static
    x[0, 0, 0, 0, 0] = 1.0
    counter, rates = SynapticOps(net), FiringRates(net)
    with torch.no_grad(), monitoring([counter, rates]):
        net(x)
        conv_spikes = net.layers[1].v  # membrane after the last step; spikes counted below
    summary = counter.summary()
    # step 0: the corner spike gives 1 at 4 positions x 2 channels → 8 neurons fire (IF, v=1);
    # their 8 spikes x 3 outputs = 24 ACs; step 1: no input, no spikes.
    assert summary["synops/ac"] == 8 + 24
    assert summary["synops/mac"] == 0
    assert summary["synops/ann_mac"] == 2 * 16 * 9 + 3 * 32
    assert rates.summary()["firing_rate/L1"] == 8 / (2 * 32)
    assert conv_spikes is not None
    real = torch.full((2, 1, 1, 4, 4), 0.5)
    counter = SynapticOps(net)
    with torch.no_grad(), monitoring([counter]):
        net(real)
    assert counter.summary()["synops/mac"] == 2 * (2 * 16 * 9)  # real input: MACs, T calls


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("surrogate.alpha=nan", "surrogate.alpha=nan is not a finite number"),
        ("optimizer.lr=inf", "optimizer.lr=inf is not a finite number"),
        ("seed=abc", "seed=abc: seed takes a number (its default is 42)"),
        ("seed=-1", "seed must be a non-negative integer"),
        ("optimizer.lr=abc", "optimizer.lr takes a number"),
        ("+foo=1", "no key 'foo'"),
    ],
)
def test_bad_values_are_refused_up_front(monkeypatch, capsys, tmp_path, override, needle) -> None:
    run_dir = tmp_path / "r"
    code, err = cli(monkeypatch, capsys, *TINY, override, f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, needle)
    assert "To append" not in err and not run_dir.exists()


def test_divergence_stops_with_the_last_good_checkpoint(monkeypatch, capsys, tmp_path) -> None:
    """Weights turned NaN in epoch 1: one line names the tensor; epoch 0's checkpoint stays."""
    run_dir = tmp_path / "r"
    step, calls = torch.optim.Adam.step, [0]

    def poisoned(self, *args, **kwargs):
        calls[0] += 1
        out = step(self, *args, **kwargs)
        if calls[0] > 4:  # 256 samples / 64 = 4 steps per epoch
            self.param_groups[0]["params"][0].data.fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", poisoned)
    code, err = cli(monkeypatch, capsys, *TINY, "epochs=3", f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, "diverged in epoch 2", "layers.0.module.weight", "kept")
    payload = RunDir(run_dir).load_checkpoint("latest")
    assert payload["state"]["epoch"] == 1 and len(read_metrics(run_dir)) == 1


def test_resume_on_other_data_is_refused_unless_explicit(monkeypatch, capsys, tmp_path) -> None:
    shared = needs_shared("mnist").parent
    run_dir = tmp_path / "r"
    args = [*TINY, "dataset=mnist", "dataset.train_limit=64", "dataset.test_limit=64"]
    train(monkeypatch, *args, f"dataset.root={shared / 'mnist'}", f"hydra.run.dir={run_dir}")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    other = f"dataset.root={shared / 'fashion-mnist'}"
    code, err = cli(monkeypatch, capsys, f"resume={run_dir}", "epochs=2", other)
    assert_one_line_error(code, err, "data under this run changed", "allow_new_data=true")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    train(monkeypatch, f"resume={run_dir}", "epochs=2", other, "allow_new_data=true")
    assert len(read_metrics(run_dir)) == 2


def test_resume_names_a_key_the_run_lacks(monkeypatch, capsys, tmp_path) -> None:
    run_dir = tmp_path / "r"
    train(monkeypatch, *TINY, f"hydra.run.dir={run_dir}")
    code, err = cli(monkeypatch, capsys, f"resume={run_dir}", "logger.mode=online")
    assert_one_line_error(code, err, "logger=none has no 'mode'", "cannot change")


@pytest.mark.parametrize("how", ["searchpath", "config_dir"])
def test_own_configs_outside_the_package(monkeypatch, tmp_path, how) -> None:
    """A model kept in the user's folder: --config-dir and hydra.searchpath both find it, and
    the run resumes with it."""
    (tmp_path / "mine" / "model").mkdir(parents=True)
    layers = [{"type": "flatten"}, {"type": "linear", "out_features": 10}, {"type": "neuron"}]
    (tmp_path / "mine" / "model" / "tiny_fc.yaml").write_text(
        yaml.safe_dump({"name": "tiny_fc", "layers": layers})
    )
    where = (["--config-dir", str(tmp_path / "mine")] if how == "config_dir"
             else [f"hydra.searchpath=[file://{tmp_path / 'mine'}]"])  # fmt: skip
    run_dir = tmp_path / "r"
    tiny = [o for o in TINY if not o.startswith("model.")]
    train(monkeypatch, *where, *tiny, "model=tiny_fc", f"hydra.run.dir={run_dir}")
    assert RunDir(run_dir).read_config()["model"]["name"] == "tiny_fc"
    train(monkeypatch, f"resume={run_dir}", "epochs=2")
    assert len(read_metrics(run_dir)) == 2


def test_help_starts_with_the_common_commands(tmp_path) -> None:
    proc = run_snnrun(["--help"], cwd=tmp_path)
    head = proc.stdout[:1500]
    for needle in ("snnrun -m", "resume=", "snnrun viz", "README"):
        assert needle in head, head


@pytest.mark.peers
def test_synops_match_spikingjelly_op_counter() -> None:
    """The csnn on Poisson spikes: our AC count equals SpikingJelly 2.0's SynOpCounter."""
    op_counter = pytest.importorskip("spikingjelly.activation_based.op_counter")
    from omegaconf import OmegaConf

    from snnrun.net.model import build_model
    from snnrun.run.build import neuron_groups

    from conftest import compose

    conf = OmegaConf.to_container(compose(TINY), resolve=True)
    model = build_model(conf["model"], neuron_groups(conf), (1, 28, 28), 10).eval()
    torch.manual_seed(0)
    x = (torch.rand(4, 8, 1, 28, 28) < 0.3).float()  # [T, N, ...] spikes
    ours = SynapticOps(model)
    with torch.no_grad(), monitoring([ours]):
        model(x)
    counter = op_counter.SynOpCounter()
    with torch.no_grad(), op_counter.DispatchCounterMode([counter]):
        model(x)
    assert ours.summary()["synops/ac"] * 8 == counter.get_total() > 0


def test_a_run_from_before_a_new_key_resumes_with_its_default(monkeypatch, capsys, tmp_path):
    """A checkpoint whose config predates a key added to conf/ (here sync_bn) resumes; the key
    takes today's default and a note says so."""
    from snnrun.run.checkpoint import save_checkpoint

    run_dir = tmp_path / "r"
    train(monkeypatch, *TINY, f"hydra.run.dir={run_dir}")
    latest = RunDir(run_dir).checkpoint("latest")
    payload = RunDir(run_dir).load_checkpoint("latest")
    del payload["config"]["sync_bn"]
    payload["rng"] = payload["rng"][0]  # and the one-process RNG format of that time
    save_checkpoint(payload, latest)
    capsys.readouterr()
    train(monkeypatch, f"resume={run_dir}", "epochs=2")
    assert "sync_bn is new in conf/" in capsys.readouterr().out
    assert len(read_metrics(run_dir)) == 2
