"""A run's files as other commands read them (issue 31): ``init_from`` with nothing that
matches and from a damaged checkpoint, a damaged ``run.json``, a bad value in
``metrics.jsonl``, an ONNX check on a silent output, ``snnrun runs a b`` on two layer lists, and
a ``debug=fast_dev_run`` run in ``snnrun runs``; each through the command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from snnrun.run.checkpoint import load_checkpoint, save_checkpoint
from snnrun.run.rundir import BEST, CONFIG, INFO, LATEST, METRICS, RunDir, RunDirError

from conftest import TINY, assert_one_line_error, cli, runs, table_rows, train_in_process

SMALL = [*TINY, "dataset.train_limit=64", "dataset.test_limit=32", "batch_size=32", "T=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small CSNN epoch (its output layer stays silent), trained once."""
    run_dir = tmp_path_factory.mktemp("source") / "run"
    with pytest.MonkeyPatch.context() as patch:
        train_in_process(patch, *SMALL, f"hydra.run.dir={run_dir}")
    return run_dir


@pytest.fixture
def work(tmp_path: Path, trained: Path) -> Path:
    """A copy of the trained run to damage (in ``<tmp>/outputs/run``)."""
    shutil.copytree(trained, tmp_path / "outputs" / "run", ignore=shutil.ignore_patterns("export"))
    return tmp_path / "outputs" / "run"


# --- init_from ---------------------------------------------------------------------------------
def test_init_from_with_no_tensor_matching_is_refused(trained: Path, tmp_path, monkeypatch, capsys):
    """strict=false onto a recurrent SNN: none of the CSNN's tensors fits; it trained from
    scratch before, now one line names the source and the fix, and nothing is written."""
    run_dir = tmp_path / "new"
    rsnn = [a for a in SMALL if not a.startswith("model.")]
    code, err = cli(monkeypatch, capsys, *rsnn, "model=rsnn", "model.classes=10", "model.hidden=8",
                    f"init_from={trained}", "init_from.strict=false",
                    f"hydra.run.dir={run_dir}")  # fmt: skip
    assert_one_line_error(code, err, f"init_from: no tensor of {trained / BEST}",
                          "matches this network by name and shape (0 of ", "model=csnn",
                          "build the network that run trained")  # fmt: skip
    assert not (run_dir / LATEST).exists()


def test_init_from_a_damaged_checkpoint_names_init_from_which(
    work: Path, tmp_path, monkeypatch, capsys
) -> None:
    """A cut-short checkpoint_best.pt: the way on is init_from.which=latest (not eval's
    which=latest, nor resume's cp); a cut-short latest names init_from.which=best."""
    (work / BEST).write_bytes((work / BEST).read_bytes()[:50_000])
    run_dir = tmp_path / "new"
    code, err = cli(monkeypatch, capsys, *SMALL, f"init_from={work}", f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, "corrupt checkpoint", f"{LATEST} (epoch 1) is intact",
                          "use it with init_from.which=latest")  # fmt: skip
    assert " which=latest" not in err and "(eval, viz, export)" not in err
    shutil.copy(work / LATEST, work / BEST)
    (work / LATEST).write_bytes((work / LATEST).read_bytes()[:50_000])
    code, err = cli(monkeypatch, capsys, *SMALL, f"init_from={work}", "init_from.which=latest",
                    f"hydra.run.dir={run_dir}")  # fmt: skip
    assert_one_line_error(code, err, "use it with init_from.which=best")
    assert "cp " not in err and "snnrun resume" not in err
    assert not (run_dir / LATEST).exists()


# --- run.json and metrics.jsonl ----------------------------------------------------------------
def test_a_damaged_run_json_is_rebuilt_and_kept_aside(work: Path, monkeypatch, capsys) -> None:
    """A cut-short run.json (before: "Invalid control character", no fix): eval goes on with a
    note; the damaged file is kept as run.json.damaged and run.json rebuilt from the checkpoints
    with the same run id."""
    text = (work / INFO).read_text()
    run_id = json.loads(text)["run_id"]
    (work / INFO).write_text(text[: len(text) // 2])
    train_in_process(monkeypatch, "eval", str(work), "device=cpu")
    out = capsys.readouterr().out
    assert f"{work / INFO} is damaged" in out and "rebuilt it from checkpoint_latest.pt" in out, out
    assert f"kept it as {INFO}.damaged" in out, out
    assert (work / f"{INFO}.damaged").read_text() == text[: len(text) // 2]
    assert RunDir(work).read_info()["run_id"] == run_id


def test_a_damaged_run_json_without_checkpoints_is_one_line(work: Path) -> None:
    """Nothing to rebuild from: one line naming the file and the fix, the file left as it is
    (a command loads a checkpoint first, so this is the reader's own refusal)."""
    (work / INFO).write_text('{"run_id": "abc\n')
    for name in (LATEST, BEST):
        (work / name).unlink()
    with pytest.raises(RunDirError) as error:
        RunDir(work).read_info()
    assert f"{work / INFO} is damaged (Invalid control character" in str(error.value)
    assert "no intact checkpoint" in str(error.value) and "mend it" in str(error.value)
    assert (work / INFO).read_text() == '{"run_id": "abc\n'


def test_runs_lists_a_damaged_run_json_as_damaged(work: Path, monkeypatch, capsys) -> None:
    """Before: listed as finished."""
    text = (work / INFO).read_text()
    (work / INFO).write_text(text[: len(text) // 2])
    out = runs(monkeypatch, capsys, str(work.parent))
    row = table_rows(out)["run"]
    assert row[3] == "damaged" and "run.json is damaged" in row[8], out
    assert runs(monkeypatch, capsys, str(work.parent), "status=damaged").count("│ run ") == 1


def test_a_bad_test_acc_marks_its_run_and_the_rest_are_listed(
    work: Path, monkeypatch, capsys
) -> None:
    """One run's metrics.jsonl with a string test_acc (before: a traceback, no listing): that
    run shows '?' and a note, the other run is listed as ever; sorting by accuracy works."""
    shutil.copytree(work, work.parent / "good")
    records = RunDir(work).read_metrics()
    records[-1]["test_acc"] = "0.9"
    RunDir(work).rewrite_metrics(records)
    for sort in ("date", "last", "best"):
        table = table_rows(runs(monkeypatch, capsys, str(work.parent), f"sort={sort}"))
        assert set(table) == {"run", "good"}
        assert table["run"][6] == "?" and "test_acc '0.9' in epoch 1 is not a number" in table[
            "run"][8], table  # fmt: skip
        assert table["good"][6] != "?" and table["good"][8] == ""


def test_a_run_dir_with_a_value_of_another_kind_is_skipped_with_a_note(
    work: Path, monkeypatch, capsys
) -> None:
    """run.json's command a number (and no .hydra/overrides.yaml): before, a TypeError
    traceback and no listing; now that run is left out with a note, the other listed."""
    shutil.copytree(work, work.parent / "good")
    info = json.loads((work / INFO).read_text())
    info["provenance"]["command"] = 5
    (work / INFO).write_text(json.dumps(info))
    (work / ".hydra" / "overrides.yaml").unlink()
    out = runs(monkeypatch, capsys, str(work.parent))
    assert set(table_rows(out)) == {"good"}, out
    assert f"note: skipped {work}: a value it cannot read (TypeError(" in out, out


# --- ONNX --------------------------------------------------------------------------------------
def test_onnx_check_on_a_silent_output_drives_it_until_it_fires(work: Path, monkeypatch, capsys):
    """Weights made lively, but the first conv's 16 times weaker: the output is silent on the
    test batch and fires on it scaled up. Before, the check said "spikes equal (max difference
    0)" having compared silences; now it says so and checks the scaled batch too."""
    pytest.importorskip("onnxruntime")
    scale = {"layers.0.module.weight": 3 / 16}
    _scale_weights(work, lambda key, value: value * scale.get(key, 3) if value.ndim >= 2 else value)
    train_in_process(monkeypatch, "export", str(work), "format=onnx")
    out = capsys.readouterr().out
    assert "the output never fires on the 32 test samples; also checked on them scaled x" in out
    assert "where it fires: spikes equal" in out, out
    assert "onnxruntime matches PyTorch" in out and (work / "export" / "model.onnx").is_file()


def _scale_weights(run_dir: Path, change) -> None:
    """Both checkpoints' weights as ``change(key, tensor)`` makes them."""
    for name in (LATEST, BEST):
        payload = load_checkpoint(run_dir / name)
        payload["model"] = {k: change(k, v) for k, v in payload["model"].items()}
        save_checkpoint(payload, run_dir / name)


def test_onnx_check_says_when_no_input_makes_the_output_fire(work: Path, monkeypatch, capsys):
    """The last linear's weights zeroed: no input reaches the output's threshold; the check
    says it compared silences only."""
    pytest.importorskip("onnxruntime")
    last = "layers.11.module.weight"
    _scale_weights(work, lambda key, value: value * 0 if key == last else value)
    train_in_process(monkeypatch, "export", str(work), "format=onnx")
    out = capsys.readouterr().out
    assert "the output never fires" in out and "compared silences only" in out, out
    assert (work / "export" / "model.onnx").is_file()


# --- snnrun runs ------------------------------------------------------------------------------
def test_runs_diff_shows_the_layers_as_one_diff(work: Path, monkeypatch, capsys) -> None:
    """Two runs whose layer lists differ in one entry, one entry more and the channels: before,
    a row per leaf (model.layers.4.out_channels, ...); now the keys that differ, and the layer
    entries that differ once, by index."""
    other = work.parent / "other"
    shutil.copytree(work, other)
    config = yaml.safe_load((other / CONFIG).read_text())
    layers = config["model"]["layers"]
    layers[4]["out_channels"] = 8
    layers.insert(8, {"type": "dropout", "p": 0.1})
    config["model"]["channels"] = 8
    (other / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    out = runs(monkeypatch, capsys, str(work), str(other))
    assert "model.layers." not in out, out
    assert set(table_rows(out)) == {"model.channels"}, out
    lines = out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("model.layers:")))
    diff = lines[start + 1 :]
    assert [line for line in diff if line[:1] in "-+"] == [
        "-[4] {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1, bias: false}",
        "+[4] {type: conv2d, out_channels: 8, kernel_size: 3, padding: 1, bias: false}",
        "+[8] {type: dropout, p: 0.1}",
    ], out
    assert " [3] {type: maxpool2d, kernel_size: 2, stride: 2}" in diff, out


def test_fast_dev_run_is_listed_as_debug(tmp_path: Path, monkeypatch, capsys) -> None:
    """Before: listed as finished, like a real run."""
    run_dir = tmp_path / "outputs" / "run"
    train_in_process(monkeypatch, *SMALL, "debug=fast_dev_run", f"hydra.run.dir={run_dir}")
    capsys.readouterr()
    row = table_rows(runs(monkeypatch, capsys, str(run_dir.parent)))["run"]
    assert row[3] == "debug" and "debug=fast_dev_run" in row[8], row
    assert (run_dir / METRICS).is_file()
