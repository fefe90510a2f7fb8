"""The built-in losses against their papers' formulas (and snnTorch's own, where installed),
and each through the command."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from snnrun.engine.loss import LOSSES, build_loss

from conftest import TINY, assert_one_line_error, cli, read_metrics, train_in_process

FC = ["model=fc", *(a for a in TINY if not a.startswith("model."))]
OUT = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], [[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]])
Y = torch.tensor([0, 1])  # T=2, N=2, 3 classes


def loss(name: str, **options) -> object:
    return build_loss({"name": name, **options})


def test_tet_is_the_papers_formula() -> None:
    """(1 - lambda) mean_t CE(O_t, y) + lambda mean_t MSE(O_t, phi), by hand."""
    ce = [F.cross_entropy(OUT[t], Y) for t in range(2)]
    mse = [((OUT[t] - 0.5) ** 2).mean() for t in range(2)]
    hand = 0.9 * (ce[0] + ce[1]) / 2 + 0.1 * (mse[0] + mse[1]) / 2
    assert torch.allclose(loss("tet", **{"lambda": 0.1, "phi": 0.5})(OUT, Y), hand)
    assert torch.allclose(loss("tet", **{"lambda": 0.0})(OUT, Y), (ce[0] + ce[1]) / 2)
    assert loss("tet").predict(OUT).tolist() == [0, 1]  # mean over T: [.5, 0, .5], [.5, 1.5, 0]


def test_label_smoothing_is_the_smoothed_target() -> None:
    """Every cross-entropy with label_smoothing e: the CE against (1 - e) onehot + e/K."""
    e, k = 0.1, 3

    def smoothed(logits: torch.Tensor) -> torch.Tensor:
        target = F.one_hot(Y, k) * (1 - e) + e / k
        return -(target * F.log_softmax(logits, -1)).sum(-1).mean()

    cases = {
        "ce_rate": smoothed(OUT.mean(0)),
        "ce_per_step": (smoothed(OUT[0]) + smoothed(OUT[1])) / 2,
        "ce_max_membrane": smoothed(OUT.amax(0)),
        "ce_last_membrane": smoothed(OUT[-1]),
    }
    for name, hand in cases.items():
        assert torch.allclose(loss(name, label_smoothing=e)(OUT, Y), hand), name
    assert torch.allclose(loss("tet", label_smoothing=e, **{"lambda": 0.0})(OUT, Y),
                          cases["ce_per_step"])  # fmt: skip


def test_membrane_losses_predict_from_their_logits() -> None:
    assert loss("ce_max_membrane").predict(OUT).tolist() == [0, 1]  # maxima [1, 0, 1], [1, 2, 0]
    assert loss("ce_last_membrane").predict(OUT).tolist() == [2, 0]


def test_ce_count_is_the_former_name_of_ce_per_step() -> None:
    assert LOSSES.get("ce_count") is LOSSES.get("ce_per_step")
    per_step = (F.cross_entropy(OUT[0], Y) + F.cross_entropy(OUT[1], Y)) / 2
    assert torch.allclose(loss("ce_count")(OUT, Y), per_step)


def test_mse_count_by_hand() -> None:
    spikes = (OUT > 0.5).float()  # counts [[1, 0, 1], [1, 2, 0]]
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # int(2 * 0.8), int(2 * 0.2)
    hand = ((spikes.sum(0) - target) ** 2).mean() / 2
    got = loss("mse_count", correct_rate=0.8, incorrect_rate=0.2)(spikes, Y)
    assert torch.allclose(got, hand)


@pytest.mark.peers
@pytest.mark.skipif(importlib.util.find_spec("snntorch") is None, reason="snntorch not installed")
def test_mse_count_and_ce_per_step_equal_snntorch() -> None:
    from snntorch import functional as SF

    g = torch.Generator().manual_seed(0)
    spikes = (torch.rand(7, 5, 4, generator=g) > 0.6).float()
    y = torch.randint(0, 4, (5,), generator=g)
    theirs = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)(spikes, y)
    ours = loss("mse_count", correct_rate=0.8, incorrect_rate=0.2)(spikes, y)
    torch.testing.assert_close(ours, theirs)
    theirs = SF.ce_rate_loss()(spikes, y).reshape(())  # snnTorch's is [1]
    torch.testing.assert_close(loss("ce_per_step")(spikes, y), theirs)


def test_bad_keys_are_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    for args, needle in (
        (["loss=ce_rate", "loss.label_smoothing=1.5"], "label_smoothing must be in [0, 1)"),
        (["loss=tet", "loss.lambda=2"], "tet needs lambda in [0, 1]"),
    ):
        code, err = cli(monkeypatch, capsys, *FC, *args, f"hydra.run.dir={tmp_path / 'bad'}")
        assert_one_line_error(code, err, needle)
        assert not (tmp_path / "bad" / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["loss=tet", "loss.lambda=0.05", "loss.label_smoothing=0.1"],
        ["loss=ce_per_step", "loss.label_smoothing=0.1"],
        ["loss=ce_rate", "loss.label_smoothing=0.1"],
        ["loss=mse_count", "loss.correct_rate=0.8"],
        ["loss=ce_max_membrane"],
        ["loss=ce_last_membrane", "loss.label_smoothing=0.2"],
    ],
)
def test_each_trains_through_the_command(monkeypatch, tmp_path: Path, args: list[str]) -> None:
    train_in_process(monkeypatch, *FC, *args, f"hydra.run.dir={tmp_path}")
    (record,) = read_metrics(tmp_path)
    assert record["train_loss"] > 0 and 0.0 <= record["test_acc"] <= 1.0
