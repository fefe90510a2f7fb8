"""``init_from=<run dir or checkpoint>``: a new run from another run's weights, through the
command: exact weights (strict), matching tensors only (strict=false), one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from snnrun.api import load_run
from snnrun.run.rundir import RunDir

from conftest import TINY, assert_one_line_error, cli, train_in_process

CSNN = [*TINY, "dataset.train_limit=64", "dataset.test_limit=32", "batch_size=32", "T=2"]
FROZEN = ["optimizer=sgd", "optimizer.lr=0"]  # the weights stay as loaded


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("source")
    with pytest.MonkeyPatch.context() as patch:
        train_in_process(patch, *CSNN, "epochs=2", f"hydra.run.dir={root / 'run'}")
    return root / "run"


def weights(run_dir: Path, which: str = "best") -> dict[str, torch.Tensor]:
    return RunDir(run_dir).load_checkpoint(which)["model"]


def test_init_from_a_run_dir_starts_from_its_weights(source: Path, tmp_path, monkeypatch) -> None:
    """lr=0: the new run's weights are the source's best checkpoint's, tensor for tensor;
    run.json says where they came from; the new run has its own id and history."""
    run_dir = tmp_path / "new"
    train_in_process(monkeypatch, *CSNN, *FROZEN, f"init_from={source}",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    new, old = weights(run_dir, "latest"), weights(source)
    convs = [k for k in old if k.endswith("weight") and old[k].dim() > 1]
    assert convs and all(torch.equal(new[k], old[k]) for k in convs)
    info, source_info = RunDir(run_dir).read_info(), RunDir(source).read_info()
    assert info["init_from"]["path"] == str(source.resolve() / "checkpoint_best.pt")
    assert info["init_from"]["run_id"] == source_info["run_id"] != info["run_id"]
    assert info["init_from"]["skipped"] == []
    assert [r["epoch"] for r in RunDir(run_dir).read_metrics()] == [0]


def test_a_checkpoint_file_and_latest_work_too(source: Path, tmp_path, monkeypatch) -> None:
    run_dir = tmp_path / "new"
    train_in_process(monkeypatch, *CSNN, *FROZEN, f"init_from={source / 'checkpoint_latest.pt'}",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    assert RunDir(run_dir).read_info()["init_from"]["epoch"] == 2


def test_strict_false_loads_the_layers_that_match(source: Path, tmp_path, monkeypatch) -> None:
    """A wider hidden linear (and so the head after it): the convs and BatchNorms load, the two
    linears stay as initialised, and run.json lists them."""
    run_dir = tmp_path / "new"
    train_in_process(monkeypatch, *CSNN, *FROZEN, "model.layers.9.out_features=32",
                     f"init_from={source}", "init_from.strict=false",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    skipped = RunDir(run_dir).read_info()["init_from"]["skipped"]
    assert skipped == ["layers.9.module.weight", "layers.11.module.weight"]
    new, old = weights(run_dir, "latest"), weights(source)
    assert torch.equal(new["layers.0.module.weight"], old["layers.0.module.weight"])
    assert load_run(run_dir).model.layers[9].module.out_features == 32


def test_refusals_are_one_line_and_write_nothing(source: Path, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "new"
    code, err = cli(monkeypatch, capsys, *CSNN, "model.layers.9.out_features=32",
                    f"init_from={source}", f"hydra.run.dir={run_dir}")  # fmt: skip
    assert_one_line_error(code, err, "init_from: layers.9.module.weight is [64, 196]",
                          "but [32, 196] here", "init_from.strict=false")  # fmt: skip
    assert not (run_dir / "checkpoint_latest.pt").exists()
    code, err = cli(monkeypatch, capsys, *CSNN, f"init_from={tmp_path / 'nowhere'}",
                    f"hydra.run.dir={run_dir}")  # fmt: skip
    assert_one_line_error(code, err, "nowhere does not exist; give a run dir")
    assert not run_dir.exists()  # refused before Hydra made the dir
    code, err = cli(monkeypatch, capsys, *CSNN, f"init_from={source}", "init_from.which=last",
                    f"hydra.run.dir={run_dir}")  # fmt: skip
    assert_one_line_error(code, err, "init_from.which='last'; use one of latest, best")
