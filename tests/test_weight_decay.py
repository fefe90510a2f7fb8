"""``optimizer.decay_bias_and_norm``: weight decay on every parameter (torch's default), or only
on the weights of two or more dimensions (timm's ``filter_bias_and_bn``), through the command."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from snnrun.engine.optim import build_optimizer
from snnrun.run.checkpoint import load_checkpoint

from conftest import TINY, assert_one_line_error, cli, train_in_process

ADAMW = {"name": "adamw", "lr": 0.01, "weight_decay": 0.1}


def _net() -> nn.Module:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    net.register_parameter("learned_decay", nn.Parameter(torch.tensor(0.5)))  # a PLIF's w: 0-d
    return net


def test_only_weights_of_two_or_more_dims_decay() -> None:
    net = _net()
    groups = build_optimizer({**ADAMW, "decay_bias_and_norm": False}, net).param_groups
    shapes = [sorted(tuple(p.shape) for p in g["params"]) for g in groups]
    assert shapes == [[(2, 4), (4, 1, 3, 3)], [(), (2,), (4,), (4,), (4,)]]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    with torch.no_grad():  # no gradient: AdamW's step is the decay alone
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    torch.optim.AdamW(groups, lr=0.01).step()
    for name, p in net.named_parameters():
        assert torch.equal(p, before[name]) == (p.ndim <= 1), name
    for options in (ADAMW, {**ADAMW, "weight_decay": 0.0, "decay_bias_and_norm": False}):
        assert len(build_optimizer(options, net).param_groups) == 1  # torch's default layout


def test_a_run_keeps_norms_and_biases_undecayed(monkeypatch, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_in_process(monkeypatch, *TINY, "optimizer=adamw", "optimizer.weight_decay=0.05",
                     "optimizer.decay_bias_and_norm=false", f"hydra.run.dir={run}")  # fmt: skip
    saved = load_checkpoint(run / "checkpoint_latest.pt")
    groups = saved["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    shapes = [v.shape for v in saved["model"].values() if v.dtype.is_floating_point]
    assert len(groups[1]["params"]) == sum(1 for s in shapes if len(s) <= 1) - sum(
        1 for k in saved["model"] if k.endswith(("running_mean", "running_var"))
    )


def test_a_bad_value_is_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    code, err = cli(monkeypatch, capsys, *TINY, "optimizer.decay_bias_and_norm=sometimes",
                    f"hydra.run.dir={tmp_path / 'bad'}")  # fmt: skip
    assert_one_line_error(code, err, "optimizer.decay_bias_and_norm takes true or false")
