"""The neuron contract: an entry naming another neuron starts from that neuron's defaults."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from snnrun.neuron.neurons import NEURONS, build_neuron, merge_neuron_options

from conftest import (
    REPO,
    TINY,
    assert_one_line_error,
    cli,
    make_user_package,
    read_metrics,
    train_in_process,
)

ATAN = {"name": "atan", "alpha": 2.0}
FC = ["model=fc", *(a for a in TINY if not a.startswith("model."))]  # neurons on [N, 10] only
BUILT_IN = [n for n in NEURONS.names() if n != "psn"]  # psn's T is the run's


def group_of(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "neuron" / f"{name}.yaml"))


@pytest.mark.parametrize("name", BUILT_IN)
def test_class_defaults_are_the_group_files(name):
    """What an entry gets when it names a neuron: the class's defaults, which are its YAML's."""
    from_yaml = build_neuron(group_of(name), ATAN)
    from_class = build_neuron({"name": name}, ATAN)
    assert repr(from_class) == repr(from_yaml)


@pytest.mark.parametrize("name", BUILT_IN)
def test_another_neuron_takes_its_own_defaults(name):
    lif = {
        **group_of("lif"),
        "tau": 3.0,
        "v_threshold": 0.5,
        "backend": "autograd",
        "step_mode": "s",
    }
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


# --- the user's neurons: examples/plugins/neuron.py (outside snnrun) and a test package's ---
USER_NEURONS = '''
import torch
from torch import nn
from plugins.neuron import QIF  # examples/plugins/neuron.py: the user's QIF and Izhikevich

from snnrun import tl


class LearnedQIF(QIF):
    """QIF with a learned 1/tau: one per layer (shape ()) or one per feature."""

    def __init__(self, shape=(), in_shape=None, **kw):
        super().__init__(**kw)
        self.k = nn.Parameter(torch.full(tuple(shape), 0.5))
        self.in_shape = in_shape  # the layer's per-sample input shape, given by the builder

    def params(self):
        return {"k": self.k.clamp(0.05, 1.0)}

    def step(self, x, states, params):
        v = states["v"]
        h = v + (tl.maximum(v * (v - self.v_c), -1.0) + tl.abs(x)) * params["k"]
        s = self.fire(h - self.v_threshold)
        return s, {"v": h - tl.detach(s) * self.v_threshold}
'''


@pytest.fixture
def user_pkg(tmp_path: Path, monkeypatch):
    """``plugins`` (examples/plugins: the user's QIF and Izhikevich) on the path, and a test
    package ``my_neurons`` with a QIF that learns its 1/tau."""
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    yield from make_user_package(tmp_path, monkeypatch, "my_neurons", USER_NEURONS)


CASES = {
    "qif": ("plugins.neuron", "QIF", {}),
    "izhikevich": ("plugins.neuron", "Izhikevich", {}),
    "learned_layer": ("my_neurons", "LearnedQIF", {"shape": ()}),
    "learned_feature": ("my_neurons", "LearnedQIF", {"shape": (5,)}),
}


def _grads(layer, x: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    x = x.clone().requires_grad_()
    spikes = layer(x)
    v = layer.v
    ((spikes * w).sum() + (v * w[0]).sum()).backward()
    out = {"s": spikes.detach(), "v": v.detach(), "gx": x.grad}
    out.update({f"g_{n}": p.grad for n, p in layer.named_parameters()})
    return out


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("case", CASES)
def test_user_neuron_backends_agree_with_the_reference(user_pkg, case, backend):
    """float64: spikes exact, gradients within 1e-6 relative of the autograd reference."""
    import importlib

    module, cls_name, kw = CASES[case]
    cls = getattr(importlib.import_module(module), cls_name)
    torch.manual_seed(0)
    x = torch.rand(13, 3, 5, dtype=torch.float64) * (4.0 if case == "izhikevich" else 1.5)
    w = torch.randn(13, 3, 5, dtype=torch.float64)
    ref = cls(backend="autograd", **kw).double()
    got = cls(backend=backend, **kw).double()
    want, have = _grads(ref, x, w), _grads(got, x, w)
    assert want["s"].sum() > 0 and not want["s"].all()  # the case spikes, and not everywhere
    assert torch.equal(have["s"], want["s"])
    for key in want:
        if key != "s":
            scale = want[key].abs().max().clamp_min(1e-12)
            assert (have[key] - want[key]).abs().max() / scale <= 1e-6, key


@pytest.mark.parametrize("backend", ["autograd", "torch", "triton"])
@pytest.mark.parametrize("neuron", ["QIF", "Izhikevich"])
def test_user_neuron_trains_through_the_command(user_pkg, tmp_path, monkeypatch, neuron, backend):
    monkeypatch.chdir(tmp_path)
    train_in_process(
        monkeypatch, *FC, f"neuron._target_=plugins.neuron.{neuron}", f"neuron.backend={backend}",
        "dataset.train_limit=64", "dataset.test_limit=32", "hydra.run.dir=run",
    )  # fmt: skip
    records = read_metrics(tmp_path / "run")
    assert len(records) == 1 and math.isfinite(records[0]["train_loss"])
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert f"{neuron.lower()} " in summary and f", {backend}" in summary


def test_step_modes_agree(user_pkg):
    import importlib

    cls = importlib.import_module("plugins.neuron").Izhikevich
    x = torch.rand(9, 4, dtype=torch.float64) * 4
    multi = cls().double()(x)
    single = cls(step_mode="s").double()
    assert torch.equal(torch.stack([single(xt) for xt in x]), multi)


def test_a_python_branch_in_a_step_is_one_line(user_pkg):
    import importlib

    class Branchy(importlib.import_module("plugins.neuron").QIF):
        def step(self, x, states, params):
            if states["v"] > 0.5:
                return super().step(x, states, params)
            return super().step(2 * x, states, params)

    from snnrun.kernels.step_kernels import traced

    layer = Branchy()
    with pytest.raises(TypeError, match=r"tl\.where\(cond, a, b\)"):
        traced(layer.flat_step, 1, [])


def test_a_target_that_is_no_neuron_is_one_line(tmp_path, monkeypatch, capsys):
    gen = make_user_package(tmp_path, monkeypatch, "not_neurons", "class Thing:\n    pass\n")
    name = next(gen)
    code, err = cli(monkeypatch, capsys, *TINY, f"neuron._target_={name}.Thing",
                    f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert_one_line_error(code, err, f"{name}.Thing is not a snnrun.Neuron subclass")


def test_a_user_neuron_run_resumes_evaluates_and_refuses_nir_in_one_line(
    user_pkg, tmp_path, monkeypatch, capsys
):
    """Checkpoints and resume carry a user's neuron (its parameters too); NIR export, which has
    no node for it, is one line."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    args = [*TINY, f"neuron._target_={user_pkg}.LearnedQIF",
            "dataset.train_limit=64", "dataset.test_limit=32", f"hydra.run.dir={run}"]  # fmt: skip
    train_in_process(monkeypatch, *args)
    train_in_process(monkeypatch, f"resume={run}", "epochs=2")
    assert [r["epoch"] for r in read_metrics(run)] == [0, 1]
    from snnrun.run.checkpoint import load_checkpoint

    learned = [v for k, v in load_checkpoint(run / "checkpoint_latest.pt")["model"].items()
               if k.endswith(".k")]  # fmt: skip
    assert len(learned) == 4 and all(v.shape == () for v in learned)
    train_in_process(monkeypatch, "eval", str(run))
    code, err = cli(monkeypatch, capsys, "export", str(run), "format=nir")
    assert_one_line_error(code, err, "LearnedQIF is your own neuron (snnrun.Neuron)")


# --- learned tau and threshold per layer, channel or neuron ----------------------------------
LEARNED = {
    "lif-tau-channel": ("lif", {"learn_tau": "channel"}),
    "lif-threshold-neuron": ("lif", {"learn_threshold": "neuron", "v_reset": None}),
    "lif-both-layer": ("lif", {"learn_tau": "layer", "learn_threshold": "layer",
                               "detach_reset": True}),
    "leaky-tau-channel": ("leaky", {"learn_tau": "channel", "learn_threshold": "channel"}),
    "alif-both-channel": ("alif", {"learn_tau": "channel", "learn_threshold": "neuron",
                                   "tau": 3.0, "beta_a": 0.3}),
}  # fmt: skip


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("case", LEARNED)
def test_learned_tau_and_threshold_gradients_match_the_reference(case, backend):
    """float64, input [T, N, C, L] = [11, 2, 3, 5]: spikes exact, the gradients of x and of the
    learned values within 1e-6 of the autograd reference."""
    name, options = LEARNED[case]
    torch.manual_seed(1)
    x = torch.rand(11, 2, 3, 5, dtype=torch.float64) * 1.5
    w = torch.randn(11, 2, 3, 5, dtype=torch.float64)
    layers = []
    for b in ("autograd", backend):
        layer = build_neuron({"name": name, "backend": b, **options}, ATAN, in_shape=(3, 5))
        with torch.no_grad():  # distinct values per channel / neuron
            for p in layer.parameters():
                p.add_(torch.linspace(-0.2, 0.2, p.numel(), dtype=p.dtype).view(p.shape))
        layers.append(layer.double())
    want, have = (_grads(layer, x, w) for layer in layers)
    assert 0 < want["s"].mean() < 1
    assert torch.equal(have["s"], want["s"])
    shapes = {k: tuple(p.shape) for k, p in layers[0].named_parameters()}
    assert any(len(s) > 0 for s in shapes.values()) or case == "lif-both-layer", shapes
    for key in want:
        if key != "s":
            scale = want[key].abs().max().clamp_min(1e-12)
            assert (have[key] - want[key]).abs().max() / scale <= 1e-6, key


@pytest.mark.parametrize(
    ("model", "backend", "shapes"),
    [("csnn", "torch", {"layers.2.w": (4, 1, 1), "layers.2.v_th": (4, 28, 28)}),
     ("fc", "triton", {"layers.2.w": (10,), "layers.2.v_th": (10,)})],
)  # fmt: skip
def test_learned_per_channel_values_train_through_the_command(
    tmp_path, monkeypatch, model, backend, shapes
):
    """neuron.learn_tau=channel and learn_threshold=neuron: the conv neurons learn [C, 1, 1]
    decays and [C, H, W] thresholds (a linear layer's: [F]), kept in the checkpoint."""
    monkeypatch.chdir(tmp_path)
    train_in_process(
        monkeypatch, *(TINY if model == "csnn" else FC), "neuron=lif", "neuron.learn_tau=channel",
        "neuron.learn_threshold=neuron", f"neuron.backend={backend}", "dataset.train_limit=64",
        "dataset.test_limit=32", "hydra.run.dir=run",
    )  # fmt: skip
    from snnrun.run.checkpoint import load_checkpoint

    weights = load_checkpoint(tmp_path / "run" / "checkpoint_latest.pt")["model"]
    assert {k: tuple(weights[k].shape) for k in shapes} == shapes
    w = weights["layers.2.w"].flatten()
    assert (w != w[0]).any()  # learned apart, one value per channel
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert f"lif tau=2/channel v_th=1/neuron hard atan, {backend}" in summary


def test_a_bad_learn_mode_is_one_line(tmp_path, monkeypatch, capsys):
    code, err = cli(monkeypatch, capsys, *TINY, "neuron=lif", "neuron.learn_tau=channels",
                    f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert_one_line_error(code, err, "learn_tau one of layer, channel, neuron", "channels")


def test_the_example_neuron_from_a_config_dir(tmp_path, monkeypatch):
    """examples/conf/neuron/izhikevich.yaml: a user's neuron as a config group of its own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    args = [a for a in FC if not a.startswith("neuron=")]
    train_in_process(monkeypatch, "--config-dir", str(REPO / "examples" / "conf"), *args,
                     "neuron=izhikevich", "neuron.gain=40", "hydra.run.dir=run")  # fmt: skip
    assert (
        "izhikevich a=0.02 b=0.2 c=-65 d=8 dt=0.5 gain=40"
        in (tmp_path / "run" / "summary.md").read_text()
    )


def test_a_user_neuron_that_takes_in_shape_gets_it(user_pkg):
    layer = build_neuron({"_target_": f"{user_pkg}.LearnedQIF", "name": "lif", "tau": 3.0},
                         ATAN, in_shape=(3, 5))  # fmt: skip
    assert layer.in_shape == (3, 5) and layer.tau == 3.0


def test_a_user_neuron_in_a_recurrent_entry_and_the_figures(user_pkg, tmp_path, monkeypatch):
    """model=rsnn: the recurrent entry steps a user's QIF one step at a time; viz draws it."""
    monkeypatch.chdir(tmp_path)
    train_in_process(
        monkeypatch, "model=rsnn", "model.hidden=8", "neuron._target_=plugins.neuron.QIF",
        "dataset.train_limit=64", "dataset.test_limit=32", "epochs=1", "T=4", "logger=none",
        "hydra.run.dir=run",
    )  # fmt: skip
    rows = (tmp_path / "run" / "summary.md").read_text().splitlines()
    assert any("recurrent" in r and "qif tau=2 v_c=0.5" in r for r in rows), rows
    train_in_process(monkeypatch, "viz", str(tmp_path / "run"))
    assert list((tmp_path / "run" / "figures").glob("*.png"))


def test_a_version_3_checkpoint_keeps_the_network_it_trained():
    """Runs saved before the override rule changed (checkpoint version 3): an entry that names
    another neuron gets, written out, the group keys it took then (dvsgesture_plif's FC LIFs
    trained with the group's detach_reset=true); a current checkpoint's config is unchanged."""
    from snnrun.run.checkpoint import VERSION, migrate

    group = {**group_of("plif"), "detach_reset": True, "v_threshold": 0.5}
    layers = [{"type": "neuron", "name": "lif", "tau": 2.0},
              {"type": "sequential", "layers": [{"type": "recurrent", "name": "alif",
                                                 "layers": [{"type": "linear"}]}]},
              {"type": "neuron"},
              {"type": "spiking_self_attention", "neuron": {"name": "leaky"}}]  # fmt: skip
    config = {"neuron": group, "model": {"layers": layers}}
    old = migrate({"version": 3, "config": config}, Path("old.pt"))["config"]["model"]["layers"]
    assert old[0] == {"type": "neuron", "name": "lif", "tau": 2.0, "decay_input": True,
                      "v_threshold": 0.5, "v_reset": 0.0, "detach_reset": True,
                      "backend": "torch", "step_mode": "m", "store_v_seq": False}  # fmt: skip
    recurrent = old[1]["layers"][0]
    assert recurrent["detach_reset"] is True and recurrent["v_reset"] == 0.0
    assert old[2] == {"type": "neuron"}  # the group's own neuron: nothing to write out
    assert old[3]["neuron"]["v_threshold"] == 0.5 and "detach_reset" not in old[3]["neuron"]
    merged = merge_neuron_options(group, {k: v for k, v in old[0].items() if k != "type"})
    assert merged["detach_reset"] is True  # the network the run trained
    current = migrate({"version": VERSION, "config": config}, Path("new.pt"))["config"]
    assert current == config
