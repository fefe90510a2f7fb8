"""``snnrun runs``: the status of run dirs made by real runs, the filters, the config diff."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from snnrun.cli.command import main
from snnrun.cli.runs import RunsOptions, collect
from snnrun.run.rundir import RunDir

from conftest import (
    TINY,
    assert_one_line_error,
    cli,
    read_metrics,
    runs,
    start,
    table_rows,
    train_in_process,
)

LONG = [*TINY, "epochs=500"]  # stopped, killed or paused long before its end
EARLY_STOP = ["epochs=3", "early_stopping.monitor=train_loss", "early_stopping.mode=min",
              "early_stopping.patience=0", "early_stopping.min_delta=1.0"]  # fmt: skip
DIVERGE = ["epochs=3", "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=1e30"]
# where each run goes under outputs/: as Hydra nests runs and sweep jobs
DIRS = {
    "finished": "2024-01-01/10-00-00",
    "early": "2024-01-01/11-00-00",
    "diverged": "multirun/2024-01-02/09-00-00/0",
    "sigterm": "multirun/2024-01-02/09-00-00/1",
    "killed": "2024-01-03/08-00-00",  # running while the fixture lists, then SIGKILLed
}


@dataclass
class Outputs:
    root: Path  # outputs/
    pid: int  # the killed run's process, while it ran
    while_running: str  # ``snnrun runs <root>`` while it ran


def _signal_after_first_epoch(procs: dict[str, tuple[subprocess.Popen, Path, int]]) -> None:
    """Send each process its signal as soon as its run dir holds one epoch record."""
    waiting, deadline = dict(procs), time.time() + 180
    while waiting and time.time() < deadline:
        for name, (proc, run_dir, sig) in list(waiting.items()):
            if read_metrics(run_dir) or proc.poll() is not None:
                assert proc.poll() is None, proc.communicate()
                os.killpg(proc.pid, sig)
                del waiting[name]
        time.sleep(0.02)
    assert not waiting, f"no first epoch in {list(waiting)}"


def _listed(root: Path) -> str:
    """``snnrun runs <root>``'s output (in this process)."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr(sys, "argv", ["snnrun", "runs", str(root)])
        main()
    return out.getvalue()


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory):
    """``outputs/`` with one real run per status: two commands started, each signalled after
    its first epoch (SIGTERM: stopped; SIGSTOP: paused, holding its lock, until ``snnrun runs``
    has listed it running, then SIGCONT and SIGKILL: failed), and three runs in this process
    (finished, early-stopped, diverged in epoch 2)."""
    root = tmp_path_factory.mktemp("runs") / "outputs"
    signals = {"sigterm": signal.SIGTERM, "killed": signal.SIGSTOP}
    one_thread = {"OMP_NUM_THREADS": "1"}  # two commands and this process share the cores
    procs = {n: (start([*LONG, f"hydra.run.dir={root / DIRS[n]}"], root.parent, one_thread),
                 root / DIRS[n], s) for n, s in signals.items()}  # fmt: skip
    signaller = ThreadPoolExecutor(1).submit(_signal_after_first_epoch, procs)
    try:
        with pytest.MonkeyPatch.context() as mp:  # meanwhile, the commands start
            train_in_process(mp, *TINY, f"hydra.run.dir={root / DIRS['finished']}")
            train_in_process(mp, *TINY, *EARLY_STOP, f"hydra.run.dir={root / DIRS['early']}")
            with pytest.raises(SystemExit):
                train_in_process(mp, *TINY, *DIVERGE, f"hydra.run.dir={root / DIRS['diverged']}")
        signaller.result()
        procs["sigterm"][0].communicate(timeout=60)
        running = procs["killed"][0]
        os.killpg(running.pid, signal.SIGCONT)  # training again while it is listed
        listed = _listed(root)
        os.killpg(running.pid, signal.SIGKILL)
        running.communicate(timeout=60)
        yield Outputs(root, running.pid, listed)
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()


@pytest.fixture
def rows(outputs):
    return {str(r.path.relative_to(outputs.root)): r for r in collect(RunsOptions(outputs.root))}


def test_a_run_training_while_listed_is_running(outputs) -> None:
    row = table_rows(outputs.while_running)[DIRS["killed"]]
    assert (row[3], row[8]) == ("running", f"pid {outputs.pid}"), outputs.while_running


def test_every_run_is_found_and_finished_early_stopped_and_killed_are_told(outputs, rows) -> None:
    assert set(rows) == set(DIRS.values())
    by = {name: rows[path] for name, path in DIRS.items()}
    fin, early, killed = by["finished"], by["early"], by["killed"]
    assert (fin.status, fin.done, fin.planned) == ("finished", 1, 1)
    assert (early.status, early.note, early.done, early.planned) == ("stopped", "early stop", 2, 3)
    assert killed.status == "failed" and "killed or crashed" in killed.note
    assert killed.done >= 1 and killed.planned == 500
    metrics = read_metrics(outputs.root / DIRS["finished"])
    assert fin.last == metrics[-1]["test_acc"] == fin.best
    assert (by["diverged"].model, by["diverged"].dataset) == ("csnn", "digits")
    assert "scheduler.gamma=1e30" in by["diverged"].overrides
    assert "epochs=500" in killed.overrides and "epochs=1" not in killed.overrides
    assert not any(o.startswith("hydra.") for r in rows.values() for o in r.overrides)


def test_a_sigterm_stop_and_a_divergence_are_told(rows) -> None:
    sigterm, diverged = rows[DIRS["sigterm"]], rows[DIRS["diverged"]]
    assert sigterm.status == "stopped" and sigterm.done >= 1 and "SIGTERM" in sigterm.note
    assert (diverged.status, diverged.done) == ("diverged", 1)
    assert "diverged in epoch 2" in diverged.note


def test_the_table_shows_each_run_with_its_status(monkeypatch, capsys, outputs) -> None:
    """``snnrun runs`` in the folder above ``outputs/`` (the default folder): one line per
    run, overrides every run shares in the title."""
    monkeypatch.chdir(outputs.root.parent)
    out = runs(monkeypatch, capsys)
    table = table_rows(out)
    assert set(table) == set(DIRS.values()), out
    want = {"finished": "finished", "early": "stopped", "killed": "failed"}
    for name, status in want.items():
        assert table[DIRS[name]][3] == status, out
    assert table[DIRS["finished"]][4] == "1/1" and table[DIRS["killed"]][4].endswith("/500")
    assert "every run: model.channels=4" in out.splitlines()[0], out
    assert "model.channels=4" not in table[DIRS["killed"]][7]


def test_status_model_and_dataset_filters(monkeypatch, capsys, outputs) -> None:
    root = str(outputs.root)
    out = runs(monkeypatch, capsys, root, "status=finished,stopped")
    assert {DIRS["finished"], DIRS["early"]} <= set(table_rows(out)), out
    assert DIRS["killed"] not in table_rows(out), out
    out = runs(monkeypatch, capsys, root, "status=stopped", "model=csnn")
    assert DIRS["early"] in table_rows(out) and DIRS["finished"] not in table_rows(out), out
    out = runs(monkeypatch, capsys, root, "dataset=mnist")
    assert out.startswith("no run under") and "dataset=mnist" in out and not table_rows(out)


def test_sort_by_best_and_last_accuracy_and_by_date(monkeypatch, capsys, outputs) -> None:
    for key, column in (("best", 5), ("last", 6)):
        table = table_rows(runs(monkeypatch, capsys, str(outputs.root), f"sort={key}"))
        accs = [float(c[column]) for c in table.values() if c[column] != "-"]
        assert accs == sorted(accs, reverse=True) and len(accs) == len(DIRS)
    dates = [r.started for r in collect(RunsOptions(outputs.root, sort="date"))]
    assert dates == sorted(dates)


def test_one_run_dir_lists_itself(monkeypatch, capsys, outputs) -> None:
    table = table_rows(runs(monkeypatch, capsys, str(outputs.root / DIRS["early"])))
    assert [c[3] for c in table.values()] == ["stopped"]


def test_two_run_dirs_show_their_config_differences(monkeypatch, capsys, outputs) -> None:
    a, b = outputs.root / DIRS["finished"], outputs.root / DIRS["early"]
    out = runs(monkeypatch, capsys, str(a), str(b))
    diff = {c[0]: c[1:] for c in (line.split("│")[1:-1] for line in out.splitlines()
                                  if line.startswith("│"))}  # fmt: skip
    diff = {k.strip(): [v.strip() for v in vs] for k, vs in diff.items()}
    assert diff == {
        "epochs": ["1", "3"],
        "scheduler.T_max": ["1", "3"],  # cosine's T_max follows epochs
        "early_stopping.monitor": ["null", "train_loss"],
        "early_stopping.patience": ["5", "0"],
        "early_stopping.min_delta": ["0.0", "1.0"],
        "early_stopping.mode": ["max", "min"],
    }, out
    assert "are the same" in runs(monkeypatch, capsys, str(a), str(a))


def test_end_records_count_only_for_the_run_as_it_stands(tmp_path) -> None:
    """An end record is the run's status while its epoch count is the dir's and no resume
    started after it; a failed write of it is ignored."""
    rundir = RunDir(tmp_path)
    for epoch in range(2):
        rundir.append_metrics({"epoch": epoch, "test_acc": 0.5})
    rundir.mark_ended("stopped", "stopped by SIGTERM")
    assert rundir.status(5, rundir.read_metrics()) == ("stopped", "stopped by SIGTERM")
    rundir.append_metrics({"epoch": 2, "test_acc": 0.5})  # a resume trained on, then was killed
    assert rundir.status(5, rundir.read_metrics())[0] == "failed"
    rundir.mark_ended("diverged", "training diverged in epoch 4")
    assert rundir.status(5, rundir.read_metrics())[0] == "diverged"
    later = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + 2))
    (tmp_path / "run.json").write_text(json.dumps({"resumes": [{"time": later}]}))
    assert rundir.status(5, rundir.read_metrics())[0] == "failed"  # killed after resuming
    assert rundir.status(3, rundir.read_metrics())[0] == "finished"
    with pytest.raises(ValueError, match="use one of stopped"):
        rundir.mark_ended("finished", "x")
    RunDir(tmp_path / "missing").mark_ended("failed", "no folder: ignored")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["{tmp}/nowhere"], ["nowhere does not exist", "folder of runs"]),
        (["{tmp}"], ["holds no snnrun run"]),
        (["{tmp}", "status=done"], ["status='done'", "running,finished,stopped,failed,diverged"]),
        (["{tmp}", "sort=size"], ["sort='size'", "date or best or last"]),
        (["{tmp}", "colour=red"], ["no key 'colour'", "usage: snnrun runs"]),
        (["{tmp}", "{tmp}", "{tmp}"], ["one folder, or two run dirs"]),
        (["{tmp}", "{tmp}", "status=failed"], ["takes no key=value"]),
        (["{tmp}", "{tmp}/nowhere"], ["nowhere is no run dir"]),
        (["{tmp}", "{tmp}"], ["has no config.yaml"]),
    ],
)
def test_bad_input_is_one_line(monkeypatch, capsys, tmp_path, args, needles) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, err = cli(monkeypatch, capsys, "runs", *args)
    assert_one_line_error(code, err, *needles)


def test_bare_runs_lists_outputs_and_help_prints_usage(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = cli(monkeypatch, capsys, "runs")
    assert_one_line_error(code, err, "outputs does not exist")
    assert runs(monkeypatch, capsys, "-h").startswith("usage: snnrun runs [<folder")
