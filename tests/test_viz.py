"""``snnrun viz``: every figure of a short real run on digits is a valid, non-blank image of the
expected size; the GIF has T frames; ``format=svg`` writes SVGs; bad arguments fail as one line."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snnrun import cli, figures, viz
from snnrun.errors import SnnrunError
from snnrun.rundir import RunDir

from conftest import run_snnrun, train_tiny

T, CHANNELS = 4, 4  # TINY's T and model.channels
FIXED = ("curves", "output_layer", "firing_rates")
GRIDS = ("first_layer_spikes", "first_layer_cumsum")


def _pixels(inches: tuple[float, float]) -> tuple[int, int]:
    return round(inches[0] * figures.DPI), round(inches[1] * figures.DPI)


def _assert_image(path: Path, size: tuple[int, int]) -> None:
    """A readable image of ``size`` pixels that is not one flat colour."""
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size == size, f"{path.name}: {im.size} != {size}"
        assert np.asarray(im.convert("L"), dtype=float).var() > 0, f"{path.name} is blank"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of the tiny CSNN on 64 digits (a little less data than TINY)."""
    limits = ("dataset.train_limit=64", "dataset.test_limit=64")
    return train_tiny(tmp_path_factory.mktemp("viz"), *limits)


def test_viz_writes_every_figure(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["snnrun", "viz", str(run_dir), "sample=2"])
    cli.main()  # the command, in this process (torch is imported once)
    folder = RunDir(run_dir).figures
    for name in FIXED:
        _assert_image(folder / f"{name}.png", _pixels(figures.SIZES[name]))
    for name in GRIDS:
        _assert_image(folder / f"{name}.png", _pixels(figures.channel_grid_size(T, CHANNELS)))
    gif = folder / "spike_counts.gif"
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == T
        assert im.size == _pixels(figures.SIZES["spike_counts"])
        im.seek(T - 1)
        assert np.asarray(im.convert("L"), dtype=float).var() > 0
    stdout = capsys.readouterr().out
    written = {Path(line.strip()) for line in stdout.splitlines() if line.startswith("  ")}
    assert written == {*(folder / f"{n}.png" for n in (*FIXED, *GRIDS)), gif}


def test_viz_svg(run_dir: Path) -> None:
    viz.main([str(run_dir), "format=svg", "which=latest"])
    folder = RunDir(run_dir).figures
    for name in (*FIXED, *GRIDS):
        root = ET.parse(folder / f"{name}.svg").getroot()
        assert root.tag.endswith("svg"), name
    with Image.open(folder / "spike_counts.gif") as im:  # the animation stays a GIF
        assert im.n_frames == T


def test_render_cheap(run_dir: Path) -> None:
    """The figures the training loop can draw every n epochs, from metrics alone."""
    rundir = RunDir(run_dir)
    metrics = rundir.read_metrics()
    out = viz.render_cheap(rundir, metrics, "png")
    assert set(out) == {"curves", "firing_rates"}
    _assert_image(out["curves"], _pixels(figures.SIZES["curves"]))
    _assert_image(out["firing_rates"], _pixels(figures.SIZES["firing_rates_epochs"]))
    no_rates = [{k: v for k, v in r.items() if not k.startswith("firing_rate/")} for r in metrics]
    assert set(viz.render_cheap(rundir, no_rates, "png")) == {"curves"}  # monitor=none
    assert viz.render_cheap(rundir, [], "png") == {}


def test_bad_argument_exits_2_with_one_line(run_dir: Path) -> None:
    proc = run_snnrun(["viz", str(run_dir), "colour=red"], cwd=run_dir.parent, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("snnrun: error: ")
    assert "colour" in proc.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["format=png"], "one run dir"),
        (["{run}", "format=gif"], "format"),
        (["{run}", "which=worst"], "best or latest"),
        (["{run}", "sample=-1"], "test index"),
        (["{run}", "sample=100000"], "64 samples"),
        (["{run}", "{run}"], "one run dir"),
        (["{empty}"], "checkpoint_best.pt"),
        (["{run}/nowhere"], "does not exist"),
    ],
)
def test_bad_arguments_are_one_line(
    run_dir: Path, tmp_path: Path, args: list[str], words: str
) -> None:
    args = [a.format(run=run_dir, empty=tmp_path) for a in args]
    with pytest.raises(SnnrunError) as info:
        viz.main(args)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_figures_go_to_the_runs_wandb_run(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``logger=wandb`` run with a W&B id: its logger resumes that run and logs PNG/GIF only."""
    calls: list[tuple] = []

    class FakeLogger:
        def start(self, rundir, run_id, config, state, history) -> None:
            calls.append(("start", run_id, state, history))

        def log_figures(self, figs: dict[str, Path]) -> None:
            calls.append(("log", sorted(figs)))

        def finish(self) -> None:
            calls.append(("finish",))

    monkeypatch.setattr("snnrun.loggers.build_logger", lambda cfg: FakeLogger())
    from snnrun.api import load_run

    run = load_run(run_dir)
    monkeypatch.setattr(run.rundir, "read_wandb_id", lambda: "abc123")
    written = {"curves": Path("c.png"), "spike_counts": Path("s.gif"), "x": Path("x.svg")}
    assert not viz.log_to_wandb(run, written)  # trained with logger=none
    run.config["logger"] = {"name": "wandb", "mode": "offline"}
    training = RunDir(run_dir)
    training.claim()  # the run is training: it owns the W&B run
    try:
        with pytest.raises(SnnrunError, match="in use"):
            viz.log_to_wandb(run, written)
    finally:
        training.release()
    assert viz.log_to_wandb(run, written)
    run_id = RunDir(run_dir).read_info()["run_id"]
    assert calls == [
        ("start", run_id, {"run_id": "abc123"}, []),
        ("log", ["curves", "spike_counts"]),
        ("finish",),
    ]
