"""End to end through the real command: training, exact resume after a kill, sweeps, W&B files."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from snnrun.api import load_run
from snnrun.cli.command import main
from snnrun.run.checkpoint import load_checkpoint
from snnrun.run.rundir import BEST, LATEST
from snnrun.run.wandb_files import history_rows

from conftest import (
    TINY,
    assert_one_line_error,
    cli,
    killed_and_resumed,
    read_metrics,
    run_snnrun,
    train_in_process,
    without_timing,
)

METRIC_KEYS = {
    "epoch",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "max_test_acc",
    "train_samples_per_s",
    "test_samples_per_s",
    "epoch_seconds",
    "lr",
}


def test_tiny_run_writes_metrics_and_checkpoints(monkeypatch, tmp_path) -> None:
    run_dir = tmp_path / "run"
    train_in_process(monkeypatch, *TINY, "epochs=2", f"hydra.run.dir={run_dir}")
    history = read_metrics(run_dir)
    assert [r["epoch"] for r in history] == [0, 1]
    assert set(history[0]) >= METRIC_KEYS
    assert history[-1]["max_test_acc"] == max(r["test_acc"] for r in history)
    payload = load_checkpoint(run_dir / LATEST)
    assert payload["state"]["epoch"] == 2 and (run_dir / BEST).is_file()
    assert set(payload) >= {
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "rng",
        "config",
        "logger",
        "overrides",
    }
    assert [set(r) for r in payload["rng"]] == [{"python", "numpy", "torch", "cuda"}]  # per rank
    assert history[-1]["train_loss"] < history[0]["train_loss"]  # learning


def test_same_seed_same_metrics(monkeypatch, tmp_path) -> None:
    for name in ("a", "b"):
        train_in_process(monkeypatch, *TINY, "encoder=poisson", f"hydra.run.dir={tmp_path / name}")
    assert without_timing(read_metrics(tmp_path / "a")) == without_timing(
        read_metrics(tmp_path / "b")
    )


def test_precisions_run_on_cpu(monkeypatch, capsys, tmp_path) -> None:
    """Both autocast precisions train on the CPU, and do change the arithmetic; amp_fp16 on a
    CPU says once, in one line without a source line, that it is slow there."""
    losses = {}
    for precision in ("fp32", "amp_bf16", "amp_fp16"):
        run_dir = tmp_path / precision
        capsys.readouterr()
        train_in_process(monkeypatch, *TINY, f"precision={precision}", f"hydra.run.dir={run_dir}")
        losses[precision] = read_metrics(run_dir)[0]["train_loss"]
    out, err = capsys.readouterr()
    assert losses["amp_bf16"] != losses["fp32"] and losses["amp_fp16"] != losses["fp32"]
    warned = [line for line in (out + err).splitlines() if "emulated float16" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: precision=amp_fp16 on cpu")


def test_resume_is_exact_with_scaler_step_schedule_and_workers(monkeypatch, tmp_path) -> None:
    """2 epochs straight vs 1 epoch + resume to 2: GradScaler, StepLR, SGD momentum, Poisson
    input and a worker process all continue exactly."""
    args = [*TINY, "precision=amp_fp16", "scheduler=step", "scheduler.step_size=1",
            "optimizer=sgd", "optimizer.lr=0.05", "encoder=poisson", "num_workers=1"]  # fmt: skip
    train_in_process(monkeypatch, *args, "epochs=2", f"hydra.run.dir={tmp_path / 'whole'}")
    train_in_process(monkeypatch, *args, "epochs=1", f"hydra.run.dir={tmp_path / 'split'}")
    monkeypatch.setattr(sys, "argv", ["snnrun", f"resume={tmp_path / 'split'}", "epochs=2"])
    main()
    whole = without_timing(read_metrics(tmp_path / "whole"))
    assert without_timing(read_metrics(tmp_path / "split")) == whole
    assert whole[1]["lr"] == pytest.approx(0.005)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path) -> None:
    """Kill a real snnrun mid-training, resume it: per-epoch metrics equal an unbroken run."""
    args = [
        *TINY,
        "model.channels=8",
        "dataset.train_limit=1000",
        "epochs=4",
        "encoder=poisson",
        "T=3",
    ]
    killed, expected = killed_and_resumed(args, tmp_path, 4)
    run_snnrun([f"resume={killed}", "epochs=5"], cwd=tmp_path)  # raise epochs and go on
    history = read_metrics(killed)
    assert [r["epoch"] for r in history] == [0, 1, 2, 3, 4]
    assert without_timing(history[:4]) == expected
    # the cosine horizon followed epochs: epoch 4 runs at lr(4) of a 5-epoch schedule
    assert history[4]["lr"] == pytest.approx(0.01 * (1 + math.cos(math.pi * 4 / 5)) / 2)


def test_multirun_two_jobs_each_resumable(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_snnrun(
        ["-m", *TINY, "optimizer.lr=0.01,0.002", f"hydra.sweep.dir={sweep}"], cwd=tmp_path
    )
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["0", "1"]
    lrs = [read_metrics(j)[0]["lr"] for j in jobs]
    assert lrs == [0.01, 0.002]
    assert "optimizer.lr=0.01" in proc.stdout and "max_test_acc" in proc.stdout
    run_snnrun([f"resume={jobs[1]}", "epochs=2"], cwd=tmp_path)
    assert [r["epoch"] for r in read_metrics(jobs[1])] == [0, 1]


def test_a_failing_sweep_job_does_not_stop_the_sweep(tmp_path) -> None:
    """The other jobs run; the table marks the failed one; the sweep then exits 1."""
    sweep = tmp_path / "sweep"
    proc = run_snnrun(["-m", *TINY, "dataset.train_limit=0,64", f"hydra.sweep.dir={sweep}"],
                      cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("snnrun: error:")]
    assert len(errors) == 2 and "train_limit" in errors[0] and "job 0" in errors[0]
    assert "1 sweep job(s) failed: 0" in errors[1]
    assert read_metrics(sweep / "0") == [] and len(read_metrics(sweep / "1")) == 1
    assert "dataset.train_limit=64" in proc.stdout and "failed" in proc.stdout
    run_snnrun([f"resume={sweep / '1'}", "epochs=2"], cwd=tmp_path)  # each job stays resumable


def test_wandb_offline_files_and_resumed_run_id(tmp_path) -> None:
    run_dir = tmp_path / "run"
    args = [o for o in TINY if o != "logger=none"] + ["logger=wandb"]
    run_snnrun([*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path, env={"WANDB_MODE": None})
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    assert load_checkpoint(run_dir / LATEST)["logger"] == {"run_id": run_id}
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith(run_id)
    assert (offline[0] / f"run-{run_id}.wandb").stat().st_size > 0

    run_snnrun([f"resume={run_dir}", "epochs=2"], cwd=tmp_path, env={"WANDB_MODE": None})
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(run_id) for p in offline)
    assert (run_dir / "wandb_run_id.txt").read_text().strip() == run_id


def test_wandb_history_uses_global_step(tmp_path) -> None:
    """The logged rows carry global_step, and a resumed run continues its count."""
    run_dir = tmp_path / "run"
    args = [o for o in TINY if o != "logger=none"] + ["logger=wandb", "log_every=1"]
    run_snnrun([*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    run_snnrun([f"resume={run_dir}", "epochs=2"], cwd=tmp_path)
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    rows = [[r for r in history_rows(f) if "global_step" in r] for f in files]
    epoch_steps = [[r["global_step"] for r in part if "epoch/test_acc" in r] for part in rows]
    train_steps = [[r["global_step"] for r in part if "train/loss" in r] for part in rows]
    assert epoch_steps == [[4], [8]]  # 256 samples / 64 per batch = 4 steps per epoch
    assert train_steps == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_triton_backend_through_the_command(monkeypatch, tmp_path) -> None:
    """neuron.backend=triton end to end (kernels interpreted on the CPU in tests): same first
    epoch as the torch backend up to float rounding of the surrogate gradients. The one-layer
    fc network keeps the interpreter's time small (the kernels' own matrix: test_kernels.py)."""
    histories = []
    for backend in ("torch", "triton"):
        run_dir = tmp_path / backend
        train_in_process(
            monkeypatch,
            *[o for o in TINY if not o.startswith("model.")],
            "model=fc",
            "dataset.train_limit=64",
            "dataset.test_limit=32",
            "batch_size=32",
            f"neuron.backend={backend}",
            f"hydra.run.dir={run_dir}",
        )
        histories.append(read_metrics(run_dir)[0])
    torch_run, triton_run = histories
    assert abs(torch_run["train_loss"] - triton_run["train_loss"]) < 1e-4
    assert abs(torch_run["test_acc"] - triton_run["test_acc"]) <= 1 / 32


@pytest.mark.slow
def test_compile_true_trains(tmp_path) -> None:
    """compile=true: the whole model under torch.compile (minutes of Inductor work on a CPU)."""
    run_dir = tmp_path / "run"
    run_snnrun([*TINY, "compile=true", f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=900)
    assert len(read_metrics(run_dir)) == 1
    assert not any(k.startswith("_orig_mod.") for k in load_checkpoint(run_dir / LATEST)["model"])


def test_clip_grad_norm_bounds_each_update_also_under_amp(monkeypatch, tmp_path) -> None:
    """``optimizer.clip_grad_norm=c`` with plain SGD: every step moves the weights by at most
    ``lr * c`` (here 2 steps), and under amp_fp16 the limit applies to the unscaled gradients
    (clipping the scaled ones would move them ~65536x less); a bad value is one line."""
    args = [*[o for o in TINY if not o.startswith("model.")], "model=fc", "optimizer=sgd",
            "optimizer.momentum=0", "dataset.train_limit=64", "batch_size=32"]  # fmt: skip

    def weights(run_dir):
        return torch.cat(
            [p.detach().flatten() for p in load_run(run_dir, "latest").model.parameters()]
        )

    train_in_process(monkeypatch, *args, "optimizer.lr=0", f"hydra.run.dir={tmp_path / 'init'}")
    start = weights(tmp_path / "init")
    lr, clip = 0.1, 1e-3
    for precision in ("fp32", "amp_fp16"):
        run_dir = tmp_path / precision
        clipped = [f"optimizer.lr={lr}", f"optimizer.clip_grad_norm={clip}"]
        train_in_process(
            monkeypatch, *args, *clipped, f"precision={precision}", f"hydra.run.dir={run_dir}"
        )
        moved = float((weights(run_dir) - start).norm())
        assert 0.5 * lr * clip < moved <= 2 * lr * clip * (1 + 1e-3), (precision, moved)
    with pytest.raises(SystemExit):
        train_in_process(
            monkeypatch, *args, "optimizer.clip_grad_norm=-1", f"hydra.run.dir={tmp_path}/x"
        )


def test_best_checkpoint_follows_checkpoint_monitor(monkeypatch, capsys, tmp_path) -> None:
    """A constructed case (the test pass's accuracies replaced): validation is best at epoch 2,
    test at epoch 1; ``checkpoint_best.pt`` follows ``checkpoint.monitor`` (auto: val_acc with
    a validation split), and the record carries val_loss / val_acc."""
    from snnrun.engine import trainer

    real = trainer.test_pass
    fc = [o for o in TINY if not o.startswith("model.")] + ["model=fc", "dataset.train_limit=64"]
    for monitor, best_epoch in (("auto", 2), ("test_acc", 1)):
        accs = {"val": iter([0.5, 0.8]), "test": iter([0.9, 0.4])}

        def crafted(net, loader, step, monitors=(), label="", accs=accs):
            return {
                **real(net, loader, step, monitors, label),
                "acc": next(accs[label[-4:].strip()]),
            }

        monkeypatch.setattr(trainer, "test_pass", crafted)
        run_dir = tmp_path / monitor
        train_in_process(monkeypatch, *fc, "epochs=2", "dataset.val_fraction=0.25",
                         f"checkpoint.monitor={monitor}", f"hydra.run.dir={run_dir}")  # fmt: skip
        assert load_checkpoint(run_dir / BEST)["state"]["epoch"] == best_epoch
        assert [r["val_acc"] for r in read_metrics(run_dir)] == [0.5, 0.8]
        assert read_metrics(run_dir)[0]["test_acc"] == 0.9
    monkeypatch.setattr(trainer, "test_pass", real)
    code, err = cli(monkeypatch, capsys, *fc, "checkpoint.monitor=val_acc",
                    f"hydra.run.dir={tmp_path / 'bad'}")  # fmt: skip
    assert_one_line_error(code, err, "checkpoint.monitor='val_acc'", "dataset.val_fraction > 0")


def test_early_stopping_stops_and_a_resume_keeps_it_stopped(monkeypatch, tmp_path) -> None:
    """No train_loss improvement of more than 1.0 (never) with patience 2: epoch 1 sets the
    best, epochs 2 and 3 are stale, the run ends after epoch 3 of 6 and says so in the record;
    a resume to 8 epochs trains nothing."""
    fc = [o for o in TINY if not o.startswith("model.")] + ["model=fc", "dataset.train_limit=64"]
    run_dir = tmp_path / "run"
    stop = ["early_stopping.monitor=train_loss", "early_stopping.mode=min",
            "early_stopping.patience=2", "early_stopping.min_delta=1.0"]  # fmt: skip
    train_in_process(monkeypatch, *fc, *stop, "epochs=6", f"hydra.run.dir={run_dir}")
    records = read_metrics(run_dir)
    assert len(records) == 3 and records[-1]["early_stop"] is True
    assert "early_stop" not in records[1]
    train_in_process(monkeypatch, f"resume={run_dir}", "epochs=8")
    assert len(read_metrics(run_dir)) == 3
