"""Datasets: a registry of builders returning in-memory train/test splits, and their loaders.

Every builder returns a :class:`Splits` of :class:`TensorDataset` (uint8 images ``[N, C, H, W]``,
int64 labels); batches come out as float32 pixels in ``[0, 1]``. ``train_limit`` /
``test_limit`` keep the first N samples. Loaders shuffle with their own seeded generator, whose
state goes into checkpoints so a resumed run sees the same order.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from snnrun.errors import SnnrunError
from snnrun.registry import Registry


class DatasetError(SnnrunError, RuntimeError):
    """Missing or unreadable dataset files."""


class TensorDataset(Dataset):
    """Images and labels held in memory; fetches whole batches at once (``__getitems__``)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise DatasetError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _as_float(self.images[i]), self.labels[i]

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(idx)
        return _as_float(self.images[index]), self.labels[index]

    def head(self, n: int | None) -> TensorDataset:
        """The first ``n`` samples (all when ``n`` is None)."""
        return self if n is None else TensorDataset(self.images[:n], self.labels[:n])


def _as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → float32 in [0, 1]; float data passes through."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


@dataclass
class Splits:
    train: TensorDataset
    test: TensorDataset
    sample_shape: tuple[int, ...]
    num_classes: int


DatasetBuilder = Callable[[dict[str, Any]], Splits]
DATASETS: Registry[DatasetBuilder] = Registry("dataset")


def build_splits(cfg: dict[str, Any]) -> Splits:
    """The dataset named ``cfg['name']``, cut to ``train_limit`` / ``test_limit``."""
    splits = DATASETS.get(cfg["name"])(cfg)
    for key in ("train_limit", "test_limit"):
        n = cfg.get(key)
        if n is not None and n <= 0:
            raise DatasetError(f"dataset.{key} must be a positive number or null, got {n}")
    splits.train = splits.train.head(cfg.get("train_limit"))
    splits.test = splits.test.head(cfg.get("test_limit"))
    return splits


def _identity(batch):
    return batch


def make_loader(
    dataset: TensorDataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0
) -> DataLoader:
    """A loader over whole-batch fetches; shuffling draws from its own generator."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=_identity,
        num_workers=num_workers,
    )


@DATASETS.register("digits")
def digits(cfg: dict[str, Any]) -> Splits:
    """scikit-learn's 1797 real 8x8 handwritten digits, upsampled to 1x28x28; no download.

    Fixed stratified split: 20% test (360 images), ``random_state=0``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0  # [1797, 1, 8, 8]
    images = torch.nn.functional.interpolate(
        images, size=(28, 28), mode="bilinear", align_corners=False
    )
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(bunch.target).long()
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=bunch.target, random_state=0
    )
    train = TensorDataset(images[train_idx], labels[train_idx])
    test = TensorDataset(images[test_idx], labels[test_idx])
    return Splits(train, test, (1, 28, 28), 10)


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _idx_dataset(name: str, torchvision_cls: str, folder: str) -> DatasetBuilder:
    """A builder for an MNIST-format dataset (4 IDX files, optionally gzipped)."""

    def build(cfg: dict[str, Any]) -> Splits:
        root = Path(cfg["root"]).expanduser()
        where = _find_idx_folder(root, torchvision_cls, folder)
        if where is None:
            where = _download(root, torchvision_cls, name)
        train = TensorDataset(*_read_idx_pair(where, *_IDX_FILES["train"]))
        test = TensorDataset(*_read_idx_pair(where, *_IDX_FILES["test"]))
        return Splits(train, test, (1, 28, 28), 10)

    return build


DATASETS.register("mnist")(_idx_dataset("MNIST", "MNIST", "mnist"))
DATASETS.register("fmnist")(_idx_dataset("Fashion-MNIST", "FashionMNIST", "fashion-mnist"))


def _candidates(root: Path, torchvision_cls: str, folder: str) -> list[Path]:
    """Folders that may hold the IDX files: root itself, torchvision's layout, a named subfolder."""
    return [root, root / "raw", root / torchvision_cls / "raw", root / folder]


def _has_file(folder: Path, stem: str) -> bool:
    return (folder / stem).is_file() or (folder / f"{stem}.gz").is_file()


def _find_idx_folder(root: Path, torchvision_cls: str, folder: str) -> Path | None:
    stems = [s for pair in _IDX_FILES.values() for s in pair]
    for candidate in _candidates(root, torchvision_cls, folder):
        if all(_has_file(candidate, s) for s in stems):
            return candidate
    return None


def _download(root: Path, torchvision_cls: str, name: str) -> Path:
    """Download through torchvision into ``root``; one clear error when that fails."""
    import torchvision

    try:
        getattr(torchvision.datasets, torchvision_cls)(str(root), train=True, download=True)
        getattr(torchvision.datasets, torchvision_cls)(str(root), train=False, download=True)
    except Exception as e:  # network errors come in many types
        files = ", ".join(f"{s}[.gz]" for pair in _IDX_FILES.values() for s in pair)
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        raise DatasetError(
            f"{name} not found in {root} (nor {root / torchvision_cls / 'raw'}) and the download "
            f"failed ({reason}); put {files} there or set dataset.root to the folder holding them"
        ) from None
    return root / torchvision_cls / "raw"


def _read_idx_pair(folder: Path, images: str, labels: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = _read_idx(folder, images, ndim=3)
    y = _read_idx(folder, labels, ndim=1)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y).long()


def _read_idx(folder: Path, stem: str, ndim: int) -> np.ndarray:
    """An IDX file (``stem`` or ``stem.gz``) as a uint8 array; corrupt files raise DatasetError."""
    path = folder / stem if (folder / stem).is_file() else folder / f"{stem}.gz"
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        magic, *dims = struct.unpack(f">{1 + ndim}I", raw[: 4 * (1 + ndim)])
        if magic != 0x800 + ndim:
            raise ValueError(f"magic number {magic:#x}, expected {0x800 + ndim:#x}")
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 * (1 + ndim))
        return data.reshape(dims).copy()
    except (OSError, EOFError, ValueError, struct.error) as e:
        raise DatasetError(
            f"corrupt dataset file {path}: {e}; delete it and download again"
        ) from None
