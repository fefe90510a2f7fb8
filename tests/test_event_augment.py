"""Event augmentation (``dataset.augment`` of the event datasets): per-sample seeded draws, NDA,
EventDrop's three strategies, one-line errors, and the TET recipe through the command."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_zoo_recipes import cifar10dvs_files
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from snnrun.core.errors import SnnrunError
from snnrun.data.augment import sample_seed
from snnrun.data.dataset import Batch, build_splits
from snnrun.data.events.augment import build_augment

from conftest import assert_one_line_error, cli, read_metrics, train_in_process

ALL = {"event_drop": 0.2, "event_drop_time": 0.5, "event_drop_area": 0.4, "crop_padding": 2,
       "flip": True, "nda": True}  # fmt: skip


def counts(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 6, shape, generator=torch.Generator().manual_seed(seed)).float()


def seeds(n: int, seed: int = 7, epoch: int = 3) -> list[int]:
    return [sample_seed(seed, epoch, i) for i in range(n)]


def test_same_seeds_same_draws_other_samples_other_draws_global_rng_untouched() -> None:
    augment = build_augment(ALL, (2, 16, 16))
    x = counts(8, 4, 2, 16, 16)
    state = torch.get_rng_state()
    first = augment(x.clone(), seeds(8))
    assert torch.equal(torch.get_rng_state(), state)  # torch's global generator never drawn
    assert torch.equal(augment(x.clone(), seeds(8)), first)
    same = x[:1].expand(8, -1, -1, -1, -1).clone()  # one sample at 8 indices: 8 draws
    out = augment(same, seeds(8))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8
    assert not torch.equal(augment(x.clone(), seeds(8, epoch=4)), first)  # a new epoch's draws


def test_a_samples_draws_do_not_depend_on_its_batch() -> None:
    augment = build_augment(ALL, (2, 16, 16))
    x, s = counts(6, 3, 2, 16, 16), seeds(6)
    batch = augment(x.clone(), s)
    for i in range(6):
        assert torch.equal(augment(x[i : i + 1].clone(), [s[i]])[0], batch[i])
    order = [4, 1, 5, 0]
    assert torch.equal(augment(x[order].clone(), [s[i] for i in order]), batch[order])


def test_training_batches_draw_by_sample_index_and_epoch(tmp_path: Path) -> None:
    """Through the dataset: sample i of a loader's Batch (seed, epoch) is augmented alike alone
    or in any batch (a resumed run's batches), and the test split is never augmented."""
    cifar10dvs_files(tmp_path)
    augment = {"flip": True, "nda": True, "event_drop": 0.3}
    options = {"name": "cifar10dvs", "root": str(tmp_path), "T": 2, "download": False,
               "train_ratio": 0.5, "augment": augment}  # fmt: skip
    splits = build_splits(options)
    whole = splits.train.__getitems__(Batch([0, 1, 2, 3], seed=5, epoch=2))[0]
    alone = splits.train.__getitems__(Batch([2], seed=5, epoch=2))[0]
    assert torch.equal(alone[0], whole[2])
    later = splits.train.__getitems__(Batch([2], seed=5, epoch=3))[0]
    assert not torch.equal(later[0], whole[2])
    plain = build_splits({**options, "augment": {}})
    assert torch.equal(splits.test.__getitems__([0, 1])[0], plain.test.__getitems__([0, 1])[0])


def replay(seed: int) -> tuple[int, torch.Generator]:
    """NDA's choice for ``seed`` (0 roll, 1 rotate, 2 shear-x) and the generator after it."""
    g = torch.Generator().manual_seed(seed)
    return int(torch.randint(0, 3, (), generator=g)), g


def test_nda_roll_is_torch_roll_by_the_drawn_shifts() -> None:
    augment = build_augment({"nda": True, "nda_roll": 3}, (2, 12, 12))
    s = seeds(120)
    x = counts(120, 2, 2, 12, 12)
    out = augment(x.clone(), s)
    choices = [replay(seed)[0] for seed in s]
    assert all(25 < choices.count(c) < 55 for c in range(3))  # one of three, uniformly
    shifts = set()
    for i, seed in enumerate(s):
        choice, g = replay(seed)
        if choice == 0:
            dy, dx = torch.randint(-3, 4, (2,), generator=g).tolist()
            assert torch.equal(out[i], torch.roll(x[i], shifts=(dy, dx), dims=(-2, -1)))
            shifts |= {dy, dx}
    assert shifts == set(range(-3, 4))


def test_nda_rotate_and_shear_are_torchvisions_at_the_drawn_angle() -> None:
    """Nearest interpolation (the authors' torchvision defaults): shape, dtype and whole,
    non-negative counts kept; the same transform for all T frames."""
    augment = build_augment({"nda": True, "nda_degrees": 30}, (2, 16, 16))
    s = seeds(30)
    x = counts(30, 3, 2, 16, 16)
    out = augment(x.clone(), s)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert (out >= 0).all() and torch.equal(out, out.round())
    seen = set()
    for i, seed in enumerate(s):
        choice, g = replay(seed)
        if choice == 0:
            continue
        angle = float(torch.empty(()).uniform_(-30, 30, generator=g))
        assert -30 <= angle <= 30
        nearest = InterpolationMode.NEAREST
        if choice == 1:
            want = TF.rotate(x[i], angle, interpolation=nearest)
        else:
            want = TF.affine(x[i], angle=0.0, translate=[0, 0], scale=1.0, shear=[angle, 0.0],
                             interpolation=nearest)  # fmt: skip
        assert torch.equal(out[i], want)
        same_frames = x[i : i + 1, :1].expand(-1, 3, -1, -1, -1)  # frames alike stay alike
        frames = augment(same_frames.clone(), [seed])[0]
        assert torch.equal(frames[0], frames[1]) and torch.equal(frames[1], frames[2])
        seen.add(choice)
    assert seen == {1, 2}


def test_flip_mirrors_about_half_and_crop_shifts_all_frames_alike() -> None:
    x = counts(64, 3, 2, 8, 8)
    flipped = build_augment({"flip": True}, (2, 8, 8))(x.clone(), seeds(64))
    mirrored = [torch.equal(a, b.flip(-1)) for a, b in zip(flipped, x)]
    same = [torch.equal(a, b) for a, b in zip(flipped, x)]
    assert all(s or m for s, m in zip(same, mirrored)) and 10 < sum(mirrored) < 54
    alike = x[:, :1].expand(-1, 3, -1, -1, -1).clone()
    cropped = build_augment({"crop_padding": 2}, (2, 8, 8))(alike, seeds(64))
    assert cropped.shape == alike.shape and cropped.sum() <= alike.sum()
    assert torch.equal(cropped[:, 0], cropped[:, 2])


def test_event_drop_thins_counts_to_1_minus_q() -> None:
    x = torch.full((64, 2, 2, 16, 16), 8.0)
    out = build_augment({"event_drop": 0.25}, (2, 16, 16))(x.clone(), seeds(64))
    assert (out <= x).all() and (out >= 0).all() and torch.equal(out, out.round())
    assert out.mean().item() == pytest.approx(0.75 * 8.0, rel=0.01)
    bins = torch.full((64, 4, 700), 3.0)  # SHD's spike bins [T, F]
    thinned = build_augment({"event_drop": 0.5}, (700,))(bins.clone(), seeds(64))
    assert thinned.mean().item() == pytest.approx(1.5, rel=0.01)


def test_drop_by_time_zeroes_a_run_of_frames() -> None:
    T = 10
    x = counts(200, T, 2, 4, 4) + 1  # no frame empty before the drop
    out = build_augment({"event_drop_time": 0.5}, (2, 4, 4))(x.clone(), seeds(200))
    lengths = set()
    for a, b in zip(out, x):
        zero = [not f.any() for f in a]
        run = [t for t, z in enumerate(zero) if z]
        assert run == list(range(run[0], run[0] + len(run))) if run else True  # contiguous
        assert all(torch.equal(a[t], b[t]) for t in range(T) if not zero[t])
        lengths.add(len(run))
    assert lengths == set(range(5))  # int(u T), u ~ U(0, 0.5)
    bins = build_augment({"event_drop_time": 0.5}, (700,))(torch.ones(8, T, 700), seeds(8))
    assert bins.shape == (8, T, 700)


def test_drop_by_area_zeroes_one_box_in_every_frame() -> None:
    x = counts(100, 3, 2, 20, 20) + 1
    out = build_augment({"event_drop_area": 0.5}, (2, 20, 20))(x.clone(), seeds(100))
    sides = set()
    for a, b in zip(out, x):
        zero = a == 0
        assert torch.equal(zero, zero[:1, :1].expand_as(zero))  # the same box in all T and C
        rows, cols = zero[0, 0].any(1).nonzero(), zero[0, 0].any(0).nonzero()
        h, w = len(rows), len(cols)
        assert h * w == int(zero[0, 0].sum())  # one rectangle
        assert h <= 10 and w <= 10 and h == w  # int(u H) x int(u W), u < 0.5, H = W
        assert torch.equal(a[~zero], b[~zero])
        sides.add(h)
    assert len(sides) > 5


@pytest.mark.parametrize(
    ("options", "size", "needles"),
    [
        ({"event_drop": 1.0}, (2, 8, 8), ("dataset.augment.event_drop", "[0, 1)", "1.0")),
        ({"event_drop_time": -0.1}, (2, 8, 8), ("dataset.augment.event_drop_time", "[0, 1)")),
        ({"event_drop_area": True}, (2, 8, 8), ("dataset.augment.event_drop_area", "True")),
        ({"crop_padding": 1.5}, (2, 8, 8), ("dataset.augment.crop_padding", "whole number")),
        ({"nda_roll": -1}, (2, 8, 8), ("dataset.augment.nda_roll", ">= 0")),
        ({"nda_degrees": 200}, (2, 8, 8), ("dataset.augment.nda_degrees", "[0, 180]")),
        ({"rotate": 10}, (2, 8, 8), ("unknown dataset.augment key", "'rotate'", "nda")),
        ({"nda": True}, (700,), ("dataset.augment.nda needs frames [C, H, W]", "[T, 700]",
                                  "dataset.augment.nda=false")),
        ({"event_drop_area": 0.2}, (700,), ("needs frames", "dataset.augment.event_drop_area=0")),
    ],
)  # fmt: skip
def test_bad_values_are_one_line(options: dict, size: tuple, needles: tuple[str, ...]) -> None:
    with pytest.raises(SnnrunError) as err:
        build_augment(options, size)
    assert "\n" not in str(err.value)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


def test_off_is_none_and_a_bad_value_through_the_command_is_one_line(
    monkeypatch, capsys, tmp_path: Path
) -> None:
    assert build_augment({"flip": False, "nda": False, "event_drop": 0.0}, (2, 8, 8)) is None
    cifar10dvs_files(tmp_path / "data")
    code, err = cli(monkeypatch, capsys, "dataset=cifar10dvs", f"dataset.root={tmp_path / 'data'}",
                    "dataset.download=false", "dataset.train_ratio=0.5", "T=2", "epochs=1",
                    "dataset.augment.event_drop_time=1.5", "logger=none", "device=cpu",
                    f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert_one_line_error(code, err, "dataset.augment.event_drop_time", "[0, 1)", "1.5")


def test_tet_recipe_trains_an_epoch_through_the_command(tmp_path: Path, monkeypatch) -> None:
    """``experiment=cifar10dvs_tet`` shrunk (VGGSNN of width 2, T=2, one epoch) on CIFAR10-DVS
    files in the original release's format; the saved config keeps the paper's settings."""
    cifar10dvs_files(tmp_path / "data")
    run_dir = tmp_path / "run"
    train_in_process(monkeypatch, "experiment=cifar10dvs_tet", "model.width=2", "T=2",
                     "epochs=1", "batch_size=5", "dataset.train_ratio=0.5", "logger=none",
                     "device=cpu", "dataset.download=false", f"dataset.root={tmp_path / 'data'}",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    (record,) = read_metrics(run_dir)
    assert math.isfinite(record["train_loss"]) and 0.0 <= record["test_acc"] <= 1.0
    saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    augment = saved["dataset"]["augment"]
    assert (augment["flip"], augment["nda"], augment["nda_roll"], augment["nda_degrees"]) == (
        True, True, 13, 30)  # fmt: skip
    assert (saved["loss"]["name"], saved["loss"]["lambda"], saved["loss"]["phi"]) == (
        "tet", 1e-4, 1.0)  # fmt: skip
    assert (saved["optimizer"]["name"], saved["optimizer"]["lr"]) == ("adam", 1e-3)
    assert (saved["model"]["name"], saved["model"]["resize"]) == ("vggsnn", 48)
    assert (saved["neuron"]["tau"], saved["neuron"]["decay_input"]) == (2.0, False)
    assert saved["surrogate"] == {"name": "triangle", "gamma": 1.0}
