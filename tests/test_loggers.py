"""W&B logging and console progress: bounded checkpoint artifacts, a quiet W&B with one line
about its files, true advice when ``wandb/`` is read-only, logger keys checked up front,
re-logging what a segment never logged, progress lines with an ETA off a terminal."""

from __future__ import annotations

import csv
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.progress import TimeRemainingColumn

from snnrun.cli.command import main
from snnrun.core.errors import SnnrunError
from snnrun.core.progress import progress_bar
from snnrun.run.logger import WandbLogger, check_logger_conf
from snnrun.run.rundir import RunDir
from snnrun.run.wandb_files import artifact_epochs, artifact_records, logged_epochs

from conftest import (
    REPO,
    TINY,
    assert_one_line_error,
    cli,
    read_metrics,
    run_snnrun,
    train_in_process,
)

SMALL = [*TINY, "dataset.train_limit=64", "dataset.test_limit=64", "batch_size=32"]
WANDB = [o for o in SMALL if o != "logger=none"] + ["logger=wandb"]


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("snnrun: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def read_only(path: Path) -> dict[str, str]:
    """The env that makes creating folders under ``path`` fail with EROFS (tests/faults)."""
    faults = os.pathsep.join(p for p in (str(REPO / "tests" / "faults"),
                                         os.environ.get("PYTHONPATH")) if p)  # fmt: skip
    return {"PYTHONPATH": faults, "SNNRUN_FAULT": f"mkdir_erofs:{path}"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """Three epochs with logger=wandb and W&B's own output on, HOME in a temp folder."""
    root = tmp_path_factory.mktemp("wandb")
    env = {"HOME": str(root / "home"), "WANDB_SILENT": None}
    proc = run_snnrun([*WANDB, "epochs=3", f"hydra.run.dir={root / 'run'}"], cwd=root, env=env)
    return root / "run", root / "home", proc


def test_checkpoint_artifacts_are_the_latest_and_best_only(trained) -> None:
    """Default ``logger.checkpoints=latest_best``: at most two versions (not one per epoch), so
    at most two checkpoint copies in W&B's staging folder under HOME."""
    run_dir, home, _ = trained
    run_id = RunDir(run_dir).read_info()["run_id"]
    records = [r for f in run_dir.glob("wandb/*run-*/run-*.wandb") for r in artifact_records(f)]
    history = read_metrics(run_dir)
    best = max(history, key=lambda r: r["test_acc"])["epoch"]
    assert [r["name"] for r in records] == [f"model-{run_id}"] * len(sorted({best, 2}))
    assert {"latest", "epoch-2"} <= set(records[-1]["aliases"])  # logged last: W&B's latest
    assert any({"best", f"epoch-{best}"} <= set(r["aliases"]) for r in records)
    staged = list((home / ".local/share/wandb/artifacts/staging").iterdir())
    assert len(staged) == len(records) <= 2


def test_wandb_is_quiet_but_one_line_says_where_its_files_are(trained) -> None:
    """No W&B banner, run summary or sync hint; one snnrun line with the sync command."""
    run_dir, home, proc = trained
    assert not [line for line in proc.stderr.splitlines() if line.startswith("wandb:")], proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("W&B:")]
    assert len(lines) == 1, proc.stdout
    assert f"wandb sync {run_dir / 'wandb'}/offline-run-*" in lines[0]
    assert str(home / ".local/share/wandb/artifacts/staging") in lines[0]


def test_read_only_wandb_dir_on_resume_and_what_a_later_resume_logs(trained, tmp_path) -> None:
    """A resume with ``wandb/`` read-only names the folder and a fix a resume accepts
    (WANDB_MODE=disabled, not logger=none); following it works; the next resume with W&B
    logs the epoch and the checkpoint that segment never logged (as after a SIGKILL)."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    env = {"HOME": str(tmp_path / "home"), **read_only(run_dir / "wandb")}
    proc = run_snnrun([f"resume={run_dir}", "epochs=4"], cwd=tmp_path, check=False, env=env)
    line = one_error_line(proc, f"{run_dir / 'wandb'}", "writable", "WANDB_MODE=disabled")
    assert "logger=none" not in line and "WANDB_MODE=offline" not in line
    run_snnrun(
        [f"resume={run_dir}", "epochs=4"], cwd=tmp_path, env={**env, "WANDB_MODE": "disabled"}
    )
    assert 3 not in logged_epochs(run_dir / "wandb")
    run_id = RunDir(run_dir).read_info()["run_id"]
    assert 3 not in artifact_epochs(run_dir / "wandb", f"model-{run_id}")
    run_snnrun([f"resume={run_dir}", "epochs=4"], cwd=tmp_path, env={"HOME": env["HOME"]})
    assert logged_epochs(run_dir / "wandb") == {0, 1, 2, 3}
    assert 3 in artifact_epochs(run_dir / "wandb", f"model-{run_id}")


def test_read_only_wandb_dir_on_a_fresh_run_advises_logger_none(tmp_path, monkeypatch) -> None:
    rundir = RunDir(tmp_path / "run")
    rundir.path.mkdir()
    rundir.write_info({"run_id": "abc"})

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(SnnrunError) as e:
        WandbLogger(mode="offline").start(rundir, "abc", {}, None, [])
    assert "Read-only file system" in str(e.value) and "logger=none" in str(e.value)
    assert "make that folder writable" in str(e.value) and "\n" not in str(e.value)


def test_logger_keys_are_checked_up_front() -> None:
    """What the command's pre-check calls: an unknown key or a bad value is one line."""
    check_logger_conf({"name": "wandb", "project": "p", "checkpoints": "none"})
    with pytest.raises(SnnrunError, match=r"logger=wandb has no key 'notes' \(its keys: .*"
                                          r"checkpoints\); drop logger.notes"):  # fmt: skip
        check_logger_conf({"name": "wandb", "notes": "x"})
    with pytest.raises(SnnrunError, match="logger=none has no key 'project'"):
        check_logger_conf({"name": "none", "project": "p"})
    with pytest.raises(SnnrunError, match=r"logger\.checkpoints='some'; use one of latest_best"):
        check_logger_conf({"name": "wandb", "checkpoints": "some"})
    with pytest.raises(SnnrunError, match=r"logger=csv\+tensorboard has no key 'project'"):
        check_logger_conf({"use": {"csv": True, "tensorboard": True}, "project": "p"})
    check_logger_conf({"use": {"wandb": True, "csv": True}, "project": "p"})  # wandb's key


def test_unknown_logger_key_fails_before_the_run_dir_exists(tmp_path, monkeypatch, capsys) -> None:
    run_dir = tmp_path / "run"
    code, err = cli(monkeypatch, capsys, *WANDB, "+logger.notes=x", f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, "logger=wandb has no key 'notes'", "drop logger.notes")
    assert not run_dir.exists()


def test_progress_off_a_terminal_prints_lines_with_an_eta(capsys) -> None:
    """Output to a file: a plain line at each tenth of a long pass (samples/s, ETA), none
    within ``every_s`` of the last; the loss is never needed (the bar stays disabled)."""
    clock = [0.0]
    bar = progress_bar()
    bar.get_time = lambda: clock[0]
    assert bar.disable and any(isinstance(c, TimeRemainingColumn) for c in bar.columns)
    with bar:
        task = bar.add_task("epoch 0 train", total=1000, loss="")
        for _ in range(100):
            clock[0] += 1.0
            bar.update(task, advance=10, loss="")
        fast = bar.add_task("epoch 0 test", total=1000, loss="")
        for _ in range(100):
            clock[0] += 0.01
            bar.update(fast, advance=10, loss="")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 9, lines
    assert lines[0] == "epoch 0 train  10% 100/1,000  10 samples/s  ETA 0:01:30"
    assert lines[-1] == "epoch 0 train  90% 900/1,000  10 samples/s  ETA 0:00:10"


def test_csv_and_tensorboard_loggers_through_the_command(tmp_path, monkeypatch) -> None:
    """``logger=csv``: metrics.csv holds every record of metrics.jsonl (a resume keeps them
    in one table); ``logger=[wandb,tensorboard]``: both at once; the event files hold each
    epoch's scalars and the per-step loss against global_step, and viz.every_n_epochs'
    figures; W&B has the run too, and a resume continues both."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    small = ["model=fc", "dataset.train_limit=64", "batch_size=32", "log_every=1"]
    fc = [o for o in TINY if not o.startswith("model.")] + small
    run_dir = tmp_path / "csv"
    train_in_process(monkeypatch, *fc, "logger=csv", f"hydra.run.dir={run_dir}")
    monkeypatch.setattr(sys, "argv", ["snnrun", f"resume={run_dir}", "epochs=2"])
    main()
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    records = RunDir(run_dir).read_metrics()
    assert [int(r["epoch"]) for r in rows] == [r["epoch"] for r in records] == [0, 1]
    assert [float(r["test_acc"]) for r in rows] == [r["test_acc"] for r in records]

    run_dir = tmp_path / "tb"
    train_in_process(monkeypatch, *fc, "logger=[wandb,tensorboard]", "viz.every_n_epochs=1",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    config = RunDir(run_dir).read_config()["logger"]
    assert config["use"] == {"wandb": True, "tensorboard": True} and config["mode"] == "offline"
    monkeypatch.setattr(sys, "argv", ["snnrun", f"resume={run_dir}", "epochs=2"])
    main()
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    records = RunDir(run_dir).read_metrics()
    assert [(e.step, e.value) for e in events.Scalars("test_acc")] == [
        (r["global_step"], pytest.approx(r["test_acc"])) for r in records
    ]
    assert [e.step for e in events.Scalars("train_step/loss")] == [1, 2, 3, 4]
    assert "figures/curves" in events.Tags()["images"]
    assert logged_epochs(run_dir / "wandb") == {0, 1}  # W&B has both epochs, in one run
