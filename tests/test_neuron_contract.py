"""The neuron contract: an entry naming another neuron starts from that neuron's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from snnrun.net.neuron import NEURONS, build_neuron, merge_neuron_options

from conftest import REPO, train_in_process

ATAN = {"name": "atan", "alpha": 2.0}
BUILT_IN = [n for n in NEURONS.names() if n != "psn"]  # psn's T is the run's


def group(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "neuron" / f"{name}.yaml"))


@pytest.mark.parametrize("name", BUILT_IN)
def test_class_defaults_are_the_group_files(name):
    """What an entry gets when it names a neuron: the class's defaults, which are its YAML's."""
    from_yaml = build_neuron(group(name), ATAN)
    from_class = build_neuron({"name": name}, ATAN)
    assert repr(from_class) == repr(from_yaml)


@pytest.mark.parametrize("name", BUILT_IN)
def test_another_neuron_takes_its_own_defaults(name):
    lif = {**group("lif"), "tau": 3.0, "v_threshold": 0.5, "backend": "autograd", "step_mode": "s"}
    merged = merge_neuron_options(lif, {"name": name})
    if name == "lif":
        assert merged == lif
    else:  # only how the run runs its neurons carries over
        assert merged == {"name": name, "backend": "autograd", "step_mode": "s",
                          "store_v_seq": False}  # fmt: skip


def test_recurrent_alif_in_a_lif_run_is_alif(tmp_path: Path, monkeypatch):
    """Through the command: {type: recurrent, name: alif} in a neuron=lif run is ALIF with
    tau 20 and soft reset (it was LIF's tau 2 and hard reset)."""
    monkeypatch.chdir(tmp_path)
    train_in_process(
        monkeypatch, "model=rsnn", "neuron=lif", "+model.layers.2.name=alif", "model.hidden=8",
        "dataset.train_limit=64", "dataset.test_limit=32", "epochs=1", "T=2", "logger=none",
        "hydra.run.dir=run",
    )  # fmt: skip
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "alif tau=20 tau_adapt=200" in summary and "soft" in summary.split("alif")[1][:120]
    assert "lif tau=2 v_th=1 hard" in summary  # the readout keeps the run's group
