"""The network's last layer takes the dataset's class count (``model.classes: auto``); a count
set by hand that differs from the dataset's is one line naming both."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from test_images import write_images

from conftest import REPO, TINY, assert_one_line_error, cli, compose, read_metrics, train_in_process

CONF = REPO / "conf"
SMALL = [o for o in TINY if not o.startswith("model.")]
FIXED = {"nir", "plif_net", "plif_net_cifar10dvs"}  # the file's or the paper's voting layers


def test_csnn_takes_an_imagefolders_three_classes(monkeypatch, tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_images(root, "train", {"cat": 4, "dog": 4, "emu": 4}, size=(8, 8))
    write_images(root, "val", {"cat": 2, "dog": 2, "emu": 2}, size=(8, 8), seed=1)
    run = tmp_path / "run"
    train_in_process(monkeypatch, *TINY, "dataset=imagefolder", f"dataset.root={root}",
                     "dataset.size=8", "dataset.crop=8", "batch_size=4",
                     f"hydra.run.dir={run}")  # fmt: skip
    assert json.loads((run / "run.json").read_text())["data"]["num_classes"] == 3
    assert len(read_metrics(run)) == 1


def test_a_zoo_model_with_another_datasets_count_takes_the_runs(monkeypatch, tmp_path) -> None:
    """sew_resnet_dvs (DVS128 Gesture's 11 classes) on the 10 digits."""
    run = tmp_path / "run"
    train_in_process(monkeypatch, *SMALL, "model=sew_resnet_dvs", "model.channels=2",
                     "model.blocks=4", "dataset.train_limit=64", "dataset.test_limit=32",
                     f"hydra.run.dir={run}")  # fmt: skip
    assert len(read_metrics(run)) == 1


@pytest.mark.parametrize(
    ("model", "needles"),
    [
        (["model.classes=11"], ("model.classes=11", "the dataset has 10 classes",
                                "model.classes=auto")),
        (["model=sew_resnet_dvs", "model.blocks=4", "model.classes=11"],
         ("model.classes=11", "10 classes")),
        (["model.classes=ten"], ("model.classes", "auto or a number", "'ten'")),
    ],
)  # fmt: skip
def test_an_explicit_count_unlike_the_datasets_is_one_line(
    monkeypatch, capsys, tmp_path, model: list[str], needles: tuple[str, ...]
) -> None:
    code, err = cli(monkeypatch, capsys, *TINY, *model, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "run").exists()


def test_a_hand_written_head_of_another_count_names_the_fix(monkeypatch, capsys, tmp_path) -> None:
    (tmp_path / "conf" / "model").mkdir(parents=True)
    layers = [{"type": "flatten"}, {"type": "linear", "out_features": 7}, {"type": "neuron"}]
    (tmp_path / "conf" / "model" / "mine.yaml").write_text(yaml.safe_dump({"layers": layers}))
    code, err = cli(monkeypatch, capsys, "--config-dir", str(tmp_path / "conf"), "model=mine",
                    *SMALL, f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert_one_line_error(code, err, "[7]", "10 classes", "out_features: auto")


@pytest.mark.parametrize("path", sorted((CONF / "experiment").glob("*.yaml")), ids=lambda p: p.stem)
def test_recipes_leave_the_count_to_the_dataset(path: Path) -> None:
    recipe = yaml.safe_load(path.read_text())
    assert "classes" not in (recipe.get("model") or {})
    assert compose([f"experiment={path.stem}"]).model.get("classes", "auto") == "auto"


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (CONF / "model").glob("*.yaml") if p.stem not in FIXED)
)
def test_zoo_models_take_the_datasets_count(name: str) -> None:
    assert compose([f"model={name}"]).model.classes == "auto"


def test_a_run_made_with_written_counts_continues_with_resume_auto(monkeypatch, tmp_path) -> None:
    """A run dir whose config wrote the class count out (``out_features: 10``, made by 3fa185d)
    is the same run as today's ``auto`` for ``resume=auto``: it continues, not refused."""
    run_dir = tmp_path / "run"
    shutil.copytree(REPO / "tests" / "fixtures" / "run_3fa185d", run_dir)
    train_in_process(
        monkeypatch, "model=fc", "T=2", "epochs=3", "dataset.train_limit=64",
        "dataset.test_limit=32", "optimizer.lr=0.05", "logger=none", "resume=auto",
        f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert [r["epoch"] for r in read_metrics(run_dir)] == [0, 1, 2]
