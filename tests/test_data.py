"""Datasets: the embedded digits, MNIST / Fashion-MNIST from real IDX files, the data contract.

Event datasets (sequences) are tested in test_events.py."""

from __future__ import annotations

import pytest
import torch

from snnrun.data import DATASETS, DatasetError, build_splits, make_loader

from conftest import SHARED_DATA, needs_shared


def test_digits_split_is_fixed_stratified_and_28x28() -> None:
    splits = build_splits({"name": "digits"})
    assert (len(splits.train), len(splits.test)) == (1437, 360)
    assert splits.sample_shape == (1, 28, 28) and splits.num_classes == 10
    assert not splits.sequence  # static images: an encoder expands them over T
    x, _ = splits.train.__getitems__(list(range(8)))
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9
    counts = torch.bincount(splits.test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class
    again = build_splits({"name": "digits"})
    assert torch.equal(splits.test.images, again.test.images)


def test_limits_take_the_first_samples() -> None:
    full = build_splits({"name": "digits"})
    cut = build_splits({"name": "digits", "train_limit": 100, "test_limit": 10})
    assert (len(cut.train), len(cut.test)) == (100, 10)
    assert torch.equal(cut.train.images, full.train.images[:100])


def test_loader_order_is_seeded_and_restorable() -> None:
    data = build_splits({"name": "digits", "train_limit": 64}).train
    loader = make_loader(data, batch_size=16, shuffle=True, seed=3)
    state = loader.generator.get_state()
    first = [y.tolist() for _, y in loader]
    loader.generator.set_state(state)
    assert [y.tolist() for _, y in loader] == first
    assert [y.tolist() for _, y in loader] != first  # a new epoch, a new order


def test_mnist_from_shared_idx_files() -> None:
    needs_shared("mnist")
    splits = build_splits({"name": "mnist", "root": str(SHARED_DATA / "mnist")})
    assert (len(splits.train), len(splits.test)) == (60000, 10000)
    assert torch.bincount(splits.test.labels).tolist()[:3] == [980, 1135, 1032]
    mean = splits.train.images.float().mean().item() / 255
    assert abs(mean - 0.1307) < 1e-3


def test_fmnist_found_from_the_parent_folder() -> None:
    needs_shared("fashion-mnist")
    splits = build_splits({"name": "fmnist", "root": str(SHARED_DATA), "train_limit": 5})
    assert splits.train.labels.tolist() == [9, 0, 0, 3, 0]
    assert len(splits.test) == 10000


def test_single_samples_and_batches_agree() -> None:
    data = build_splits({"name": "digits", "test_limit": 16}).test
    x, y = data.__getitems__([3, 7])
    assert torch.equal(data[7][0], x[1]) and int(data[7][1]) == int(y[1])
    assert data.head(None) is data and len(data.head(5)) == 5


def test_non_positive_limits_are_rejected() -> None:
    with pytest.raises(DatasetError, match="train_limit"):
        build_splits({"name": "digits", "train_limit": 0})


def test_every_dataset_is_registered() -> None:
    assert {"digits", "mnist", "fmnist", "nmnist", "dvsgesture", "cifar10dvs", "shd"} <= set(
        DATASETS.names()
    )
