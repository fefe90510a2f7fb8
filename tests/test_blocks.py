"""The network language's blocks against handwritten references: residual connects (float64),
the recurrent neuron against snnTorch's RLeaky, user modules, errors named by path, static
folding, step-by-step equality and SynOps through blocks."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from snnrun.core.errors import SnnrunError
from snnrun.engine.monitor import FiringRates, SynapticOps, monitoring, spike_fed
from snnrun.net import make_neuron
from snnrun.net.blocks import Recurrent, Residual
from snnrun.net.layers import ModelBuildError
from snnrun.net.model import SpikingNetwork, build_model

from conftest import make_user_package

IF = {"name": "if", "v_threshold": 1.0, "v_reset": 0.0, "detach_reset": False, "backend": "torch"}
ATAN = {"name": "atan", "alpha": 2.0}


def groups(**neuron) -> dict:
    return {"neuron": {**IF, **neuron}, "surrogate": ATAN}


def conv(c: int, **kw) -> dict:
    return {
        "type": "conv2d",
        "out_channels": c,
        "kernel_size": 3,
        "padding": 1,
        "bias": False,
        **kw,
    }


BN, NEURON = {"type": "batchnorm2d"}, {"type": "neuron"}
HEAD = [{"type": "flatten"}, {"type": "linear", "out_features": 3}, NEURON]


def net(layers: list, shape=(2, 6, 6), classes=3, **neuron) -> SpikingNetwork:
    torch.manual_seed(0)
    model = build_model({"layers": layers}, groups(**neuron), shape, classes).double()
    for m in model.modules():  # BatchNorm with statistics that matter, in eval mode
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def if_neuron(h_seq: torch.Tensor) -> torch.Tensor:
    """IF with hard reset to 0: V = V + X; S = V >= 1; V = V (1 - S)."""
    v, out = torch.zeros_like(h_seq[0]), []
    for x in h_seq:
        v = v + x
        s = (v >= 1.0).to(x.dtype)
        v = v * (1 - s)
        out.append(s)
    return torch.stack(out)


def folded(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x.flatten(0, 1)).unflatten(0, x.shape[:2])


SEW = {
    "add": lambda a, s: a + s,
    "and": lambda a, s: a * s,
    "iand": lambda a, s: (1 - a) * s,
}


@pytest.mark.parametrize("connect", ["add", "and", "iand"])
def test_sew_block_equals_a_handwritten_reference(connect: str) -> None:
    """SEW-ResNet's block (Fang et al. 2021): stem spikes S, body A = SN(BN(conv(SN(BN(conv(S)))))),
    out = connect(A, S), for each connect, in float64."""
    body = [conv(2), BN, NEURON, conv(2), BN, NEURON]
    model = net(
        [conv(2), BN, NEURON, {"type": "residual", "body": body, "connect": connect}, *HEAD]
    )
    x = torch.rand(4, 3, 2, 6, 6, dtype=torch.float64) * 2
    stem_conv, stem_bn = model.layers[0].module, model.layers[1].module
    block = model.layers[3]
    assert isinstance(block, Residual) and block.connect == connect
    c1, b1, c2, b2 = (block.body[i].module for i in (0, 1, 3, 4))
    s = if_neuron(folded(stem_bn, folded(stem_conv, x)))
    a = if_neuron(folded(b2, folded(c2, if_neuron(folded(b1, folded(c1, s))))))
    joined = SEW[connect](a, s)
    fc = model.layers[5].module
    expected = if_neuron(folded(fc, joined.flatten(2)))
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-12)
    if connect != "add":
        assert set(joined.unique().tolist()) <= {0.0, 1.0}


def test_spiking_resnet_block_adds_before_the_neuron() -> None:
    """Hu et al.'s block: out = SN(BN(conv(SN(BN(conv(x))))) + shortcut(x)), shortcut a strided
    1x1 conv + BN; float64 against the reference."""
    body = [conv(4, stride=2), BN, NEURON, conv(4), BN]
    shortcut = [
        {"type": "conv2d", "out_channels": 4, "kernel_size": 1, "stride": 2, "bias": False},
        BN,
    ]
    model = net([{"type": "residual", "body": body, "shortcut": shortcut}, NEURON, *HEAD])
    x = torch.rand(3, 2, 2, 6, 6, dtype=torch.float64) * 2
    block = model.layers[0]
    c1, b1, c2, b2 = (block.body[i].module for i in (0, 1, 3, 4))
    sc, sb = (block.shortcut[i].module for i in (0, 1))
    a = folded(b2, folded(c2, if_neuron(folded(b1, folded(c1, x)))))
    h = if_neuron(a + folded(sb, folded(sc, x)))
    expected = if_neuron(folded(model.layers[3].module, h.flatten(2)))
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-12)


def test_repeat_builds_copies_with_their_own_parameters() -> None:
    model = net([{"type": "repeat", "times": 3, "layers": [conv(2), BN, NEURON]}, *HEAD])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and len({id(c.weight) for c in convs}) == 3
    assert not torch.equal(convs[0].weight, convs[1].weight)
    assert [name for name, _ in model.neurons()] == ["L0.0.2", "L0.1.2", "L0.2.2", "L3"]


@pytest.mark.parametrize("projection", ["linear", "conv2d"])
def test_recurrent_leaky_equals_snntorch_rleaky(projection: str) -> None:
    """``{type: recurrent, layers: [linear | conv2d]}`` with ``neuron=leaky`` is snnTorch 1.0's
    RLeaky (all-to-all, reset by subtraction from the previous membrane), in float64."""
    snn = pytest.importorskip("snntorch")
    shape = (6,) if projection == "linear" else (2, 5, 5)
    entry = {"type": projection, **({"kernel_size": 3} if projection == "conv2d" else {})}
    leaky = {
        "name": "leaky",
        "beta": 0.8,
        "learn_beta": False,
        "v_threshold": 1.0,
        "backend": "torch",
    }
    torch.manual_seed(0)
    model = build_model(
        {
            "layers": [
                {"type": "recurrent", "layers": [entry]},
                {"type": "flatten"},
                {"type": "linear", "out_features": 3},
            ]
        },
        {"neuron": leaky, "surrogate": ATAN},
        shape,
        3,
    ).double()
    rec = model.layers[0]
    assert isinstance(rec, Recurrent)
    kw = (
        {"linear_features": 6}
        if projection == "linear"
        else {"conv2d_channels": 2, "kernel_size": 3}
    )
    step = lambda h: (h > 0).to(h.dtype)  # noqa: E731  (snnTorch's own spikes are float32)
    ref = snn.RLeaky(beta=0.8, threshold=1.0, all_to_all=True, spike_grad=step, **kw).double()
    ref.recurrent.load_state_dict(rec.projection[0].module.state_dict())
    x = torch.rand(6, 2, *shape, dtype=torch.float64) * 1.5
    ref.reset_mem()
    expected = torch.stack([ref(x_t)[0] for x_t in x])
    spikes = {}
    rec.register_forward_hook(lambda m, a, out: spikes.setdefault("s", out))
    model(x)
    torch.testing.assert_close(spikes["s"], expected, rtol=0, atol=0)
    assert 0 < expected.mean() < 1  # spikes and silence both happen


def test_recurrent_gradients_flow_through_the_projection() -> None:
    model = net([{"type": "flatten"}, {"type": "linear", "out_features": 5},
                 {"type": "recurrent", "layers": [{"type": "linear"}]},
                 {"type": "linear", "out_features": 3}, NEURON], shape=(4,))  # fmt: skip
    model.train()
    model(torch.rand(5, 2, 4, dtype=torch.float64) * 3).sum().backward()
    weight = model.layers[2].projection[0].module.weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_step_by_step_equals_multi_step_on_nested_blocks() -> None:
    layers = [conv(2), BN, NEURON,
              {"type": "residual", "body": [conv(2), BN, NEURON], "connect": "add"},
              {"type": "flatten"}, {"type": "recurrent", "layers": [{"type": "linear"}]},
              {"type": "linear", "out_features": 3}, NEURON]  # fmt: skip
    x = torch.rand(4, 2, 2, 6, 6, dtype=torch.float64) * 2
    multi = net(layers)(x)
    stepped = net(layers, step_mode="s")
    assert stepped.step_by_step
    torch.testing.assert_close(stepped(x), multi, rtol=0, atol=0)


def test_static_head_stops_at_the_first_neuron_inside_a_leading_block() -> None:
    """A zoo network's stem is a leading ``sequential``: its conv still runs once for direct
    input (counted by a hook), with outputs equal to running it every step."""
    layers = [conv(2), BN, {"type": "sequential", "layers": [conv(2), NEURON]}, *HEAD]
    model = net(layers)
    assert model.static_head == 3  # conv, BN and the block's own conv
    calls = []
    model.layers[2][0].register_forward_hook(lambda m, a, out: calls.append(a[0].shape[0]))
    x = torch.rand(1, 2, 2, 6, 6, dtype=torch.float64)
    out = model(x.expand(4, *x.shape[1:]))  # direct input: the head runs once
    assert calls == [1]  # one call, on one step [1, N, ...]
    torch.testing.assert_close(out, model(x.repeat(4, 1, 1, 1, 1)), rtol=0, atol=0)


def test_errors_name_the_path_of_the_failing_entry() -> None:
    bad_linear = {"type": "linear", "in_features": 7, "out_features": 3}
    residual = {"type": "residual", "body": [conv(2), bad_linear]}
    with pytest.raises(ModelBuildError, match=r"^model\.layers\[1\]\.body\[1\] \(linear\) cannot"):
        net([conv(2), residual, *HEAD])
    with pytest.raises(
        ModelBuildError, match=r"model\.layers\[0\]\.layers\[0\]\.body\[0\] \(conv3d\)"
    ):
        net(
            [
                {
                    "type": "repeat",
                    "times": 2,
                    "layers": [{"type": "residual", "body": [{"type": "conv3d"}]}],
                }
            ]
        )
    with pytest.raises(
        ModelBuildError, match=r"model\.layers\[0\] \(residual\): body gives .* strided"
    ):
        net([{"type": "residual", "body": [conv(2, stride=2)]}, *HEAD])
    with pytest.raises(ModelBuildError, match=r"connect=iand acts on spikes.*connect=add"):
        net([{"type": "residual", "body": [conv(2)], "connect": "iand"}, *HEAD])
    with pytest.raises(ModelBuildError, match=r"connect 'or'; known: add, and, concat, iand"):
        net([{"type": "residual", "body": [conv(2)], "connect": "or"}, *HEAD])
    with pytest.raises(ModelBuildError, match=r"times must be a non-negative integer, got -1"):
        net([{"type": "repeat", "times": -1, "layers": [conv(2)]}, *HEAD])
    with pytest.raises(ModelBuildError, match=r"projection maps .* must keep the shape"):
        net(
            [
                {
                    "type": "recurrent",
                    "layers": [{"type": "conv2d", "out_channels": 3, "kernel_size": 1}],
                },
                *HEAD,
            ]
        )
    with pytest.raises(ModelBuildError, match=r"model\.layers\[0\] \(sequential\).*unknown option"):
        net([{"type": "sequential", "layer": []}, *HEAD])


MY_LAYERS = '''
    import torch
    from torch import nn
    from snnrun.net import make_neuron

    class Dense(nn.Module):
        """A user layer: linear then a neuron of the run's group, [T, N, F] -> [T, N, width]."""
        def __init__(self, width, in_shape, v_threshold=1.0):
            super().__init__()
            self.fc = nn.Linear(in_shape[-1], width)
            self.spike = make_neuron(v_threshold=v_threshold)

        def forward(self, x):
            return self.spike(self.fc(x))
'''


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch) -> Iterator[str]:
    yield from make_user_package(tmp_path, monkeypatch, "my_blocks_pkg", MY_LAYERS)


def test_a_user_module_gets_its_shape_and_the_runs_neurons(user_package: str) -> None:
    dense = {"type": "module", "_target_": f"{user_package}.Dense", "width": 5, "v_threshold": 0.5}
    layers = [{"type": "flatten"}, dense, {"type": "linear", "out_features": 3}, NEURON]
    model = net(layers, shape=(2, 3), tau=3.0, name="lif")
    dense = model.layers[1]
    assert dense.fc.in_features == 6 and dense.spike.tau == 3.0
    assert dense.spike.dynamics.v_threshold == 0.5
    assert [name for name, _ in model.neurons()] == ["L1.spike", "L3"]
    assert model.static_head == 1  # a user module may keep state: it runs every step
    assert model(torch.rand(3, 2, 2, 3, dtype=torch.float64)).shape == (3, 2, 3)


def test_user_module_errors_are_one_line(user_package: str) -> None:
    with pytest.raises(
        ModelBuildError,
        match=r"model\.layers\[0\] \(module\): cannot import nope\.Missing.*PYTHONPATH",
    ):
        net([{"type": "module", "_target_": "nope.Missing"}], shape=(3,))
    with pytest.raises(ModelBuildError, match=r"give the class as _target_"):
        net([{"type": "module"}], shape=(3,))
    with pytest.raises(ModelBuildError, match=r"Dense\(.*\) failed"):
        net([{"type": "module", "_target_": f"{user_package}.Dense", "depth": 2}], shape=(3,))
    with pytest.raises(ModelBuildError, match=r"made a dict, not an nn.Module"):
        net([{"type": "module", "_target_": "builtins.dict"}], shape=(3,))
    with pytest.raises(SnnrunError, match=r"make_neuron\(\) is called while snnrun builds"):
        make_neuron()


def test_synops_count_spike_counts_after_a_residual_add_as_accumulates() -> None:
    """A residual add of spikes gives counts of 0, 1 or 2: the linear after it gets them by
    construction and costs count x fan-out ACs, no MACs. Here the body's IF neuron repeats its
    input spikes, so every stem spike arrives twice."""
    residual = {"type": "residual", "body": [NEURON]}
    model = net([NEURON, residual, {"type": "linear", "out_features": 3}, NEURON], shape=(8,))
    fc = model.layers[2].module
    assert fc in spike_fed(model)
    stem = {}
    model.layers[0].register_forward_hook(lambda m, a, out: stem.setdefault("s", out))
    counter, rates = SynapticOps(model), FiringRates(model)
    x = torch.rand(3, 2, 8, dtype=torch.float64) * 2
    with torch.no_grad(), monitoring([counter, rates]):
        model(x)
    summary = counter.summary()
    assert stem["s"].sum() > 0
    assert summary["synops/ac"] == 2 * stem["s"].sum().item() * 3 / 2  # per sample (N=2)
    assert summary["synops/mac"] == 0
    assert set(rates.summary()) == {"firing_rate/L0", "firing_rate/L1.body.0", "firing_rate/L3"}


@pytest.mark.parametrize("kind", ["lif", "leaky"])
def test_every_backend_agrees_on_a_nested_network(kind: str) -> None:
    """The reference loop (autograd), the handwritten torch backward and the Triton kernels
    (interpreted on the CPU) give the same spikes and gradients through a SEW block, a spiking
    ResNet block and a recurrent neuron (whose neuron runs one step per call)."""
    layers = [conv(2), BN, NEURON,
              {"type": "residual", "body": [conv(2), BN, NEURON], "connect": "iand"},
              {"type": "residual", "body": [conv(2), BN]}, NEURON, {"type": "flatten"},
              {"type": "recurrent", "layers": [{"type": "linear"}]},
              {"type": "linear", "out_features": 3}, NEURON]  # fmt: skip
    x = torch.rand(4, 2, 2, 5, 5) * 3
    results = {}
    for backend in ("autograd", "torch", "triton"):
        torch.manual_seed(0)
        neuron = {"name": kind, "backend": backend, "v_threshold": 0.25}
        model = build_model({"layers": layers}, {"neuron": neuron, "surrogate": ATAN}, (2, 5, 5), 3)
        out = model(x)
        out.sum().backward()
        results[backend] = (out.detach(), [p.grad.clone() for p in model.parameters()])
    ref_out, ref_grads = results["autograd"]
    assert 0 < ref_out.mean() < 1 and all(g.abs().sum() > 0 for g in ref_grads[:3])
    for backend in ("torch", "triton"):
        out, grads = results[backend]
        torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
        for g, ref in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-6)


README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_network_example_builds_and_runs(tmp_path: Path, monkeypatch) -> None:
    """The README's one-example-per-construct network is a real one (with ``my_pkg.MyLayer``
    written here as the user would)."""
    import yaml

    text = README.read_text().split("### Writing a network", 1)[1]
    example = yaml.safe_load(text.split("```yaml", 1)[1].split("```", 1)[0])
    package = tmp_path / "my_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(MY_LAYERS).replace("Dense", "MyLayer"))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model(example, groups(name="lif", tau=2.0), (3, 8, 8), 10)
    kinds = {e.type for _, _, e in model.entries()}
    assert {
        "sequential",
        "repeat",
        "residual",
        "recurrent",
        "module",
        "spiking_self_attention",
    } <= kinds
    assert model(torch.rand(2, 2, 3, 8, 8)).shape == (2, 2, 10)
    sys.modules.pop("my_pkg", None)


def test_spike_connects_accept_a_body_that_ends_in_spikes_at_any_depth() -> None:
    """A body ending with a recurrent entry or a nested block that ends with a neuron gives
    spikes too; one ending with a conv does not."""
    nested = {"type": "sequential", "layers": [conv(2), NEURON]}
    net([conv(2), BN, NEURON, {"type": "residual", "body": [nested], "connect": "and"}, *HEAD])
    with pytest.raises(ModelBuildError, match="connect=and acts on spikes"):
        net([conv(2), BN, NEURON, {"type": "residual", "body": [{"type": "sequential",
             "layers": [NEURON, conv(2)]}], "connect": "and"}, *HEAD])  # fmt: skip
