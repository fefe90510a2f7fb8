"""Mixup and CutMix (the ``mixup`` section): timm's batches and targets on the same draws, the
losses on soft targets, and through the command."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snnrun.core.errors import SnnrunError
from snnrun.engine.loss import LOSSES
from snnrun.engine.mixup import Mixup, cutmix_box, mix, mixed_targets

from conftest import TINY, assert_one_line_error, cli, read_metrics, train_in_process

FC = [*(a for a in TINY if not a.startswith("model.")), "model=fc", "neuron=lif"]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixup_equals_timms_batch_and_smoothed_targets(smoothing: float) -> None:
    """The same ``lam``: timm's mixed batch, and timm's soft cross-entropy on its smoothed mixed
    targets equals ours on the mixed targets with ``label_smoothing``."""
    mixup = pytest.importorskip("timm.data.mixup")
    soft_ce = pytest.importorskip("timm.loss").SoftTargetCrossEntropy()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 3, 8, 8, generator=g), torch.randint(0, 10, (6,), generator=g)
    lam = 0.37
    timm = mixup.Mixup(mixup_alpha=1.0, num_classes=10, label_smoothing=smoothing)
    timm._params_per_batch = lambda: (lam, False)
    theirs_x, theirs_y = timm(x.clone(), y)
    torch.testing.assert_close(mix(x, lam), theirs_x)
    logits = torch.randn(6, 10, generator=g)
    ours = LOSSES.get("ce_rate")(label_smoothing=smoothing)
    value = ours(logits.unsqueeze(0), mixed_targets(y, 10, lam))
    torch.testing.assert_close(value, soft_ce(logits, theirs_y))


@pytest.mark.parametrize(("lam", "cy", "cx"), [(0.3, 4, 5), (0.8, 0, 7), (0.05, 7, 0)])
def test_cutmix_equals_timms_box_and_corrected_lam(
    monkeypatch: pytest.MonkeyPatch, lam: float, cy: int, cx: int
) -> None:
    mixup = pytest.importorskip("timm.data.mixup")
    centres = iter([cy, cx])
    monkeypatch.setattr(np.random, "randint", lambda *a, **k: next(centres))
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    timm = mixup.Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, num_classes=10)
    timm._params_per_batch = lambda: (lam, True)
    theirs = x.clone()
    their_lam = timm._mix_batch(theirs)
    box = cutmix_box(x.shape, lam, cy, cx)
    torch.testing.assert_close(mix(x, lam, box), theirs)
    assert 1.0 - (box[1] - box[0]) * (box[3] - box[2]) / 64 == pytest.approx(their_lam)


@pytest.mark.parametrize(
    ("name", "options"),
    [("mse_rate", {}), ("mse_count", {"correct_rate": 0.8, "incorrect_rate": 0.1}),
     ("ce_rate", {"label_smoothing": 0.1}), ("ce_per_step", {}), ("tet", {"lambda": 0.05}),
     ("ce_max_membrane", {}), ("ce_last_membrane", {"label_smoothing": 0.2})],
)  # fmt: skip
def test_every_loss_takes_soft_targets_as_one_hot_rows(name: str, options: dict) -> None:
    """Soft targets that are one-hot rows give the labels' loss; mixed ones its mix (for the
    linear-in-target cross-entropies)."""
    g = torch.Generator().manual_seed(2)
    out, y = torch.rand(5, 4, 10, generator=g), torch.tensor([1, 7, 3, 0])
    loss = LOSSES.get(name)(**options)
    torch.testing.assert_close(loss(out, F.one_hot(y, 10).float()), loss(out, y))
    if name.startswith("ce_") or name == "tet":
        b = y.flip(0)
        mixed = loss(out, mixed_targets(y, 10, 0.3))
        if name == "tet":  # its MSE term does not depend on the target
            return
        torch.testing.assert_close(mixed, 0.3 * loss(out, y) + 0.7 * loss(out, b))


def test_the_draws_follow_seed_epoch_and_batch() -> None:
    mixup = Mixup(alpha=0.5, cutmix_alpha=1.0)
    mixup.seed = 7
    assert mixup.draw(3, 5)[:2] == mixup.draw(3, 5)[:2]
    assert len({mixup.draw(e, b)[0] for e in range(3) for b in range(3)}) == 9
    assert {mixup.draw(0, b)[1] for b in range(40)} == {True, False}  # both kinds drawn


def test_mixed_training_through_the_command(monkeypatch, tmp_path: Path) -> None:
    """Mixup and CutMix change training; ``off_epoch=0`` trains exactly as without them; two
    runs of one seed mix alike."""
    runs = {
        "plain": [],
        "off": ["mixup.alpha=0.8", "mixup.cutmix_alpha=1.0", "mixup.off_epoch=0"],
        "mixed": ["mixup.alpha=0.8", "mixup.cutmix_alpha=1.0", "loss.name=ce_rate"],
        "again": ["mixup.alpha=0.8", "mixup.cutmix_alpha=1.0", "loss.name=ce_rate"],
    }
    for name, extra in runs.items():
        train_in_process(monkeypatch, *FC, *extra, f"hydra.run.dir={tmp_path / name}")
    losses = {name: read_metrics(tmp_path / name)[0]["train_loss"] for name in runs}
    assert losses["off"] == losses["plain"]
    assert losses["mixed"] == losses["again"]
    assert read_metrics(tmp_path / "mixed")[0]["test_acc"] > 0.1


def test_cutmix_needs_frames() -> None:
    run = SimpleNamespace(splits=SimpleNamespace(num_classes=20, sample_shape=(700,)),
                          config={"seed": 0})  # fmt: skip
    with pytest.raises(SnnrunError, match=r"mixup\.cutmix_alpha needs images or frames"):
        Mixup(cutmix_alpha=1.0).on_fit_start(run)  # type: ignore[arg-type]
    Mixup(alpha=1.0).on_fit_start(run)  # type: ignore[arg-type]  # mixup mixes any samples


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["mixup.alpha=-1"], "mixup.alpha must be >= 0"),
     (["mixup.alpha=0.2", "mixup.prob=2"], "mixup.prob must be a probability in [0, 1]"),
     (["mixup.alpha=0.2", "mixup.off_epoch=1.5"], "mixup.off_epoch must be a whole number"),
     (["mixup.beta=1"], "mixup has no 'beta'; its keys: alpha")],
)  # fmt: skip
def test_a_bad_setting_is_one_line(monkeypatch, capsys, tmp_path, args, needle) -> None:
    code, err = cli(monkeypatch, capsys, *FC, *args, f"hydra.run.dir={tmp_path / 'bad'}")
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()
