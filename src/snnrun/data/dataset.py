"""Datasets: a registry of builders returning train/test splits, and their loaders.

Every builder returns a :class:`Splits` of two :class:`SampleSet`: static samples (images
``[C, H, W]``, float32 pixels in ``[0, 1]``, or normalised per channel where the dataset says so:
CIFAR, ImageFolder, :mod:`snnrun.data.images`) or sequences ``[T, ...]`` (event frames, see
:mod:`snnrun.data.events.datasets`), with int64 labels. ``train_limit`` / ``test_limit`` keep the
first N samples. Loaders shuffle by a permutation seeded with (seed, epoch), so a resumed run
sees the same order; under torchrun each rank loads its share of every global batch. A static
dataset's training split gets the ``augment`` group (``dataset.augment``, :mod:`.augment`), whose
draws are keyed by (seed, epoch, sample index) through the loader's :class:`Batch`.

A user's dataset (``dataset._target_=my_pkg.MyData``) is built with the group's keys but snnrun's
own (:data:`SNNRUN_KEYS`, applied to it as to a built-in: limits, augment, validation split) and
held to :class:`snnrun.core.protocols.DatasetSplits`; its torch Datasets become
:class:`UserSet` s, so the loaders, the augmentation and the hold-out treat them as the built-ins.
"""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from snnrun.core import protocols
from snnrun.core.distributed import ShardedBatches, World
from snnrun.core.errors import SnnrunError, one_line
from snnrun.core.plugin import TARGET, PluginError, has_target, instantiate_target
from snnrun.core.registry import Registry
from snnrun.data.augment import build_augment, sample_seed


class DatasetError(SnnrunError, RuntimeError):
    """Missing or unreadable dataset files."""


@dataclass(frozen=True)
class Normalize:
    """Per-channel normalisation of images ``[N, C, H, W]``: ``x' = (x - mean_c) / std_c``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        return (x - mean) / torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)


class Batch(list):
    """One batch's sample indices from a training loader, with the key of the epoch's
    augmentation draws ``(seed, epoch)`` (a list, so it travels to loader workers as one)."""

    def __init__(self, indices: list[int], seed: int, epoch: int) -> None:
        super().__init__(indices)
        self.seed, self.epoch = seed, epoch


Transform = protocols.Augment  # transform(x [N, ...], seeds [N]) -> [N, ...]


class SampleSet(Dataset):
    """Samples with int64 ``labels``; ``__getitems__`` fetches a whole batch at once.

    A batch is ``(x, y)``: ``x`` float32 ``[N, *shape]`` (stored values times ``scale``, then
    ``transform`` when set, e.g. augmentation on the training split, then ``normalize`` when
    set), ``y`` int64 ``[N]``; ``dataset[i]`` is one sample as stored and normalised, without
    ``transform``. The transform is called as ``transform(x, seeds)`` (the augment protocol,
    :class:`snnrun.core.protocols.Augment`: the built-in ``augment`` group's and a user's alike):
    sample ``i`` draws from its own generator, seeded by (seed, epoch, i) of the :class:`Batch`
    asking for it ((0, 0) for a plain list).
    Subclasses say where the stored samples live (:meth:`fetch`).
    """

    def __init__(
        self,
        labels: torch.Tensor,
        scale: float = 1.0,
        transform: Transform | None = None,
        normalize: Normalize | None = None,
    ) -> None:
        self.labels, self.scale, self.transform = labels, scale, transform
        self.normalize = normalize

    def fetch(self, index: torch.Tensor) -> torch.Tensor:
        """The stored samples at ``index`` (any dtype)."""
        raise NotImplementedError

    def head(self, n: int | None) -> SampleSet:
        """The first ``n`` samples (all when ``n`` is None)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.labels)

    def stored(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored samples and the labels at ``index``."""
        return self.fetch(index), self.labels[index]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``i`` as stored, never augmented (the loaders use :meth:`__getitems__`)."""
        x, y = self.stored(torch.tensor([i]))
        return self._normalized(self._floats(x))[0], y[0]

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(idx, dtype=torch.long)
        x, y = self.stored(index)
        x = self._floats(x)
        if self.transform is not None:
            seed, epoch = (idx.seed, idx.epoch) if isinstance(idx, Batch) else (0, 0)
            x = self.transform(x, [sample_seed(seed, epoch, i) for i in index.tolist()])
        return self._normalized(x), y

    def _floats(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x.mul_(self.scale) if self.scale != 1.0 else x

    def _normalized(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x) if self.normalize is not None else x


class TensorDataset(SampleSet):
    """Samples held in memory: uint8 images ``[N, C, H, W]`` become pixels in [0, 1]."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        scale: float | None = None,
        normalize: Normalize | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise DatasetError(f"{len(images)} images but {len(labels)} labels")
        if scale is None:
            scale = 1 / 255 if images.dtype == torch.uint8 else 1.0
        super().__init__(labels, scale, normalize=normalize)
        self.images = images

    def fetch(self, index: torch.Tensor) -> torch.Tensor:
        return self.images[index]

    def head(self, n: int | None) -> TensorDataset:
        if n is None or n >= len(self):
            return self
        return TensorDataset(self.images[:n], self.labels[:n], self.scale, self.normalize)


class ArrayFileDataset(SampleSet):
    """Samples in one ``.npy`` file (e.g. cached event frames ``[N, T, C, H, W]``), memory-mapped.

    The map is opened on first use in each process, so loader workers never pickle the data.
    """

    def __init__(
        self, path: Path, labels: torch.Tensor, transform: Transform | None = None
    ) -> None:
        super().__init__(labels, 1.0, transform)
        self.path = Path(path)
        self._array: np.ndarray | None = None

    def fetch(self, index: torch.Tensor) -> torch.Tensor:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return torch.from_numpy(np.ascontiguousarray(self._array[index.numpy()]))

    def head(self, n: int | None) -> ArrayFileDataset:
        if n is None or n >= len(self):
            return self
        return ArrayFileDataset(self.path, self.labels[:n], self.transform)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}


class IndexedSet(SampleSet):
    """The samples ``index`` of another set (a validation split cut from the training set),
    with its own ``transform`` (none for validation)."""

    def __init__(
        self,
        parent: SampleSet,
        index: torch.Tensor,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(parent.labels[index], parent.scale, transform, parent.normalize)
        self.parent, self.index = parent, index

    def fetch(self, index: torch.Tensor) -> torch.Tensor:
        return self.parent.fetch(self.index[index])

    def head(self, n: int | None) -> IndexedSet:
        return IndexedSet(self.parent, self.index[:n], self.transform)


class UserSet(SampleSet):
    """A user's torch Dataset of ``(x, y)`` pairs (``dataset._target_``), its first ``size``
    samples: a batch reads ``dataset[i]`` once per sample and stacks the ``x`` (float32, neither
    scaled nor normalised: the user's values). ``labels`` are read only when asked for (the
    validation hold-out): from the dataset's ``targets`` or ``labels`` when it has one, else by
    one pass over its samples, which loads every sample once."""

    def __init__(self, dataset: Any, size: int | None = None) -> None:
        self.dataset, self.size = dataset, len(dataset) if size is None else size
        self.scale, self.transform, self.normalize = 1.0, None, None

    @cached_property
    def labels(self) -> torch.Tensor:  # type: ignore[override]
        for name in ("targets", "labels"):
            given = getattr(self.dataset, name, None)
            if given is not None and len(given) == len(self.dataset):
                return torch.as_tensor(given)[: self.size].long()
        return torch.tensor([int(self.dataset[i][1]) for i in range(self.size)])

    def __len__(self) -> int:
        return self.size

    def fetch(self, index: torch.Tensor) -> torch.Tensor:
        return self.stored(index)[0]

    def stored(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.dataset[i] for i in index.tolist()]
        x = torch.stack([torch.as_tensor(x) for x, _ in pairs])
        return x, torch.tensor([int(y) for _, y in pairs], dtype=torch.long)

    def head(self, n: int | None) -> UserSet:
        return self if n is None or n >= self.size else UserSet(self.dataset, n)


@dataclass
class Splits:
    """A dataset's two splits and what one sample is.

    ``sequence=False``: a sample is static, ``[*sample_shape]``, and an encoder expands it over
    T. ``sequence=True``: a sample is already a sequence ``[T, *sample_shape]`` (event frames,
    spike bins); batches come out ``[N, T, ...]`` and the ``none`` encoder makes them
    ``[T, N, ...]``.
    """

    train: SampleSet
    test: SampleSet
    sample_shape: tuple[int, ...]
    num_classes: int
    sequence: bool = False
    val: SampleSet | None = None  # dataset.val_fraction of the training set, when > 0
    class_names: list[str] | None = None  # in label order, where the data names its classes


DatasetBuilder = Callable[[dict[str, Any]], Splits]
DATASETS: Registry[DatasetBuilder] = Registry("dataset")


# The dataset group's keys snnrun applies itself: a user's ``_target_`` gets the others.
SNNRUN_KEYS = ("name", "augment", "train_limit", "test_limit", "val_fraction")


def build_splits(options: dict[str, Any]) -> Splits:
    """The dataset named ``options['name']`` (or the user's ``options['_target_']``), cut to
    ``train_limit`` / ``test_limit``; a static dataset's training split gets
    ``options['augment']`` (the ``augment`` group, interpolated into the dataset's config); with
    ``val_fraction`` > 0 a validation split is held out of the (cut) training set, never
    augmented."""
    options = dict(options)
    fraction = options.pop("val_fraction", 0) or 0
    for key in ("train_limit", "test_limit"):
        n = options.get(key)
        if n is not None and n <= 0:
            raise DatasetError(f"dataset.{key} must be a positive number or null, got {n}")
    if not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise DatasetError(f"dataset.val_fraction must be in [0, 1), got {fraction!r}")
    if has_target(options):
        splits = user_splits(options)
    else:
        splits = DATASETS.get(options["name"])(options)
        splits.class_names = splits.class_names or CLASS_NAMES.get(options["name"])
    splits.train = splits.train.head(options.get("train_limit"))
    splits.test = splits.test.head(options.get("test_limit"))
    if not splits.sequence:  # an event dataset's builder reads its own dataset.augment
        norm = splits.train.normalize
        mean, std = (norm.mean, norm.std) if norm is not None else (None, None)
        splits.train.transform = build_augment(
            options.get("augment"), splits.sample_shape, mean, std
        )
    if fraction:
        if splits.val is not None:
            raise DatasetError(f"dataset: {options[TARGET]} has a validation split of its own; "
                               "drop dataset.val_fraction")  # fmt: skip
        splits.train, splits.val = hold_out(splits.train, fraction)
    return splits


def user_splits(options: dict[str, Any]) -> Splits:
    """``options['_target_']`` called with the keys but :data:`SNNRUN_KEYS`, held to the dataset
    protocol (:class:`snnrun.core.protocols.DatasetSplits`); one sample of each split must have
    the ``sample_shape`` it declares. Its splits become :class:`UserSet` s."""
    target = options[TARGET]
    arguments = {k: v for k, v in options.items() if k not in SNNRUN_KEYS}
    data = protocols.check("dataset", instantiate_target(arguments, "dataset"), target)
    what = f"dataset: {target}"
    classes, sequence = data.num_classes, bool(getattr(data, "sequence", False))
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise PluginError(f"{what}.num_classes must be a positive integer, got {classes!r}")
    shape = tuple(int(n) for n in data.sample_shape)
    sets = {k: UserSet(getattr(data, k)) for k in ("train", "test", "val")
            if getattr(data, k, None) is not None}  # fmt: skip
    for key, split in sets.items():
        if not len(split):
            raise PluginError(f"{what}: its {key} split holds no samples")
        x = split[0][0]
        got = tuple(x.shape[1:] if sequence else x.shape)
        if got != shape:
            steps = " (without T)" if sequence else ""
            raise PluginError(f"{what}: {key}[0] is x of shape {list(got)}{steps} but its "
                              f"sample_shape is {list(shape)}")  # fmt: skip
    names = getattr(data, "class_names", None)
    if names is not None and len(names) != classes:
        raise PluginError(f"{what}: {len(names)} class_names for num_classes={classes}")
    return Splits(sets["train"], sets["test"], shape, classes, sequence, sets.get("val"),
                  list(names) if names is not None else None)  # fmt: skip


def hold_out(train: SampleSet, fraction: float, seed: int = 0) -> tuple[SampleSet, SampleSet]:
    """(train, validation): ``round(fraction * n_c)`` samples of each class ``c`` go to
    validation (:func:`val_counts`), chosen by a permutation seeded with ``seed`` alone, so the
    split is the same on every run and resume of the same data."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=generator)
    labels = train.labels[order]
    classes = labels.unique()
    counts = val_counts([int((labels == c).sum()) for c in classes], fraction)
    val = torch.cat([order[labels == c][:k] for c, k in zip(classes, counts, strict=True)])
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[val] = False
    rest = torch.arange(len(train))[keep]
    if not len(rest):
        raise DatasetError(f"dataset.val_fraction={fraction} leaves no training samples")
    return IndexedSet(train, rest, train.transform), IndexedSet(train, val.sort().values)


def val_counts(sizes: list[int], fraction: float) -> list[int]:
    """Validation samples per class of ``sizes``: ``round(fraction * n_c)`` where every class
    gets one; otherwise (classes too small for the fraction) the ``round(fraction * n)`` the
    fraction says, at least 1, shared by largest remainder, so some classes get none."""
    counts = [round(fraction * n) for n in sizes]
    if min(counts) >= 1:
        return counts
    quotas = [fraction * n for n in sizes]
    counts = [math.floor(q) for q in quotas]
    short = max(1, round(fraction * sum(sizes))) - sum(counts)
    for i in sorted(range(len(sizes)), key=lambda i: counts[i] - quotas[i])[:short]:
        counts[i] += 1
    return counts


def _identity(batch):
    return batch


class KeyedBatches(ShardedBatches):
    """:class:`ShardedBatches` whose batches are :class:`Batch` es: each carries (seed, epoch),
    the key of its samples' augmentation draws."""

    def __iter__(self) -> Iterator[Batch]:
        for share in super().__iter__():
            yield Batch(share, self.seed, self.epoch)


def make_loader(
    dataset: SampleSet,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    world: World | None = None,
) -> DataLoader:
    """A loader over whole-batch fetches of this rank's share of each global batch; the order
    is a seeded permutation per epoch (``loader.batch_sampler.set_epoch``), and the batches key
    the augmentation draws by (seed, epoch, sample index)."""
    batches = KeyedBatches(len(dataset), batch_size, shuffle, seed, world or World())
    return DataLoader(dataset, batch_sampler=batches, collate_fn=_identity, num_workers=num_workers)


@DATASETS.register("digits")
def digits(options: dict[str, Any]) -> Splits:
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

    def build(options: dict[str, Any]) -> Splits:
        root = Path(options["root"]).expanduser()
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
        reason = one_line(e, 160)
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


# Class names by dataset, in label order (datasets whose labels are their names, the digits of
# digits/mnist/nmnist, have none): Fashion-MNIST's README; DVS128 Gesture's gesture_mapping.csv
# (label = its class - 1, as tonic's DVSGesture.classes); CIFAR-10's names, the CIFAR10-DVS
# folders' labels (tonic's CIFAR10DVS.classes); CIFAR-10's and CIFAR-100's (fine labels) as their
# batches.meta / meta files list them. ImageFolder's come from its folders (Splits.class_names).
CLASS_NAMES: dict[str, list[str]] = {
    "fmnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"],
    "dvsgesture": ["hand clapping", "right hand wave", "left hand wave", "right arm clockwise",
                   "right arm counter-clockwise", "left arm clockwise",
                   "left arm counter-clockwise", "arm roll", "air drums", "air guitar",
                   "other gestures"],
    "cifar10dvs": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"],
    "cifar100": ["apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
                 "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can",
                 "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud",
                 "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin",
                 "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo",
                 "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
                 "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree",
                 "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
                 "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray",
                 "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
                 "snail", "snake", "spider", "squirrel", "streetcar", "sunflower",
                 "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
                 "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
                 "woman", "worm"],
}  # fmt: skip
