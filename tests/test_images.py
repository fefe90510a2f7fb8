"""Static colour images: CIFAR-10/100 in the official format, ImageFolder, the augment group
(seeded per sample: identical across runs, workers, ranks and resumes), end to end."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from snnrun.cli.command import main
from snnrun.core.distributed import World
from snnrun.core.errors import SnnrunError
from snnrun.data.augment import build_augment, sample_seed
from snnrun.data.dataset import CLASS_NAMES, Batch, DatasetError, build_splits, make_loader

from conftest import (
    TINY,
    assert_one_line_error,
    cli,
    compose,
    read_metrics,
    train_in_process,
    without_timing,
)

FC = [o for o in TINY if not o.startswith(("model.", "dataset."))] + ["model=fc"]


def write_cifar(root: Path, kind: str = "cifar10", per_batch: int = 16, seed: int = 0) -> dict:
    """The official python layout with ``per_batch`` random images per file, written as a
    Python 3 pickle (bytes keys); returns {file: (data [N, 3072], labels)}."""
    rng = np.random.default_rng(seed)
    if kind == "cifar10":
        folder, label_key, classes = root / "cifar-10-batches-py", b"labels", 10
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        meta = ("batches.meta", {b"label_names": [n.encode() for n in CLASS_NAMES["cifar10"]]})
    else:
        folder, label_key, classes = root / "cifar-100-python", b"fine_labels", 100
        files = ["train", "test"]
        meta = ("meta", {b"fine_label_names": [n.encode() for n in CLASS_NAMES["cifar100"]]})
    folder.mkdir(parents=True)
    written = {}
    for name in files:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, classes, per_batch)]
        entry = {b"batch_label": name.encode(), b"data": data, label_key: labels}
        if kind == "cifar100":
            entry[b"coarse_labels"] = [v // 5 for v in labels]
        (folder / name).write_bytes(pickle.dumps(entry))
        written[name] = (data, labels)
    (folder / meta[0]).write_bytes(pickle.dumps(meta[1]))
    return written


def dataset_conf(*overrides: str) -> dict:
    """The composed ``dataset`` section (with ``augment`` interpolated), as a run gets it."""
    return OmegaConf.to_container(compose(list(overrides)), resolve=True)["dataset"]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, per_batch=24)
    return root


# ---------------------------------------------------------------- CIFAR


def test_cifar10_reads_the_official_layout_normalised(tmp_path: Path) -> None:
    written = write_cifar(tmp_path)
    splits = build_splits(dataset_conf("dataset=cifar10", f"dataset.root={tmp_path}"))
    assert (len(splits.train), len(splits.test)) == (80, 16)
    assert splits.sample_shape == (3, 32, 32) and splits.num_classes == 10
    assert splits.class_names == CLASS_NAMES["cifar10"] and splits.class_names[0] == "airplane"
    data, labels = written["data_batch_2"]  # sample 16 is the 2nd file's first: files in order
    x, y = splits.train[16]
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)
    pixels = torch.from_numpy(data[0]).view(3, 32, 32).float() / 255  # [3, 32, 32] row-major
    torch.testing.assert_close(x, (pixels - mean) / std)
    assert int(y) == labels[0]
    assert splits.test.labels.tolist() == written["test_batch"][1]
    raw = build_splits(dataset_conf("dataset=cifar10", f"dataset.root={tmp_path}",
                                    "dataset.normalize=false"))  # fmt: skip
    torch.testing.assert_close(raw.train[16][0], pixels)


def test_cifar100_reads_fine_labels_from_root_itself(tmp_path: Path) -> None:
    written = write_cifar(tmp_path, "cifar100", per_batch=12)
    root = tmp_path / "cifar-100-python"  # the folder itself works too
    splits = build_splits(dataset_conf("dataset=cifar100", f"dataset.root={root}"))
    assert splits.num_classes == 100 and len(splits.class_names) == 100
    assert splits.train.labels.tolist() == written["train"][1]
    assert CLASS_NAMES["cifar100"] == sorted(CLASS_NAMES["cifar100"])  # meta's order: sorted


def test_cifar_python2_pickles_load(tmp_path: Path) -> None:
    """The official files: str keys, numpy 1's ``numpy.core.multiarray`` global, protocol 2."""
    write_cifar(tmp_path, per_batch=4)
    folder = tmp_path / "cifar-10-batches-py"
    data = np.arange(4 * 3072, dtype=np.uint64).astype(np.uint8).reshape(4, 3072)
    old = pickle.dumps({"data": data, "labels": [3, 1, 4, 1]}, protocol=2)
    old = old.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in old
    (folder / "data_batch_1").write_bytes(old)
    splits = build_splits(dataset_conf("dataset=cifar10", f"dataset.root={tmp_path}",
                                       "dataset.normalize=false"))  # fmt: skip
    assert splits.train.labels[:4].tolist() == [3, 1, 4, 1]
    assert splits.train[1][0].flatten()[0] == pytest.approx((3072 % 256) / 255)


def test_cifar_refuses_code_and_corrupt_files(tmp_path: Path) -> None:
    write_cifar(tmp_path, per_batch=4)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps(os.system))  # a global that is code
    with pytest.raises(DatasetError, match=r"data_batch_3: posix.system is not CIFAR data"):
        build_splits(dataset_conf("dataset=cifar10", f"dataset.root={tmp_path}"))
    batch.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(DatasetError, match=r"data_batch_3: data \[4, 100\].*expected \[N, 3072\]"):
        build_splits(dataset_conf("dataset=cifar10", f"dataset.root={tmp_path}"))
    batch.write_bytes(b"\x80\x04truncated")
    with pytest.raises(DatasetError, match=r"corrupt dataset file .*delete it and download again"):
        build_splits(dataset_conf("dataset=cifar10", f"dataset.root={tmp_path}"))


def test_cifar_missing_files_name_the_folder_and_files(tmp_path: Path, monkeypatch) -> None:
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    with pytest.raises(DatasetError) as e:
        build_splits(dataset_conf("dataset=cifar10", f"dataset.root={tmp_path}"))
    message = str(e.value)
    assert "\n" not in message and "the download failed: <urlopen error" in message
    assert f"{tmp_path / 'cifar-10-batches-py'} (data_batch_1, " in message
    assert "test_batch expected" in message and "cifar-10-python.tar.gz" in message
    with pytest.raises(DatasetError, match=r"cifar-100-python \(train, test expected.*download is"):
        build_splits(dataset_conf("dataset=cifar100", f"dataset.root={tmp_path}",
                                  "dataset.download=false"))  # fmt: skip


def test_normalisation_keys_are_checked(cifar_root: Path) -> None:
    for bad, match in (("dataset.mean=[0.5,0.5]", "dataset.mean must list 3 numbers"),
                       ("dataset.std=[1,0,1]", "dataset.std must be > 0")):  # fmt: skip
        with pytest.raises(DatasetError, match=match):
            build_splits(dataset_conf("dataset=cifar10", f"dataset.root={cifar_root}", bad))


# ---------------------------------------------------------------- ImageFolder


def write_images(root: Path, split: str, classes: dict[str, int], size=(12, 10), seed=0):
    """``classes[name]`` random RGB PNGs of ``size`` (W, H) in ``root/split/name/``."""
    rng = np.random.default_rng(seed)
    for name, n in classes.items():
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def test_imagefolder_resizes_crops_and_names_classes(tmp_path: Path) -> None:
    write_images(tmp_path, "train", {"cat": 5, "dog": 4, "emu": 3})
    write_images(tmp_path, "val", {"cat": 2, "dog": 2, "emu": 1}, size=(20, 8), seed=1)
    conf = dataset_conf("dataset=imagefolder", f"dataset.root={tmp_path}", "dataset.size=8",
                        "dataset.crop=6", "dataset.normalize=false")  # fmt: skip
    splits = build_splits(conf)
    assert splits.sample_shape == (3, 6, 6) and splits.num_classes == 3
    assert splits.class_names == ["cat", "dog", "emu"]
    assert (len(splits.train), len(splits.test)) == (12, 5)
    assert sorted(splits.train.labels.tolist()) == [0] * 5 + [1] * 4 + [2] * 3
    assert splits.train.labels.tolist() != sorted(splits.train.labels.tolist())  # mixed order
    x, y = splits.test.__getitems__([0, 1])
    assert x.shape == (2, 3, 6, 6) and x.min() >= 0 and x.max() <= 1
    # the reference: PIL resize of the shorter side to 8 (20x8 stays), centre crop 6x6
    path = Path(splits.test.paths[0])
    with Image.open(path) as image:
        ref = np.asarray(image.convert("RGB"))[1:7, 7:13] / 255
    torch.testing.assert_close(x[0], torch.from_numpy(ref).permute(2, 0, 1).float())
    assert int(y[0]) == ["cat", "dog", "emu"].index(path.parent.name)


def test_imagefolder_errors_are_one_line(tmp_path: Path) -> None:
    def build():
        return build_splits(dataset_conf("dataset=imagefolder", f"dataset.root={tmp_path}"))

    with pytest.raises(DatasetError, match=rf"{tmp_path / 'train'} is not a folder"):
        build()
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(DatasetError, match="Couldn't find any class folder"):
        build()
    write_images(tmp_path, "train", {"a": 2, "b": 2})
    (tmp_path / "val" / "a").mkdir()
    with pytest.raises(DatasetError, match="Found no valid file for the classes a"):
        build()
    write_images(tmp_path, "val", {"a": 1, "c": 1})
    with pytest.raises(DatasetError) as e:
        build()
    assert "only in train: ['b']; only in val: ['c']" in str(e.value)
    assert "\n" not in str(e.value)
    (tmp_path / "val" / "c" / "0.png").rename(tmp_path / "val" / "b.png")
    (tmp_path / "val" / "c").rmdir()
    (tmp_path / "val" / "b").mkdir()
    (tmp_path / "val" / "b.png").rename(tmp_path / "val" / "b" / "0.png")
    (tmp_path / "val" / "b" / "1.png").write_bytes(b"not a png")
    splits = build()
    with pytest.raises(DatasetError, match=r"cannot read image .*1\.png.*remove it"):
        splits.test.__getitems__(list(range(len(splits.test))))


# ---------------------------------------------------------------- augmentation


def test_augment_steps_do_what_they_say() -> None:
    assert build_augment({"name": "none", "crop_padding": 0, "flip": False}, (3, 8, 8)) is None
    with pytest.raises(SnnrunError, match=r"unknown augment key\(s\) \['rotate'\]"):
        build_augment({"rotate": 1}, (3, 8, 8))
    with pytest.raises(SnnrunError, match="needs images"):
        build_augment({"name": "cifar", "flip": True}, (700,))
    with pytest.raises(SnnrunError, match="crop_padding must be a whole number"):
        build_augment({"crop_padding": -1}, (3, 8, 8))
    x = torch.rand(64, 3, 8, 8)
    seeds = [sample_seed(1, 0, i) for i in range(64)]
    flipped = build_augment({"flip": True}, (3, 8, 8))(x, seeds)
    same = [bool(torch.equal(a, b)) for a, b in zip(flipped, x)]
    assert all(s or torch.equal(a, b.flip(-1)) for s, a, b in zip(same, flipped, x))
    assert 10 < sum(same) < 54
    cropped = build_augment({"crop_padding": 2}, (3, 8, 8))(x, seeds)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    windows = [(i, j) for i in range(5) for j in range(5)]
    offsets = [next(w for w in windows if torch.equal(c, p[:, w[0] : w[0] + 8, w[1] : w[1] + 8]))
               for c, p in zip(cropped, padded)]  # fmt: skip
    assert len(set(offsets)) > 10
    cut = build_augment({"cutout": 4}, (3, 8, 8), mean=[0.25, 0.5, 0.75])(x, seeds)
    fill = torch.tensor([0.25, 0.5, 0.75])
    for c, orig in zip(cut, x):
        mask = (c != orig).any(0)  # [H, W]: at most a 4x4 square, clipped at the border
        assert 0 < mask.sum() <= 16
        assert torch.equal(c[:, mask], fill[:, None].expand(3, int(mask.sum())))


def test_autoaugment_is_seeded_per_sample_and_leaves_global_rng_alone() -> None:
    aug = build_augment({"autoaugment": True}, (3, 16, 16))
    x = torch.randint(0, 256, (8, 3, 16, 16)).float() / 255
    state = torch.get_rng_state()
    a = aug(x, [sample_seed(7, 3, i) for i in range(8)])
    assert torch.equal(torch.get_rng_state(), state)
    b = aug(x, [sample_seed(7, 3, i) for i in range(8)])
    c = aug(x, [sample_seed(7, 4, i) for i in range(8)])
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)
    with pytest.raises(SnnrunError, match="needs RGB images"):
        build_augment({"autoaugment": True}, (1, 28, 28))


def test_randaugment_equals_torchvisions_on_the_same_seed() -> None:
    """``randaugment: 2, randaugment_magnitude: 9`` is torchvision's ``RandAugment(2, 9)`` on
    the uint8 image, its draws from the generator the sample's seed gives."""
    from torchvision.transforms import RandAugment

    aug = build_augment({"randaugment": 2, "randaugment_magnitude": 9}, (3, 16, 16))
    x = torch.randint(0, 256, (6, 3, 16, 16)).float() / 255
    seeds = [sample_seed(3, 1, i) for i in range(6)]
    got = aug(x, seeds)
    for img, seed, out in zip(x, seeds, got):
        inner = int(torch.randint(0, 2**62, (), generator=torch.Generator().manual_seed(seed)))
        torch.manual_seed(inner)
        pixels = img.mul(255).round().clamp(0, 255).to(torch.uint8)
        assert torch.equal(out, RandAugment(2, 9)(pixels).float() / 255)
    assert not torch.equal(got, x)
    with pytest.raises(SnnrunError, match="randaugment_magnitude must be a whole number"):
        build_augment({"randaugment": 1, "randaugment_magnitude": 31}, (3, 16, 16))


def test_random_erasing_is_torchvisions_box_with_noise_normalised_to_n01() -> None:
    """``random_erasing: 1`` (always): torchvision's ``RandomErasing.get_params`` rectangle on
    the sample's seeded draws, holding ``mean + std z``: after normalisation ``z``, torchvision's
    noise; ``const``: the mean colour; 0.5: about half the images."""
    from torchvision.transforms import RandomErasing

    mean, std = (0.2, 0.4, 0.6), (0.5, 0.25, 0.1)
    aug = build_augment({"random_erasing": 1.0}, (3, 20, 20), mean, std)
    x = torch.rand(8, 3, 20, 20)
    seeds = [sample_seed(5, 2, i) for i in range(8)]
    got = aug(x, seeds)
    m, s = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    for img, seed, out in zip(x, seeds, got):
        g = torch.Generator().manual_seed(seed)
        assert float(torch.rand((), generator=g)) < 1.0
        torch.manual_seed(int(torch.randint(0, 2**62, (), generator=g)))
        i, j, h, w, z = RandomErasing.get_params(img, (0.02, 1 / 3), (0.3, 1 / 0.3), value=None)
        expected = img.clone()
        expected[:, i : i + h, j : j + w] = m + s * z
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(((out - m) / s)[:, i : i + h, j : j + w], z)
    const = build_augment({"random_erasing": 1.0, "random_erasing_mode": "const"}, (3, 20, 20),
                          mean, std)(x, seeds)  # fmt: skip
    changed = const != x
    assert changed.any() and torch.equal(const[changed], m.expand_as(x)[changed])
    half = build_augment({"random_erasing": 0.5}, (3, 20, 20), mean, std)
    many = torch.rand(200, 3, 20, 20)
    erased = (half(many, [sample_seed(1, 0, i) for i in range(200)]) != many).flatten(1).any(1)
    assert 70 < int(erased.sum()) < 130
    with pytest.raises(SnnrunError, match="random_erasing must be a probability"):
        build_augment({"random_erasing": 1.5}, (3, 8, 8))
    with pytest.raises(SnnrunError, match="random_erasing_mode must be pixel"):
        build_augment({"random_erasing": 0.5, "random_erasing_mode": "rand"}, (3, 8, 8))


def test_randaugment_trains_through_the_command(monkeypatch, tmp_path) -> None:
    """On the grey digits (RandAugment takes one channel too), with random erasing."""
    train_in_process(monkeypatch, *TINY, "augment=cifar", "augment.crop_padding=0",
                     "augment.randaugment=1", "augment.random_erasing=0.25",
                     f"hydra.run.dir={tmp_path}")  # fmt: skip
    (record,) = read_metrics(tmp_path)
    assert record["train_loss"] > 0


def epoch_batches(splits, seed: int, epoch: int, workers: int = 0, world: World | None = None):
    loader = make_loader(splits.train, 16, True, seed, workers, world)
    loader.batch_sampler.set_epoch(epoch)
    return list(loader)


def test_augmented_batches_depend_on_seed_epoch_and_index_only(cifar_root: Path) -> None:
    conf = dataset_conf("dataset=cifar10", f"dataset.root={cifar_root}", "augment=cifar",
                        "augment.cutout=8", "dataset.train_limit=48")  # fmt: skip
    splits = build_splits(conf)
    plain = build_splits({**conf, "augment": None})
    first = epoch_batches(splits, 42, 1)
    torch.manual_seed(123)  # the global generator plays no part
    again = epoch_batches(build_splits(conf), 42, 1, workers=1)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    unaugmented = epoch_batches(plain, 42, 1)
    assert all(torch.equal(y1, y2) for (_, y1), (_, y2) in zip(first, unaugmented))
    assert not any(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(first, unaugmented))
    other_epoch = epoch_batches(splits, 42, 2)
    assert not torch.equal(first[0][0], other_epoch[0][0])
    # two ranks' shares of each global batch are the one-process batch's samples, drawn alike
    ranks = [epoch_batches(splits, 42, 1, world=World(r, r, 2)) for r in (0, 1)]
    for (x, _), (x0, _), (x1, _) in zip(first, *ranks, strict=True):
        torch.testing.assert_close(x[0::2], x0, rtol=0, atol=0)
        torch.testing.assert_close(x[1::2], x1, rtol=0, atol=0)
    spawned = pickle.loads(pickle.dumps(splits.train))  # what a worker started by spawn gets
    batch = pickle.loads(pickle.dumps(Batch([0, 5], 42, 1)))
    assert torch.equal(spawned.__getitems__(batch)[0], splits.train.__getitems__(batch)[0])
    # the validation split is never augmented; a direct fetch is keyed (0, 0)
    held = build_splits({**conf, "val_fraction": 0.25})
    assert held.val.transform is None and held.train.transform is not None
    direct, _ = splits.train.__getitems__([0, 1])
    keyed, _ = splits.train.__getitems__(Batch([0, 1], 0, 0))
    assert torch.equal(direct, keyed)


def test_augment_reaches_static_datasets_only_through_the_dataset_config() -> None:
    conf = OmegaConf.to_container(compose(["dataset=cifar10", "augment=cifar"]), resolve=True)
    assert conf["dataset"]["augment"] == conf["augment"]
    assert conf["augment"] == {"name": "cifar", "crop_padding": 4, "flip": True,
                               "autoaugment": False, "randaugment": 0,
                               "randaugment_magnitude": 9, "cutout": 0, "random_erasing": 0.0,
                               "random_erasing_mode": "pixel"}  # fmt: skip
    strong = OmegaConf.to_container(compose(["augment=cifar_autoaugment"]), resolve=True)
    assert strong["augment"]["autoaugment"] and strong["augment"]["cutout"] == 16
    assert build_augment(compose([])["augment"], (3, 32, 32)) is None  # augment=none: off


# ---------------------------------------------------------------- end to end


def test_resume_with_augmentation_equals_an_unbroken_run(monkeypatch, tmp_path, cifar_root):
    """2 epochs straight vs 1 epoch + resume to 2, augment=cifar with a loader worker; and the
    augmentation changes training (augment=none trains otherwise)."""
    args = [*FC, "dataset=cifar10", f"dataset.root={cifar_root}", "dataset.train_limit=64",
            "dataset.test_limit=32", "batch_size=16", "num_workers=1", "encoder=poisson",
            "dataset.normalize=false"]  # fmt: skip
    train_in_process(monkeypatch, *args, "augment=cifar", "epochs=2",
                     f"hydra.run.dir={tmp_path / 'whole'}")  # fmt: skip
    train_in_process(monkeypatch, *args, "augment=cifar", "epochs=1",
                     f"hydra.run.dir={tmp_path / 'split'}")  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["snnrun", f"resume={tmp_path / 'split'}", "epochs=2"])
    main()
    whole = without_timing(read_metrics(tmp_path / "whole"))
    assert without_timing(read_metrics(tmp_path / "split")) == whole
    train_in_process(monkeypatch, *args, "augment=none", "epochs=1",
                     f"hydra.run.dir={tmp_path / 'plain'}")  # fmt: skip
    assert read_metrics(tmp_path / "plain")[0]["train_loss"] != whole[0]["train_loss"]


def test_cifar10_and_imagefolder_train_through_the_command(monkeypatch, tmp_path, cifar_root):
    train_in_process(
        monkeypatch,
        *FC,
        "dataset=cifar10",
        f"dataset.root={cifar_root}",
        "augment=cifar_autoaugment",
        f"hydra.run.dir={tmp_path / 'cifar'}",
    )
    (record,) = read_metrics(tmp_path / "cifar")
    assert 0 <= record["test_acc"] <= 1
    images = tmp_path / "images"
    write_images(images, "train", {"a": 6, "b": 6}, size=(16, 16))
    write_images(images, "val", {"a": 2, "b": 2}, size=(16, 16), seed=1)
    train_in_process(monkeypatch, *FC, "model.layers.1.out_features=2", "dataset=imagefolder",
                     f"dataset.root={images}", "dataset.size=16", "dataset.crop=16",
                     "augment=cifar", f"hydra.run.dir={tmp_path / 'folder'}")  # fmt: skip
    (record,) = read_metrics(tmp_path / "folder")
    assert record["test_acc"] in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_a_missing_root_is_one_line(monkeypatch, capsys, tmp_path) -> None:
    code, err = cli(monkeypatch, capsys, *FC, "dataset=cifar10", f"dataset.root={tmp_path}",
                    "dataset.download=false", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert_one_line_error(code, err, "CIFAR-10 not found in", "data_batch_1", "download is false")
    code, err = cli(monkeypatch, capsys, *FC, "dataset=imagefolder", f"dataset.root={tmp_path}",
                    f"hydra.run.dir={tmp_path / 'run2'}")  # fmt: skip
    assert_one_line_error(code, err, f"{tmp_path / 'train'} is not a folder", "val/<class>")


def test_augment_on_grey_digits_and_refused_on_event_data(monkeypatch, capsys, tmp_path) -> None:
    """``augment=cifar`` crops and flips the embedded digits too (it changes the training);
    event datasets have their own ``dataset.augment``: the group is one line there."""
    from test_events import write_shd

    small = [*FC, "dataset.train_limit=128", "dataset.test_limit=32"]
    train_in_process(monkeypatch, *small, f"hydra.run.dir={tmp_path / 'none'}")
    train_in_process(monkeypatch, *small, "augment=cifar", "augment.crop_padding=2",
                     f"hydra.run.dir={tmp_path / 'cifar'}")  # fmt: skip
    losses = [read_metrics(tmp_path / n)[0]["train_loss"] for n in ("none", "cifar")]
    assert losses[0] != losses[1]
    sample = [(np.array([0.1, 0.2]), np.array([3, 4]))]
    for split in ("train", "test"):
        write_shd(tmp_path / "SHD" / f"shd_{split}.h5", sample * 2, [0, 1])
    code, err = cli(monkeypatch, capsys, *FC, "dataset=shd", f"dataset.root={tmp_path}",
                    "augment=cifar", f"hydra.run.dir={tmp_path / 'shd'}")  # fmt: skip
    assert_one_line_error(code, err, "augment=cifar is for static images", "dataset.augment.flip")
