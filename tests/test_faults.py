"""Fault injection with real ``snnrun`` processes: kills, signals, full and read-only disks,
concurrent resumes, foreign and malicious checkpoints. Each case checks that the run's files
are intact and that a resume continues exactly (tests/faults/sitecustomize.py injects faults)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from snnrun.run.checkpoint import load_checkpoint
from snnrun.run.rundir import LATEST, RunDir
from snnrun.run.wandb_files import logged_epochs

from conftest import REPO, TINY, read_metrics, run_snnrun, start, wait_for_epochs, without_timing

FAULTS = REPO / "tests" / "faults"
SMALL = [*TINY, "dataset.train_limit=128", "dataset.test_limit=64", "batch_size=32"]


def faulty_env(fault: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "SNNRUN_FAULT": fault}


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("snnrun: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def assert_intact(run_dir: Path, temp_files_ok: bool = False) -> None:
    """The latest checkpoint loads and agrees with metrics.jsonl; no temp files are left (a
    SIGKILLed writer leaves one, which the next run's claim removes)."""
    payload = RunDir(run_dir).load_checkpoint("latest")
    assert [r["epoch"] for r in read_metrics(run_dir)] == list(range(payload["state"]["epoch"]))
    assert temp_files_ok or not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> list[dict]:
    """An uninterrupted 3-epoch run: what every interrupted-and-resumed run must reproduce."""
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    run_snnrun([*SMALL, "epochs=3", f"hydra.run.dir={run_dir}"], cwd=run_dir.parent)
    return without_timing(read_metrics(run_dir))


@pytest.mark.parametrize(("fault", "needles"), [
    ("kill:2", ()),
    ("kill:3", ()),
    ("enospc:2", ("No space left on device", "free disk space", "resume=")),
    ("enospc:3", ("No space left on device", "free disk space", "resume=")),
    ("erofs:3", ("Read-only file system", "writable")),
])  # fmt: skip
def test_failed_checkpoint_write_keeps_the_last_one(tmp_path, whole, fault, needles) -> None:
    """A checkpoint write dies (SIGKILL) or fails (full disk, read-only): write 2 is epoch 0's
    best checkpoint, write 3 epoch 1's latest. Epoch 0 stays whole, one line names the fix,
    and a resume reproduces the uninterrupted run."""
    run_dir = tmp_path / "run"
    proc = run_snnrun([*SMALL, "epochs=3", f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                      check=False, env=faulty_env(fault))  # fmt: skip
    if fault.startswith("kill"):
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 2
        one_error_line(proc, *needles)
    assert_intact(run_dir, temp_files_ok=fault.startswith("kill"))
    assert len(read_metrics(run_dir)) == 1
    run_snnrun([f"resume={run_dir}"], cwd=tmp_path)
    assert without_timing(read_metrics(run_dir)) == whole
    assert_intact(run_dir)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_end_cleanly(tmp_path, whole, sig, code) -> None:
    run_dir = tmp_path / "run"
    proc = start([*SMALL, "epochs=3", "logger=wandb", f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for_epochs(run_dir, 1, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == code, err
    lines = [line for line in err.splitlines() if line.startswith("snnrun")]
    assert len(lines) == 1 and f"stopped by {sig.name}" in lines[0] and "resume=" in lines[0]
    assert "Traceback" not in err
    assert_intact(run_dir)
    done = len(read_metrics(run_dir))
    assert logged_epochs(run_dir / "wandb") == set(range(done))  # the logger was flushed
    run_snnrun([f"resume={run_dir}"], cwd=tmp_path)
    assert without_timing(read_metrics(run_dir)) == whole


def test_sigkill_then_resume_relogs_what_wandb_lost(tmp_path) -> None:
    """SIGKILL (process group: W&B's service dies too) loses unflushed W&B history; the resume
    logs again every epoch that metrics.jsonl holds and no W&B file has."""
    run_dir = tmp_path / "run"
    proc = start([*SMALL, "epochs=50", "logger=wandb", f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for_epochs(run_dir, 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    done = len(read_metrics(run_dir))
    run_snnrun([f"resume={run_dir}", f"epochs={done + 1}"], cwd=tmp_path)
    assert logged_epochs(run_dir / "wandb") == set(range(done + 1))


def test_concurrent_resumes_cannot_both_train(tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_snnrun([*SMALL, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    first = start([f"resume={run_dir}", "epochs=100"], tmp_path)
    wait_for_epochs(run_dir, 2, first)
    second = run_snnrun([f"resume={run_dir}", "epochs=100"], cwd=tmp_path, check=False)
    assert first.poll() is None, "the first resume ended before the second started"
    assert second.returncode == 2
    one_error_line(second, "in use by another snnrun process", str(first.pid))
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    epochs = [r["epoch"] for r in read_metrics(run_dir)]
    assert epochs == list(range(len(epochs))) and len(epochs) >= 2
    assert_intact(run_dir)


def test_a_killed_run_does_not_block_its_dir(tmp_path) -> None:
    """Killed before its first checkpoint (its claim is stale): a later run may use the dir."""
    run_dir = tmp_path / "run"
    proc = start([*SMALL, "epochs=0", f"hydra.run.dir={run_dir}"], tmp_path)
    proc.communicate(timeout=120)
    assert (run_dir / "run.lock").exists() and not (run_dir / LATEST).exists()
    run_snnrun([*SMALL, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert len(read_metrics(run_dir)) == 1


def test_a_run_dir_in_a_read_only_folder_is_one_line(tmp_path) -> None:
    parent = tmp_path / "readonly"
    proc = run_snnrun([*SMALL, f"hydra.run.dir={parent / 'run'}"], cwd=tmp_path, check=False,
                      env=faulty_env(f"mkdir_erofs:{parent}"))  # fmt: skip
    assert proc.returncode == 2
    one_error_line(proc, "Read-only file system", "writable")
    assert not parent.exists()


def test_another_runs_checkpoint_is_refused(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for run_dir in (a, b):
        run_snnrun([*SMALL, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    shutil.copy2(a / LATEST, b / LATEST)
    before = {p.name: p.read_bytes() for p in b.iterdir() if p.is_file()}
    proc = run_snnrun([f"resume={b}", "epochs=2"], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    one_error_line(proc, "belongs to run", "copied from another run dir")
    assert {p.name: p.read_bytes() for p in b.iterdir() if p.is_file()} == before


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_checkpoint_runs_nothing(tmp_path) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "pwned"
    run_snnrun([*SMALL, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    payload = load_checkpoint(run_dir / LATEST)
    payload["model"] = _Evil(marker)
    with (run_dir / LATEST).open("wb") as f:
        torch.save(payload, f)
    proc = run_snnrun([f"resume={run_dir}", "epochs=2"], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    one_error_line(proc, "refusing", "pickled Python objects")
    assert not marker.exists()


def test_rerunning_a_sweep_into_its_dir_writes_nothing(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *SMALL, "optimizer.lr=0.01,0.02", f"hydra.sweep.dir={sweep}"]
    run_snnrun(args, cwd=tmp_path)
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    proc = run_snnrun([*args[:-2], "optimizer.lr=0.5,0.6", args[-1]], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    one_error_line(proc, "already holds a sweep", "hydra.sweep.dir")
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == before
