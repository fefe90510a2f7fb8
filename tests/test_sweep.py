"""Sweeps in-process: the end table (never cut, saved), a failed job's return value; under
torchrun, who reports a stop and what a failed collective means."""

from __future__ import annotations

import csv
import io
import pickle
import signal
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from rich.console import Console

from snnrun.cli import command as cli
from snnrun.core import stop
from snnrun.core.errors import SnnrunError
from snnrun.core.stop import Stopped, peer_lost
from snnrun.run import sweep
from snnrun.run.rundir import RunDir

LR, TAU = "optimizer.lr=0.012345678901234567", "neuron.tau=3.3299848545285125"
GLOO = (
    "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:439: "
    "Connection reset by peer. This is typically caused by a remote worker hanging"
)


def _job(sweep_dir: Path, num: int, overrides: list[str], acc: float | None) -> RunDir:
    job = RunDir(sweep_dir / str(num))
    (job.path / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job.path / ".hydra" / "overrides.yaml")
    if acc is not None:
        job.append_metrics({"epoch": 0, "train_loss": 0.123456, "test_acc": acc,
                            "max_test_acc": acc})  # fmt: skip
    return job


def test_the_table_keeps_every_override_whole_and_is_saved(tmp_path, monkeypatch) -> None:
    """At 80 columns (a log file) no override is cut, floats show 4 decimals, a crash's
    traceback stays out of the table; summary.csv (full values) and summary.txt are written."""
    shared = "dataset.train_limit=256"
    _job(tmp_path, 0, [LR, TAU, "T=8", shared], 0.8765432)
    failed = _job(tmp_path, 1, ["optimizer.lr=1e+38", "neuron.tau=1.5", "T=2", shared], None)
    failed.mark_failed("RuntimeError: overflow\n\nTraceback (most recent call last):\n  ...")
    out = io.StringIO()
    assert sweep.console.soft_wrap  # as here: lines wider than the terminal are never cropped
    monkeypatch.setattr(sweep, "console", Console(file=out, width=80, soft_wrap=True,
                                                  no_color=True))  # fmt: skip
    monkeypatch.setattr(sweep, "FAILED", [])
    sweep.SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": tmp_path}}}))
    table = out.getvalue()
    assert "…" not in table and "Traceback" not in table, table
    for whole in ("optimizer.lr=0.0123", "neuron.tau=3.3300", "optimizer.lr=1e+38", "0.8765"):
        assert whole in table, (whole, table)
    assert "3.32998" not in table and f"every job: {shared}" in table
    assert "RuntimeError:" in table and "overflow" in table and sweep.FAILED == ["1"]
    with (tmp_path / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["0", "1"] and rows[0]["max_test_acc"] == "0.8765432"
    assert LR in rows[0]["overrides"] and rows[1]["status"] == "failed: RuntimeError: overflow"
    text = (tmp_path / "summary.txt").read_text()
    assert any("optimizer.lr=0.0123 neuron.tau=3.3300 T=8" in line for line in text.splitlines())


def test_a_failed_job_is_no_number_for_optuna(tmp_path, capsys) -> None:
    """Optuna's sweeper tells a trial FAILED only for a return value float() refuses (a NaN
    ended the whole study); the job prints one line and keeps its traceback in failed.txt."""
    try:
        raise RuntimeError("value cannot be converted to type float without overflow")
    except RuntimeError as e:
        result = sweep.fail_job(tmp_path / "3", 3, e, user_error=False)
    with pytest.raises(TypeError):
        float(result)  # type: ignore[arg-type]
    assert pickle.loads(pickle.dumps(result)).job == 3  # back from a joblib/submitit worker
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("snnrun: error: RuntimeError: value cannot")
    assert "failed.txt" in lines[0] and "(job 3; the sweep goes on)" in lines[0]
    first, *rest = (tmp_path / "3" / "failed.txt").read_text().splitlines()
    assert first.startswith("RuntimeError:") and "Traceback (most recent call last):" in rest


@pytest.mark.parametrize("rank", [0, 1])
def test_under_torchrun_only_rank_0_says_it_stopped(monkeypatch, capsys, rank) -> None:
    def stopped(args: list[str]) -> None:
        raise Stopped(signal.SIGTERM, Path("/runs/r"))

    monkeypatch.setattr(cli, "_dispatch", stopped)
    monkeypatch.setattr(sys, "argv", ["snnrun"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err.splitlines()
    assert exc.value.code == 143
    assert err == (["snnrun: stopped by SIGTERM: the unfinished epoch was dropped; continue "
                    "with: snnrun resume=/runs/r"] if rank == 0 else [])  # fmt: skip


def test_a_failed_collective_is_a_lost_peer_or_this_ranks_stop(monkeypatch) -> None:
    run_dir = Path("/runs/r")
    assert peer_lost(RuntimeError(GLOO), run_dir) is None  # a world of one: not about peers
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(stop, "_requested", [])
    lost = peer_lost(RuntimeError(GLOO), run_dir)
    assert isinstance(lost, SnnrunError) and "\n" not in str(lost)
    assert "another rank ended" in str(lost) and "Connection reset by peer" in str(lost)
    assert str(lost).endswith(f"resume={run_dir}") and "GLHF" not in str(lost)
    assert peer_lost(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), run_dir) is None
    monkeypatch.setattr(stop, "_requested", [signal.SIGTERM])  # this rank was stopped too
    stopped = peer_lost(RuntimeError(GLOO), run_dir)
    assert isinstance(stopped, Stopped) and stopped.exit_code == 143
