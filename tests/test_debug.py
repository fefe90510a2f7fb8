"""The ``debug`` group through the command: fast_dev_run, overfit, limit and profile. A mode
sets epochs and the dataset's limits; keys given on the command line win (so these tests
leave out TINY's)."""

from __future__ import annotations

import json
from pathlib import Path

from snnrun.run.rundir import RunDir

from conftest import TINY, read_metrics, train_in_process

SMALL = [*(o for o in TINY if not o.startswith(("dataset.", "epochs="))), "batch_size=16", "T=2"]


def test_fast_dev_run_runs_two_batches_once_and_keeps_no_checkpoint(
    tmp_path: Path, monkeypatch
) -> None:
    run_dir = tmp_path / "run"
    train_in_process(monkeypatch, *SMALL, "debug=fast_dev_run", f"hydra.run.dir={run_dir}")
    assert [r["epoch"] for r in read_metrics(run_dir)] == [0]
    assert not list(run_dir.glob("checkpoint_*.pt")) and not (run_dir / "wandb").exists()
    sizes = RunDir(run_dir).read_info()["data"]
    assert (sizes["train_size"], sizes["test_size"]) == (32, 32)  # 2 batches of 16 each


def test_overfit_drives_the_training_loss_to_about_zero(tmp_path: Path, monkeypatch) -> None:
    """One batch of 16 digits, 25 epochs at a constant lr: the loss falls from about 0.1 (the
    MSE of a silent output) to under a tenth of it, and every training sample is right."""
    run_dir = tmp_path / "run"
    train_in_process(monkeypatch, *SMALL, "T=4", "debug=overfit", "epochs=25", "scheduler=none",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    history = read_metrics(run_dir)
    assert len(history) == 25 and history[0]["train_loss"] > 0.09
    assert history[-1]["train_loss"] < 0.01 and history[-1]["train_acc"] == 1.0


def test_limit_caps_the_batches_per_epoch(tmp_path: Path, monkeypatch) -> None:
    run_dir = tmp_path / "run"
    train_in_process(monkeypatch, *SMALL, "debug=limit", "debug.train_batches=3", "epochs=1",
                     "debug.test_batches=1", f"hydra.run.dir={run_dir}")  # fmt: skip
    record = read_metrics(run_dir)[0]
    assert record["global_step"] == 3  # 3 optimizer steps in the epoch
    sizes = RunDir(run_dir).read_info()["data"]
    assert (sizes["train_size"], sizes["test_size"]) == (48, 16)
    assert (run_dir / "checkpoint_latest.pt").is_file()


def test_profile_writes_a_trace_and_the_top_ops(tmp_path: Path, monkeypatch, capsys) -> None:
    run_dir = tmp_path / "run"
    train_in_process(monkeypatch, *SMALL, "debug=profile", "debug.profile_steps=2",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    trace = json.loads((run_dir / "profile" / "trace.json").read_text())
    names = {e.get("name", "") for e in trace["traceEvents"]}
    assert any("conv" in n for n in names)  # the network's own operators are in it
    table = (run_dir / "profile" / "top_ops.txt").read_text()
    assert "Self CPU" in table and table.split("\n")[0] in capsys.readouterr().out
