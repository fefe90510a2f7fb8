"""Datasets: the embedded digits, MNIST / Fashion-MNIST from real IDX files, the data contract.

Event datasets (sequences) are tested in test_events.py."""

from __future__ import annotations

import pytest
import torch

from snnrun.data.dataset import DATASETS, DatasetError, build_splits, make_loader

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
    first = [y.tolist() for _, y in loader]
    assert [y.tolist() for _, y in loader] == first  # the order is a function of (seed, epoch)
    loader.batch_sampler.set_epoch(1)
    assert [y.tolist() for _, y in loader] != first  # a new epoch, a new order
    again = make_loader(data, batch_size=16, shuffle=True, seed=3)  # e.g. after a resume
    again.batch_sampler.set_epoch(1)
    assert [y.tolist() for _, y in again] == [y.tolist() for _, y in loader]


def test_ranks_share_each_global_batch() -> None:
    """Two ranks take the even and odd positions of each global batch of one process."""
    from snnrun.core.distributed import ShardedBatches, World

    one = list(ShardedBatches(70, 16, True, 3, World()))
    ranks = [list(ShardedBatches(70, 16, True, 3, World(r, r, 2))) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(one) == 5
    for step, batch in enumerate(one):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(batch)
    tiny = [list(ShardedBatches(17, 16, True, 3, World(r, r, 2))) for r in (0, 1)]
    assert len(tiny[0]) == len(tiny[1]) == 1  # a last batch of one sample: dropped for training
    tests = [list(ShardedBatches(17, 16, False, 3, World(r, r, 2))) for r in (0, 1)]
    assert sum(len(b) for t in tests for b in t) == 17  # testing keeps every sample


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
