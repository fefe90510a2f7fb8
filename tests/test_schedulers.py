"""The cosine schedule with warmup and cooldown (timm's shape, per step) against timm and its
formula, through the command, and across a kill and resume."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from snnrun.engine.optim import WarmupCosine, build_scheduler
from snnrun.run.checkpoint import load_checkpoint

from conftest import (
    TINY,
    assert_one_line_error,
    cli,
    killed_and_resumed,
    read_metrics,
    train_in_process,
)

FC = ["model=fc", *(a for a in TINY if not a.startswith("model."))]  # 4 steps per epoch
SGD = {"lr": 0.1}


def cosine(optimizer: torch.optim.Optimizer, steps: int, **keys) -> WarmupCosine:
    options = {"name": "cosine", "T_max": 10, "eta_min": 1e-4, "warmup_lr": 1e-5, **keys}
    return build_scheduler(options, optimizer, steps)


def lrs(optimizer: torch.optim.Optimizer, step, n: int) -> list[float]:
    """The learning rate each of ``n`` optimizer steps uses, ``step(t)`` after step t."""
    out = []
    for t in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        step(t + 1)
    return out


def sgd() -> torch.optim.Optimizer:
    return torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), **SGD)


@pytest.mark.parametrize(("warmup", "cooldown", "steps"), [(2, 3, 7), (0, 1, 5), (1.5, 0, 4)])
def test_the_lr_sequence_is_the_formula(warmup: float, cooldown: float, steps: int) -> None:
    opt = sgd()
    sched = cosine(opt, steps, warmup_epochs=warmup, cooldown_epochs=cooldown)
    got = lrs(opt, lambda t: sched.step(), 10 * steps)
    w, c = round(warmup * steps), (10 - cooldown) * steps
    for t, lr in enumerate(got):
        if t < w:
            expected = 1e-5 + t * (0.1 - 1e-5) / w
        elif t < c:
            expected = 1e-4 + 0.5 * (0.1 - 1e-4) * (1 + math.cos(math.pi * t / c))
        else:
            expected = 1e-4
        assert lr == pytest.approx(expected, rel=1e-12, abs=0), t


@pytest.mark.peers
@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm not installed")
@pytest.mark.parametrize(("warmup", "cooldown", "steps"), [(2, 3, 7), (0, 1, 5), (3, 0, 4)])
def test_the_lr_sequence_is_timms(warmup: int, cooldown: int, steps: int) -> None:
    """timm's CosineLRScheduler (t_in_epochs=False, step_update after every step) with the same
    settings, step by step: the cosine over (T_max - cooldown) epochs, then eta_min."""
    from timm.scheduler import CosineLRScheduler

    ours_opt, timm_opt = sgd(), sgd()
    ours = cosine(ours_opt, steps, warmup_epochs=warmup, cooldown_epochs=cooldown)
    theirs = CosineLRScheduler(
        timm_opt, t_initial=(10 - cooldown) * steps, lr_min=1e-4, warmup_t=warmup * steps,
        warmup_lr_init=1e-5, t_in_epochs=False,
    )  # fmt: skip
    a = lrs(ours_opt, lambda t: ours.step(), 10 * steps)
    b = lrs(timm_opt, lambda t: theirs.step_update(t), 10 * steps)
    assert a == pytest.approx(b, rel=1e-12, abs=1e-18)


def test_without_warmup_or_cooldown_it_stays_per_epoch() -> None:
    sched = cosine(sgd(), 7)
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert not getattr(sched, "per_step", False)


def test_through_the_command_each_step_and_a_longer_resume(monkeypatch, tmp_path: Path) -> None:
    """3 epochs of 4 steps, warmup 1, cooldown 1: each record's lr (at the epoch's first step)
    is the formula's; a resume to 4 epochs moves the cosine's horizon, said in one note."""
    run = tmp_path / "run"
    args = [*FC, "scheduler=cosine", "scheduler.warmup_epochs=1", "scheduler.cooldown_epochs=1",
            "epochs=3", "optimizer.lr=0.01", f"hydra.run.dir={run}"]  # fmt: skip
    train_in_process(monkeypatch, *args)
    assert [r["lr"] for r in read_metrics(run)] == pytest.approx([1e-5, 0.005, 0.0])
    train_in_process(monkeypatch, f"resume={run}", "epochs=4")
    # the cosine now runs over 4 - 1 = 3 epochs (12 steps): epoch 4 starts at step 12, eta_min;
    # epoch 3's record keeps the lr it trained with
    assert [r["lr"] for r in read_metrics(run)] == pytest.approx([1e-5, 0.005, 0.0, 0.0])


def test_bad_cooldown_is_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    code, err = cli(monkeypatch, capsys, *FC, "scheduler=cosine", "scheduler.cooldown_epochs=5",
                    "epochs=3", f"hydra.run.dir={tmp_path / 'bad'}")  # fmt: skip
    assert_one_line_error(code, err, "0 <= cooldown_epochs < T_max=3")


def test_a_killed_run_with_warmup_mixup_and_ema_resumes_exactly(tmp_path: Path) -> None:
    """SIGKILL mid-run, resume, with warmup and cooldown, mixup and CutMix, the weights'
    average, crop, flip and random erasing: every record (its lr too) equals an unbroken
    run's, and so do the final live and averaged weights."""
    args = [*FC, "epochs=10", "scheduler=cosine", "scheduler.warmup_epochs=2",
            "scheduler.cooldown_epochs=2", "optimizer.lr=0.01", "mixup.alpha=0.8",
            "mixup.cutmix_alpha=1.0", "mixup.off_epoch=8", "ema.decay=0.9", "augment=cifar",
            "augment.random_erasing=0.25"]  # fmt: skip
    killed, expected = killed_and_resumed(args, tmp_path, 10)
    assert expected[0]["lr"] == 1e-5 and expected[-1]["lr"] == 0.0
    whole, resumed = (
        load_checkpoint(d / "checkpoint_latest.pt") for d in (tmp_path / "whole", killed)
    )
    for name, tensor in whole["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    for name, tensor in whole["callbacks"]["ema"]["weights"].items():
        assert torch.equal(resumed["callbacks"]["ema"]["weights"][name], tensor), name
