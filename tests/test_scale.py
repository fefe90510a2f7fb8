"""Beyond one process: DDP through torchrun (gloo, 2 CPU ranks), Hydra's joblib and submitit
launchers, an Optuna sweep, and a relaunched (requeued) job continuing with resume=auto."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from snnrun.run.rundir import RunDir

from conftest import (
    SNNRUN,
    TINY,
    kill_everything_of,
    read_metrics,
    run_snnrun,
    start,
    wait_for_epochs,
    without_timing,
)

TORCHRUN = Path(sys.executable).with_name("torchrun")
FC = ["model=fc", *[o for o in TINY if not o.startswith("model.")]]  # no BatchNorm


def torchrun(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "snnrun", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if check and proc.returncode:
        raise AssertionError(f"torchrun failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_two_ranks_match_one_process_with_the_same_global_batch(tmp_path) -> None:
    """Each rank takes half of every global batch; DDP averages the gradients: the same
    training as one process up to float summation order, for a nested network (a SEW block
    and a recurrent output neuron)."""
    nested = ("model.layers=[{type:flatten},{type:linear,out_features:10,bias:false},"
              "{type:neuron},{type:residual,connect:iand,body:[{type:neuron}]},"
              "{type:recurrent,layers:[{type:linear,bias:false}]}]")  # fmt: skip
    args = [*FC, nested, "epochs=2", "batch_size=64"]
    run_snnrun([*args, f"hydra.run.dir={tmp_path / 'one'}"], cwd=tmp_path)
    torchrun([*args, f"hydra.run.dir={tmp_path / 'two'}"], cwd=tmp_path)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    for a, b in zip(one, two, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-5
        assert abs(a["test_acc"] - b["test_acc"]) <= 1 / 128
        for layer in ("L2", "L3.body.0", "L4.neuron"):  # over the whole test set
            assert abs(a[f"firing_rate/{layer}"] - b[f"firing_rate/{layer}"]) < 1e-3
    payload = RunDir(tmp_path / "two").load_checkpoint("latest")
    assert len(payload["rng"]) == 2  # every rank's random state


def test_two_ranks_accumulating_match_one_process_with_the_whole_batch(tmp_path) -> None:
    """2 ranks x 16 samples x 2 accumulated batches (DDP syncs the gradients at each group's
    last batch only) train as one process with batches of 64."""
    args = [*FC, "epochs=2", "encoder=direct"]
    run_snnrun([*args, "batch_size=64", f"hydra.run.dir={tmp_path / 'one'}"], cwd=tmp_path)
    torchrun([*args, "batch_size=32", "accumulate_grad_batches=2",
              f"hydra.run.dir={tmp_path / 'two'}"], cwd=tmp_path)  # fmt: skip
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    for a, b in zip(one, two, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-5 and a["test_acc"] == b["test_acc"]
    w_one = RunDir(tmp_path / "one").load_checkpoint("latest")["model"]
    w_two = RunDir(tmp_path / "two").load_checkpoint("latest")["model"]
    for key in w_one:
        torch.testing.assert_close(w_two[key], w_one[key], rtol=0, atol=1e-6)


def _rank_pid(run_dir: Path, rank: int) -> int:
    """The pid of the torchrun worker of ``rank`` training in ``run_dir``."""
    marker = f"hydra.run.dir={run_dir}\0".encode()
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            if marker in (proc / "cmdline").read_bytes() and f"RANK={rank}".encode() in env:
                return int(proc.name)
        except OSError:
            pass  # it ended meanwhile
    raise AssertionError(f"no rank {rank} training in {run_dir}")


def test_two_ranks_one_killed_mid_epoch_resume_exactly(tmp_path) -> None:
    """Rank 1 SIGKILLed: rank 0 ends with one line and the resume hint (not gloo's traceback
    through Hydra, nor torchrun's SIGTERM as a traceback); the resume continues exactly."""
    args = [*TINY, "epochs=4", "encoder=poisson", "dataset.train_limit=512"]
    torchrun([*args, f"hydra.run.dir={tmp_path / 'whole'}"], cwd=tmp_path)
    killed = tmp_path / "killed"
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "snnrun", *args,
           f"hydra.run.dir={killed}"]  # fmt: skip
    proc = start(cmd, cwd=tmp_path)
    wait_for_epochs(killed, 2, proc, timeout=300)
    try:
        os.kill(_rank_pid(killed, 1), signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        kill_everything_of(killed)
    ours = [line for line in err.splitlines() if line.startswith("snnrun: ")]
    # rank 0 learns of the death from gloo (mid-collective) or, when torchrun's SIGTERM comes
    # first (a loaded machine, rank 0 between collectives), from the signal: one line either way
    ended = ("another rank ended", "stopped by SIGTERM")
    assert len(ours) == 1 and any(e in ours[0] for e in ended), err
    assert ours[0].endswith(f"resume={killed}") and "Error executing job" not in err
    done = len(read_metrics(killed))
    assert 1 <= done < 4, "the run was not killed mid-training"
    torchrun([f"resume={killed}"], cwd=tmp_path)
    assert without_timing(read_metrics(killed)) == without_timing(read_metrics(tmp_path / "whole"))


def test_a_relaunched_job_continues_with_resume_auto(tmp_path) -> None:
    """What a requeued SLURM job does: the same command again; resume=auto continues the run
    in its dir exactly, and refuses a dir holding a run of another config."""
    run_dir = tmp_path / "job"
    args = [*TINY, "epochs=3", "resume=auto", f"hydra.run.dir={run_dir}"]
    run_snnrun([*TINY, "epochs=3", f"hydra.run.dir={tmp_path / 'whole'}"], cwd=tmp_path)
    proc = subprocess.Popen([str(SNNRUN), *args], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while len(read_metrics(run_dir)) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run_snnrun(args, cwd=tmp_path)  # relaunched as it was
    assert without_timing(read_metrics(run_dir)) == without_timing(read_metrics(tmp_path / "whole"))
    other = run_snnrun([*args[:-1], "optimizer.lr=0.5", args[-1]], cwd=tmp_path, check=False)
    assert other.returncode == 2 and "holds a run of another config" in other.stderr


@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
    ],
    ids=["joblib", "submitit_local"],
)
def test_launcher_runs_a_sweep_through_a_crashing_job(tmp_path, launcher) -> None:
    """lr=1e38 overflows inside Adam (a crash, not a user error): that job is marked failed
    with one line (its traceback in failed.txt), the others run, the table prints and is saved,
    the sweep exits 1."""
    pytest.importorskip(launcher[0].split("=")[1].replace("submitit_local", "submitit"))
    sweep = tmp_path / "sweep"
    proc = run_snnrun(["-m", *launcher, *TINY, "optimizer.lr=1e38,0.01",
                       f"hydra.sweep.dir={sweep}"], cwd=tmp_path, check=False)  # fmt: skip
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [len(read_metrics(j)) for j in jobs] == [0, 1], proc.stderr
    assert [RunDir(j).read_config()["optimizer"]["lr"] for j in jobs] == [1e38, 0.01]
    failure = RunDir(jobs[0]).failure() or ""
    assert failure.startswith("RuntimeError: value cannot be converted") and "Traceback" in failure
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "1 sweep job(s) failed: 0; why: " in proc.stderr.splitlines()[-1]
    if launcher[0].endswith("joblib"):  # submitit keeps a job's stderr in its own logs
        assert "(job 0; the sweep goes on)" in proc.stderr
    assert "failed" in proc.stdout and "max_test_acc" in proc.stdout
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and summary[1].startswith("0,failed: RuntimeError")


def _loky_workers(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"LokyProcess" in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_a_stop_reaching_joblib_workers_ends_the_sweep_with_one_line(tmp_path) -> None:
    """SIGINT in the workers (as Ctrl-C or a scheduler sends it): each stops between steps and
    its stop travels back to the launcher (it failed to unpickle: BrokenProcessPool)."""
    sweep = tmp_path / "sweep"
    proc = start(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY, "epochs=50",
                  "optimizer.lr=0.01,0.02", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)  # fmt: skip
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:  # both jobs trained an epoch
        if all((sweep / j / "metrics.jsonl").is_file() for j in "01"):
            break
        time.sleep(0.05)
    try:
        workers = _loky_workers(proc.pid)
        assert len(workers) == 2, proc.poll()
        for worker in workers:
            os.kill(worker, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130 and len(lines) == 1, err
    assert lines[0].startswith("snnrun: stopped by SIGINT") and f"resume={sweep}" in lines[0]


def test_optuna_sweep_goes_on_past_a_failed_trial(tmp_path) -> None:
    """A trial whose lr overflows inside Adam is a FAILED trial and the study goes on (it
    ended the study); the best of the others is maximised max_test_acc. No alembic lines."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "optuna"
    tiny = [o for o in TINY if not o.startswith(("neuron=", "optimizer.lr=", "T="))]  # swept
    proc = run_snnrun(["-m", "hparams_search=lif_optuna", "hydra.sweeper.n_trials=3", *tiny,
                       "optimizer.lr=choice(1e38,0.01)", "seed=2",  # seed 2: 1e38 first
                       f"hydra.sweep.dir={sweep}"], cwd=tmp_path, check=False)  # fmt: skip
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 3, proc.stderr
    assert [RunDir(j).read_config()["optimizer"]["lr"] for j in jobs] == [1e38, 0.01, 0.01]
    assert proc.returncode == 1 and "1 sweep job(s) failed: 0" in proc.stderr, proc.stderr
    assert "(job 0; the sweep goes on)" in proc.stderr and "Traceback" not in proc.stderr
    output = proc.stdout + proc.stderr
    assert "alembic" not in output and "float-castable" not in output
    best = (sweep / "optimization_results.yaml").read_text()
    best_acc = max(read_metrics(j)[-1]["max_test_acc"] for j in jobs[1:])
    assert f"best_value: {best_acc}" in best
    assert (sweep / "summary.csv").is_file() and (sweep / "summary.txt").is_file()


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PLUGGED = [f"--config-dir={EXAMPLES / 'conf'}", "loss=focal", "dataset=digits8",
           "+callbacks.loss_ema._target_=plugins.callback.LossEMA"]  # fmt: skip


def test_your_own_code_runs_in_launcher_jobs_and_on_two_ranks(tmp_path, monkeypatch) -> None:
    """A user's loss, dataset and stateful callback (examples/plugins, on PYTHONPATH) in joblib
    worker processes and on 2 torchrun ranks: each job and rank rebuilds them from the config,
    the callback's key joins every record, and run.json names the user modules."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLES))
    args = [*PLUGGED, *[o for o in TINY if not o.startswith("epochs=")], "epochs=2"]
    sweep = tmp_path / "sweep"
    run_snnrun([*args[:1], "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *args[1:],
                "loss.gamma=0.5,2.0", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)  # fmt: skip
    torchrun([*args, f"hydra.run.dir={tmp_path / 'ranks'}"], cwd=tmp_path)
    for run_dir in [sweep / "0", sweep / "1", tmp_path / "ranks"]:
        records = read_metrics(run_dir)
        assert len(records) == 2 and all("loss_ema" in r for r in records), run_dir
        modules = RunDir(run_dir).read_info()["provenance"]["user_modules"]
        assert {"plugins.focal", "plugins.data", "plugins.callback"} <= set(modules), modules
    gammas = [RunDir(sweep / j).read_config()["loss"]["gamma"] for j in ("0", "1")]
    assert gammas == [0.5, 2.0]
