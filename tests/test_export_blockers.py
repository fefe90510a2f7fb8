"""``snnrun export <run dir> format=nir`` names every entry it cannot write, in one line
(issue 31: Export). It named only the first blocker, so a network with several took as many
tries as it had blockers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from snnrun.cli.command import main

from conftest import TINY, assert_one_line_error, train_in_process

# A CSNN whose neurons NIR cannot all carry: psn at layers[2], alif at layers[6], and soft-reset
# lif at layers[10] and [12] (written with a warning; refused with strict=true).
BLOCKED = [
    "neuron=lif",
    "neuron.v_reset=null",
    "+model.layers.2.name=psn",
    "+model.layers.2.T=4",
    "+model.layers.6.name=alif",
    "dataset.train_limit=64",
    "dataset.test_limit=32",
]


def _export(monkeypatch, capsys, run_dir: Path, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["snnrun", "export", str(run_dir), "format=nir", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


def test_nir_export_lists_every_blocker(monkeypatch, capsys, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    tiny = [a for a in TINY if not a.startswith("neuron=")]
    train_in_process(monkeypatch, *tiny, *BLOCKED, f"hydra.run.dir={run_dir}")
    capsys.readouterr()

    code, err = _export(monkeypatch, capsys, run_dir)
    assert_one_line_error(
        code,
        err,
        "cannot write 2 entries as NIR",
        "model.layers[2] (neuron): psn (parallel spiking neuron) has no NIR node",
        "model.layers[6] (neuron): alif (adaptive threshold) has no NIR node",
    )
    assert not (run_dir / "export").exists()

    code, err = _export(monkeypatch, capsys, run_dir, "strict=true")
    assert_one_line_error(
        code,
        err,
        "cannot write 4 entries as NIR",
        "model.layers[2] (neuron): psn",
        "model.layers[6] (neuron): alif",
        "model.layers[10] (neuron), model.layers[12] (neuron): v_reset=null",
    )
    assert err.count("strict=true writes nothing") == 1  # the same reason once, for both
