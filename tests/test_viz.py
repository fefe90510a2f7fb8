"""``snnrun viz``: every figure of a short real run on digits is a valid, non-blank image of the
expected size; the GIF has T frames; ``format=svg`` writes SVGs; the output heatmap shows the
charge H before the reset (spiking cells at or above the threshold) in both step modes; titles
name tied classes and count epochs from 1; a read-only run dir names out=; bad arguments fail
as one line. Nested networks (a residual body, a recurrent neuron last): the probe keys spikes by
label and records the stepped neuron's charge over every step; a deep net's axis stays
readable."""

from __future__ import annotations

import errno
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from snnrun.cli import command as cli
from snnrun.cli import viz
from snnrun.core.errors import SnnrunError
from snnrun.report import figures, render
from snnrun.report import probe as probing
from snnrun.run.rundir import RunDir

from conftest import TINY, compose, make_read_only, run_snnrun, train_in_process, train_tiny
from conftest import cli as run_cli

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


def test_viz_svg_elsewhere(run_dir: Path, tmp_path: Path) -> None:
    """``format=svg``, into the folder ``out=`` names."""
    viz.main([str(run_dir), "format=svg", "which=latest", f"out={tmp_path}"])
    folder = tmp_path
    for name in (*FIXED, *GRIDS):
        root = ET.parse(folder / f"{name}.svg").getroot()
        assert root.tag.endswith("svg"), name
    with Image.open(folder / "spike_counts.gif") as im:  # the animation stays a GIF
        assert im.n_frames == T


def test_render_cheap(run_dir: Path) -> None:
    """The figures the training loop can draw every n epochs, from metrics alone."""
    rundir = RunDir(run_dir)
    metrics = rundir.read_metrics()
    out = render.render_cheap(rundir, metrics, "png")
    assert set(out) == {"curves", "firing_rates"}
    _assert_image(out["curves"], _pixels(figures.SIZES["curves"]))
    _assert_image(out["firing_rates"], _pixels(figures.SIZES["firing_rates_epochs"]))
    no_rates = [{k: v for k, v in r.items() if not k.startswith("firing_rate/")} for r in metrics]
    assert set(render.render_cheap(rundir, no_rates, "png")) == {"curves"}  # monitor=none
    assert render.render_cheap(rundir, [], "png") == {}


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

    monkeypatch.setattr("snnrun.run.logger.build_logger", lambda cfg, names=None: FakeLogger())
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


def _captured(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures ``figures.save`` is given, kept instead of written."""
    kept: list = []

    def keep(fig, path: Path) -> Path:
        kept.append(fig)
        return path

    monkeypatch.setattr(figures, "save", keep)
    return kept


def test_output_layer_shows_the_charge_before_reset(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heatmap is H, the membrane before each step's reset: a cell that spiked is at or
    above the threshold, one that did not is below it (V after a hard reset reads 0 where a
    neuron spiked). Step mode 's' records the same H."""
    from snnrun.api import load_run

    run = load_run(run_dir)
    with torch.no_grad():  # one epoch leaves the output layer nearly silent: make it spike
        for m in run.model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(2.0)
    probe = probing.probe(run, run.splits().test, 0, torch.device("cpu"))
    spikes = probe.spikes[probe.last]
    assert probe.charge.shape == spikes.shape and spikes.any()
    assert (probe.charge[spikes == 1] >= probe.threshold).all()
    assert (probe.charge[spikes == 0] < probe.threshold).all()
    kept = _captured(monkeypatch)
    render.Renderer(run, probe, 0, "png", run_dir / "unused").output_layer()
    heatmap = kept[0].axes[1].images[0]
    assert np.array_equal(heatmap.get_array(), probe.charge[:, 0].numpy().T)
    assert heatmap.norm.vcenter == probe.threshold
    for m in run.model.layers:
        if hasattr(m, "step_mode"):
            m.step_mode = "s"
    run.model.step_by_step = True
    stepped = probing.probe(run, run.splits().test, 0, torch.device("cpu"))
    assert torch.allclose(stepped.charge, probe.charge, atol=1e-5)


def test_titles_name_ties_and_count_epochs_from_1(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates = torch.tensor([0.0, 0.5, 0.25, 0.5])
    assert render.prediction_text(rates, 1) == "predicted 1 (tie: 1, 3)"
    assert render.prediction_text(torch.tensor([0.0, 0.5, 0.25]), 1) == "predicted 1"
    silent = render.prediction_text(torch.zeros(4), 0)
    assert silent == "predicted 0 (tie: all 4 classes, no output spikes)"
    output = torch.zeros(T, 1, 4)
    output[1, 0, 1] = output[2, 0, 3] = 1.0  # one spike each for classes 1 and 3
    probe = probing.Probe(inputs=torch.zeros(T, 1, 2), target=3, predicted=1, output=output,
                      spikes={"L5": output}, charge=output, threshold=1.0)  # fmt: skip
    run = SimpleNamespace(path=run_dir, which="best", epoch=3, metrics=[])
    title = render.Renderer(run, probe, 0, "png", run_dir).title
    assert "best weights (epoch 3)" in title and "true 3, predicted 1 (tie: 1, 3)" in title

    from snnrun.api import load_run

    metrics = load_run(run_dir).metrics
    assert load_run(run_dir).epoch == 1 and [r["epoch"] for r in metrics] == [0]
    kept = _captured(monkeypatch)
    render.render_cheap(RunDir(run_dir), metrics, "png")
    curves, rates_fig = kept
    assert curves.texts[0].get_text().endswith("after epoch 1")
    assert list(curves.axes[0].lines[0].get_xdata()) == [1]
    assert list(rates_fig.axes[0].lines[0].get_xdata()) == [1]


def test_viz_into_a_read_only_run_dir_names_out(
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``figures/`` cannot be made (a read-only run dir): one line naming that folder and out=,
    not hydra.run.dir (``out=`` itself: :func:`test_viz_svg_elsewhere`); a W&B log that cannot
    write into the run dir is a warning."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("figures"))
    make_read_only(monkeypatch, run)
    code, err = run_cli(monkeypatch, capsys, "viz", str(run))
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"snnrun: error: cannot write {run / 'figures'}: Read-only")
    assert "out=<dir>" in err and "hydra.run.dir" not in err

    def unwritable(*args: object) -> bool:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(run / "run.lock"))

    monkeypatch.setattr(viz, "log_to_wandb", unwritable)
    assert not viz._log_or_warn(SimpleNamespace(), {})
    out = capsys.readouterr().out
    assert f"figures not logged to W&B: cannot write {run / 'run.lock'}: Read-only" in out


# --- nested networks --------------------------------------------------------------------------
CONV = {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False}
NESTED = [  # 1x28x28 digits -> 10 classes; neurons at L2, L4.body.2 and L7.neuron (the last)
    CONV,
    {"type": "batchnorm2d"},
    {"type": "neuron"},
    {"type": "maxpool2d", "kernel_size": 4, "stride": 4},
    {"type": "residual", "body": [CONV, {"type": "batchnorm2d"}, {"type": "neuron"}]},
    {"type": "flatten"},
    {"type": "linear", "out_features": 10, "bias": False},
    {"type": "recurrent", "layers": [{"type": "linear", "bias": False}]},
]
NESTED_LABELS = ["L2", "L4.body.2", "L7.neuron"]


@pytest.fixture(scope="module")
def nested_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of :data:`NESTED` on 64 digits, its model from a user's ``--config-dir``."""
    import yaml

    root = tmp_path_factory.mktemp("nested")
    (root / "conf" / "model").mkdir(parents=True)
    model = {"name": "nested", "layers": NESTED}
    (root / "conf" / "model" / "nested.yaml").write_text(yaml.safe_dump(model))
    tiny = [o for o in TINY if not o.startswith(("model.", "dataset."))]
    with pytest.MonkeyPatch.context() as patch:
        train_in_process(patch, "--config-dir", str(root / "conf"), *tiny, "model=nested",
                         "dataset.train_limit=64", "dataset.test_limit=64",
                         f"hydra.run.dir={root / 'run'}")  # fmt: skip
    return root / "run"


def _louder(run: object) -> None:
    """Double every weight: one epoch leaves the deep layers nearly silent."""
    with torch.no_grad():
        for m in run.model.modules():  # type: ignore[attr-defined]
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(2.0)


def test_viz_on_a_nested_network(
    nested_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command draws every figure of a net with a residual body and a recurrent neuron
    last; the probe keys the spikes by label, and the last layer's charge covers every step."""
    monkeypatch.setattr(sys, "argv", ["snnrun", "viz", str(nested_run)])
    cli.main()
    folder = RunDir(nested_run).figures
    for name in FIXED:
        _assert_image(folder / f"{name}.png", _pixels(figures.SIZES[name]))
    for name in GRIDS:
        _assert_image(folder / f"{name}.png", _pixels(figures.channel_grid_size(T, CHANNELS)))
    with Image.open(folder / "spike_counts.gif") as im:
        assert im.n_frames == T
    assert "wrote 6 figures" in capsys.readouterr().out

    from snnrun.api import load_run

    run = load_run(nested_run)
    _louder(run)
    probe = probing.probe(run, run.splits().test, 0, torch.device("cpu"))
    assert list(probe.spikes) == NESTED_LABELS == [n for n, _ in run.model.neurons()]
    assert (probe.first, probe.last) == ("L2", "L7.neuron")
    spikes = probe.spikes[probe.last]
    assert spikes.shape == probe.charge.shape == probe.output.shape == (T, 64, 10)
    assert torch.equal(spikes, probe.output)  # the recurrent entry is the network's output
    assert spikes.any() and not spikes.all()
    assert (probe.charge[spikes == 1] >= probe.threshold).all()
    assert (probe.charge[spikes == 0] < probe.threshold).all()
    kept = _captured(monkeypatch)
    renderer = render.Renderer(run, probe, 0, "png", nested_run / "unused")
    renderer.output_layer()
    renderer.first_layer(cumulative=False)
    renderer.firing_rates()
    assert "output layer (L7.neuron)" in kept[0].get_suptitle()
    assert "first neuron layer (L2)" in kept[1].get_suptitle()
    ticks = [t.get_text() for t in kept[2].axes[0].get_xticklabels()]
    assert ticks == NESTED_LABELS


def _recurrent_net(neuron: str) -> torch.nn.Module:
    """linear - neuron (L1) - linear - recurrent (L3.neuron, the last): 5 features to 6."""
    from omegaconf import OmegaConf

    from snnrun.net.model import build_model
    from snnrun.run.build import neuron_groups

    conf = OmegaConf.to_container(compose([*TINY, f"neuron={neuron}"]), resolve=True)
    layers = [
        {"type": "linear", "out_features": 6, "bias": False},
        {"type": "neuron"},
        {"type": "linear", "out_features": 6, "bias": False},
        {"type": "recurrent", "layers": [{"type": "linear", "bias": False}]},
    ]
    model = build_model({"layers": layers}, neuron_groups(conf), (5,), 6).eval()
    for _ in range(2):
        _louder(SimpleNamespace(model=model))
    return model


@pytest.mark.parametrize("neuron", ["if", "lif"])
def test_probe_of_a_recurrent_net(neuron: str) -> None:
    """The recurrent neuron (called once per step with ``[1, N, ...]``): its recorded spikes are
    the network's own output, and its charge is ``H[t]`` for every step, computed here by hand:
    ``H[t] = charge(V[t-1], X[t] + P(S[t-1]))`` with X the recurrent entry's input."""
    from snnrun.neuron.dynamics import charge, membrane_step
    from snnrun.neuron.neurons import reset_states

    torch.manual_seed(0)
    model = _recurrent_net(neuron)
    x = torch.rand(T + 2, 3, 5) * 5.0
    out, spikes, h, threshold = probing._recording(model, x)
    assert list(spikes) == ["L1", "L3.neuron"]
    recurrent = model.layers[3]
    cell, dyn = recurrent.neuron, recurrent.neuron.dynamics
    with torch.no_grad():
        assert torch.equal(spikes["L3.neuron"], out) and torch.equal(out, model(x))
        reset_states(model)
        feed = model.layers[:3](x)  # X[t], the recurrent entry's input
        v, s, expected = torch.full_like(feed[0], dyn.v_rest), torch.zeros_like(feed[0]), []
        for t in range(x.shape[0]):
            x_t = feed[t] + recurrent.projection(s[None])[0]
            expected.append(charge(dyn, v, x_t, cell.decay()))
            s, v = membrane_step(dyn, x_t, v, cell.decay(), dyn.v_threshold)
    assert h.shape == out.shape and out.any() and not out.all()
    assert torch.allclose(h, torch.stack(expected), atol=1e-6)
    assert threshold == dyn.v_threshold
    assert not cell.store_v_seq  # the probe leaves the layer as it found it


def test_deep_net_layer_axis_is_readable() -> None:
    """Many layers: the box axis names some, spread evenly (the first and last always), turned;
    the per-epoch legend names the first and last. A few flat layers keep their plain names."""
    names = [f"L{i}.body.{j}" for i in range(20) for j in (2, 5)]
    batch = {n: np.random.default_rng(0).random(8) for n in names}
    epochs = {n: [(1, 0.1), (2, 0.2)] for n in names}
    fig = figures.plot_firing_rates(batch, epochs, "deep")
    ax_b, ax_e = fig.axes
    ticks = [t.get_text() for t in ax_b.get_xticklabels()]
    assert len(ticks) <= figures.MAX_LAYER_TICKS and ticks[0] == names[0] and ticks[-1] == names[-1]
    assert set(ticks) < set(names)
    assert all(t.get_rotation() == 45 for t in ax_b.get_xticklabels())
    assert f"{len(ticks)} of 40 named" in ax_b.get_xlabel()
    assert [t.get_text() for t in ax_e.get_legend().get_texts()] == [names[0], names[-1]]
    assert len(ax_e.lines) == len(names)
    flat = figures.plot_firing_rates({"L2": batch[names[0]], "L5": batch[names[1]]}, {}, "flat")
    ticks = flat.axes[0].get_xticklabels()
    assert [t.get_text() for t in ticks] == ["L2", "L5"] and ticks[0].get_rotation() == 0
    assert render.layer_order("L4.body.2") < render.layer_order("L10")
    assert render.layer_order("L4") < render.layer_order("L4.body.2")
