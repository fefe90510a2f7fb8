"""Event datasets: integration, readers, layouts, the frame cache, augmentation, end to end."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import struct
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from snnrun.cli.command import main
from snnrun.core.errors import SnnrunError
from snnrun.core.stop import Stopped, graceful_stop
from snnrun.data.dataset import DatasetError, build_splits, make_loader
from snnrun.data.encoder import build_encoder
from snnrun.data.events import frames
from snnrun.data.events.cache import FOLDER
from snnrun.data.events.readers import EVENT, Recording, events, read_aedat3

from conftest import TINY, needs_shared, run_snnrun, start

# ---------------------------------------------------------------- helpers: files in real formats


def write_nmnist_bin(path: Path, ev: np.ndarray) -> None:
    """N-MNIST .bin: x, y, p<<7 | t>>16, t>>8, t (t < 2^23)."""
    t = ev["t"].astype(np.int64)
    raw = np.stack([ev["x"], ev["y"], (ev["p"] << 7) | (t >> 16), (t >> 8) & 255, t & 255], 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw.astype(np.uint8).tobytes())


def write_aedat3(path: Path, ev: np.ndarray, packets: int = 2) -> None:
    """IBM AEDAT 3.1: header, then polarity packets (and one non-polarity packet to skip)."""
    body = b"#!AER-DAT3.1\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
    body += struct.pack("<hhiiiiii", 2, 1, 4, 0, 0, 3, 3, 3) + b"\x00" * 12  # special events
    for part in np.array_split(ev, packets):
        t = part["t"].astype(np.int64)
        overflow = int(t[0] >> 31) if len(t) else 0
        data = (part["x"].astype(np.uint32) << 17) | (part["y"].astype(np.uint32) << 2)
        data |= (part["p"].astype(np.uint32) << 1) | 1
        words = np.stack([data, (t & 0x7FFFFFFF).astype(np.uint32)], 1).astype("<u4")
        body += struct.pack("<hhiiiiii", 1, 1, 8, 4, overflow, len(part), len(part), len(part))
        body += words.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


def write_aedat2(path: Path, ev: np.ndarray) -> None:
    """CIFAR10-DVS original: big endian (a, t); x = 127 - a>>8, y = 127 - a>>1, p = 1 - a&1."""
    a = ((127 - ev["x"].astype(np.uint32)) << 8) | ((127 - ev["y"].astype(np.uint32)) << 1)
    a |= 1 - ev["p"].astype(np.uint32)
    words = np.stack([a, ev["t"].astype(np.uint32)], 1).astype(">u4")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n" + words.tobytes())


def write_shd(path: Path, samples: list[tuple[np.ndarray, np.ndarray]], labels: list[int]) -> None:
    """SHD .h5: spikes/times (s, vlen float), spikes/units (vlen uint16), labels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (len(samples),), h5py.vlen_dtype(np.float32))
        units = f.create_dataset("spikes/units", (len(samples),), h5py.vlen_dtype(np.uint16))
        for i, (t, u) in enumerate(samples):
            times[i], units[i] = t.astype(np.float32), u.astype(np.uint16)
        f["labels"] = np.asarray(labels, dtype=np.uint16)
        f["extra/keys"] = np.asarray([b"k"] * 20)
        f["extra/speaker"] = np.zeros(len(samples), dtype=np.uint16)


def random_events(n: int, size: int, seed: int, duration: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, duration, n))
    return events(t, rng.integers(0, size, n), rng.integers(0, size, n), rng.integers(0, 2, n))


def cfg(name: str, root: Path, T: int = 4, **extra) -> dict:
    return {"name": name, "root": str(root), "T": T, "split_by": "number", "workers": 0,
            "download": False, **extra}  # fmt: skip


# ---------------------------------------------------------------- integration


def per_slice_reference(ev: np.ndarray, bounds: list[tuple[int, int]], size) -> np.ndarray:
    """Frames by explicit loops over the events in each slice."""
    P, H, W = size
    out = np.zeros((len(bounds), P, H, W), dtype=np.int64)
    for j, (lo, hi) in enumerate(bounds):
        for e in ev[lo:hi]:
            out[j, int(e["p"] > 0), e["y"], e["x"]] += 1
    return out


@pytest.mark.parametrize("n,T", [(103, 4), (16, 4), (3, 5), (0, 3), (1, 1)])
def test_split_by_number_counts_each_slice(n: int, T: int) -> None:
    ev = random_events(n, 5, seed=n)
    got = frames.to_frames(ev, (2, 5, 5), T, "number")
    bounds = [(-(-j * n // T), -(-(j + 1) * n // T)) for j in range(T)]  # i in [jn/T, (j+1)n/T)
    assert np.array_equal(got, per_slice_reference(ev, bounds, (2, 5, 5)))
    assert got.sum() == n  # no event dropped, even with fewer events than T
    sizes = got.reshape(T, -1).sum(1)
    assert sizes.max() - sizes.min() <= 1 if n >= T else set(sizes) <= {0, 1}


def test_split_by_time_uses_equal_windows_and_keeps_duplicate_timestamps_together() -> None:
    t = np.array([10, 10, 10, 12, 15, 15, 29, 30, 30, 49])  # span 40 µs -> windows of 10 µs
    ev = events(t, np.arange(10) % 3, np.zeros(10), np.arange(10) % 2)
    got = frames.to_frames(ev, (2, 1, 3), 4, "time")
    assert got.sum() == 10
    assert got.reshape(4, -1).sum(1).tolist() == [6, 1, 2, 1]  # [10,20) [20,30) [30,40) [40,50)
    ref = per_slice_reference(ev, [(0, 6), (6, 7), (7, 9), (9, 10)], (2, 1, 3))
    assert np.array_equal(got, ref)


def test_split_by_time_matches_window_definition_on_random_events() -> None:
    ev = random_events(500, 7, seed=1, duration=10_007)
    T = 6
    got = frames.to_frames(ev, (2, 7, 7), T, "time")
    t0, span = ev["t"][0], ev["t"][-1] - ev["t"][0] + 1
    edges = [t0 + -(-j * span // T) for j in range(T + 1)]  # first t of window j: ceil
    bounds = [tuple(np.searchsorted(ev["t"], edges[j : j + 2])) for j in range(T)]
    assert np.array_equal(got, per_slice_reference(ev, bounds, (2, 7, 7)))
    assert got.sum() == 500


def test_single_timestamp_and_unsorted_events() -> None:
    same = events(np.full(7, 5), np.arange(7) % 2, np.zeros(7), np.ones(7))
    assert frames.to_frames(same, (2, 1, 2), 3, "time").reshape(3, -1).sum(1).tolist() == [7, 0, 0]
    ev = random_events(50, 4, seed=2)
    shuffled = ev[np.random.default_rng(0).permutation(50)]
    for split_by in frames.SPLITS:
        assert np.array_equal(
            frames.to_frames(shuffled, (2, 4, 4), 5, split_by),
            frames.to_frames(ev, (2, 4, 4), 5, split_by),
        )


@pytest.mark.peers
def test_equals_spikingjelly_when_counts_divide_evenly() -> None:
    sj = pytest.importorskip("spikingjelly.datasets.utils")
    ev = random_events(400, 6, seed=3)
    ours = frames.to_frames(ev, (2, 6, 6), 8, "number")
    theirs = sj.integrate_events_by_fixed_frames_number(
        {k: ev[k] for k in "txyp"}, "number", 8, 6, 6
    )
    assert np.array_equal(ours, theirs)


def test_out_of_range_pixels_and_bad_split_raise() -> None:
    with pytest.raises(ValueError, match="outside"):
        frames.to_frames(events([0], [9], [0], [1]), (2, 4, 4), 2, "number")
    with pytest.raises(ValueError, match="split_by"):
        frames.to_frames(random_events(3, 2, 0), (2, 2, 2), 2, "nope")


def test_spike_bins_count_every_spike() -> None:
    t = np.array([0, 99_999, 100_000, 350_000, 399_999, 2_000_000])  # last: past the window
    units = np.array([0, 1, 1, 2, 2, 0])
    bins = frames.to_bins(t, units, 3, 4, 400_000)
    assert bins.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 2]]
    assert bins.sum() == len(t)


# ---------------------------------------------------------------- readers


def test_aedat3_reader_handles_packets_skips_and_overflow(tmp_path: Path) -> None:
    ev = random_events(300, 128, seed=4)
    ev["t"] += (1 << 31) - 50_000  # crosses the 31-bit overflow inside the recording
    halves = [ev[ev["t"] < (1 << 31)], ev[ev["t"] >= (1 << 31)]]
    body = b"#!AER-DAT3.1\r\n#!END-HEADER\r\n"
    for part in halves:
        t = part["t"]
        data = (part["x"].astype(np.uint32) << 17) | (part["y"].astype(np.uint32) << 2)
        data |= part["p"].astype(np.uint32) << 1
        words = np.stack([data, (t & 0x7FFFFFFF).astype(np.uint32)], 1).astype("<u4")
        body += struct.pack("<hhiiiiii", 1, 1, 8, 4, int(t[0] >> 31), len(part), len(part), 0)
        body += words.tobytes()
    (tmp_path / "a.aedat").write_bytes(body)
    read_aedat3.cache_clear()
    got = read_aedat3(str(tmp_path / "a.aedat"))
    assert got.dtype == EVENT
    for key in "txyp":
        assert np.array_equal(got[key], ev[key]), key


@pytest.mark.peers
def test_aedat3_reader_agrees_with_spikingjelly(tmp_path: Path) -> None:
    sj = pytest.importorskip("spikingjelly.datasets.utils")
    ev = random_events(200, 128, seed=5)
    write_aedat3(tmp_path / "b.aedat", ev, packets=3)
    read_aedat3.cache_clear()
    ours, theirs = read_aedat3(str(tmp_path / "b.aedat")), sj.load_aedat_v3(tmp_path / "b.aedat")
    for key in "txyp":
        assert np.array_equal(ours[key], theirs[key]), key


def test_cifar10dvs_aedat2_reader_round_trips(tmp_path: Path) -> None:
    ev = random_events(100, 128, seed=6)
    write_aedat2(tmp_path / "c.aedat", ev)
    got = Recording("cifar10dvs_aedat2", str(tmp_path / "c.aedat"), 0).read()
    for key in "txyp":
        assert np.array_equal(got[key], ev[key]), key


# ---------------------------------------------------------------- datasets through their layouts


def nmnist_tree(root: Path, per_class: int = 2, test_per_class: int = 1) -> None:
    for split, n in (("Train", per_class), ("Test", test_per_class)):
        for d in range(10):
            for k in range(n):
                ev = random_events(40 + d, 34, seed=100 * d + k, duration=300_000)
                write_nmnist_bin(root / "NMNIST" / split / str(d) / f"{k}.bin", ev)


def test_nmnist_layout_without_archives_and_exact_frames(tmp_path: Path) -> None:
    nmnist_tree(tmp_path)
    splits = build_splits(cfg("nmnist", tmp_path, T=3))
    assert (len(splits.train), len(splits.test)) == (20, 10)
    assert splits.sequence and splits.sample_shape == (2, 34, 34) and splits.num_classes == 10
    assert splits.train.labels[:10].tolist() == list(range(10))  # classes interleaved
    x, y = splits.test[3]
    ev = random_events(43, 34, seed=300, duration=300_000)
    ref = torch.from_numpy(frames.to_frames(ev, (2, 34, 34), 3, "number")).float()
    assert int(y) == 3 and torch.equal(x, ref)
    limited = build_splits(cfg("nmnist", tmp_path, T=3, train_limit=10))
    assert sorted(limited.train.labels.tolist()) == list(range(10))


def real_nmnist_tree(root: Path) -> None:
    """The 1000 + 100 real N-MNIST recordings in tonic's layout (links, no copies)."""
    src = needs_shared("nmnist-small")
    for split, listing in (("Train", "train1K.txt"), ("Test", "test100.txt")):
        for line in (src / listing).read_text().splitlines()[1:]:
            sample, label = line.split()
            folder = root / "NMNIST" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{sample}.bin").symlink_to(src / f"{sample}.bs2")


def test_real_nmnist_recordings(tmp_path: Path) -> None:
    real_nmnist_tree(tmp_path)
    splits = build_splits(cfg("nmnist", tmp_path, T=5))
    assert (len(splits.train), len(splits.test)) == (1000, 100)
    assert torch.bincount(splits.test.labels).tolist() == [8, 14, 8, 11, 14, 7, 10, 15, 2, 11]
    x, _ = splits.train.__getitems__(list(range(1000)))
    counts = x.sum((1, 2, 3, 4))
    assert counts.min() >= 1069 and counts.max() <= 7152 and 3900 < counts.mean() < 4300
    per_frame = x.sum((2, 3, 4))
    assert (per_frame.max(1).values - per_frame.min(1).values).max() <= 1  # equal event counts


def gesture_samples_tree(root: Path) -> None:
    """The 10 real recordings in tonic's layout: 1-7 train (user01), 8-10 test (user24)."""
    src = needs_shared("dvsgesture-samples")
    from tonic.io import read_mnist_file

    dtype = np.dtype([(k, np.int64) for k in "xytp"])
    for i in range(1, 11):
        ev = read_mnist_file(str(src / f"{i}.bs2"), dtype=dtype)
        rows = np.stack([ev["x"], ev["y"], ev["p"], ev["t"] // 1000], 1)  # tonic: t in ms
        split, user = ("ibmGestureTrain", "user01") if i <= 7 else ("ibmGestureTest", "user24")
        folder = root / "DVSGesture" / split / f"{user}_fluorescent"
        if i in (4, 7):
            folder = folder.with_name(f"{user}_led")
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{i - 1}.npy", rows)


def test_dvsgesture_tonic_layout_from_real_samples(tmp_path: Path) -> None:
    gesture_samples_tree(tmp_path)
    splits = build_splits(cfg("dvsgesture", tmp_path, T=4))
    assert (len(splits.train), len(splits.test)) == (7, 3)
    assert sorted(splits.train.labels.tolist()) == list(range(7))
    assert splits.sample_shape == (2, 128, 128) and splits.num_classes == 11
    x, _ = splits.train.__getitems__(list(range(7)))
    assert x.shape == (7, 4, 2, 128, 128)
    counts = x.sum((1, 2, 3, 4))
    assert counts.min() >= 63_000 and counts.max() < 182_000  # the README's 63k-181k


def test_dvsgesture_ibm_layout_cut_by_labels(tmp_path: Path) -> None:
    folder = tmp_path / "DvsGesture"
    recordings = {}
    for name in ("user01_fluorescent", "user24_led"):
        ev = random_events(600, 128, seed=len(name), duration=6_000_000)
        write_aedat3(folder / f"{name}.aedat", ev)
        (folder / f"{name}_labels.csv").write_text(
            "class,startTime_usec,endTime_usec\n3,1000000,2000000\n11,2500000,4000000\n"
        )
        recordings[name] = ev
    splits = build_splits(cfg("dvsgesture", tmp_path, T=2))
    assert splits.train.labels.tolist() == [2, 10] and splits.test.labels.tolist() == [2, 10]
    ev = recordings["user24_led"]
    inside = ev[(ev["t"] >= 2_500_000) & (ev["t"] < 4_000_000)]
    x, _ = splits.test[1]
    assert torch.equal(x, torch.from_numpy(frames.to_frames(inside, (2, 128, 128), 2,
                                                            "number")).float())  # fmt: skip
    (folder / "trials_to_test.txt").write_text("user01_fluorescent.aedat\n")
    swapped = build_splits(cfg("dvsgesture", tmp_path, T=2))
    assert torch.equal(swapped.test[1][0], splits.train[1][0])


def test_cifar10dvs_original_layout_split_per_class(tmp_path: Path) -> None:
    classes = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")  # fmt: skip
    for c in classes:
        for i in range(10):
            ev = random_events(30, 128, seed=i)
            write_aedat2(tmp_path / "CIFAR10DVS" / c / f"cifar10_{c}_{i}.aedat", ev)
    splits = build_splits(cfg("cifar10dvs", tmp_path, T=2, train_ratio=0.8))
    assert (len(splits.train), len(splits.test)) == (80, 20)
    assert torch.bincount(splits.test.labels).tolist() == [2] * 10
    x, y = splits.test[0]  # airplane #8 (files ordered by their number, not by name)
    ref = frames.to_frames(random_events(30, 128, seed=8), (2, 128, 128), 2, "number")
    assert int(y) == 0 and torch.equal(x, torch.from_numpy(ref).float())


def test_shd_h5_bins(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples = [(np.sort(rng.uniform(0, 1.2, 50)), rng.integers(0, 700, 50)) for _ in range(6)]
    for name, part in (("shd_train.h5", samples[:4]), ("shd_test.h5", samples[4:])):
        write_shd(tmp_path / "SHD" / name, part, [3, 19, 0, 7][: len(part)])
    splits = build_splits(cfg("shd", tmp_path, T=10, duration_ms=1400))
    assert splits.sample_shape == (700,) and splits.num_classes == 20 and splits.sequence
    assert splits.train.labels.tolist() == [3, 19, 0, 7]
    x, _ = splits.train[1]
    t, u = samples[1]
    ref = frames.to_bins(np.round(t.astype(np.float32) * 1e6).astype(np.int64), u, 700, 10,
                         1_400_000)  # fmt: skip
    assert x.shape == (10, 700) and torch.equal(x, torch.from_numpy(ref).float())


def test_absent_data_is_one_line_naming_the_layout(tmp_path: Path) -> None:
    needles = {"nmnist": "NMNIST/{Train,Test}", "shd": "SHD/shd_train.h5",
               "dvsgesture": "DvsGesture/user*.aedat", "cifar10dvs": "CIFAR10DVS"}  # fmt: skip
    for name, needle in needles.items():
        with pytest.raises(DatasetError) as e:
            build_splits(cfg(name, tmp_path / "empty", duration_ms=1000))
        assert needle in str(e.value) and "\n" not in str(e.value)


def test_failed_download_is_one_line(tmp_path: Path, monkeypatch) -> None:
    import tonic

    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tonic.datasets, "NMNIST", offline)
    with pytest.raises(DatasetError, match=r"Name or service not known.*NMNIST/"):
        build_splits(cfg("nmnist", tmp_path, download=True))


# ---------------------------------------------------------------- cache


def cache_dirs(root: Path) -> list[Path]:
    return sorted((root / FOLDER).iterdir())


def test_cache_hit_rebuild_on_parameter_change_and_on_corruption(tmp_path: Path, capsys) -> None:
    nmnist_tree(tmp_path, per_class=1, test_per_class=1)
    first = build_splits(cfg("nmnist", tmp_path, T=3))
    entries = cache_dirs(tmp_path)
    assert len(entries) == 2
    stamp = {p: (p / "frames.npy").stat().st_mtime_ns for p in entries}
    again = build_splits(cfg("nmnist", tmp_path, T=3))  # hit: nothing rewritten
    assert {p: (p / "frames.npy").stat().st_mtime_ns for p in entries} == stamp
    assert torch.equal(again.train[4][0], first.train[4][0])
    build_splits(cfg("nmnist", tmp_path, T=3, split_by="time"))
    build_splits(cfg("nmnist", tmp_path, T=5))
    assert len(cache_dirs(tmp_path)) == 6  # one entry per (parameters, split)

    expected = first.train[9][0].clone()  # before the file under its memory map changes
    train_dir = next(p for p in entries if "train" in p.name)
    frames_file = train_dir / "frames.npy"
    raw = bytearray(frames_file.read_bytes())
    raw[-100] ^= 0xFF  # one flipped byte in the last sample
    frames_file.write_bytes(bytes(raw))
    capsys.readouterr()
    rebuilt = build_splits(cfg("nmnist", tmp_path, T=3))
    assert "corrupt sample" in capsys.readouterr().out
    assert torch.equal(rebuilt.train[9][0], expected)

    frames_file.write_bytes(frames_file.read_bytes()[:200])  # half-written
    assert torch.equal(build_splits(cfg("nmnist", tmp_path, T=3)).train[9][0], expected)
    manifest = train_dir / "manifest.json"
    manifest.write_text(manifest.read_text()[:50])  # torn manifest
    assert torch.equal(build_splits(cfg("nmnist", tmp_path, T=3)).train[9][0], expected)
    assert json.loads(manifest.read_text())["shape"] == [10, 3, 2, 34, 34]


def test_cache_built_by_worker_processes_is_identical(tmp_path: Path) -> None:
    nmnist_tree(tmp_path, per_class=2, test_per_class=1)
    serial = build_splits(cfg("nmnist", tmp_path, T=3))
    ref = serial.train.__getitems__(list(range(20)))[0]
    for p in cache_dirs(tmp_path):
        (p / "manifest.json").unlink()
    parallel = build_splits(cfg("nmnist", tmp_path, T=3, workers=2))
    assert torch.equal(parallel.train.__getitems__(list(range(20)))[0], ref)


def test_unreadable_recording_names_the_file(tmp_path: Path) -> None:
    nmnist_tree(tmp_path, per_class=1, test_per_class=1)
    bad = tmp_path / "NMNIST" / "Train" / "4" / "0.bin"
    bad.write_bytes(bytes([200, 0, 0, 0, 1]))  # x = 200 on a 34-wide sensor
    with pytest.raises(SnnrunError, match=r"Train/4/0\.bin"):
        build_splits(cfg("nmnist", tmp_path, T=3))
    assert not list(tmp_path.glob(f"{FOLDER}/*/*.partial"))  # an error leaves no partial file


def test_zero_byte_recording_is_refused_naming_the_file(tmp_path: Path) -> None:
    """An empty file is a broken download or extraction, not a sample without events: taken
    as an all-zero sample it would train on a wrong label's blank input without a word."""
    nmnist_tree(tmp_path, per_class=1, test_per_class=1)
    (tmp_path / "NMNIST" / "Test" / "7" / "0.bin").write_bytes(b"")
    with pytest.raises(SnnrunError, match=r"Test/7/0\.bin is empty \(0 bytes\);.*extract") as e:
        build_splits(cfg("nmnist", tmp_path, T=3))
    assert "\n" not in str(e.value)
    write_shd(tmp_path / "SHD" / "shd_train.h5", [(np.array([0.1]), np.array([3]))], [1])
    (tmp_path / "SHD" / "shd_test.h5").write_bytes(b"")  # an OSError read as a write error
    with pytest.raises(SnnrunError, match=r"shd_test\.h5 \(0 bytes\).*extract"):
        build_splits(cfg("shd", tmp_path, T=3, duration_ms=1000))


def test_edited_manifest_labels_are_noticed_and_rebuilt(tmp_path: Path, capsys) -> None:
    nmnist_tree(tmp_path, per_class=1, test_per_class=1)
    truth = build_splits(cfg("nmnist", tmp_path, T=3)).train.labels.tolist()
    manifest = next(p for p in cache_dirs(tmp_path) if "train" in p.name) / "manifest.json"
    edited = json.loads(manifest.read_text())
    edited["labels"] = [9 - y for y in edited["labels"]]
    manifest.write_text(json.dumps(edited))
    capsys.readouterr()
    assert build_splits(cfg("nmnist", tmp_path, T=3)).train.labels.tolist() == truth
    assert "labels" in capsys.readouterr().out  # the notice names what was wrong
    assert json.loads(manifest.read_text())["labels"] == truth


def test_stale_partial_files_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    nmnist_tree(tmp_path, per_class=1, test_per_class=1)
    build_splits(cfg("nmnist", tmp_path, T=3))
    train, test = (next(p for p in cache_dirs(tmp_path) if s in p.name) for s in ("train", "test"))
    crashed = [train / "frames.npy.4242.partial", test / "manifest.json.4242.partial"]
    for p in crashed:  # left by a build that was killed: no process holds its folder's lock
        p.write_bytes(b"x" * 100)
    other = tmp_path / FOLDER / "nmnist-train-0123456789abcdef"  # another parameter set's entry
    other.mkdir()
    (other / "frames.npy.4243.partial").write_bytes(b"x")
    live = tmp_path / FOLDER / "nmnist-test-fedcba9876543210"
    live.mkdir()
    fd = os.open(live / "build.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a build running in another process
    (live / "frames.npy.4244.partial").write_bytes(b"x")
    try:
        build_splits(cfg("nmnist", tmp_path, T=3))  # a cache hit sweeps too
    finally:
        os.close(fd)
    assert [p.name for p in tmp_path.glob(f"{FOLDER}/*/*.partial")] == ["frames.npy.4244.partial"]


def test_stop_request_ends_a_serial_cache_build_and_check_between_samples(
    tmp_path: Path, monkeypatch
) -> None:
    nmnist_tree(tmp_path, per_class=3, test_per_class=1)
    from snnrun.core import stop
    from snnrun.data.events.datasets import Integrate

    monkeypatch.setattr(stop, "_requested", [])  # the request must not outlive this test
    made = []
    integrate = Integrate.__call__

    def signalled(self, rec):  # SIGTERM arrives while the 3rd recording is integrated
        made.append(rec)
        if len(made) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return integrate(self, rec)

    monkeypatch.setattr(Integrate, "__call__", signalled)
    with graceful_stop(tmp_path / "run"), pytest.raises(Stopped):
        build_splits(cfg("nmnist", tmp_path, T=3))
    assert len(made) == 3  # of 30
    assert not list(tmp_path.glob(f"{FOLDER}/*/*.partial"))
    assert not list(tmp_path.glob(f"{FOLDER}/*/manifest.json"))

    monkeypatch.setattr(stop, "_requested", [])
    build_splits(cfg("nmnist", tmp_path, T=3))
    with graceful_stop(tmp_path / "run"), pytest.raises(Stopped):
        os.kill(os.getpid(), signal.SIGTERM)
        build_splits(cfg("nmnist", tmp_path, T=3))  # a cache hit: the check of every sample


def test_cache_dir_holds_the_cache_and_keeps_the_key(tmp_path: Path) -> None:
    nmnist_tree(tmp_path / "data", per_class=1, test_per_class=1)
    default = build_splits(cfg("nmnist", tmp_path / "data", T=3))
    elsewhere = build_splits(cfg("nmnist", tmp_path / "data", T=3, cache_dir=str(tmp_path / "c")))
    assert [p.name for p in cache_dirs(tmp_path / "data")] == sorted(
        p.name for p in (tmp_path / "c").iterdir()
    )  # the same entries (keys), in the other folder
    assert torch.equal(elsewhere.train[4][0], default.train[4][0])


def test_bad_label_folder_and_unwritable_cache_are_one_line_before_the_run(tmp_path: Path) -> None:
    """Through the command: a label folder outside 0..9, then a cache folder that cannot be
    written (a file in its place: root ignores a read-only mode), each one line, with the run
    dir holding no config.yaml nor run.json."""
    root = tmp_path / "data"
    nmnist_tree(root, per_class=1, test_per_class=1)
    write_nmnist_bin(root / "NMNIST" / "Train" / "10" / "0.bin", random_events(40, 34, seed=0))
    args = [*TINY, "dataset=nmnist", f"dataset.root={root}", "dataset.download=false"]
    bad = run_snnrun([*args, f"hydra.run.dir={tmp_path / 'r1'}"], tmp_path, check=False)
    line = bad.stderr.strip()
    assert bad.returncode == 2 and "\n" not in line, bad.stderr
    assert "Train/10/0.bin" in line and "0..9" in line
    assert not {"config.yaml", "run.json"} & {p.name for p in (tmp_path / "r1").glob("*")}

    (root / "NMNIST" / "Train" / "10" / "0.bin").unlink()
    (root / FOLDER).write_text("")  # the cache folder cannot be made
    locked = run_snnrun([*args, f"hydra.run.dir={tmp_path / 'r2'}"], tmp_path, check=False)
    line = locked.stderr.strip()
    assert locked.returncode == 2 and "\n" not in line, locked.stderr
    assert f"{root / FOLDER}" in line and "dataset.cache_dir=" in line
    assert "hydra.run.dir" not in line
    assert not {"config.yaml", "run.json"} & {p.name for p in (tmp_path / "r2").glob("*")}


def test_sigterm_during_cache_build_ends_it_at_once(tmp_path: Path) -> None:
    """SIGTERM to the command's process group (as SLURM sends it) while worker processes
    build the frame cache of 1000 real recordings: exit 143 before the build ends, no entry, no
    partial file (it used to finish the build, build the model and train one step first)."""
    real_nmnist_tree(tmp_path / "data")
    args = [*TINY, "dataset=nmnist", f"dataset.root={tmp_path / 'data'}", "num_workers=2",
            "dataset.train_limit=null", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    proc = start(args, tmp_path)
    cache = tmp_path / "data" / FOLDER
    deadline = time.time() + 120
    while not list(cache.glob("nmnist-train-*/frames.npy.*.partial")) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGTERM)
    sent = time.time()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert "nothing was trained; the same command starts again" in err and "resume" not in err
    assert not (tmp_path / "run").exists()  # nothing to resume: no run dir left behind
    assert not list(cache.glob("*/manifest.json"))  # the build ended before its end
    assert not list(cache.glob("*/*.partial"))
    assert time.time() - sent < 5.0  # with the exit of python and torch (1-2 s on a busy machine)


# ---------------------------------------------------------------- loaders, encoders, augmentation


def test_sequence_loader_is_seeded_and_restorable(tmp_path: Path) -> None:
    nmnist_tree(tmp_path)
    data = build_splits(cfg("nmnist", tmp_path, T=3)).train
    loader = make_loader(data, batch_size=4, shuffle=True, seed=3)
    first = [(x.shape, y.tolist()) for x, y in loader]
    again = make_loader(data, batch_size=4, shuffle=True, seed=3)  # e.g. after a resume
    assert [(x.shape, y.tolist()) for x, y in again] == first
    assert first[0][0] == (4, 3, 2, 34, 34)


def test_encoder_none_transposes_and_mismatches_are_one_line() -> None:
    encode = build_encoder({"name": "none"}, sequence=True)
    x = torch.randn(5, 3, 2, 4, 4)
    out = encode(x, 3)
    assert out.shape == (3, 5, 2, 4, 4) and out.data_ptr() == x.data_ptr()  # a view
    assert torch.equal(out[1, 4], x[4, 1])
    with pytest.raises(SnnrunError, match="T=4"):
        encode(x, 4)
    with pytest.raises(SnnrunError, match="use encoder=none"):
        build_encoder({"name": "poisson"}, sequence=True)
    with pytest.raises(SnnrunError, match="encoder=direct or poisson"):
        build_encoder({"name": "none"}, sequence=False)
    build_encoder({"name": "direct"})  # unchecked when the dataset kind is not given


def test_augmentation_applies_to_training_batches_only(tmp_path: Path) -> None:
    nmnist_tree(tmp_path)
    plain = build_splits(cfg("nmnist", tmp_path, T=3))
    aug = build_splits(cfg("nmnist", tmp_path, T=3, augment={"event_drop": 0.5}))
    idx = list(range(8))
    assert aug.train.__getitems__(idx)[0].sum() < plain.train.__getitems__(idx)[0].sum()
    assert torch.equal(aug.train[2][0], plain.train[2][0])  # single samples: as stored
    assert torch.equal(aug.test.__getitems__(idx)[0], plain.test.__getitems__(idx)[0])


# ---------------------------------------------------------------- end to end


def test_dvsgesture_plif_trains_end_to_end_on_the_cpu(tmp_path: Path, monkeypatch) -> None:
    gesture_samples_tree(tmp_path / "data")
    args = ["experiment=dvsgesture_plif", f"dataset.root={tmp_path / 'data'}", "epochs=1",
            "model.channels=8", "T=4", "batch_size=4", "precision=fp32", "logger=none",
            "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["snnrun", *args])
    main()
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 0 and 0.0 <= record["test_acc"] <= 1.0
    entries = [p.name for p in (tmp_path / "data" / FOLDER).iterdir()]
    assert any(name.startswith("dvsgesture-train") for name in entries)
