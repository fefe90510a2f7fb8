"""Static colour images: CIFAR-10/100 and a user's ImageFolder, normalised per channel.

- ``cifar10`` / ``cifar100``: the official python version under ``dataset.root``
  (``cifar-10-batches-py/{data_batch_1..5, test_batch}``, ``cifar-100-python/{train, test}``:
  pickled dicts with ``data`` uint8 ``[N, 3072]`` (``[3, 32, 32]`` row-major) and ``labels`` /
  ``fine_labels``), read as torchvision's ``CIFAR10`` / ``CIFAR100`` read them (its file lists and
  folder names) but without its MD5 check of each file, so that any file in the official format
  loads; the unpickler admits numpy arrays and plain containers only. When absent and
  ``download: true``, torchvision downloads them.
- ``imagefolder``: ``root/train/<class>/*`` and ``root/val/<class>/*`` (torchvision's
  ``ImageFolder`` listing: classes are the sorted folder names, at least 2); each image is read
  as RGB (``channels: 3``) or grey (``channels: 1``, PIL's ``L``), its shorter side resized to
  ``size`` and centre-cropped to ``crop x crop``; samples in a fixed seeded order, so that
  ``train_limit`` keeps every class.

Samples are ``[C, H, W]``, pixels in [0, 1] then ``(x - mean_c) / std_c`` with the config's
``mean`` / ``std`` (``normalize: false``: pixels in [0, 1], for the poisson and latency encoders).
"""

from __future__ import annotations

import codecs
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnrun.core.errors import one_line
from snnrun.data.dataset import (
    CLASS_NAMES,
    DATASETS,
    DatasetBuilder,
    DatasetError,
    Normalize,
    SampleSet,
    Splits,
    TensorDataset,
)

GREY = (0.299, 0.587, 0.114)  # PIL's grey value of an RGB pixel (ITU-R 601-2 luma)
IMAGE_MODES = {1: "L", 3: "RGB"}  # ImageFolder's dataset.channels: the PIL mode images are read in


def normalization(options: dict[str, Any], channels: int = 3) -> Normalize | None:
    """``Normalize(mean, std)`` from the config (None with ``normalize: false``). Grey samples
    (``channels`` 1) also take 3 numbers, weighted as PIL weights a grey pixel (``GREY``): the
    mean exactly, the std where the colour channels move together (grey images saved as RGB)."""
    if not options.get("normalize", True):
        return None
    mean, std = options.get("mean"), options.get("std")
    counts = (1, 3) if channels == 1 else (channels,)
    for key, values in (("mean", mean), ("std", std)):
        if not isinstance(values, (list, tuple)) or len(values) not in counts:
            what = "1 number (or 3, weighted as grey)" if channels == 1 else f"{channels} numbers"
            raise DatasetError(f"dataset.{key} must list {what}, one per channel, got {values!r}")
    if any(s <= 0 for s in std):  # type: ignore[union-attr]
        raise DatasetError(f"dataset.std must be > 0 in every channel, got {std!r}")
    if channels == 1:
        mean, std = (_grey(values) for values in (mean, std))  # type: ignore[arg-type]
    return Normalize(tuple(map(float, mean)), tuple(map(float, std)))  # type: ignore[arg-type]


def _grey(values: list[float]) -> list[float]:
    """One channel's statistic: 3 weighted as a grey pixel, or the 1 given."""
    return [sum(w * v for w, v in zip(GREY, values, strict=True))] if len(values) == 3 else values


# ---------------------------------------------------------------------------------- CIFAR


@dataclass(frozen=True)
class Cifar:
    key: str  # the dataset's config name
    name: str  # for messages
    torchvision_cls: str  # the torchvision class whose layout and download are used
    label_key: str  # "labels" (CIFAR-10) or "fine_labels" (CIFAR-100)
    classes: int


def _cifar(spec: Cifar) -> DatasetBuilder:
    """A builder for one CIFAR dataset."""

    def build(options: dict[str, Any]) -> Splits:
        import torchvision

        layout = getattr(torchvision.datasets, spec.torchvision_cls)
        train_files = [f for f, _ in layout.train_list]
        test_files = [f for f, _ in layout.test_list]
        root = Path(options["root"]).expanduser()
        folder = _find_cifar(root, layout.base_folder, train_files + test_files)
        if folder is None:
            folder = _download_cifar(spec, layout, root, options, train_files + test_files)
        norm = normalization(options)
        train = TensorDataset(*_read_batches(folder, train_files, spec), normalize=norm)
        test = TensorDataset(*_read_batches(folder, test_files, spec), normalize=norm)
        return Splits(train, test, (3, 32, 32), spec.classes, class_names=CLASS_NAMES[spec.key])

    return build


CIFAR10 = Cifar("cifar10", "CIFAR-10", "CIFAR10", "labels", 10)
CIFAR100 = Cifar("cifar100", "CIFAR-100", "CIFAR100", "fine_labels", 100)
DATASETS.register("cifar10")(_cifar(CIFAR10))
DATASETS.register("cifar100")(_cifar(CIFAR100))


def _find_cifar(root: Path, base_folder: str, files: list[str]) -> Path | None:
    """``root/<base_folder>`` (torchvision's layout) or ``root`` itself, if it holds every file."""
    for candidate in (root / base_folder, root):
        if all((candidate / f).is_file() for f in files):
            return candidate
    return None


def _download_cifar(
    spec: Cifar, layout: Any, root: Path, options: dict[str, Any], files: list[str]
) -> Path:
    """torchvision's download into ``root``; one line naming the folder and files otherwise."""
    reason = "dataset.download is false"
    if options.get("download", True):
        try:
            layout(str(root), train=True, download=True)
            return root / layout.base_folder
        except Exception as e:  # network errors come in many types
            reason = f"the download failed: {one_line(e, 160)}"
    raise DatasetError(
        f"{spec.name} not found in {root / layout.base_folder} ({', '.join(files)} expected, "
        f"the official python version) and {reason}; extract {layout.filename} into "
        f"{root} or set dataset.root to the folder holding {layout.base_folder}"
    )


try:  # numpy >= 2 names its core module _core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # bytes under protocol 2
}


class _DataUnpickler(pickle.Unpickler):
    """Admits numpy arrays and plain containers: a CIFAR batch, never code."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not CIFAR data") from None


def _read_batches(folder: Path, files: list[str], spec: Cifar) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 ``[N, 3, 32, 32]`` and labels int64 ``[N]`` of ``files`` in order."""
    images, labels = zip(*(_read_batch(folder / f, spec) for f in files))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _read_batch(path: Path, spec: Cifar) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = _DataUnpickler(f, encoding="latin1").load()
        data = np.asarray(_field(entry, "data"), dtype=np.uint8)
        labels = np.asarray(_field(entry, spec.label_key), dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise ValueError(f"data {list(data.shape)} and {len(labels)} labels, expected "
                             "[N, 3072] and N")  # fmt: skip
    except (OSError, EOFError, ValueError, TypeError, KeyError, pickle.UnpicklingError) as e:
        raise DatasetError(
            f"corrupt dataset file {path}: {one_line(e, 200)}; delete it and download again"
        ) from None
    if len(labels) and not 0 <= labels.min() <= labels.max() < spec.classes:
        raise DatasetError(f"{path} has labels outside 0..{spec.classes - 1}; is it {spec.name}?")
    return data.reshape(-1, 3, 32, 32), labels


def _field(entry: Any, key: str) -> Any:
    """``entry[key]``: a str key in the official (Python 2) files, bytes in Python 3 pickles."""
    if not isinstance(entry, dict):
        raise ValueError(f"a {type(entry).__name__}, not a dict")
    if key in entry:
        return entry[key]
    return entry[key.encode()]


# ---------------------------------------------------------------------------------- ImageFolder


class ImageFileSet(SampleSet):
    """Images read from ``paths`` on demand in PIL ``mode`` (``RGB`` or grey ``L``), shorter
    side resized to ``size`` (kept when None), centre-cropped to ``crop x crop``; uint8
    ``[N, C, crop, crop]`` scaled to [0, 1]."""

    def __init__(
        self,
        paths: list[str],
        labels: torch.Tensor,
        size: int | None,
        crop: int,
        normalize: Normalize | None = None,
        mode: str = "RGB",
    ) -> None:
        super().__init__(labels, 1 / 255, normalize=normalize)
        self.paths, self.size, self.crop, self.mode = paths, size, crop, mode

    def fetch(self, index: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._load(self.paths[i]) for i in index.tolist()])

    def head(self, n: int | None) -> ImageFileSet:
        if n is None or n >= len(self):
            return self
        return ImageFileSet(self.paths[:n], self.labels[:n], self.size, self.crop, self.normalize,
                            self.mode)  # fmt: skip

    def _load(self, path: str) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms import functional as TF

        try:
            with Image.open(path) as image:
                pixels = image.convert(self.mode)
        except OSError as e:  # PIL's UnidentifiedImageError is one
            raise DatasetError(f"cannot read image {path}: {one_line(e, 160)}; remove it from "
                               "dataset.root") from None  # fmt: skip
        if self.size:
            pixels = TF.resize(pixels, self.size)
        return TF.pil_to_tensor(TF.center_crop(pixels, self.crop))


@DATASETS.register("imagefolder")
def imagefolder(options: dict[str, Any]) -> Splits:
    """``root/train/<class>/*`` for training, ``root/val/<class>/*`` for testing."""
    root = Path(options["root"]).expanduser()
    size, crop, channels = options.get("size"), options.get("crop"), options.get("channels", 3)
    if size is not None and (not isinstance(size, int) or size < 1):
        raise DatasetError(f"dataset.size must be a positive integer or null, got {size!r}")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels not in IMAGE_MODES:
        raise DatasetError(f"dataset.channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if not isinstance(crop, int) or crop < 1:
        raise DatasetError(f"dataset.crop must be a positive integer (samples are "
                           f"[{channels}, crop, crop]), got {crop!r}")  # fmt: skip
    train_classes, train = _listing(root, "train")
    if len(train_classes) < 2:
        raise DatasetError(f"{root / 'train'} holds one class folder, {train_classes[0]}; a "
                           "classifier needs at least 2 classes: add a folder per class to "
                           "train/ and val/")  # fmt: skip
    val_classes, val = _listing(root, "val")
    _same_classes(root, train_classes, val_classes)
    norm, mode = normalization(options, channels), IMAGE_MODES[channels]
    sets = [ImageFileSet([p for p, _ in s], torch.tensor([c for _, c in s], dtype=torch.long),
                         size, crop, norm, mode) for s in (train, val)]  # fmt: skip
    shape = (channels, crop, crop)
    return Splits(sets[0], sets[1], shape, len(train_classes), class_names=train_classes)


def _listing(root: Path, split: str) -> tuple[list[str], list[tuple[str, int]]]:
    """The classes of ``root/split`` and its (path, label) samples in a fixed seeded order."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    where = root / split
    layout = "dataset=imagefolder reads dataset.root/train/<class>/* and dataset.root/val/<class>/*"
    if not where.is_dir():
        raise DatasetError(f"{where} is not a folder ({layout}); set dataset.root")
    try:
        classes, to_index = find_classes(str(where))
        samples = make_dataset(str(where), to_index, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:  # no class folder, or one with no image
        raise DatasetError(f"{where}: {one_line(e, 300)} ({layout})") from None
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))
    return classes, [samples[i] for i in order.tolist()]


def _same_classes(root: Path, train: list[str], val: list[str]) -> None:
    if train != val:
        only_train = sorted(set(train) - set(val)) or "none"
        only_val = sorted(set(val) - set(train)) or "none"
        raise DatasetError(
            f"{root}/train and {root}/val hold different classes (only in train: {only_train}; "
            f"only in val: {only_val}); give both the same class folders"
        )
