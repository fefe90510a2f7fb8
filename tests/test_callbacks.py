"""Callbacks, the trainer's one seam (``callbacks:``, ``snnrun.Callback``), through the command:
a callback's metric in ``metrics.jsonl``, ``snnrun runs``, on the console and as
``checkpoint.monitor``; a null entry removes one; a class that is no callback is one line; a
stateful callback resumes exactly after a SIGKILL; ``snnrun.Callback`` without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from snnrun.run.checkpoint import load_checkpoint
from snnrun.run.rundir import BEST

from conftest import (
    REPO,
    TINY,
    assert_one_line_error,
    cli,
    killed_and_resumed,
    make_user_package,
    read_metrics,
    runs,
    table_rows,
    train_in_process,
)

FC = [o for o in TINY if not o.startswith("model.")] + ["model=fc", "dataset.train_limit=64"]
SOURCE = """
import snnrun


class Score(snnrun.Callback):
    '''A metric that grows every epoch (best: the last), and counts the steps it saw.'''

    metrics = ("cb_score",)

    def __init__(self, start=0.0):
        self.start, self.steps = start, 0

    def on_train_batch_end(self, run, batch, loss):
        self.steps += 1

    def on_epoch_end(self, run, record):
        return {"cb_score": self.start + record["epoch"], "cb_steps": self.steps}


class NoHooks:
    pass
"""


@pytest.fixture
def pkg(tmp_path, monkeypatch):
    yield from make_user_package(tmp_path, monkeypatch, "cb_pkg", SOURCE)


def test_a_callbacks_metric_is_recorded_shown_listed_and_picks_the_best_checkpoint(
    pkg, monkeypatch, capsys, tmp_path
) -> None:
    """test_acc is best at epoch 1 (the test pass's accuracies replaced), the callback's
    ``cb_score`` at epoch 2: ``checkpoint.monitor=cb_score`` keeps epoch 2 as the best."""
    from snnrun.engine import trainer

    real, accs = trainer.test_pass, iter([0.9, 0.4])

    def crafted(net, loader, step, monitors=(), label=""):
        return {**real(net, loader, step, monitors, label), "acc": next(accs)}

    monkeypatch.setattr(trainer, "test_pass", crafted)
    run_dir = tmp_path / "run"
    train_in_process(monkeypatch, *FC, "epochs=2", f"+callbacks.score._target_={pkg}.Score",
                     "+callbacks.score.start=0.5", "checkpoint.monitor=cb_score",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    out = capsys.readouterr().out
    records = read_metrics(run_dir)
    assert [r["cb_score"] for r in records] == [0.5, 1.5]
    assert [r["cb_steps"] for r in records] == [1, 2]  # one batch of 64 per epoch
    assert [r["test_acc"] for r in records] == [0.9, 0.4]
    assert load_checkpoint(run_dir / BEST)["state"]["epoch"] == 2
    lines = [x for x in out.splitlines() if x.startswith("epoch ")]
    assert lines[1].endswith("cb_score=1.5  cb_steps=2"), lines
    row = table_rows(runs(monkeypatch, capsys, str(tmp_path)))["run"]
    assert "cb_score=1.5" in row, row


def test_a_null_entry_removes_a_recipes_callback(pkg, monkeypatch, tmp_path) -> None:
    """A recipe's callback (a user config folder's experiment) runs; ``callbacks.<name>=null``
    removes it by name."""
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "scored.yaml").write_text(
        f"# @package _global_\ncallbacks:\n  score:\n    _target_: {pkg}.Score\n"
    )
    args = ["--config-dir", str(tmp_path / "conf"), *FC, "experiment=scored"]
    train_in_process(monkeypatch, *args, f"hydra.run.dir={tmp_path / 'with'}")
    assert "cb_score" in read_metrics(tmp_path / "with")[0]
    train_in_process(
        monkeypatch, *args, "callbacks.score=null", f"hydra.run.dir={tmp_path / 'without'}"
    )
    assert "cb_score" not in read_metrics(tmp_path / "without")[0]


def test_a_class_that_is_no_callback_is_one_line_and_leaves_no_run_dir(
    pkg, monkeypatch, capsys, tmp_path
) -> None:
    run_dir = tmp_path / "run"
    code, err = cli(monkeypatch, capsys, *FC, f"+callbacks.bad._target_={pkg}.NoHooks",
                    f"hydra.run.dir={run_dir}")  # fmt: skip
    assert_one_line_error(code, err, f"callbacks.bad: {pkg}.NoHooks is no snnrun.Callback",
                          "on_fit_start", "subclass snnrun.Callback")  # fmt: skip
    assert not run_dir.exists()


def test_a_monitor_no_record_key_or_callback_provides_is_refused(
    pkg, monkeypatch, capsys, tmp_path
):
    code, err = cli(monkeypatch, capsys, *FC, f"+callbacks.score._target_={pkg}.Score",
                    "checkpoint.monitor=cb_scor", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert_one_line_error(code, err, "checkpoint.monitor='cb_scor' is no key of the epoch record",
                          "cb_score")  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_a_killed_run_with_stateful_callbacks_resumes_exactly(tmp_path) -> None:
    """The example callbacks (examples/plugins/callback.py: moving averages over epochs and
    over steps, kept in each checkpoint): SIGKILL mid-run, resume, and every record equals an
    unbroken run's; ``loss_ema`` picks the best checkpoint."""
    args = [*FC, "dataset.train_limit=256", "epochs=10",  # epochs take ms: room for the kill
            "+callbacks.weights._target_=plugins.callback.WeightNorm",
            "+callbacks.loss_ema._target_=plugins.callback.LossEMA",
            "checkpoint.monitor=loss_ema", "checkpoint.mode=min"]  # fmt: skip
    env = {"PYTHONPATH": str(REPO / "examples")}
    killed, expected = killed_and_resumed(args, tmp_path, 10, env)
    assert {"weight_norm", "weight_norm_ema", "loss_ema"} <= set(expected[-1])
    saved = load_checkpoint(killed / "checkpoint_latest.pt")["callbacks"]
    assert saved["weights"]["ema"] == expected[-1]["weight_norm_ema"]


def test_snnrun_callback_is_there_without_importing_torch() -> None:
    code = ("import sys, snnrun; assert 'torch' not in sys.modules; C = snnrun.Callback; "
            "assert C.__name__ == 'Callback' and 'torch' not in sys.modules")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(REPO))


def test_the_trainer_reads_no_config(monkeypatch, tmp_path) -> None:
    """The trainer gets built objects and its settings: a run whose ``config`` it cannot read
    trains with clipping, early stopping and a validation split (all callbacks now)."""
    from snnrun.run import session

    class NoConfig:
        def __init__(self, run):
            self.run = run

        def __getattr__(self, name):
            assert name != "config", "the trainer read run.config"
            return getattr(self.run, name)

    real = session.Trainer
    monkeypatch.setattr(session, "Trainer", lambda run, *a, **kw: real(NoConfig(run), *a, **kw))
    train_in_process(monkeypatch, *FC, "epochs=2", "optimizer.clip_grad_norm=1.0",
                     "dataset.val_fraction=0.25", "early_stopping.monitor=val_loss",
                     "early_stopping.mode=min", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert len(read_metrics(tmp_path / "run")) == 2
