"""Your own code by ``_target_`` in the ``loss``, ``encoder``, ``optimizer``, ``scheduler`` and
``monitor`` groups, through the command: from a user's ``--config-dir`` (``loss=focal``) and inline
(``loss._target_=pkg.Cls``); the user's object is the one used; a resume and ``eval`` build it
again; ``run.json`` records its module's file and SHA-256; a bad plug-in is one line, exit 2, and
leaves no run dir."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from snnrun.cli.precheck import spell_out_targets
from snnrun.core.errors import SnnrunError
from snnrun.core.plugin import PluginError
from snnrun.data.encoder import build_encoder
from snnrun.engine.loss import build_loss
from snnrun.engine.monitor import build_monitors
from snnrun.engine.optim import build_optimizer, build_scheduler

from conftest import (
    REPO,
    TINY,
    assert_one_line_error,
    cli,
    make_user_package,
    read_metrics,
    train_in_process,
)

EXAMPLES = REPO / "examples"
TRAIN_BATCHES = 4  # TINY: 256 training samples in batches of 64
TEST_BATCHES = 2  # 128 test samples

PLUGS = """
import torch
import torch.nn.functional as F

SEEN = {"encoder": [], "steps": 0, "predict": 0}


class Seven:
    '''A loss of 7 (and a gradient of 0): recognisable in metrics.jsonl; no predict.'''

    def __call__(self, out, y):
        return out.float().sum() * 0 + 7.0


class Predicting:
    def __call__(self, out, y):
        return F.cross_entropy(out.float().mean(0), y)

    def predict(self, out):
        SEEN["predict"] += 1
        return out[-1].argmax(-1)


class PerSample:
    def __call__(self, out, y):
        return F.cross_entropy(out.float().mean(0), y, reduction="none")


class NotCallable:
    pass


class Doubled:
    def __init__(self, gain=2.0):
        self.gain = gain

    def __call__(self, x, T):
        SEEN["encoder"].append(T)
        return (x * self.gain).unsqueeze(0).expand(T, *x.shape)


class Sequences:
    sequence = True

    def __call__(self, x, T):
        return x.transpose(0, 1)


def encode_twice(x, T):
    return torch.stack([x, x][:T])


class CountingSGD(torch.optim.SGD):
    def step(self, closure=None):
        SEEN["steps"] += 1
        return super().step(closure)


class NoStep:
    def __init__(self, params, lr=0.1, **options):
        self.param_groups = [{"params": list(params), "lr": lr}]


class Batches:
    def __init__(self, model, key="test_batches"):
        self.model, self.key, self.calls, self.handle = model, key, 0, None

    def attach(self):
        self.calls = 0
        self.handle = self.model.register_forward_hook(self._count)

    def _count(self, module, args, out):
        self.calls += 1

    def detach(self):
        self.handle.remove()

    def summary(self):
        return {self.key: float(self.calls)}


class NoSummary:
    def __init__(self, model):
        pass

    def attach(self):
        pass

    def detach(self):
        pass
"""


@pytest.fixture
def plugs(tmp_path: Path, monkeypatch) -> Iterator[str]:
    yield from make_user_package(tmp_path, monkeypatch, "snn_plugs", PLUGS)


def run_args(tmp_path: Path, *overrides: str) -> list[str]:
    return [*TINY, *overrides, f"hydra.run.dir={tmp_path / 'run'}"]


def records(tmp_path: Path) -> list[dict]:
    return read_metrics(tmp_path / "run")


# --- a user's loss: the focal loss -------------------------------------------------------------


def test_focal_is_the_papers_loss_on_a_tiny_tensor(monkeypatch) -> None:
    """mean_n -(1 - p_n)^gamma log p_n on the rates, by hand on T=2, N=2, 3 classes; gamma 0
    is the cross-entropy of the rates."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from plugins.focal import FocalRate

    out = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], [[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]])
    y = torch.tensor([0, 1])
    p = F.softmax(out.mean(0), -1)[[0, 1], [0, 1]]
    hand = (-((1 - p) ** 1.5) * p.log()).mean()
    assert torch.allclose(FocalRate(gamma=1.5)(out, y), hand)
    assert torch.allclose(FocalRate(gamma=0.0)(out, y), F.cross_entropy(out.mean(0), y))
    assert FocalRate().predict(out).tolist() == [0, 1]  # mean over T: [.5, 0, .5] and [.5, 1.5, 0]


def test_focal_from_a_user_config_dir_records_its_module(monkeypatch, tmp_path: Path) -> None:
    """``--config-dir examples/conf loss=focal`` with ``examples`` on the path; ``run.json`` names
    the module's file and SHA-256, ``config.yaml`` keeps the ``_target_``."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    conf = EXAMPLES / "conf"
    train_in_process(monkeypatch, "--config-dir", str(conf), "loss=focal", *run_args(tmp_path))
    assert records(tmp_path)[0]["train_loss"] > 0
    run = tmp_path / "run"
    modules = json.loads((run / "run.json").read_text())["provenance"]["user_modules"]
    focal = EXAMPLES / "plugins" / "focal.py"
    assert modules["plugins.focal"] == {
        "file": str(focal),
        "sha256": hashlib.sha256(focal.read_bytes()).hexdigest(),
    }
    assert "_target_: plugins.focal.FocalRate" in (run / "config.yaml").read_text()
    later = tmp_path / "later"  # the next run of this process (a sweep's job) has none
    train_in_process(monkeypatch, *TINY, f"hydra.run.dir={later}")
    assert json.loads((later / "run.json").read_text())["provenance"]["user_modules"] == {}


def test_a_user_loss_inline_takes_its_keys(monkeypatch, tmp_path: Path) -> None:
    """``loss._target_=plugins.focal.FocalRate`` (no ``+``: the command spells it ``++``) over
    the default ``loss: mse_rate`` (whose ``name`` is then a label), with ``+loss.gamma`` as an
    argument. (The other tests add the key with ``+``, which works as well.)"""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    train_in_process(monkeypatch, *run_args(tmp_path, "loss._target_=plugins.focal.FocalRate",
                                            "+loss.gamma=0.5"))  # fmt: skip
    assert records(tmp_path)[0]["train_loss"] > 0


def test_a_target_override_sets_the_key_whether_or_not_the_group_has_it() -> None:
    argv = ["snnrun", "loss._target_=a.B", "+encoder._target_=c.D", "callbacks.x._target_=e.F",
            "loss.lamb=1", "~monitor._target_"]  # fmt: skip
    spell_out_targets(argv)
    assert argv == ["snnrun", "++loss._target_=a.B", "+encoder._target_=c.D",
                    "++callbacks.x._target_=e.F", "loss.lamb=1", "~monitor._target_"]  # fmt: skip


# --- the doors, through the command ------------------------------------------------------------


def test_a_user_loss_is_the_loss_and_predicts_by_the_mean_over_T(
    monkeypatch, tmp_path: Path, plugs: str
) -> None:
    train_in_process(monkeypatch, *run_args(tmp_path, f"+loss._target_={plugs}.Seven"))
    record = records(tmp_path)[0]
    assert record["train_loss"] == pytest.approx(7.0) and record["test_loss"] == pytest.approx(7.0)
    assert 0 <= record["test_acc"] <= 1


def test_a_user_loss_predict_is_used(monkeypatch, tmp_path: Path, plugs: str) -> None:
    train_in_process(monkeypatch, *run_args(tmp_path, f"+loss._target_={plugs}.Predicting"))
    assert sys.modules[plugs].SEEN["predict"] == TRAIN_BATCHES + TEST_BATCHES


def test_a_user_encoder_encodes(monkeypatch, tmp_path: Path, plugs: str) -> None:
    train_in_process(monkeypatch, *run_args(tmp_path, f"+encoder._target_={plugs}.Doubled",
                                            "+encoder.gain=3"))  # fmt: skip
    assert sys.modules[plugs].SEEN["encoder"] == [4] * (TRAIN_BATCHES + TEST_BATCHES)


def test_a_user_optimizer_gets_the_groups_keys(monkeypatch, tmp_path: Path, plugs: str) -> None:
    """Over ``optimizer=sgd``: lr, momentum and weight_decay are its arguments; clip_grad_norm
    stays the trainer's."""
    mine = f"+optimizer._target_={plugs}.CountingSGD"
    train_in_process(monkeypatch, *run_args(tmp_path, "optimizer=sgd", "optimizer.lr=0.02", mine))
    assert sys.modules[plugs].SEEN["steps"] == TRAIN_BATCHES
    assert records(tmp_path)[0]["lr"] == 0.02


def test_a_user_scheduler_steps_each_epoch(monkeypatch, tmp_path: Path) -> None:
    """Any importable class: torch's ExponentialLR over ``scheduler=none``."""
    train_in_process(monkeypatch, *run_args(tmp_path, "epochs=2", "scheduler=none",
                                            "+scheduler._target_=torch.optim.lr_scheduler.ExponentialLR",
                                            "+scheduler.gamma=0.5"))  # fmt: skip
    assert [r["lr"] for r in records(tmp_path)] == [0.01, 0.005]


def test_a_user_monitor_joins_the_counters(monkeypatch, tmp_path: Path, plugs: str) -> None:
    """Over ``monitor=default``: its counters still count (their keys go to them), and the
    user's summary keys join the record."""
    train_in_process(monkeypatch, *run_args(tmp_path, f"+monitor._target_={plugs}.Batches",
                                            "+monitor.key=batches"))  # fmt: skip
    record = records(tmp_path)[0]
    assert record["batches"] == TEST_BATCHES
    assert "firing_rate/L2" in record and "synops/ac" in record


def test_the_other_doors_from_a_user_config_dir(monkeypatch, tmp_path: Path, plugs: str) -> None:
    """encoder, optimizer, scheduler and monitor each from a YAML file of the user's
    ``--config-dir`` (``group=name``), in one run: each is the user's object."""
    files = {
        "encoder/doubled.yaml": f"_target_: {plugs}.Doubled\nname: doubled\ngain: 3.0\n",
        "optimizer/counting.yaml": f"_target_: {plugs}.CountingSGD\nlr: 0.02\n",
        "scheduler/halving.yaml": "_target_: torch.optim.lr_scheduler.ExponentialLR\ngamma: 0.5\n",
        "monitor/batches.yaml": f"_target_: {plugs}.Batches\nkey: batches\n",
    }
    for name, text in files.items():
        (tmp_path / "conf" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "conf" / name).write_text(text)
    choices = ["encoder=doubled", "optimizer=counting", "scheduler=halving", "monitor=batches"]
    args = run_args(tmp_path, *choices, "epochs=2")
    train_in_process(monkeypatch, f"--config-dir={tmp_path / 'conf'}",
                     *[a for a in args if a != "epochs=1"])  # fmt: skip
    seen = sys.modules[plugs].SEEN
    assert seen["encoder"] == [4] * 2 * (TRAIN_BATCHES + TEST_BATCHES)
    assert seen["steps"] == 2 * TRAIN_BATCHES
    lrs = [(r["lr"], r["batches"]) for r in records(tmp_path)]  # TINY's optimizer.lr=0.01, halved
    assert lrs == [(0.01, 2.0), (0.005, 2.0)]


# --- bad plug-ins: one line, exit 2, no run dir ------------------------------------------------


@pytest.mark.parametrize("group", ["loss", "encoder", "optimizer", "scheduler", "monitor"])
def test_a_missing_module_is_one_line_before_anything_is_written(
    monkeypatch, capsys, tmp_path: Path, group: str
) -> None:
    code, err = cli(monkeypatch, capsys, *run_args(tmp_path, f"+{group}._target_=nope_pkg.Thing"))
    assert_one_line_error(code, err, f"{group}: cannot import nope_pkg.Thing", "PYTHONPATH")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("+loss._target_={}.NotCallable", ["loss: {}.NotCallable is not callable", "loss(out, y)"]),
        ("+optimizer._target_={}.NoStep", ["optimizer: {}.NoStep has no 'step'"]),
        ("+monitor._target_={}.NoSummary", ["monitor: {}.NoSummary has no 'summary'"]),
    ],
)
def test_a_class_without_the_protocols_method_is_one_line(
    monkeypatch, capsys, tmp_path: Path, plugs: str, override: str, needles: list[str]
) -> None:
    code, err = cli(monkeypatch, capsys, *run_args(tmp_path, override.format(plugs)))
    assert_one_line_error(code, err, *(n.format(plugs) for n in needles))
    assert not (tmp_path / "run").exists()


def test_a_loss_returning_a_non_scalar_is_one_line(
    monkeypatch, capsys, tmp_path: Path, plugs: str
) -> None:
    """Found on the first step; the fresh run's dir goes."""
    code, err = cli(monkeypatch, capsys, *run_args(tmp_path, f"+loss._target_={plugs}.PerSample"))
    assert_one_line_error(code, err, f"loss: {plugs}.PerSample returned a tensor of shape [64]",
                          "scalar")  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_a_non_scalar_is_refused_in_the_loss_itself(plugs: str) -> None:
    loss = build_loss({"_target_": f"{plugs}.PerSample", "name": "mine"})
    with pytest.raises(PluginError, match=r"shape \[2\]"):
        loss(torch.zeros(3, 2, 4), torch.tensor([0, 1]))


def test_added_keys_of_a_user_monitor_are_not_refused_but_a_builtin_ones_are(
    monkeypatch, capsys, tmp_path: Path
) -> None:
    code, err = cli(monkeypatch, capsys, *run_args(tmp_path, "+monitor.window=3"))
    assert_one_line_error(code, err, "no key 'monitor.window'")
    code, err = cli(monkeypatch, capsys, *run_args(tmp_path, "+monitor.window=3",
                                                   "+monitor._target_=nope_pkg.Mon"))  # fmt: skip
    assert_one_line_error(code, err, "monitor: cannot import nope_pkg.Mon")


def test_the_builders_need_no_name_beside_a_target(plugs: str) -> None:
    """``name`` only labels a ``_target_`` group; a plain function takes ``_partial_: true``."""
    net = torch.nn.Linear(2, 2)
    optimizer = build_optimizer({"_target_": "torch.optim.SGD", "lr": 0.5}, net)
    assert optimizer.param_groups[0]["lr"] == 0.5
    assert build_scheduler({"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 1},
                           optimizer, 10).step_size == 1  # fmt: skip
    assert build_loss({"_target_": f"{plugs}.Seven"})(torch.ones(2, 3, 4), None) == 7
    encode = build_encoder({"_target_": f"{plugs}.encode_twice", "_partial_": True}, False)
    assert encode(torch.ones(3, 5), 2).shape == (2, 3, 5)
    (monitor,) = build_monitors({"_target_": f"{plugs}.Batches"}, net)
    assert monitor.key == "test_batches"


def test_a_user_encoders_sequence_attribute_is_checked_against_the_data(plugs: str) -> None:
    with pytest.raises(SnnrunError, match=rf"encoder: {plugs}.Sequences takes sequence"):
        build_encoder({"_target_": f"{plugs}.Sequences"}, sequence=False)
    assert build_encoder({"_target_": f"{plugs}.Sequences"}, sequence=True)
    assert build_encoder({"_target_": f"{plugs}.Doubled"}, sequence=True)  # no attribute: either


# --- a run that used your code stays a run -----------------------------------------------------


@pytest.fixture
def focal_run(monkeypatch, tmp_path: Path) -> Path:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    train_in_process(monkeypatch, *run_args(tmp_path, "+loss._target_=plugins.focal.FocalRate"))
    return tmp_path / "run"


def test_resume_and_eval_build_the_user_loss_again(monkeypatch, focal_run: Path) -> None:
    train_in_process(monkeypatch, f"resume={focal_run}", "epochs=2")
    assert [r["epoch"] for r in read_metrics(focal_run)] == [0, 1]
    train_in_process(monkeypatch, "eval", str(focal_run), "device=cpu")
    (result,) = (focal_run / "eval").glob("*.json")
    assert json.loads(result.read_text())["loss"] > 0


def test_resume_and_eval_without_the_package_name_it(monkeypatch, capsys, focal_run: Path) -> None:
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(EXAMPLES)])
    for name in [m for m in sys.modules if m == "plugins" or m.startswith("plugins.")]:
        monkeypatch.delitem(sys.modules, name)
    for args in ([f"resume={focal_run}", "epochs=2"], ["eval", str(focal_run), "device=cpu"]):
        code, err = cli(monkeypatch, capsys, *args)
        needle = "loss: cannot import plugins.focal.FocalRate"
        assert_one_line_error(code, err, needle, "PYTHONPATH")
    assert len(read_metrics(focal_run)) == 1


def test_eval_names_a_user_encoder_without_a_name(monkeypatch, tmp_path: Path, plugs: str) -> None:
    """A user's YAML need not give ``name``: eval's record names the encoder by its target."""
    (tmp_path / "conf" / "encoder").mkdir(parents=True)
    (tmp_path / "conf" / "encoder" / "twice.yaml").write_text(f"_target_: {plugs}.Doubled\n")
    conf = ["--config-dir", str(tmp_path / "conf"), "encoder=twice"]
    train_in_process(monkeypatch, *conf, *run_args(tmp_path))
    train_in_process(monkeypatch, "eval", str(tmp_path / "run"), "device=cpu")
    (result,) = (tmp_path / "run" / "eval").glob("*.json")
    assert json.loads(result.read_text())["encoder"] == f"{plugs}.Doubled"
