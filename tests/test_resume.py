"""A run dir's files damaged or lost, and what a resume may change: checkpoints verified on
load (the intact one named as the way on), a lost run.json rebuilt, a torn metrics line, the
epoch count and the cosine horizon on resume, the recipes' horizon."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from snnrun.cli.command import main
from snnrun.core.errors import SnnrunError
from snnrun.run.checkpoint import VERSION, load_checkpoint, save_checkpoint
from snnrun.run.rundir import BEST, INFO, LATEST, METRICS, RunDir, RunDirError

from conftest import (
    REPO,
    TINY,
    assert_one_line_error,
    cli,
    compose,
    read_metrics,
    train_in_process,
)


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("resume") / "run"
    patch = pytest.MonkeyPatch()
    try:
        train_in_process(patch, *TINY, "epochs=2", f"hydra.run.dir={run_dir}")
    finally:
        patch.undo()
    return run_dir


@pytest.fixture
def work(tmp_path, two_epochs) -> Path:
    """A copy of the two-epoch run to damage."""
    shutil.copytree(two_epochs, tmp_path / "run")
    return tmp_path / "run"


def files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}


def alter_a_weight(path: Path) -> None:
    """Flip one bit of the first tensor's bytes, as a bad disk or copy would."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(next(n for n in archive.namelist() if "/data/" in n))
    data = bytearray(path.read_bytes())
    header = info.header_offset  # a 30-byte local header, then the name and the extra field
    name, extra = struct.unpack("<HH", data[header + 26 : header + 30])
    data[header + 30 + name + extra] ^= 0x40
    path.write_bytes(bytes(data))


def test_an_altered_checkpoint_is_refused_naming_the_intact_one(work, monkeypatch, capsys) -> None:
    """Bytes changed inside checkpoint_best.pt: eval refused it (torch.load does not check the
    zip's CRCs, so it printed another accuracy); the intact latest is named."""
    alter_a_weight(work / BEST)
    code, err = cli(monkeypatch, capsys, "eval", str(work))
    assert_one_line_error(code, err, "corrupt checkpoint", "bytes changed after snnrun wrote it",
                          f"{LATEST} (epoch 2) is intact", "which=latest")  # fmt: skip
    assert not (work / "eval").exists()


def test_a_truncated_latest_names_best_and_the_advice_works(work, monkeypatch, capsys) -> None:
    """Resume and eval of a cut-short checkpoint_latest.pt say how to go on from best; doing
    what the line says continues the run."""
    (work / LATEST).write_bytes((work / LATEST).read_bytes()[:50_000])
    before = files(work)
    best = load_checkpoint(work / BEST)["state"]["epoch"]
    needles = ("not a whole zip archive", f"{BEST} (epoch {best}) is intact", "which=best",
               f"snnrun resume={work}")  # fmt: skip
    code, err = cli(monkeypatch, capsys, f"resume={work}", "epochs=3")
    assert_one_line_error(code, err, *needles)
    line = err.strip()
    assert files(work) == before
    code, err = cli(monkeypatch, capsys, "eval", str(work), "which=latest")
    assert_one_line_error(code, err, *needles)
    assert files(work) == before
    cp = re.search(r"cp (\S+) (\S+),", line)
    assert cp, line
    subprocess.run(["cp", *cp.groups()], check=True)
    monkeypatch.setattr(sys, "argv", ["snnrun", f"resume={work}"])
    main()
    assert [r["epoch"] for r in read_metrics(work)] == [0, 1]


def test_a_lost_run_json_is_rebuilt_and_a_torn_metrics_line_skipped(
    work, monkeypatch, capsys
) -> None:
    """run.json deleted (the checkpoints carry the run id and data identity) and the last line
    of metrics.jsonl cut short by a crash: export (as viz, eval, resume, load_run) goes on, with
    a note for each. A bad line before the last is one error naming the file and the line."""
    info = json.loads((work / INFO).read_text())
    (work / INFO).unlink()
    lines = (work / METRICS).read_text().splitlines()
    (work / METRICS).write_text("\n".join(lines) + '\n{"epoch": 2, "global_st')
    capsys.readouterr()
    train_in_process(monkeypatch, "export", str(work), "format=nir")
    out = " ".join(capsys.readouterr().out.split())
    assert f"had no {INFO}; rebuilt it from {LATEST}" in out
    assert f"{METRICS} line 3 is cut short" in out
    assert (work / "export" / "model.nir").is_file()
    rebuilt = json.loads((work / INFO).read_text())
    assert {k: rebuilt[k] for k in ("run_id", "data")} == {k: info[k] for k in ("run_id", "data")}
    assert "was missing" in rebuilt["recovered"]
    (work / METRICS).write_text(f"{lines[0]}\n{{oops\n{lines[1]}\n")
    with pytest.raises(RunDirError, match=rf"corrupt .*{METRICS}, line 2: .*mend or delete"):
        RunDir(work).read_metrics()


def test_run_json_is_not_rebuilt_from_another_runs_checkpoint(work) -> None:
    """With run.json lost, checkpoints naming different runs cannot tell which is this dir's."""
    (work / INFO).unlink()
    payload = load_checkpoint(work / BEST)
    save_checkpoint({**payload, "run_id": "someone"}, work / BEST)
    with pytest.raises(RunDirError, match="name different runs"):
        RunDir(work).read_info()
    assert not (work / INFO).exists()


def test_epochs_on_resume_train_more_or_are_refused(work, monkeypatch, capsys) -> None:
    """epochs is the run's total: one that trains nothing is refused and writes nothing; a
    larger one moves the cosine horizon that followed it, and says what that does to the lr."""
    before = files(work)
    code, err = cli(monkeypatch, capsys, f"resume={work}", "epochs=1")
    assert_one_line_error(code, err, "this run has done 2 epochs", "epochs=1 would train nothing",
                          "epochs=3")  # fmt: skip
    assert files(work) == before
    train_in_process(monkeypatch, f"resume={work}", "epochs=3")
    out = capsys.readouterr().out
    note = re.search(r"from T_max=2 to 3 epochs from epoch 3 on: the learning rate goes from (\S+) "
                     r"to (\S+) ", " ".join(out.split()))  # fmt: skip
    assert note, out
    records = read_metrics(work)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert records[2]["lr"] == pytest.approx(float(note[2]), rel=1e-2)
    assert float(note[1]) == pytest.approx(0.0) and records[2]["lr"] == pytest.approx(0.0025)
    assert yaml.safe_load((work / "config.yaml").read_text())["scheduler"]["T_max"] == 3
    (resumed,) = json.loads((work / INFO).read_text())["resumes"]
    assert resumed["T_max"] == [2, 3] and resumed["epoch"] == 3 and resumed["epochs"] == 3
    assert resumed["provenance"]["command"][1:] == [f"resume={work}", "epochs=3"]


@pytest.mark.parametrize("name", ["fmnist_csnn", "nmnist_csnn", "cifar10dvs_plif",
                                  "dvsgesture_plif"])  # fmt: skip
def test_recipes_anneal_over_the_run_they_are_given(name) -> None:
    assert compose([f"experiment={name}", "epochs=3"]).scheduler.T_max == 3


def test_checkpoints_carry_their_schema_version(work, tmp_path) -> None:
    """A checkpoint says which schema wrote it; an older one (3fa185d's has no key: version 1;
    version 2 named the neuron with ``kind``) is migrated to the current schema on load; one
    from a newer snnrun is one line naming the fix."""
    current = load_checkpoint(work / BEST)
    assert current["version"] == VERSION == 4
    fixture = load_checkpoint(REPO / "tests" / "fixtures" / "run_3fa185d" / LATEST)
    assert fixture["version"] == VERSION and fixture["config"]["neuron"]["name"] == "lif"
    neuron = dict(current["config"]["neuron"])
    neuron["kind"] = neuron.pop("name")
    old = {**current, "version": 2, "config": {**current["config"], "neuron": neuron},
           "overrides": ["neuron.kind=lif", "epochs=2"]}  # fmt: skip
    save_checkpoint(old, tmp_path / LATEST)
    migrated = load_checkpoint(tmp_path / LATEST)
    assert migrated["config"] == current["config"]
    assert migrated["overrides"] == ["neuron.name=lif", "epochs=2"]
    newer = {**current, "version": VERSION + 1}
    save_checkpoint(newer, tmp_path / BEST)
    with pytest.raises(SnnrunError, match=r"written by a newer snnrun.*upgrade snnrun"):
        load_checkpoint(tmp_path / BEST)
