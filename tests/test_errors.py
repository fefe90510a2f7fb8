"""Bad input ends as one line ``snnrun: error: ...`` naming the fix, and never touches a run."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from snnrun.cli.command import main
from snnrun.run.checkpoint import load_checkpoint, save_checkpoint
from snnrun.run.rundir import LATEST

from conftest import TINY, assert_one_line_error, cli, needs_shared

TINY_FC = [o for o in TINY if not o.startswith("model.")] + ["model=fc"]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real finished one-epoch run (through the command, in-process)."""
    folder = tmp_path_factory.mktemp("run") / "run"
    mp = pytest.MonkeyPatch()
    mp.setattr(sys, "argv", ["snnrun", *TINY, f"hydra.run.dir={folder}"])
    try:
        main()
    finally:
        mp.undo()
    assert (folder / LATEST).is_file()
    return folder


def test_unknown_group_option(monkeypatch, capsys) -> None:
    code, err = cli(monkeypatch, capsys, "model=nope")
    assert_one_line_error(code, err, "model/nope", "csnn")


def test_unknown_key(monkeypatch, capsys) -> None:
    code, err = cli(monkeypatch, capsys, "neuron.nonsense=3")
    assert_one_line_error(code, err, "nonsense")


def test_unknown_layer_type(monkeypatch, capsys, tmp_path) -> None:
    code, err = cli(
        monkeypatch, capsys, *TINY, "model.layers.0.type=conv3d", f"hydra.run.dir={tmp_path / 'r'}"
    )
    assert_one_line_error(code, err, "model.layers[0] (conv3d)", "conv3d", "conv2d", "batchnorm2d")


def test_shape_mismatch_names_the_layer(monkeypatch, capsys, tmp_path) -> None:
    code, err = cli(
        monkeypatch,
        capsys,
        *TINY_FC,
        "+model.layers.1.in_features=100",
        f"hydra.run.dir={tmp_path / 'r'}",
    )
    assert_one_line_error(code, err, "model.layers[1] (linear)", "[T, N, 784]")


def test_output_size_mismatch(monkeypatch, capsys, tmp_path) -> None:
    code, err = cli(
        monkeypatch,
        capsys,
        *TINY_FC,
        "model.layers.1.out_features=7",
        f"hydra.run.dir={tmp_path / 'r'}",
    )
    assert_one_line_error(code, err, "10 classes")


def test_missing_dataset_names_folder_and_files(monkeypatch, capsys, tmp_path) -> None:
    root = tmp_path / "nowhere"
    code, err = cli(
        monkeypatch,
        capsys,
        *TINY,
        "dataset=mnist",
        f"dataset.root={root}",
        f"hydra.run.dir={tmp_path / 'r'}",
    )
    assert_one_line_error(code, err, str(root), "train-images-idx3-ubyte", "dataset.root")


def test_corrupt_dataset_file(monkeypatch, capsys, tmp_path) -> None:
    source = needs_shared("mnist")
    root = tmp_path / "mnist"
    shutil.copytree(source, root)
    broken = root / "t10k-labels-idx1-ubyte.gz"
    broken.chmod(0o644)
    broken.write_bytes(gzip.compress(b"\x00\x00\x08\x03garbage"))
    code, err = cli(
        monkeypatch,
        capsys,
        *TINY,
        "dataset=mnist",
        f"dataset.root={root}",
        f"hydra.run.dir={tmp_path / 'r'}",
    )
    assert_one_line_error(code, err, "corrupt dataset file", "t10k-labels")


def test_fresh_run_refuses_an_existing_run_dir(monkeypatch, capsys, run_dir) -> None:
    before = snapshot(run_dir)
    code, err = cli(monkeypatch, capsys, *TINY, f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, "already holds a run", "resume=")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "not_a_run",
        "corrupt",
        "truncated",
        "no_compose",
        "group_change",
        "unknown_key",
        "changed_state",
        "best_checkpoint",
        "multirun",
    ],
)
def test_bad_resume_leaves_run_untouched(monkeypatch, capsys, tmp_path, run_dir, case) -> None:
    work = tmp_path / "run"
    shutil.copytree(run_dir, work)
    ckpt = work / LATEST
    args = [f"resume={work}"]
    needles: tuple[str, ...]
    if case == "missing":
        args, needles = [f"resume={tmp_path / 'gone'}"], ("does not exist",)
    elif case == "not_a_run":
        (tmp_path / "empty").mkdir()
        args, needles = [f"resume={tmp_path / 'empty'}"], ("has no checkpoint_latest.pt",)
    elif case == "corrupt":
        ckpt.write_bytes(b"not a checkpoint at all")
        needles = ("corrupt checkpoint",)
    elif case == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
        needles = ("corrupt checkpoint",)
    elif case == "no_compose":
        payload = load_checkpoint(ckpt)
        payload["overrides"] = [*payload["overrides"], "model=deleted_model"]
        save_checkpoint(payload, ckpt)
        needles = ("no longer composes", "model/deleted_model")
    elif case == "group_change":
        args, needles = [*args, "model=fc"], ("cannot change model",)
    elif case == "unknown_key":
        args, needles = [*args, "optimizer.nonsense=1"], ("nonsense",)
    elif case == "changed_state":
        args, needles = [*args, "optimizer.lr=0.5"], ("cannot change optimizer.lr", "epochs")
    elif case == "best_checkpoint":
        args, needles = [f"resume={work / 'checkpoint_best.pt'}"], ("overwrite the epochs",)
    else:
        args, needles = ["-m", *args], ("one run at a time",)
    before = snapshot(work)
    code, err = cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, *needles)
    assert snapshot(work) == before


def test_checkpoint_is_atomic(tmp_path, monkeypatch) -> None:
    """A failure while writing leaves the previous checkpoint intact and no temp file."""
    path = tmp_path / LATEST
    save_checkpoint({"v": 1}, path)

    def explode(obj, f) -> None:
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", explode)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"v": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == [LATEST]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("batch_size=0", "batch_size must be a positive integer"),
        ("T=-1", "T must be a positive integer"),
        ("optimizer.lr=-1", "Invalid learning rate"),
        ("device=tpu9", "device='tpu9'"),
    ],
)
def test_bad_values_are_one_line(monkeypatch, capsys, tmp_path, override, needle) -> None:
    code, err = cli(monkeypatch, capsys, *TINY, override, f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, needle)


def test_multirun_checks_its_first_job(monkeypatch, capsys) -> None:
    code, err = cli(monkeypatch, capsys, "-m", "model=nope,fc", "optimizer.lr=0.1,0.2")
    assert_one_line_error(code, err, "model/nope", "csnn")


def test_checkpoint_files_get_the_usual_mode(run_dir) -> None:
    umask = os.umask(0)
    os.umask(umask)
    for name in (LATEST, "checkpoint_best.pt", "metrics.jsonl"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_two_runs_cannot_share_a_run_dir(monkeypatch, capsys, tmp_path) -> None:
    """A dir another process holds (its run.lock flocked) is refused, fresh or resumed."""
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    with (run_dir / "run.lock").open("w") as held:
        held.write("12345\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        code, err = cli(monkeypatch, capsys, *TINY, f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, "in use by another snnrun process (pid 12345)")
    assert not (run_dir / LATEST).exists()


def test_a_stale_claim_does_not_block(monkeypatch, capsys, tmp_path) -> None:
    """A run that failed (or was killed) before its first checkpoint leaves a run.lock that
    nobody holds: the next run trains there."""
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "run.lock").write_text("999999\n")  # a dead process's claim
    monkeypatch.setattr(sys, "argv", ["snnrun", *TINY, f"hydra.run.dir={run_dir}"])
    main()
    assert (run_dir / LATEST).is_file()
