"""Models build from their configs, print readably, and train a step on their input shape."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from snnrun.net.layers import LAYERS, Context
from snnrun.net.model import ModelBuildError, SpikingNetwork, build_model
from snnrun.neuron.neurons import LeakyNeuron, LIFNeuron, PLIFNeuron, SpikingNeuron

from conftest import compose

# model -> (per-sample input shape, classes, overrides keeping the test small)
MODELS = {
    "csnn": ((1, 28, 28), 10, ["model.channels=8"]),
    "fc": ((1, 28, 28), 10, []),
    "snntorch_csnn": ((1, 28, 28), 10, []),
    "plif_net": ((2, 128, 128), 11, ["model.channels=8", "neuron=plif"]),
}


def build(name: str, overrides: list[str] = ()) -> SpikingNetwork:
    shape, classes, small = MODELS[name]
    conf = OmegaConf.to_container(compose([f"model={name}", *small, *overrides]), resolve=True)
    neuron_groups = {"neuron": conf["neuron"], "surrogate": conf["surrogate"]}
    return build_model(conf["model"], neuron_groups, shape, classes)


@pytest.mark.parametrize("name", MODELS)
def test_model_trains_one_step(name: str) -> None:
    torch.manual_seed(0)
    shape, classes, _ = MODELS[name]
    model = build(name)
    text = repr(model)
    assert "backend=torch" in text and "surrogate=" in text
    x = torch.rand(3, 4, *shape)  # [T, N, ...]
    out = model(x)
    assert out.shape == (3, 4, classes)
    out.float().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_csnn_matches_the_tutorial_structure() -> None:
    """At the tutorial's 128 channels (the recipes' width; the plain default is 16)."""
    conf = OmegaConf.to_container(compose(["model=csnn", "model.channels=128"]), resolve=True)
    model = build_model(
        conf["model"], {"neuron": conf["neuron"], "surrogate": conf["surrogate"]}, (1, 28, 28), 10
    )
    linears = [
        m.module for m in model.layers if isinstance(getattr(m, "module", None), torch.nn.Linear)
    ]
    assert [(m.in_features, m.out_features) for m in linears] == [(6272, 2048), (2048, 10)]
    assert all(m.bias is None for m in linears)
    assert [e.type for _, _, e in model.entries()].count("neuron") == 4


def test_plif_net_structure_at_full_width() -> None:
    conf = OmegaConf.to_container(compose(["experiment=dvsgesture_plif"]), resolve=True)
    model = build_model(
        conf["model"], {"neuron": conf["neuron"], "surrogate": conf["surrogate"]}, (2, 128, 128), 11
    )
    neurons = [m for m in model.layers if isinstance(m, LIFNeuron | PLIFNeuron)]
    assert [type(n).__name__ for n in neurons] == ["PLIFNeuron"] * 5 + ["LIFNeuron"] * 2
    assert all(n.dynamics.detach_reset for n in neurons)
    fcs = [
        m.module for m in model.layers if isinstance(getattr(m, "module", None), torch.nn.Linear)
    ]
    assert [(m.in_features, m.out_features) for m in fcs] == [(2048, 512), (512, 110)]


def test_snntorch_csnn_pins_leaky_neurons() -> None:
    model = build("snntorch_csnn")
    neurons = [m for m in model.layers if isinstance(m, LeakyNeuron)]
    assert len(neurons) == 3
    assert all(n.dynamics.surrogate.name == "fast_sigmoid" for n in neurons)
    assert all(n.beta.item() == 0.5 for n in neurons)


def test_static_input_runs_the_head_once_with_same_results() -> None:
    """Direct encoding (stride-0 over T): same outputs and gradients as computing T times
    (in float64, so that summation order cannot hide a real difference)."""
    torch.manual_seed(0)
    model = build("csnn", ["neuron=if"]).double()
    x = torch.rand(5, 1, 28, 28, dtype=torch.float64)
    outs, grads = [], []
    for x_seq in (x.unsqueeze(0).expand(4, *x.shape), x.unsqueeze(0).repeat(4, 1, 1, 1, 1)):
        model.zero_grad()
        out = model(x_seq)
        (out * torch.arange(10.0, dtype=torch.float64)).sum().backward()
        outs.append(out)
        grads.append([p.grad.clone() for p in model.parameters()])
    assert torch.equal(outs[0], outs[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_static_head_really_runs_once(monkeypatch) -> None:
    model = build("csnn")
    conv = model.layers[0].module
    seen = []
    conv.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    x = torch.rand(2, 1, 28, 28)
    model(x.unsqueeze(0).expand(4, *x.shape))
    model(torch.rand(4, 2, 1, 28, 28))
    assert seen == [2, 8]  # [1*N] for the static input, [T*N] otherwise


def test_unknown_layer_lists_registered_names() -> None:
    with pytest.raises(ModelBuildError, match="conv2d, dropout, flatten"):
        build_model({"layers": [{"type": "conv9d"}]}, {}, (1, 28, 28), 10)
    assert {
        "conv2d",
        "batchnorm2d",
        "maxpool2d",
        "avgpool2d",
        "adaptive_avgpool2d",
        "linear",
        "flatten",
        "dropout",
        "voting",
        "neuron",
    } <= set(LAYERS.names())


def test_dropout_mask_is_shared_over_time() -> None:
    layer = LAYERS.get("dropout")({"p": 0.5}, (20,), Context({}))
    layer.train()
    y = layer(torch.ones(6, 3, 20))
    assert torch.equal(y, y[:1].expand_as(y)) and (y == 0).any() and (y == 2).any()
    layer.eval()
    assert torch.equal(layer(torch.ones(6, 3, 20)), torch.ones(6, 3, 20))


def test_voting_averages_groups() -> None:
    layer = LAYERS.get("voting")({"k": 10}, (110,), Context({}))
    x = torch.arange(110.0).expand(2, 3, 110)
    assert torch.equal(layer(x)[0, 0], torch.arange(11.0) * 10 + 4.5)


@pytest.mark.parametrize("name", MODELS)
def test_model_with_triton_neurons_matches_torch_backend(name: str) -> None:
    """Every zoo model: the Triton backend (interpreted on CPU) gives the torch backend's
    spikes and parameter gradients."""
    shape, _, _ = MODELS[name]
    small = ["model.channels=2"] if name == "plif_net" else []  # the interpreter is slow
    x = torch.rand(2, 1 if small else 2, *shape)
    results = []
    for backend in ("torch", "triton"):
        torch.manual_seed(0)
        model = build(name, [f"neuron.backend={backend}", *small])
        out = model(x)
        (out * torch.linspace(0.5, 1.5, out.shape[-1])).sum().backward()
        results.append((out, [p.grad for p in model.parameters()]))
    (out_torch, grads_torch), (out_triton, grads_triton) = results
    assert all(n.backend == "triton" for n in model.modules() if isinstance(n, SpikingNeuron))
    assert torch.equal(out_torch, out_triton)
    for a, b in zip(grads_torch, grads_triton):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "train"), [("fc", True), ("snntorch_csnn", True), ("plif_net", False), ("csnn", False)]
)
def test_network_with_single_step_neurons_matches_multi_step(name: str, train: bool) -> None:
    """step_mode='s' neurons: the network feeds one step at a time with the same results
    (float64; BatchNorm compared in eval mode, since its batch statistics are per call)."""
    shape, _, _ = MODELS[name]
    x = torch.rand(4, 2, *shape, dtype=torch.float64) * 2
    results = []
    for step_mode in ("m", "s"):
        torch.manual_seed(0)
        model = build(name, [f"neuron.step_mode={step_mode}"]).double().train(train)
        assert model.step_by_step == (step_mode == "s")
        torch.manual_seed(1)  # the same dropout masks
        out = model(x)
        (out * torch.linspace(0.5, 1.5, out.shape[-1], dtype=torch.float64)).sum().backward()
        results.append((out, [p.grad for p in model.parameters()]))
    (out_m, grads_m), (out_s, grads_s) = results
    assert torch.equal(out_m, out_s)
    for a, b in zip(grads_m, grads_s):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_dropout_mask_is_kept_across_single_steps() -> None:
    """One mask per sample for the whole sequence, also when fed one step at a time."""
    layers = [{"type": "flatten"}, {"type": "dropout", "p": 0.5},
              {"type": "linear", "out_features": 10}, {"type": "neuron"}]  # fmt: skip
    x = torch.rand(3, 2, 1, 8, 8) * 4
    outs = []
    for step_mode in ("s", "m"):
        neuron_groups = {"neuron": {"name": "if", "step_mode": step_mode},
                    "surrogate": {"name": "atan"}}  # fmt: skip
        torch.manual_seed(0)
        model = build_model({"layers": layers}, neuron_groups, (1, 8, 8), 10).train()
        torch.manual_seed(5)
        outs.append(model(x))
        mask = model.layers[1].mask
        assert mask.shape == (2, 64) and (mask == 0).any()
    assert torch.equal(*outs) and outs[0].sum() > 0
