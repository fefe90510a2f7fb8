"""Data given in a shape the code did not expect: an N-MNIST label folder that is not a digit, a
one-class ImageFolder, a validation fraction of a few samples, grey ImageFolder images; each
through the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_events import nmnist_tree
from test_images import write_images

from conftest import TINY, assert_one_line_error, cli, read_metrics, train_in_process

FC = [o for o in TINY if not o.startswith(("model.", "dataset."))] + ["model=fc"]


def data_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())["data"]


def test_an_nmnist_label_folder_that_is_not_a_digit_is_refused(monkeypatch, capsys, tmp_path):
    """``Train/seven`` was dropped by an ``isdigit`` filter, its recordings silently missing; a
    hidden folder (``.ipynb_checkpoints``) is still passed over."""
    root = tmp_path / "data"
    nmnist_tree(root, per_class=1, test_per_class=1)
    train = root / "NMNIST" / "Train"
    (train / ".ipynb_checkpoints").mkdir()
    (train / "7").rename(train / "seven")
    args = [*FC, "T=2", "dataset=nmnist", f"dataset.root={root}", "dataset.download=false"]
    code, err = cli(monkeypatch, capsys, *args, f"hydra.run.dir={tmp_path / 'bad'}")
    assert_one_line_error(code, err, str(train / "seven"), "0..9", "rename")
    (train / "seven").rename(train / "7")
    train_in_process(monkeypatch, *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert data_of(tmp_path / "run")["train_size"] == 10


def test_a_one_class_imagefolder_is_refused(monkeypatch, capsys, tmp_path) -> None:
    """It was told to make the last layer produce 1 feature."""
    write_images(tmp_path, "train", {"only": 3}, size=(8, 8))
    write_images(tmp_path, "val", {"only": 1}, size=(8, 8))
    args = ["dataset=imagefolder", f"dataset.root={tmp_path}", "dataset.size=8", "dataset.crop=8"]
    code, err = cli(monkeypatch, capsys, *FC, *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(code, err, str(tmp_path / "train"), "only", "at least 2 classes")


def test_a_small_val_fraction_holds_out_what_it_says(monkeypatch, tmp_path) -> None:
    """12 digits with ``val_fraction=0.05`` held out 7 (one per class present), leaving 5."""
    small = [*FC, "dataset.train_limit=12", "dataset.test_limit=32"]
    train_in_process(monkeypatch, *small, "dataset.val_fraction=0.05",
                     f"hydra.run.dir={tmp_path / 'a'}")  # fmt: skip
    assert data_of(tmp_path / "a")["train_size"] == 11
    train_in_process(monkeypatch, *small, "dataset.val_fraction=0.3",
                     f"hydra.run.dir={tmp_path / 'b'}")  # fmt: skip
    assert data_of(tmp_path / "b")["train_size"] == 12 - 4  # round(3.6)


def test_hold_out_keeps_its_per_class_split_where_every_class_reaches_one() -> None:
    """The split of a dataset large enough for the fraction is the one runs had before."""
    import torch

    from snnrun.data.dataset import TensorDataset, hold_out

    labels = torch.arange(203) % 7
    _, val = hold_out(TensorDataset(torch.zeros(203, 1), labels), 0.1)
    counts = torch.bincount(val.labels, minlength=7).tolist()
    assert counts == [round(0.1 * int((labels == c).sum())) for c in range(7)] == [3] * 7


def write_grey(root: Path, split: str, classes: dict[str, int], side: int = 8) -> None:
    rng = np.random.default_rng(len(split))
    for name, n in classes.items():
        (root / split / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (side, side), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def test_imagefolder_keeps_grey_images_grey(monkeypatch, capsys, tmp_path) -> None:
    """``dataset.channels=1``: samples ``[1, crop, crop]``; 3 (the default) reads RGB as before;
    another value is one line."""
    images = tmp_path / "images"
    write_grey(images, "train", {"a": 4, "b": 4})
    write_grey(images, "val", {"a": 2, "b": 2})
    args = [*FC, "model.layers.1.out_features=2", "dataset=imagefolder", f"dataset.root={images}",
            "dataset.size=8", "dataset.crop=8"]  # fmt: skip
    train_in_process(monkeypatch, *args, "dataset.channels=1", f"hydra.run.dir={tmp_path / 'g'}")
    assert data_of(tmp_path / "g")["sample_shape"] == [1, 8, 8]
    assert len(read_metrics(tmp_path / "g")) == 1
    train_in_process(monkeypatch, *args, f"hydra.run.dir={tmp_path / 'rgb'}")
    assert data_of(tmp_path / "rgb")["sample_shape"] == [3, 8, 8]
    code, err = cli(monkeypatch, capsys, *args, "dataset.channels=2",
                    f"hydra.run.dir={tmp_path / 'bad'}")  # fmt: skip
    assert_one_line_error(code, err, "dataset.channels", "1", "3", "got 2")


def test_grey_normalisation_takes_one_number_or_three_weighted_as_grey(tmp_path) -> None:
    """``channels=1``: ImageNet's 3 numbers become one, as PIL weights a grey pixel."""
    import torch

    from snnrun.data.dataset import DatasetError, build_splits
    from snnrun.data.images import normalization

    grey = normalization({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, 1)
    assert grey is not None
    torch.testing.assert_close(torch.tensor(grey.mean + grey.std), torch.tensor([0.459, 0.2256]),
                               atol=1e-3, rtol=0)  # fmt: skip
    assert normalization({"mean": [0.5], "std": [0.25]}, 1) == grey.__class__((0.5,), (0.25,))
    write_grey(tmp_path, "train", {"a": 1, "b": 1})
    write_grey(tmp_path, "val", {"a": 1, "b": 1})
    options = {"name": "imagefolder", "root": str(tmp_path), "size": None, "crop": 8,
               "channels": 1, "mean": [0.5], "std": [0.25]}  # fmt: skip
    x, _ = build_splits(options).test[0]
    with Image.open(build_splits(options).test.paths[0]) as image:
        pixels = torch.from_numpy(np.array(image)).float() / 255
    torch.testing.assert_close(x, ((pixels - 0.5) / 0.25)[None])
    with pytest.raises(DatasetError, match=r"mean must list 1 number \(or 3, weighted as grey\)"):
        build_splits({**options, "mean": [0.1, 0.2]})
