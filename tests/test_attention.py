"""Spiking self-attention (Spikformer's SSA) and the ``spikformer`` model: the equations written
out by hand, SpikingJelly 2.0's ``SpikingSelfAttention`` and ``Spikformer`` (weights copied),
parameter counts, errors, step-by-step networks and a real run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from snnrun.net.attention import SpikeDrivenSelfAttention, SpikingSelfAttention
from snnrun.net.layers import LAYERS, Context
from snnrun.net.model import ModelBuildError, SpikingNetwork, build_model
from snnrun.neuron.neurons import SpikingNeuron, reset_states

from conftest import TINY, compose, read_metrics, train_in_process

NAMES = ("q", "k", "v", "proj")


def groups(*overrides: str) -> dict:
    """The run's ``neuron`` and ``surrogate`` groups, composed as a run would."""
    conf = OmegaConf.to_container(compose(list(overrides)), resolve=True)
    return {"neuron": conf["neuron"], "surrogate": conf["surrogate"]}


def spikformer(overrides: list[str], in_shape=(3, 32, 32), classes=10) -> SpikingNetwork:
    conf = OmegaConf.to_container(compose(["model=spikformer", *overrides]), resolve=True)
    neuron_groups = {"neuron": conf["neuron"], "surrogate": conf["surrogate"]}
    return build_model(conf["model"], neuron_groups, in_shape, classes)


def ssa(options: dict, in_shape=(8, 16), *overrides: str) -> SpikingSelfAttention:
    return LAYERS.get("spiking_self_attention")(options, in_shape, Context(groups(*overrides)))


def randomize(model: nn.Module, seed: int = 0) -> None:
    """Weights and BatchNorm statistics that make every neuron fire some of the time (the
    models' own initialisations leave most of them silent)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 2 / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.3 + 1.0)


def spikes(*shape: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < 0.5).double()


def firing_rates(model: nn.Module, run) -> dict[str, float]:
    """Each neuron's firing rate over ``run()`` (from fresh states; reset after)."""
    reset_states(model)
    rates: dict[str, float] = {}
    hooks = [
        m.register_forward_hook(lambda m, a, out, n=name: rates.__setitem__(n, out.mean().item()))
        for name, m in model.named_modules()
        if isinstance(m, SpikingNeuron)
    ]
    run()
    for h in hooks:
        h.remove()
    reset_states(model)
    return rates


# --- the equations written out ------------------------------------------------------------
def reference_neuron(x: torch.Tensor, kind: str, v_threshold: float) -> torch.Tensor:
    """IF ``H = V + X`` or LIF (tau 2) ``H = V + (X - V) / 2``; ``S = H >= V_th``; hard reset
    to 0. ``x`` ``[T, ...]``."""
    v, out = torch.zeros_like(x[0]), []
    for x_t in x:
        h = v + x_t if kind == "if" else v + (x_t - v) / 2.0
        s = (h >= v_threshold).to(x.dtype)
        v = h * (1.0 - s)
        out.append(s)
    return torch.stack(out)


def reference_ssa(layer: SpikingSelfAttention, x: torch.Tensor, kind: str) -> torch.Tensor:
    """SSA from the paper's tokens-first form, ``SN_a(s Q K^T V)`` per head, with the layer's
    weights (eval-mode BatchNorm)."""

    def branch(name: str, x: torch.Tensor, v_threshold: float = 1.0) -> torch.Tensor:
        conv, bn = getattr(layer, f"{name}_conv"), getattr(layer, f"{name}_bn")
        y = torch.einsum("oc,tncl->tnol", conv.weight[..., 0], x)
        y = y + (conv.bias[:, None] if conv.bias is not None else 0.0)
        std = (bn.running_var + bn.eps).sqrt()
        y = (y - bn.running_mean[:, None]) / std[:, None] * bn.weight[:, None] + bn.bias[:, None]
        return reference_neuron(y, kind, v_threshold)

    T, N, C, L = x.shape
    h, d = layer.heads, C // layer.heads
    q, k, v = (branch(n, x).reshape(T, N, h, d, L).transpose(-2, -1) for n in "qkv")  # [.., L, d]
    attn = (q @ k.transpose(-2, -1)) @ v * 0.125  # [T, N, h, L, d]
    attn = reference_neuron(attn.transpose(-2, -1).reshape(T, N, C, L), kind, 0.5)
    return branch("proj", attn)


@pytest.mark.parametrize("kind", ["if", "lif"])
def test_ssa_matches_the_equations(kind: str) -> None:
    layer = ssa({"heads": 2, "qkv_bias": True, "proj_bias": True}, (16, 32), f"neuron={kind}")
    randomize(layer)
    layer.double().eval()
    x = spikes(2, 3, 16, 32)
    with torch.no_grad():
        rates = firing_rates(layer, lambda: layer(x))
        out = layer(x)
        expected = reference_ssa(layer, x, kind)
    assert set(rates) == {"q_neuron", "k_neuron", "v_neuron", "attn_neuron", "proj_neuron"}
    assert all(0.0 < r < 1.0 for r in rates.values()), rates  # every neuron fires, not always
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_ssa_options_reach_the_neurons_and_scale() -> None:
    layer = ssa(
        {"heads": 4, "scale": 0.25, "attn_v_threshold": 0.75, "neuron": {"name": "if"}},
        (8, 16),
        "neuron=lif",
        "neuron.step_mode=s",
    )
    neurons = {n: m for n, m in layer.named_modules() if n.endswith("neuron")}
    assert [type(m).__name__ for m in neurons.values()] == ["IFNeuron"] * 5
    assert {m.step_mode for m in neurons.values()} == {"m"}  # forced: the layer reshapes
    thresholds = {n: m.dynamics.v_threshold for n, m in neurons.items()}
    assert thresholds == {"q_neuron": 1.0, "k_neuron": 1.0, "v_neuron": 1.0,
                          "attn_neuron": 0.75, "proj_neuron": 1.0}  # fmt: skip
    assert layer.scale == 0.25 and layer.heads == 4
    assert all(getattr(layer, f"{n}_conv").bias is None for n in NAMES)


def test_ssa_scale_and_attention_threshold_act_together() -> None:
    """IF neurons: doubling the scale and the attention threshold gives the same spikes;
    doubling the scale alone does not."""
    outs = {}
    for scale, threshold in [(0.125, 0.5), (0.25, 1.0), (0.25, 0.5)]:
        layer = ssa({"heads": 2, "scale": scale, "attn_v_threshold": threshold}, (16, 32))
        randomize(layer)
        layer.double().eval()
        with torch.no_grad():
            outs[scale, threshold] = layer(spikes(2, 3, 16, 32))
    assert torch.equal(outs[0.125, 0.5], outs[0.25, 1.0])
    assert not torch.equal(outs[0.125, 0.5], outs[0.25, 0.5])


# --- SpikingJelly 2.0 ---------------------------------------------------------------------
def copy_attention(theirs: nn.Module, ours: SpikingSelfAttention) -> None:
    """SpikingJelly's fused ``qkv`` conv + BN (``[3C, ...]``: q, k, v in that order) and its
    projection into the layer's ``q/k/v/proj`` convs and BNs."""
    fused = {"conv": theirs.qkv_conv_bn[0], "bn": theirs.qkv_conv_bn[1]}
    proj = {"conv": theirs.proj_conv_bn[0], "bn": theirs.proj_conv_bn[1]}
    for part in ("conv", "bn"):
        chunks = {k: t.chunk(3) for k, t in fused[part].state_dict().items() if t.dim()}
        for i, name in enumerate("qkv"):
            target = getattr(ours, f"{name}_{part}")
            target.load_state_dict({**target.state_dict(), **{k: c[i] for k, c in chunks.items()}})
        getattr(ours, f"proj_{part}").load_state_dict(proj[part].state_dict())


def copy_spikformer(theirs: nn.Module, ours: nn.Module) -> None:
    """SpikingJelly's weights into snnrun's network: attention layers pairwise, everything else
    by order (each pair's shapes checked)."""
    from spikingjelly.activation_based.layer.attention import SpikingSelfAttention as SJAttention

    sj_attn = [(n, m) for n, m in theirs.named_modules() if isinstance(m, SJAttention)]
    our_attn = [(n, m) for n, m in ours.named_modules() if isinstance(m, SpikingSelfAttention)]
    assert len(sj_attn) == len(our_attn)
    for (_, a), (_, b) in zip(sj_attn, our_attn, strict=True):
        copy_attention(a, b)

    def rest(model: nn.Module, attn: list) -> list[tuple[str, torch.Tensor]]:
        prefixes = tuple(f"{n}." for n, _ in attn)
        return [(k, t) for k, t in model.state_dict().items() if not k.startswith(prefixes)]

    pairs = list(zip(rest(theirs, sj_attn), rest(ours, our_attn), strict=True))
    assert all(t.shape == o.shape for (_, t), (_, o) in pairs), [
        (k, tuple(t.shape), j, tuple(o.shape)) for (k, t), (j, o) in pairs if t.shape != o.shape
    ]
    ours.load_state_dict({**ours.state_dict(), **{j: t for (_, t), (j, _) in pairs}})


def test_ssa_matches_spikingjelly() -> None:
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.layer.attention import SpikingSelfAttention as SJAttention

    torch.manual_seed(0)
    theirs = SJAttention(dim=16, num_heads=2)  # LIF tau 2, detach_reset; attention at 0.5
    randomize(theirs, seed=3)
    ours = ssa({"heads": 2}, (16, 32), "neuron=lif", "neuron.detach_reset=true")
    copy_attention(theirs, ours)
    theirs.double().eval()
    ours.double().eval()
    x = spikes(2, 3, 16, 32, seed=4)
    with torch.no_grad():
        functional.reset_net(theirs)
        expected = theirs(x)
        rates = firing_rates(ours, lambda: ours(x))
        out = ours(x)
    assert all(0.0 < r < 1.0 for r in rates.values()), rates
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_spikformer_has_spikingjellys_parameters() -> None:
    """The full CIFAR-10 model: the same parameter count as ``spikformer_cifar10`` (9,310,906)
    and the same tensors in the same order (built, not run)."""
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based.model.spikformer import spikformer_cifar10

    theirs = spikformer_cifar10(num_classes=10)
    ours = spikformer([])
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == 9_310_906
    copy_spikformer(theirs, ours)
    labels = [label for label, _ in ours.neurons()]
    assert len(labels) == 5 + 4 * (5 + 2)  # stem and RPE, then per block SSA's 5 and MLP's 2
    assert "L16.3.0.body.0.attn_neuron" in labels


def test_spikformer_output_matches_spikingjelly() -> None:
    """A reduced Spikformer (embed 48, 1 block, 4 heads) on two 32x32 images, T=2, float64."""
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.model.spikformer import Spikformer

    torch.manual_seed(0)
    theirs = Spikformer(T=2, img_size_h=32, img_size_w=32, patch_size=4, num_classes=10,
                        embed_dims=48, num_heads=4, mlp_ratio=4.0, depths=1)  # fmt: skip
    randomize(theirs, seed=5)
    small = ["model.embed_dim=48", "model.stem_width=6", "model.depths=1", "model.heads=4"]
    ours = spikformer([*small, "neuron=lif", "neuron.detach_reset=true"])
    copy_spikformer(theirs, ours)
    theirs.double().eval()
    ours.double().eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    with torch.no_grad():
        functional.reset_net(theirs)
        expected = theirs(x)  # [T, N, 10]
        rates = firing_rates(ours, lambda: ours(x.expand(2, *x.shape)))
        out = ours(x.expand(2, *x.shape))
    assert len(rates) == 5 + 7 and all(0.0 < r < 1.0 for r in rates.values()), rates
    assert expected.shape == out.shape == (2, 2, 10)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


# --- SDSA ------------------------------------------------------------------------------------
def sdsa(options: dict, in_shape=(8, 4, 4), *overrides: str) -> SpikeDrivenSelfAttention:
    build = LAYERS.get("spike_driven_self_attention")
    return build(options, in_shape, Context(groups("neuron=lif", *overrides)))


def test_sdsa_matches_spikingjellys_module_behind_its_shortcut_neuron() -> None:
    """``x + SDSA(neuron(x))`` equals SpikingJelly 2.0's SpikeDrivenSelfAttention (LIF, the
    attention neuron at 0.5) on copied weights, float64, spikes at every neuron."""
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.layer.attention import SpikeDrivenSelfAttention as Theirs

    body = [{"type": "neuron"}, {"type": "spike_driven_self_attention", "heads": 4}]
    ours = LAYERS.get("residual")({"body": body}, (8, 4, 4), Context(groups("neuron=lif")))
    theirs = Theirs(8, 4)
    randomize(ours, seed=3)
    theirs.load_state_dict(dict(zip(theirs.state_dict(), ours.state_dict().values())))
    ours.double().eval(), theirs.double().eval()
    x = torch.rand(3, 2, 8, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    functional.reset_net(theirs)
    with torch.no_grad():
        expected, out = theirs(x * 3), ours(x * 3)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    layer = ours.body[1]
    rates = firing_rates(layer, lambda: layer(spikes(3, 2, 8, 4, 4)))
    assert set(rates) == {"q_neuron", "k_neuron", "v_neuron", "attn_neuron"}
    assert all(0.0 < r < 1.0 for r in rates.values()), rates


def test_sdsa_on_tokens_and_with_a_firing_output() -> None:
    """Tokens ``[C, L]`` (conv1d): the per-channel sum over tokens; ``fire: true`` ends in a
    neuron (spikes out); the attention threshold reaches its neuron."""
    layer = sdsa({"heads": 2, "fire": True, "attn_v_threshold": 0.25}, (8, 6)).double().eval()
    assert isinstance(layer.q_conv, nn.Conv1d) and layer.proj_neuron is not None
    assert layer.attn_neuron.dynamics.v_threshold == 0.25
    with torch.no_grad():
        out = layer(spikes(2, 3, 8, 6))
    assert out.shape == (2, 3, 8, 6) and set(out.unique().tolist()) <= {0.0, 1.0}
    maps = sdsa({}).double().eval()
    with torch.no_grad():
        real = maps(spikes(2, 3, 8, 4, 4))
    assert maps.proj_neuron is None and not set(real.unique().tolist()) <= {0.0, 1.0}


# --- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "in_shape", "needles"),
    [
        ({"heads": 3}, (8, 5), ["heads=3", "dividing the 8 channels", "1, 2, 4, 8"]),
        ({"heads": 0}, (8, 5), ["heads=0"]),
        ({"heads": 2}, (8, 4, 4), ["tokens [C, L], got [8, 4, 4]", "flatten, start_dim: 2"]),
        ({"heads": 2, "neuron": 3}, (8, 5), ["neuron must be a mapping"]),
        ({"heads": 2, "head": 2}, (8, 5), ["unknown option(s) head"]),
        ({"type": "spike_driven_self_attention", "heads": 3}, (8, 4, 4), ["heads=3"]),
        ({"type": "spike_driven_self_attention"}, (8,), ["maps [C, H, W] or tokens [C, L]"]),
        ({"type": "spike_driven_self_attention", "scale": 1}, (8, 5), ["unknown option(s) scale"]),
    ],
)
def test_bad_ssa_entries_are_one_line(entry: dict, in_shape: tuple, needles: list[str]) -> None:
    layer = {"type": "spiking_self_attention", **entry}
    with pytest.raises(ModelBuildError) as e:
        build_model({"layers": [layer]}, groups(), in_shape, 10)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"model.layers[0] ({layer['type']})")
    for needle in needles:
        assert needle in message, message


# --- step by step ---------------------------------------------------------------------------
def token_net(*overrides: str) -> SpikingNetwork:
    layers = [
        {"type": "conv1d", "out_channels": 8, "kernel_size": 1},
        {"type": "batchnorm1d"},
        {"type": "neuron"},
        {"type": "residual", "body": [{"type": "spiking_self_attention", "heads": 2}]},
        {"type": "mean", "dim": -1},
        {"type": "linear", "out_features": 3},
    ]
    return build_model({"layers": layers}, groups(*overrides), (4, 16), 3)


@pytest.mark.parametrize("kind", ["if", "lif"])
def test_ssa_in_a_step_by_step_network_matches_multi_step(kind: str) -> None:
    multi = token_net(f"neuron={kind}")
    single = token_net(f"neuron={kind}", "neuron.step_mode=s")
    randomize(multi, seed=7)
    single.load_state_dict(multi.state_dict())
    assert single.step_by_step and not multi.step_by_step
    multi.double().eval()
    single.double().eval()
    x = torch.rand(4, 2, 4, 16, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    with torch.no_grad():
        rates = firing_rates(multi, lambda: multi(x))
        expected = multi(x)
        out = single(x)
        again = single(x)  # states reset per forward
    assert all(0.0 < r < 1.0 for r in rates.values()), rates
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(again, expected, rtol=0, atol=1e-12)


# --- a real run -----------------------------------------------------------------------------
def test_spikformer_trains_and_reports_attention_rates(tmp_path: Path, monkeypatch) -> None:
    small = ["model=spikformer", "model.embed_dim=16", "model.stem_width=4", "model.heads=2",
             "model.depths=1", "T=2", "dataset.train_limit=128"]  # fmt: skip
    run_dir = tmp_path / "run"
    tiny = [a for a in TINY if not a.startswith("model.")]  # TINY's CSNN width
    train_in_process(monkeypatch, *tiny, *small, f"hydra.run.dir={run_dir}")
    (record,) = read_metrics(run_dir)
    assert math.isfinite(record["train_loss"])
    rates = {k.removeprefix("firing_rate/") for k in record if k.startswith("firing_rate/")}
    attention = {f"L16.0.0.body.0.{n}_neuron" for n in ("q", "k", "v", "attn", "proj")}
    assert attention <= rates, sorted(rates)
    assert record["synops/ac"] > 0


def test_a_triton_attention_neuron_on_a_cpu_is_recorded_as_the_torch_backend(monkeypatch) -> None:
    """The attention entry's own ``neuron:`` options are visited with the nested entries: where
    the kernels cannot run, config.yaml records the backend that runs there too."""
    import snnrun.kernels as kernels
    from snnrun.run.build import record_backend_that_runs

    monkeypatch.setattr(kernels, "INTERPRET", False)
    attention = {"type": "spiking_self_attention", "neuron": {"name": "lif", "backend": "triton"}}
    config = {
        "neuron": {"name": "if", "backend": "torch"},
        "model": {"layers": [{"type": "sequential", "layers": [attention]}]},
    }
    record_backend_that_runs(config, torch.device("cpu"))
    assert attention["neuron"] == {"name": "lif", "backend": "torch"}
