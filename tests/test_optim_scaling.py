"""``optimizer.lr_base_size`` / ``lr_base_scale``: the learning rate given for one batch size,
scaled to the run's total batch (timm's rule), through the command."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from snnrun.engine.optim import build_optimizer, scaled_lr

from conftest import TINY, assert_one_line_error, cli, read_metrics, train_in_process


def test_linear_and_sqrt_scaling() -> None:
    base = {"name": "sgd", "lr": 0.1, "lr_base_size": 256}
    assert scaled_lr(base, 512)["lr"] == pytest.approx(0.2)
    assert scaled_lr({**base, "lr_base_scale": "sqrt"}, 64)["lr"] == pytest.approx(0.05)
    assert scaled_lr({"name": "sgd", "lr": 0.1, "lr_base_size": None}, 999) == {
        "name": "sgd", "lr": 0.1}  # fmt: skip
    net = torch.nn.Linear(2, 2)
    assert build_optimizer({**base, "lr_base_scale": "linear"}, net,
                           128).param_groups[0]["lr"] == pytest.approx(0.05)  # fmt: skip


def test_the_run_trains_at_the_scaled_rate(monkeypatch, tmp_path: Path) -> None:
    """batch 64 x 2 accumulated = 128 samples per step: lr 0.04 given for 256 is 0.02 (linear)
    and 0.04 sqrt(1/2) (sqrt)."""
    for scale, expected in (("linear", 0.02), ("sqrt", 0.04 * math.sqrt(0.5))):
        run = tmp_path / scale
        train_in_process(monkeypatch, *TINY, "scheduler=none", "optimizer.lr=0.04",
                         "optimizer.lr_base_size=256", f"optimizer.lr_base_scale={scale}",
                         "accumulate_grad_batches=2", f"hydra.run.dir={run}")  # fmt: skip
        (record,) = read_metrics(run)
        assert record["lr"] == pytest.approx(expected)


def test_a_bad_scale_is_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    bad = ["optimizer.lr_base_size=256", "optimizer.lr_base_scale=cubic"]
    code, err = cli(monkeypatch, capsys, *TINY, *bad, f"hydra.run.dir={tmp_path / 'bad'}")
    assert_one_line_error(code, err, "lr_base_scale must be linear or sqrt")
