"""Encoders beyond rate: ``latency`` and ``delta`` against snnTorch's ``spikegen`` (the
``peers`` extra) and through the command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from snnrun.data.encoder import build_encoder

from conftest import TINY, assert_one_line_error, cli, read_metrics, train_in_process


def test_latency_fires_once_the_brighter_the_earlier() -> None:
    x = torch.tensor([[0.0, 0.005, 0.02, 0.5, 1.0]])
    out = build_encoder({"name": "latency"}, sequence=False)(x, 5)
    assert out.shape == (5, 1, 5)
    assert out.sum(0).tolist() == [[0, 0, 1, 1, 1]]  # below threshold (0.01): no spike
    assert out.argmax(0)[0, 2:].tolist() == [4, 2, 0]  # round((1 - x) * 4)
    with pytest.raises(ValueError, match="linear or log"):
        build_encoder({"name": "latency", "mode": "cubic"})


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ({"mode": "linear"}, {"linear": True, "normalize": True}),
        ({"mode": "log", "tau": 2.0}, {"tau": 2.0, "bypass": True}),
        ({"mode": "log", "tau": 0.5, "threshold": 0.2}, {"tau": 0.5, "threshold": 0.2}),
    ],
)
def test_latency_equals_snntorch(ours: dict, theirs: dict) -> None:
    spikegen = pytest.importorskip("snntorch.spikegen")
    x = torch.rand(64, 3, 7, generator=torch.Generator().manual_seed(0))
    T = 9
    got = build_encoder({"name": "latency", **ours})(x, T)
    want = spikegen.latency(x, num_steps=T, clip=True, **theirs)
    assert torch.equal(got, want)


@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("off_spike", [False, True])
def test_delta_equals_snntorch(padding: bool, off_spike: bool) -> None:
    spikegen = pytest.importorskip("snntorch.spikegen")
    x = torch.rand(4, 6, 2, 5, generator=torch.Generator().manual_seed(1))  # [N, T, ...]
    options = {"threshold": 0.3, "padding": padding, "off_spike": off_spike}
    got = build_encoder({"name": "delta", **options}, sequence=True)(x, 6)
    want = spikegen.delta(x.transpose(0, 1), **options)
    assert torch.equal(got, want)


def test_latency_trains_through_the_command_and_delta_is_for_sequences(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    fc = [o for o in TINY if not o.startswith("model.")] + ["model=fc", "dataset.train_limit=64"]
    train_in_process(monkeypatch, *fc, "encoder=latency", "encoder.mode=log", "encoder.tau=2",
                     "T=6", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert read_metrics(tmp_path / "run")[0]["train_loss"] > 0
    code, err = cli(monkeypatch, capsys, *fc, "encoder=delta", f"hydra.run.dir={tmp_path / 'x'}")
    assert_one_line_error(code, err, "encoder=delta takes sequence datasets")
