"""``snnrun eval``: a short real digits run evaluates to exactly the test accuracy and loss it
recorded; the eval record (epochs counted from 1), per-class correct/total (with class names
where the dataset has them), confusion matrix and figure are written; a random (poisson) input
is said to be a new draw; other data, T, backend and checkpoint overrides work; a run dir that
cannot be written names out=; overrides that change the network's shape and bad arguments fail
as one line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snnrun.api import load_run
from snnrun.cli import command as cli
from snnrun.cli import evaluate
from snnrun.core.errors import SnnrunError
from snnrun.data.dataset import CLASS_NAMES
from snnrun.run.checkpoint import load_checkpoint
from snnrun.run.rundir import CHECKPOINTS, RunDir

from conftest import TINY, make_read_only, read_metrics, run_snnrun, write_idx
from conftest import cli as run_cli

TEST_LIMIT = 128  # TINY's dataset.test_limit


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    run_snnrun([*TINY, f"hydra.run.dir={root / 'run'}"], cwd=root)
    return root / "run"


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RunDir(run_dir).evals.glob("*.json"))]


def _last(run_dir: Path) -> dict:
    paths = sorted(RunDir(run_dir).evals.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    return json.loads(paths[-1].read_text())


def test_eval_reproduces_the_recorded_test_pass(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["snnrun", "eval", str(run_dir), "device=cpu"])
    cli.main()  # the command, in this process
    last = read_metrics(run_dir)[-1]
    rec = _last(run_dir)
    assert rec["acc"] == last["test_acc"]  # exactly: the same test pass on the same batches
    assert rec["loss"] == last["test_loss"]
    assert rec["which"] == "best" and rec["samples"] == TEST_LIMIT and rec["split"] == "test"
    confusion = np.array(rec["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == TEST_LIMIT
    assert np.trace(confusion) == round(rec["acc"] * TEST_LIMIT)
    per_class = rec["per_class"]
    assert set(per_class) == {str(c) for c in range(10)}
    for c, counts in per_class.items():
        row = confusion[int(c)]
        assert (counts["correct"], counts["total"]) == (row[int(c)], row.sum())
        assert counts["acc"] == pytest.approx(row[int(c)] / row.sum())
        assert counts["name"] is None  # digits: the label is the name
    assert rec["epoch"] == load_run(run_dir).epoch == len(read_metrics(run_dir)) == 1
    assert rec["random_input"] is False and rec["encoder"] == "direct"
    rates = {k for k in rec if k.startswith("firing_rate/")}
    assert rates == {k for k in last if k.startswith("firing_rate/")}
    for key in rates:
        assert rec[key] == pytest.approx(last[key], rel=1e-12)
    figure = RunDir(run_dir).evals / rec["figure"]
    with Image.open(figure) as im:
        assert im.format == "PNG"
        assert np.asarray(im.convert("L"), dtype=float).var() > 0
    out = capsys.readouterr().out
    assert f"acc={last['test_acc']:.4f}" in out and "firing rates:" in out
    assert "best weights of epoch 1," in out and "at random" not in out
    lines = out.splitlines()
    table = lines[lines.index("  per class (correct/total, accuracy):") + 1 :][:10]
    for c, line in enumerate(table):
        hits, total = confusion[c, c], confusion[c].sum()
        assert line.split() == [str(c), f"{hits}/{total}", f"{hits / total:.3f}"]


def test_eval_latest_T_step_mode_and_limit(run_dir: Path) -> None:
    evaluate.main(
        [
            str(run_dir),
            "which=latest",
            "T=2",
            "neuron.backend=torch",
            "neuron.step_mode=s",
            "dataset.test_limit=32",
            "format=svg",
            "device=cpu",
        ]
    )
    rec = _last(run_dir)
    assert rec["which"] == "latest" and rec["T"] == 2 and rec["samples"] == 32
    assert rec["overrides"] == {
        "T": 2,
        "neuron.backend": "torch",
        "neuron.step_mode": "s",
        "dataset.test_limit": 32,
    }
    assert rec["figure"].endswith(".svg")
    assert 0.0 <= rec["acc"] <= 1.0


def test_eval_on_other_data(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another dataset of the run's shape evaluates; one of another shape is one line.
    Fashion-MNIST's classes are shown by name, in the table and the record."""
    write_idx(tmp_path / "same", 28, 20)
    evaluate.main(
        [str(run_dir), "dataset=fmnist", f"dataset.root={tmp_path / 'same'}", "device=cpu"]
    )
    rec = _last(run_dir)
    assert rec["dataset"]["name"] == "fmnist" and rec["samples"] == 20
    names = [rec["per_class"][str(c)]["name"] for c in range(10)]
    assert names == CLASS_NAMES["fmnist"] and names[0] == "T-shirt/top" and names[9] == "Ankle boot"
    assert sum(rec["per_class"][str(c)]["total"] for c in range(10)) == 20
    line = next(x for x in capsys.readouterr().out.splitlines() if "9 Ankle boot" in x)
    row = rec["per_class"]["9"]
    acc = "-" if row["acc"] is None else f"{row['acc']:.3f}"
    assert line.split() == ["9", "Ankle", "boot", f"{row['correct']}/{row['total']}", acc]
    write_idx(tmp_path / "small", 10, 20)
    with pytest.raises(SnnrunError, match=r"\[1, 10, 10\].*change the network's shape"):
        evaluate.main([str(run_dir), "dataset=mnist", f"dataset.root={tmp_path / 'small'}"])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ([], "eval needs one run dir"),
        (["which=worst"], "which='worst'; use best or latest"),
        (["T=0"], "T='0'; use a positive integer"),
        (["neuron.tau=3"], "neuron.backend and neuron.step_mode only"),
        (["epochs=3"], "eval has no key 'epochs'"),
    ],
)
def test_eval_bad_arguments(run_dir: Path, args: list[str], match: str) -> None:
    with pytest.raises(SnnrunError, match=match):
        evaluate.parse_args([str(run_dir), *args] if args else ["which=best"])


def test_eval_command_errors_are_one_line(tmp_path: Path) -> None:
    proc = run_snnrun(["eval", str(tmp_path / "missing")], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("snnrun: error:") and "does not exist" in lines[0]
    )


def _copy_with(run_dir: Path, dst: Path, **config: object) -> Path:
    """A copy of the run dir (without its eval results) whose checkpoints' config holds
    ``config`` (top-level keys)."""
    import torch

    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("eval"))
    for name in CHECKPOINTS.values():
        payload = load_checkpoint(dst / name)
        payload["config"].update(config)
        torch.save(payload, dst / name)
    return dst


def test_eval_says_a_poisson_input_is_a_new_draw(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run's network fed by a poisson encoder: the record says so, and the output says why
    its accuracy may differ from the recorded one (a direct input draws nothing: no note)."""
    poisson = _copy_with(run_dir, tmp_path / "run", encoder={"name": "poisson"})
    evaluate.main([str(poisson), "device=cpu"])
    rec = _last(poisson)
    assert rec["random_input"] is True and rec["encoder"] == "poisson"
    out = capsys.readouterr().out
    assert "encoder=poisson draws the input at random" in out
    assert "differs from the record by sampling noise" in out


def test_eval_into_a_read_only_run_dir_names_out(
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``eval/`` cannot be made (a read-only run dir): one line naming that folder and out=,
    not hydra.run.dir; with ``out=<dir>`` the results go there and the run dir is unchanged."""
    run_dir = _copy_with(run_dir, tmp_path / "run")
    before = sorted(p for p in run_dir.rglob("*"))
    make_read_only(monkeypatch, run_dir)
    code, err = run_cli(monkeypatch, capsys, "eval", str(run_dir), "device=cpu")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"snnrun: error: cannot write {RunDir(run_dir).evals}: Read-only")
    assert "out=<dir>" in err and "hydra.run.dir" not in err
    elsewhere = tmp_path / "results"
    monkeypatch.setattr(sys, "argv", [*sys.argv, f"out={elsewhere}"])
    cli.main()
    assert len(list(elsewhere.glob("*.json"))) == len(list(elsewhere.glob("*_confusion.png"))) == 1
    assert sorted(p for p in run_dir.rglob("*")) == before
