"""Through the command: early stopping (patience 0, negatives, a patience with no monitor,
``monitor=auto``), the TensorBoard logger (a folder made read-only mid-run, a deleted folder
re-logged on resume), a divergence before the first checkpoint, and what the console says
(validation numbers on the epoch line, gradient clipping in the summary, the resumed epoch)."""

from __future__ import annotations

import errno
import io
import os
import shutil
from pathlib import Path

import pytest

from snnrun.engine import trainer

from conftest import (
    TINY,
    assert_one_line_error,
    cli,
    compose,
    read_metrics,
    train_in_process,
)

FC = [o for o in TINY if not o.startswith("model.")] + ["model=fc", "dataset.train_limit=64"]


def craft_test_accs(monkeypatch, *accs: float) -> None:
    """The test pass's accuracy replaced by ``accs``, one per epoch (its loss stays real)."""
    real, values = trainer.test_pass, iter(accs)

    def crafted(net, loader, step, monitors=(), label=""):
        out = real(net, loader, step, monitors, label)
        return {**out, "acc": next(values)} if label.endswith("test") else out

    monkeypatch.setattr(trainer, "test_pass", crafted)


# early stopping


def test_early_stopping_is_off_by_default() -> None:
    assert compose([])["early_stopping"]["monitor"] is None


def test_patience_0_stops_at_the_first_epoch_without_improvement(
    monkeypatch, capsys, tmp_path
) -> None:
    """``patience=0``: epochs 1 and 2 improve test_acc (``monitor=auto`` without a validation
    split), epoch 3 does not, so the run ends after epoch 3 of 5 and says so truly; the start
    summary says early stopping is on."""
    craft_test_accs(monkeypatch, 0.5, 0.6, 0.6, 0.7, 0.8)
    run_dir = tmp_path / "run"
    train_in_process(monkeypatch, *FC, "epochs=5", "early_stopping.monitor=auto",
                     "early_stopping.patience=0", f"hydra.run.dir={run_dir}")  # fmt: skip
    records = read_metrics(run_dir)
    assert [r["test_acc"] for r in records] == [0.5, 0.6, 0.6]
    assert records[-1]["early_stop"] is True and "early_stop" not in records[1]
    out = capsys.readouterr().out
    assert "early_stopping=test_acc (max, patience 0)" in out
    assert "early stop: test_acc did not improve by more than 0.0 in 1 epoch" in out, out


def test_monitor_auto_watches_val_acc_with_a_validation_split(monkeypatch, tmp_path) -> None:
    run_dir = tmp_path / "run"
    train_in_process(monkeypatch, *FC, "dataset.val_fraction=0.25", "early_stopping.monitor=auto",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    from snnrun.run.rundir import RunDir

    saved = RunDir(run_dir).load_checkpoint("latest")["state"]
    assert saved["stop_best"] == read_metrics(run_dir)[0]["val_acc"]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("early_stopping.patience=-1", "early_stopping.patience must be a non-negative integer"),
        ("early_stopping.patience=1.5", "early_stopping.patience must be a non-negative integer"),
        ("early_stopping.min_delta=-0.1", "early_stopping.min_delta must be >= 0"),
    ],
)
def test_negative_patience_or_min_delta_is_refused(
    monkeypatch, capsys, tmp_path, override, needle
) -> None:
    run_dir = tmp_path / "run"
    code, err = cli(monkeypatch, capsys, *FC, "early_stopping.monitor=val_loss",
                    "early_stopping.mode=min", "dataset.val_fraction=0.25", override,
                    f"hydra.run.dir={run_dir}")  # fmt: skip
    assert_one_line_error(code, err, needle)
    assert not run_dir.exists()


@pytest.mark.parametrize("override", ["early_stopping.patience=2", "early_stopping.min_delta=0.01"])
def test_patience_without_a_monitor_is_refused(monkeypatch, capsys, tmp_path, override) -> None:
    """Early stopping stays off by default; tuning it without turning it on is one line."""
    run_dir = tmp_path / "run"
    code, err = cli(monkeypatch, capsys, *FC, override, f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, override, "early_stopping.monitor=auto")
    assert not run_dir.exists()


def test_a_sweep_over_the_monitor_may_set_patience() -> None:
    from snnrun.cli.precheck import refuse_idle_early_stopping

    sweep = ["early_stopping.monitor=null,auto", "early_stopping.patience=1"]
    refuse_idle_early_stopping(sweep, {"monitor": None})


def test_monitor_auto_with_mode_min_is_refused(monkeypatch, capsys, tmp_path) -> None:
    run_dir = tmp_path / "run"
    code, err = cli(monkeypatch, capsys, *FC, "early_stopping.monitor=auto",
                    "early_stopping.mode=min", f"hydra.run.dir={run_dir}")  # fmt: skip
    assert_one_line_error(code, err, "early_stopping.monitor=auto watches an accuracy (test_acc)",
                          "early_stopping.mode=max")  # fmt: skip
    assert not run_dir.exists()


# loggers


def fail_appends_under(monkeypatch, folder: Path, once: Path) -> list[bool]:
    """Appending to a file under ``folder`` fails as on a file system remounted read-only
    (TensorBoard's writer thread opens its event file for each append), once the file
    ``once`` exists, until the returned flag is cleared."""
    real_open, on = io.open, [True]

    def read_only(file, mode="r", *args, **kwargs):
        name = os.fsdecode(file) if isinstance(file, (str, bytes, os.PathLike)) else ""
        if on[0] and "a" in mode and Path(name).is_relative_to(folder) and once.exists():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "open", read_only)
    return on


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_tensorboard_folder_read_only_mid_run_is_one_line(monkeypatch, capsys, tmp_path) -> None:
    """Read-only after epoch 1's checkpoint: no writer-thread traceback and no bytes path, but
    one line naming the folder and the fix; following it continues the run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    args = [o for o in FC if o != "logger=none"] + ["logger=tensorboard", "epochs=2"]
    on = fail_appends_under(monkeypatch, run_dir / "tensorboard", run_dir / "checkpoint_latest.pt")
    code, err = cli(monkeypatch, capsys, *args, f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, f"{run_dir / 'tensorboard'}", "Read-only file system",
                          "make that folder writable", f"snnrun resume={run_dir}")  # fmt: skip
    assert "b'" not in err and "hydra.run.dir" not in err
    on[0] = False
    train_in_process(monkeypatch, f"resume={run_dir}")
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    steps = [r["global_step"] for r in read_metrics(run_dir)]
    assert [e.step for e in events.Scalars("test_acc")] == steps and len(steps) == 2


def test_deleted_tensorboard_folder_is_logged_again_on_resume(monkeypatch, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    args = [o for o in FC if o != "logger=none"]
    train_in_process(monkeypatch, *args, "logger=tensorboard", "epochs=2",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    shutil.rmtree(run_dir / "tensorboard")
    train_in_process(monkeypatch, f"resume={run_dir}", "epochs=3")
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("test_acc")] == [
        (r["global_step"], pytest.approx(r["test_acc"])) for r in read_metrics(run_dir)
    ]
    assert len(events.Scalars("test_acc")) == 3


# divergence


def test_divergence_in_epoch_1_says_no_checkpoint_was_written(
    monkeypatch, capsys, tmp_path
) -> None:
    run_dir = tmp_path / "run"
    code, err = cli(monkeypatch, capsys, *TINY, "optimizer.lr=1e30", f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, "diverged in epoch 1", "no checkpoint was written",
                          "optimizer.lr (it is 1e+30)", "optimizer.clip_grad_norm")  # fmt: skip
    assert "kept" not in err and not run_dir.exists()


# console


def test_epoch_line_shows_validation_numbers(monkeypatch, capsys, tmp_path) -> None:
    train_in_process(monkeypatch, *FC, "dataset.val_fraction=0.25", "checkpoint.monitor=val_loss",
                     "checkpoint.mode=min", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    record = read_metrics(tmp_path / "run")[0]
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("epoch   1/1"))
    assert f"val_loss={record['val_loss']:.4f} val_acc={record['val_acc']:.4f}" in line, line


def test_start_summary_says_gradients_are_clipped(monkeypatch, capsys, tmp_path) -> None:
    train_in_process(monkeypatch, *FC, "optimizer.clip_grad_norm=0.5",
                     f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    out = capsys.readouterr().out
    assert "clip_grad_norm=0.5" in out, out
    train_in_process(monkeypatch, *FC, f"hydra.run.dir={tmp_path / 'plain'}")
    out = capsys.readouterr().out
    assert "clip_grad_norm" not in out and "early_stopping" not in out


def test_resume_names_the_epoch_it_trains(monkeypatch, capsys, tmp_path) -> None:
    """Two epochs done: the resume trains epoch 3 and says so."""
    run_dir = tmp_path / "run"
    train_in_process(monkeypatch, *FC, "epochs=2", f"hydra.run.dir={run_dir}")
    capsys.readouterr()
    train_in_process(monkeypatch, f"resume={run_dir}", "epochs=3")
    out = capsys.readouterr().out
    assert f"resuming {run_dir} at epoch 3 of 3" in out, out
    assert "epoch   3/3" in out
