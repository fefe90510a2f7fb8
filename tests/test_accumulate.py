"""``accumulate_grad_batches``: k batches, one optimizer step, the step of one batch k times
larger; through the command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from snnrun.run.checkpoint import load_checkpoint

from conftest import TINY, assert_one_line_error, cli, read_metrics, train_in_process

# fc (no BatchNorm, no dropout), a deterministic encoder, SGD: nothing depends on the batch split
FC = [*(a for a in TINY if not a.startswith(("model.", "batch_size", "optimizer."))),
      "model=fc", "encoder=direct", "optimizer=sgd", "optimizer.lr=0.5"]  # fmt: skip


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoint_latest.pt")["model"]


@pytest.mark.parametrize("scheduler", ["none", "cosine"])
def test_four_batches_of_16_step_as_one_of_64(monkeypatch, tmp_path: Path, scheduler: str) -> None:
    """2 epochs of 256 samples: 16 x 4 accumulated and 64 x 1 give the same weights (1e-6) and
    records; with the per-step cosine, the same learning rates (one step per group)."""
    extra = [f"scheduler={scheduler}", "epochs=2"]
    if scheduler == "cosine":
        extra += ["scheduler.warmup_epochs=1", "scheduler.warmup_lr=0.01"]
    runs = {}
    for name, batch, k in (("big", 64, 1), ("accumulated", 16, 4)):
        runs[name] = tmp_path / name
        train_in_process(monkeypatch, *FC, *extra, f"batch_size={batch}",
                         f"accumulate_grad_batches={k}", f"hydra.run.dir={runs[name]}")  # fmt: skip
    big, acc = weights(runs["big"]), weights(runs["accumulated"])
    assert big.keys() == acc.keys()
    for key in big:
        torch.testing.assert_close(acc[key], big[key], rtol=0, atol=1e-6)
    a, b = read_metrics(runs["big"]), read_metrics(runs["accumulated"])
    for ra, rb in zip(a, b):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5)
        assert rb["test_acc"] == ra["test_acc"] and rb["lr"] == pytest.approx(ra["lr"])
    assert a[0]["train_loss"] != a[1]["train_loss"]  # the steps changed the network


def test_a_last_smaller_group_is_averaged_over_its_own_batches(monkeypatch, tmp_path) -> None:
    """256 samples in batches of 64 with k=3: groups of 3 and 1 batches; the single batch's
    step is a plain one (loss / 1), so k=3 ends where k=1 would on that batch's step."""
    train_in_process(monkeypatch, *FC, "batch_size=64", "accumulate_grad_batches=3", "epochs=1",
                     "scheduler=none", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    (record,) = read_metrics(tmp_path / "run")
    assert record["global_step"] == 4  # batches, as ever: callbacks see each one


@pytest.mark.parametrize(
    ("value", "needle"),
    [("0", "accumulate_grad_batches must be a whole number >= 1"),
     ("1.5", "accumulate_grad_batches must be a whole number >= 1"),
     ("true", "accumulate_grad_batches takes a number")],
)  # fmt: skip
def test_a_bad_value_is_one_line(monkeypatch, capsys, tmp_path, value: str, needle: str) -> None:
    code, err = cli(monkeypatch, capsys, *FC, f"accumulate_grad_batches={value}",
                    f"hydra.run.dir={tmp_path / 'bad'}")  # fmt: skip
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()
