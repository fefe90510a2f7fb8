"""``ema.decay``: the weights' moving average equals a handwritten one, tests and checkpoint_best
are the average's, eval/export/init_from read it; through the command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from snnrun.api import load_run
from snnrun.cli import command
from snnrun.run.checkpoint import load_checkpoint

from conftest import (
    TINY,
    assert_one_line_error,
    cli,
    make_user_package,
    read_metrics,
    train_in_process,
)

FC = [*(a for a in TINY if not a.startswith("model.")), "model=fc", "scheduler=none"]
DECAY = 0.6

RECORDER = """
import snnrun

SEEN = []  # the model's weights at the start, then after every optimizer step


class Recorder(snnrun.Callback):
    def on_fit_start(self, run):
        SEEN.append({k: v.clone() for k, v in run.model.state_dict().items()})

    def on_train_batch_end(self, run, batch, loss):
        if run.stepped:
            SEEN.append({k: v.clone() for k, v in run.model.state_dict().items()})
"""


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    yield from make_user_package(tmp_path, monkeypatch, "ema_recorder", RECORDER)


def test_the_average_is_a_handwritten_ema_and_eval_reads_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, recorder: str
) -> None:
    """2 epochs of 4 batches in groups of 2: 4 optimizer steps, each moving the average; the
    checkpoint's average equals ``e <- d e + (1 - d) w`` over the recorded weights (1e-6), its
    ``model`` the live weights; ``snnrun eval`` reproduces the record's test pass (the
    average's) and ``load_run`` (export) gets the average."""
    run = tmp_path / "run"
    train_in_process(monkeypatch, *FC, "epochs=2", f"ema.decay={DECAY}",
                     "accumulate_grad_batches=2", f"callbacks.rec._target_={recorder}.Recorder",
                     f"hydra.run.dir={run}")  # fmt: skip
    seen = sys.modules[recorder].SEEN
    assert len(seen) == 1 + 4
    expected = {k: v.clone() for k, v in seen[0].items()}
    for weights in seen[1:]:
        for k, w in weights.items():
            expected[k] = DECAY * expected[k] + (1 - DECAY) * w if w.is_floating_point() else w
    payload = load_checkpoint(run / "checkpoint_latest.pt")
    average = payload["callbacks"]["ema"]["weights"]
    assert average.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(average[k], expected[k], rtol=0, atol=1e-6)
        torch.testing.assert_close(payload["model"][k], seen[-1][k], rtol=0, atol=0)
    assert any(not torch.equal(average[k], seen[-1][k]) for k in average)

    monkeypatch.setattr(sys, "argv", ["snnrun", "eval", str(run), "which=latest", "device=cpu"])
    command.main()
    (evaluated,) = [json.loads(p.read_text()) for p in (run / "eval").glob("*.json")]
    last = read_metrics(run)[-1]
    assert (evaluated["acc"], evaluated["loss"]) == (last["test_acc"], last["test_loss"])
    loaded = load_run(run, "latest", "cpu").model.state_dict()
    for k in expected:
        assert torch.equal(loaded[k], average[k])


def test_the_tests_run_on_the_average_and_training_on_the_live_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The same run with and without the average trains alike (the same training losses) and
    tests differently: the average is swapped in for the test pass only."""
    for name, extra in (("plain", []), ("ema", ["ema.decay=0.9"])):
        train_in_process(monkeypatch, *FC, "epochs=2", *extra,
                         f"hydra.run.dir={tmp_path / name}")  # fmt: skip
    plain, ema = read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "ema")
    assert [r["train_loss"] for r in plain] == [r["train_loss"] for r in ema]
    assert [r["test_loss"] for r in plain] != [r["test_loss"] for r in ema]
    live = load_checkpoint(tmp_path / "plain" / "checkpoint_latest.pt")["model"]
    for k, w in load_checkpoint(tmp_path / "ema" / "checkpoint_latest.pt")["model"].items():
        assert torch.equal(w, live[k])


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["ema.decay=1.5"], "ema.decay must be in (0, 1)"),
     (["ema.decay=0.9", "callbacks.ema._target_=snnrun.Callback"],
      "callbacks.ema is the name of snnrun's weight average")],
)  # fmt: skip
def test_a_bad_setting_is_one_line(monkeypatch, capsys, tmp_path, args, needle) -> None:
    code, err = cli(monkeypatch, capsys, *FC, *args, f"hydra.run.dir={tmp_path / 'bad'}")
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "bad").exists()
