"""The network language through the real ``snnrun`` command: each kind of nested network
builds, trains, resumes exactly, and reports firing rates for its nested neurons."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_events import write_shd

from conftest import (
    TINY,
    killed_and_resumed,
    read_metrics,
    train_in_process,
    without_timing,
)

SMALL = [
    *(a for a in TINY if not a.startswith("model.")),
    "dataset.train_limit=64",
    "dataset.test_limit=32",
    "batch_size=32",
    "T=2",
]

# network -> (overrides, [a nested entry's label (a summary row), more labels with rates])
NETWORKS = {
    "spiking_resnet": (["model=resnet_cnn", "model.channels=4"], ["L3.0.0.body.2", "L3.0.1"]),
    "sew_add": (["model=sew_cnn", "model.channels=4"], ["L3.0.0.body.5", "L4.shortcut.2"]),
    "sew_and": (["model=sew_cnn", "model.channels=4", "model.connect=and"], ["L4.body.2", "L2"]),
    "sew_iand": (
        ["model=sew_cnn", "model.channels=4", "model.connect=iand"],
        ["L4.shortcut.0", "L4.body.5"],
    ),
    "vgg": (["model=vgg_cnn", "model.channels=4", "model.convs=2"], ["L0.0.2", "L2.1.2"]),
    "spikformer": (
        ["model=spikformer", "model.embed_dim=16", "model.heads=2", "model.depths=2"],
        ["L16.1.0.body.0", "L16.0.0.body.0.attn_neuron", "L16.1.1.body.5"],
    ),
    "recurrent": (
        ["model=rsnn", "model.hidden=16", "dataset=shd"],
        ["L2.projection.0", "L2.neuron", "L4"],
    ),
    "recurrent_stepwise": (  # every neuron fed one step at a time
        ["model=rsnn", "model.hidden=16", "dataset=shd", "neuron.step_mode=s"],
        ["L2.projection.0", "L2.neuron", "L4"],
    ),
    "user_module": (
        [
            "model=fc",
            "model.layers=[{type:flatten},{type:module,_target_:my_snn_layers.Dense,width:16},"
            "{type:linear,out_features:10},{type:neuron}]",
        ],
        ["L1", "L1.spike", "L3"],
    ),
}

USER_LAYERS = """
    from torch import nn
    from snnrun.net import make_neuron

    class Dense(nn.Module):
        def __init__(self, width, in_shape):
            super().__init__()
            self.fc = nn.Linear(in_shape[-1], width)
            self.spike = make_neuron()

        def forward(self, x):  # [T, N, F] -> [T, N, width]
            return self.spike(self.fc(x))
"""


@pytest.fixture
def setup(tmp_path: Path, monkeypatch) -> Path:
    """SHD in its real .h5 layout (40 short recordings) and a user package on the path."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 20)):
        samples = [(np.sort(rng.uniform(0, 1.0, 60)), rng.integers(0, 700, 60)) for _ in range(n)]
        write_shd(tmp_path / "SHD" / f"shd_{split}.h5", samples, [i % 20 for i in range(n)])
    (tmp_path / "my_snn_layers.py").write_text(textwrap.dedent(USER_LAYERS))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("my_snn_layers", None)


def args_for(name: str, root: Path) -> list[str]:
    overrides, _ = NETWORKS[name]
    shd = "dataset=shd" in overrides
    return [*SMALL, *overrides, *([f"dataset.root={root}", "dataset.duration_ms=1000"] * shd)]


@pytest.mark.parametrize("name", NETWORKS)
def test_network_trains_resumes_exactly_reports_nested_rates_and_renders(
    name: str, setup: Path, monkeypatch, capsys
) -> None:
    """2 epochs straight equal 1 epoch, then a resume to 2; nested neurons have rates; viz
    draws the run and eval re-measures it."""
    args = args_for(name, setup)
    whole, split = setup / "whole", setup / "split"
    train_in_process(monkeypatch, *args, "epochs=2", f"hydra.run.dir={whole}")
    train_in_process(monkeypatch, *args, "epochs=1", f"hydra.run.dir={split}")
    train_in_process(monkeypatch, f"resume={split}", "epochs=2")
    history = without_timing(read_metrics(whole))
    assert without_timing(read_metrics(split)) == history
    nested, *rated = NETWORKS[name][1]
    rates = {k.removeprefix("firing_rate/") for k in history[-1] if k.startswith("firing_rate/")}
    assert set(rated) <= rates, sorted(rates)
    assert f"| {nested} " in (whole / "summary.md").read_text()  # a row of the model summary
    capsys.readouterr()
    train_in_process(monkeypatch, "viz", str(whole))
    assert "wrote 6 figures" in capsys.readouterr().out
    train_in_process(monkeypatch, "eval", str(whole))
    rates_line = next(x for x in capsys.readouterr().out.splitlines() if "firing rates:" in x)
    assert f" {rated[0]}:" in rates_line


def test_a_killed_sew_run_resumes_exactly(setup: Path) -> None:
    """A real SIGKILL mid-training of a SEW network; the resume equals an unbroken run."""
    args = [*args_for("sew_iand", setup), "dataset.train_limit=512", "epochs=3"]
    killed_and_resumed(args, setup, 3)
