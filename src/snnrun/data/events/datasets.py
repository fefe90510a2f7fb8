"""Event datasets in the ``DATASETS`` registry: N-MNIST, DVS128 Gesture, CIFAR10-DVS, SHD.

A builder finds the recordings under ``dataset.root`` (:mod:`snnrun.data.events.layouts`),
downloading through tonic when they are absent, integrates each into a sequence (frames
``[T, 2, H, W]`` split by event ``number`` or ``time``; SHD spike bins ``[T, 700]``), caches
the result (:mod:`snnrun.data.events.cache`, in ``dataset.cache_dir``, by default
``<root>/.snnrun-frames``) and returns ``Splits(sequence=True)``. A label outside the
dataset's classes (e.g. a ``Train/10/`` folder) is refused before anything is built.
``dataset.T`` is the top-level ``T`` (``${T}`` in the YAML) and ``dataset.workers`` the
``num_workers``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snnrun.core.errors import one_line
from snnrun.data.dataset import DATASETS, ArrayFileDataset, DatasetError, Splits
from snnrun.data.events import frames, layouts
from snnrun.data.events.augment import build_augment
from snnrun.data.events.cache import FOLDER, cached
from snnrun.data.events.readers import Recording


@dataclass(frozen=True)
class Integrate:
    """One recording → int64 counts: frames ``[T, *size]`` for ``size=(P, H, W)``, or spike
    bins ``[T, channels]`` over ``duration_us`` for ``size=(channels,)``."""

    size: tuple[int, ...]
    T: int
    split_by: str = "number"
    duration_us: int | None = None

    def __call__(self, rec: Recording) -> np.ndarray:
        ev = rec.read()
        if len(self.size) == 1:
            return frames.to_bins(ev["t"], ev["x"], self.size[0], self.T, self.duration_us)
        return frames.to_frames(ev, self.size, self.T, self.split_by)


@dataclass(frozen=True)
class EventDataset:
    """What the builder needs to know about one dataset."""

    name: str
    size: tuple[int, ...]
    classes: int
    find: Callable[[Path, dict[str, Any]], layouts.Layout | None]
    download: Callable[[Path], None]
    expected: str  # the layout, for the error message
    source: str  # where to get the files


def build_event_splits(spec: EventDataset, options: dict[str, Any]) -> Splits:
    """Find (or download), check labels, integrate, cache; the training split gets the
    augmentation."""
    T, integrate = _integration(spec, options)
    root = Path(options["root"]).expanduser().resolve()
    layout = spec.find(root, options) or _download(spec, root, options)
    _check_labels(spec, [*layout.train, *layout.test])
    cache = Path(options.get("cache_dir") or root / FOLDER).expanduser().resolve()
    workers = int(options.get("workers") or 0)
    sets = []
    for split, recordings in (("train", layout.train), ("test", layout.test)):
        recordings = recordings[: options.get(f"{split}_limit") or None]
        entry = cached(cache, root, f"{spec.name}-{split}", asdict(integrate), recordings,
                       integrate, (T, *spec.size), workers)  # fmt: skip
        sets.append(ArrayFileDataset(entry.path, entry.labels))
    sets[0].transform = build_augment(options.get("augment") or {}, spec.size)
    return Splits(sets[0], sets[1], spec.size, spec.classes, sequence=True)


def _check_labels(spec: EventDataset, recordings: list[Recording]) -> None:
    """Every label in ``0..classes-1``, or one line naming the first recording outside."""
    bad = next((r for r in recordings if not 0 <= r.label < spec.classes), None)
    if bad is not None:
        raise DatasetError(
            f"{bad.path} has label {bad.label}, outside 0..{spec.classes - 1} ({spec.name} has "
            f"{spec.classes} classes); move it out of dataset.root or give it a label in range"
        )


def _integration(spec: EventDataset, options: dict[str, Any]) -> tuple[int, Integrate]:
    T = options.get("T")
    if not isinstance(T, int) or T < 1:
        raise DatasetError(f"dataset.T must be a positive integer (the top-level T), got {T!r}")
    if len(spec.size) == 1:
        duration = options.get("duration_ms")
        if not isinstance(duration, (int, float)) or duration <= 0:
            raise DatasetError(f"dataset.duration_ms must be a positive number, got {duration!r}")
        return T, Integrate(spec.size, T, "time", round(duration * 1000))
    split_by = options.get("split_by", "number")
    if split_by not in frames.SPLITS:
        raise DatasetError(f"dataset.split_by must be number or time, got {split_by!r}")
    return T, Integrate(spec.size, T, split_by)


def _download(spec: EventDataset, root: Path, options: dict[str, Any]) -> layouts.Layout:
    """Download through tonic into ``root``; one line naming the layout when that fails."""
    reason = "dataset.download is false"
    if options.get("download", True):
        try:
            spec.download(root)
            found = spec.find(root, options)
            if found is not None:
                return found
            reason = "tonic wrote no recordings"
        except Exception as e:  # network and archive errors come in many types
            reason = one_line(e, 120)
    raise DatasetError(
        f"{spec.name} not found in {root} and not downloaded ({reason}); put {spec.expected} "
        f"there (from {spec.source}) or set dataset.root to the folder holding it"
    )


def _tonic(cls: str, **kwargs: Any) -> Callable[[Path], None]:
    """A downloader: ``tonic.datasets.<cls>(save_to=root, **kw)`` for each ``kw`` in ``kwargs``."""

    def download(root: Path) -> None:
        import tonic

        for options in kwargs.get("splits", [{}]):
            getattr(tonic.datasets, cls)(save_to=str(root), **options)

    return download


_SPLITS = {"splits": [{"train": True}, {"train": False}]}

SPECS = {
    spec.name: spec
    for spec in (
        EventDataset(
            "nmnist", (2, 34, 34), 10, lambda root, options: layouts.nmnist(root),
            _tonic("NMNIST", **_SPLITS), "NMNIST/{Train,Test}/<digit>/*.bin",
            "tonic or garrickorchard.com/datasets/n-mnist: Train.zip, Test.zip",
        ),
        EventDataset(
            "dvsgesture", (2, 128, 128), 11, lambda root, options: layouts.dvsgesture(root),
            _tonic("DVSGesture", **_SPLITS),
            "DVSGesture/ibmGesture{Train,Test}/user*/<label>.npy (tonic) or "
            "DvsGesture/user*.aedat with *_labels.csv (IBM)",
            "tonic or research.ibm.com/dvsgesture: DvsGesture.tar.gz",
        ),
        EventDataset(
            "cifar10dvs", (2, 128, 128), 10,
            lambda root, options: layouts.cifar10dvs(root, float(options.get("train_ratio", 0.9))),
            _tonic("CIFAR10DVS"), "CIFAR10DVS/<class>/*.aedat4 (tonic) or *.aedat (original)",
            "tonic or figshare.com/articles/dataset/CIFAR10-DVS_New/4724671",
        ),
        EventDataset(
            "shd", (700,), 20, lambda root, options: layouts.shd(root), _tonic("SHD", **_SPLITS),
            "SHD/shd_train.h5 and SHD/shd_test.h5",
            "tonic or zenkelab.org/datasets: shd_train.h5.zip, shd_test.h5.zip (unzipped)",
        ),
    )
}  # fmt: skip


def _register(spec: EventDataset) -> None:
    DATASETS.register(spec.name)(lambda options: build_event_splits(spec, options))


for _spec in SPECS.values():
    _register(_spec)
