"""Folder layouts: where each dataset's files sit under ``dataset.root``, as recordings per split.

Each finder accepts tonic's layout as extracted (``<root>/NMNIST/Train/3/*.bin`` ...), without
the downloaded archive and with any part of the files, plus the layouts SpikingJelly users hold
(its ``extract/`` folder, the IBM ``DvsGesture/`` release). It returns None when nothing is
there, so the caller may download through tonic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from snnrun.core.errors import one_line
from snnrun.data.dataset import DatasetError
from snnrun.data.events.readers import Recording

GESTURE_TEST_USERS = range(24, 30)  # the official DVS128 Gesture split: users 1-23 train
CIFAR10DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                      "dog", "frog", "horse", "ship", "truck")  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """The folder a dataset was found in and its recordings per split."""

    folder: Path
    train: list[Recording]
    test: list[Recording]


def nmnist(root: Path) -> Layout | None:
    """``NMNIST/{Train,Test}/<digit>/*.bin`` (tonic; SpikingJelly: ``extract/{Train,Test}``)."""
    for folder in (root / "NMNIST", root / "extract", root):
        splits = [
            interleave(_class_folders(folder / s, "*.bin", "nmnist_bin", 10))
            for s in ("Train", "Test")
        ]
        if all(splits):
            return Layout(folder, *splits)
    return None


def dvsgesture(root: Path) -> Layout | None:
    """tonic's ``DVSGesture/ibmGesture{Train,Test}/user*/<label>.npy`` or the IBM release."""
    for folder in (root / "DVSGesture", root):
        train = _gesture_npys(folder / "ibmGestureTrain")
        test = _gesture_npys(folder / "ibmGestureTest")
        if train and test:
            return Layout(folder, train, test)
    return ibm_gesture(root)


def ibm_gesture(root: Path) -> Layout | None:
    """IBM's ``DvsGesture/user*_<light>.aedat`` + ``*_labels.csv``, cut into gestures.

    The split follows ``trials_to_train.txt`` / ``trials_to_test.txt`` when present, else users
    1-23 train and 24-29 test. A CSV row ``class, start_us, end_us`` is one sample with label
    ``class - 1`` holding the events with ``start <= t < end`` (as SpikingJelly cuts them).
    """
    for folder in (root / "DvsGesture", root / "extract" / "DvsGesture", root):
        files = sorted(f for f in folder.glob("user*.aedat") if _labels_csv(f).is_file())
        if not files:
            continue
        test_names = _listed(folder / "trials_to_test.txt")
        train: list[Recording] = []
        test: list[Recording] = []
        for f in files:
            is_test = f.name in test_names if test_names else _user(f.name) in GESTURE_TEST_USERS
            (test if is_test else train).extend(_gesture_cuts(f))
        if train and test:
            return Layout(folder, train, test)
    return None


def cifar10dvs(root: Path, train_ratio: float) -> Layout | None:
    """``CIFAR10DVS/<class>/cifar10_<class>_<i>.aedat4`` (tonic) or ``.aedat`` (the original
    release; SpikingJelly's ``extract/<class>``). Per class, in order of ``i``, the first
    ``train_ratio`` of the recordings train and the rest test (SpikingJelly's
    ``split_to_train_test_set(0.9, random_split=False)``).
    """
    for folder in (root / "CIFAR10DVS", root / "extract", root):
        train: list[Recording] = []
        test: list[Recording] = []
        for label, name in enumerate(CIFAR10DVS_CLASSES):
            recs = _cifar_class(folder / name, label)
            cut = round(len(recs) * train_ratio)
            train += recs[:cut]
            test += recs[cut:]
        if train and test:
            return Layout(folder, interleave(train), interleave(test))
    return None


def shd(root: Path) -> Layout | None:
    """``SHD/shd_{train,test}.h5`` (tonic; SpikingJelly: ``extract/``), one row per sample."""
    for folder in (root / "SHD", root / "extract", root):
        files = [folder / "shd_train.h5", folder / "shd_test.h5"]
        if all(f.is_file() for f in files):
            return Layout(folder, *(_h5_rows(f) for f in files))
    return None


def interleave(recordings: list[Recording]) -> list[Recording]:
    """Classes taken in turn (the k-th of each class, then the k+1-th ...), so that
    ``train_limit`` keeps every class; within a class the order is kept."""
    seen: dict[int, int] = {}
    rank = []
    for r in recordings:
        rank.append(seen.get(r.label, 0))
        seen[r.label] = rank[-1] + 1
    order = sorted(range(len(recordings)), key=lambda i: (rank[i], recordings[i].label))
    return [recordings[i] for i in order]


def _class_folders(split: Path, pattern: str, reader: str, classes: int) -> list[Recording]:
    """``split/<int label>/<pattern>`` files, label from the folder name; hidden folders are
    passed over, any other folder not named by a number is refused."""
    if not split.is_dir():
        return []
    subs = [d for d in split.iterdir() if d.is_dir() and not d.name.startswith(".")]
    bad = sorted(d for d in subs if not d.name.isdigit())
    if bad:
        raise DatasetError(f"{bad[0]} is not a label folder: the folders in {split} are named by "
                           f"their label, 0..{classes - 1}; rename it to its label or move it out "
                           "of dataset.root")  # fmt: skip
    recs = []
    for sub in sorted(subs, key=lambda d: int(d.name)):
        recs += [Recording(reader, str(f), int(sub.name)) for f in sorted(sub.glob(pattern))]
    return recs


def _gesture_npys(split: Path) -> list[Recording]:
    if not split.is_dir():
        return []
    return [
        Recording("tonic_gesture_npy", str(f), int(f.stem))
        for user in sorted(d for d in split.iterdir() if d.is_dir())
        for f in sorted(user.glob("*.npy"), key=lambda f: (len(f.stem), f.stem))
        if f.stem.isdigit()
    ]


def _labels_csv(aedat: Path) -> Path:
    return aedat.with_name(f"{aedat.stem}_labels.csv")


def _gesture_cuts(aedat: Path) -> list[Recording]:
    rows = np.loadtxt(_labels_csv(aedat), dtype=np.int64, delimiter=",", skiprows=1, ndmin=2)
    cut = "ibm_gesture_cut"
    return [Recording(cut, str(aedat), int(c) - 1, int(s), int(e)) for c, s, e in rows]


def _listed(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _user(name: str) -> int:
    match = re.match(r"user(\d+)", name)
    return int(match.group(1)) if match else 0


def _cifar_class(folder: Path, label: int) -> list[Recording]:
    if not folder.is_dir():
        return []
    files = [f for f in folder.iterdir() if f.suffix in (".aedat", ".aedat4")]
    files.sort(key=lambda f: (_trailing_number(f.stem), f.name))
    reader = {".aedat": "cifar10dvs_aedat2", ".aedat4": "cifar10dvs_aedat4"}
    return [Recording(reader[f.suffix], str(f), label) for f in files]


def _h5_rows(path: Path) -> list[Recording]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            labels = f["labels"][()]
    except (OSError, KeyError) as e:  # an empty or truncated file, no labels
        empty = " (0 bytes)" if path.stat().st_size == 0 else ""
        raise DatasetError(f"cannot read {path}{empty}: {one_line(e, 100)}; "
                           "extract the dataset again") from None  # fmt: skip
    return [Recording("shd_row", str(path), int(y), i) for i, y in enumerate(labels)]


def _trailing_number(stem: str) -> int:
    match = re.search(r"(\d+)$", stem)
    return int(match.group(1)) if match else -1
