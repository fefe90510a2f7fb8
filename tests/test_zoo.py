"""The model zoo (conf/model/): the ResNets, SEW ResNets and VGG-11 against SpikingJelly 2.0's
builders (parameter counts, tensors in order, outputs and every neuron's spikes with its weights
copied), the SEW paper's DVS net against the authors' module rebuilt from SpikingJelly's layers,
the ``model.stem`` choice, and a reduced form of each trained through the command."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from snnrun.net.model import SpikingNetwork, build_model
from snnrun.neuron.neurons import SpikingNeuron

from conftest import TINY, compose, read_metrics, train_in_process


# --- building both sides -------------------------------------------------------------------
@contextmanager
def float64() -> Iterator[None]:
    """Modules built in float64 (no float32 copy of VGG's 129M parameters first)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def zoo(
    name: str,
    *overrides: str,
    in_shape: tuple[int, ...] = (3, 224, 224),
    classes: int = 10,
    neuron: str = "if",
) -> SpikingNetwork:
    """snnrun's network for ``model=<name>``, composed as a run would."""
    overrides = (f"model={name}", f"neuron={neuron}", *overrides)
    conf = OmegaConf.to_container(compose(list(overrides)), resolve=True)
    neuron_groups = {"neuron": conf["neuron"], "surrogate": conf["surrogate"]}
    return build_model(conf["model"], neuron_groups, in_shape, classes)


def spikingjelly(name: str, connect: str = "add", classes: int = 10) -> nn.Module:
    """SpikingJelly 2.0's model for ``name`` with IF neurons, multi-step, its tensors left
    uninitialised (built on the meta device: VGG's initialisation alone costs seconds); the tests
    copy every tensor into it from snnrun's network."""
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model import (
        ms_resnet,
        sew_resnet,
        spiking_resnet,
        spiking_vgg,
    )

    builders: dict[str, Callable[..., nn.Module]] = {
        "spiking_resnet18": spiking_resnet.spiking_resnet18,
        "spiking_resnet34": spiking_resnet.spiking_resnet34,
        "sew_resnet18": lambda **kw: sew_resnet.sew_resnet18(cnf=connect.upper(), **kw),
        "sew_resnet34": lambda **kw: sew_resnet.sew_resnet34(cnf=connect.upper(), **kw),
        "spiking_vgg11": spiking_vgg.spiking_vgg11_bn,
        "ms_resnet18": ms_resnet.ms_resnet18,
    }
    with torch.device("meta"):
        model = builders[name](spiking_neuron=neuron.IFNode, num_classes=classes)
    functional.set_step_mode(model, "m")
    return model.to_empty(device="cpu")


def copy_by_order(source: nn.Module, target: nn.Module) -> None:
    """Every parameter and buffer of ``source`` into ``target``, paired by order (the two
    state dicts hold the same number of tensors, pairwise of the same shape)."""
    pairs = list(zip(source.state_dict().items(), target.state_dict().items(), strict=True))
    mismatched = [(k, tuple(t.shape), j, tuple(o.shape)) for (k, t), (j, o) in pairs
                  if t.shape != o.shape]  # fmt: skip
    assert not mismatched, mismatched
    target.load_state_dict({j: t for (_, t), (j, _) in pairs})


def randomize(model: nn.Module, seed: int = 0, shift: float = 1.0) -> None:
    """Weights and BatchNorm statistics (running ones too, so that eval mode reads them) that
    keep neurons firing some of the time at every depth: conv weights drawn with standard
    deviation 2/sqrt(fan in), linear weights rescaled to it (VGG's 120M classifier weights cost
    more to draw than to run); BatchNorm biases around ``shift``."""
    g = torch.Generator().manual_seed(seed)

    def draw(shape: torch.Size, scale: float, shift: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=g) * scale + shift

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                std = 2 / math.sqrt(m.weight[0].numel())
                if isinstance(m, nn.Linear):
                    m.weight.mul_(std / m.weight.std())
                else:
                    m.weight.copy_(draw(m.weight.shape, std))
                if m.bias is not None:
                    m.bias.copy_(draw(m.bias.shape, 0.3))
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(draw((c,), 0.2))
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(draw((c,), 0.3, shift))


def spikes_of(
    model: nn.Module, kind: type[nn.Module], run: Callable[[], torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``run()``'s output and the output of every ``kind`` module, in module order."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, a, out, n=name: seen.__setitem__(n, out))
             for name, m in model.named_modules() if isinstance(m, kind)]  # fmt: skip
    with torch.no_grad():
        out = run()
    for h in hooks:
        h.remove()
    return out, list(seen.values())


def compare(
    theirs: nn.Module,
    ours: SpikingNetwork,
    x: torch.Tensor,
    over_t: bool = False,
    may_always_fire: str | None = None,
) -> torch.Tensor:
    """Both networks on ``x`` ``[T, N, ...]`` in float64 eval mode: equal spikes at every neuron
    (each firing some of the time, but the neurons whose label ends with ``may_always_fire``)
    and equal outputs (``over_t``: theirs is the mean over T of ours); ours returned."""
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.neuron import BaseNode

    theirs.double().eval()
    ours.double().eval()
    functional.reset_net(theirs)
    expected, their_spikes = spikes_of(theirs, BaseNode, lambda: theirs(x))
    out, our_spikes = spikes_of(ours, SpikingNeuron, lambda: ours(x))
    assert len(our_spikes) == len(ours.neurons())
    rates = {label: s.mean().item() for (label, _), s in zip(ours.neurons(), our_spikes)}
    exempt = {label for label in rates if may_always_fire and label.endswith(may_always_fire)}
    assert all(0.0 < r < 1.0 or (r == 1.0 and label in exempt) for label, r in rates.items()), [
        (label, r) for label, r in rates.items() if not 0.0 < r < 1.0
    ]  # every neuron fires, not always
    labels, our_spikes = _fused_qkv(ours, [label for label, _ in ours.neurons()], our_spikes)
    assert len(our_spikes) == len(their_spikes)
    for label, s, t in zip(labels, our_spikes, their_spikes, strict=True):
        t = t.reshape(s.shape)  # SDSA's per-channel sums: theirs [T, N, heads, 1, C / heads]
        if not torch.equal(s, t):
            pytest.fail(f"{label}'s spikes differ at {int((s != t).sum())} of {s.numel()} places")
    torch.testing.assert_close(out.mean(0) if over_t else out, expected, rtol=0, atol=1e-12)
    return out


def _fused_qkv(
    ours: SpikingNetwork, labels: list[str], spikes: list[torch.Tensor]
) -> tuple[list[str], list]:
    """SSA's q, k and v neurons' spikes joined along the channels, as SpikingJelly's one
    ``qkv_lif`` fires them."""
    from snnrun.net.attention import SpikingSelfAttention

    ssa = {
        f"{name}.q_neuron" for name, m, _ in ours.entries() if isinstance(m, SpikingSelfAttention)
    }
    merged_labels, merged, i = [], [], 0
    while i < len(labels):
        if labels[i] in ssa:
            merged_labels.append(labels[i].removesuffix(".q_neuron") + ".qkv")
            merged.append(torch.cat(spikes[i : i + 3], 2))
            i += 3
        else:
            merged_labels.append(labels[i])
            merged.append(spikes[i])
            i += 1
    return merged_labels, merged


def images(n: int, size: int, seed: int = 1, T: int = 2) -> torch.Tensor:
    """``n`` random 3-channel images, the same at every step: ``[T, n, 3, size, size]``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g, dtype=torch.float64)
    return x.expand(T, *x.shape)


# --- parameters and outputs ---------------------------------------------------------------
COUNTS = {"spiking_resnet18": 11_181_642, "spiking_resnet34": 21_289_802,
          "sew_resnet18": 11_181_642, "sew_resnet34": 21_289_802,
          "ms_resnet18": 11_185_866}  # fmt: skip
NEURONS = {"spiking_resnet18": 1 + 2 * 8, "spiking_resnet34": 1 + 2 * 16,
           "sew_resnet18": 1 + 2 * 8 + 3, "sew_resnet34": 1 + 2 * 16 + 3,
           "ms_resnet18": 2 * 8 + 1}  # fmt: skip


@pytest.mark.parametrize(("name", "connect"), [
    ("spiking_resnet18", "add"), ("spiking_resnet34", "add"), ("sew_resnet18", "add"),
    ("sew_resnet18", "and"), ("sew_resnet18", "iand"), ("sew_resnet34", "iand"),
    ("ms_resnet18", "add"),
])  # fmt: skip
def test_resnet_matches_spikingjelly(name: str, connect: str) -> None:
    """ImageNet stem, 10 classes: SpikingJelly's parameter count (the global pool makes it the
    224x224 count) and tensors in order; then two 32x32 images (1x1 in stage 4), T=2, IF
    neurons, float64: the same spikes at every neuron and the same logits at every step
    (MS-ResNet: SpikingJelly returns their mean over T)."""
    pytest.importorskip("spikingjelly")
    connects = [f"model.connect={connect}"] if name.startswith("sew") else []
    ours, theirs = zoo(name, *connects, in_shape=(3, 32, 32)), spikingjelly(name, connect)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == COUNTS[name]
    assert len(ours.neurons()) == NEURONS[name]  # SEW: a neuron on each downsampling shortcut
    residuals = {m.connect for _, m, e in ours.entries() if e.type == "residual"}
    assert residuals == {connect}
    randomize(ours, seed=len(name) + len(connect))
    copy_by_order(ours, theirs)
    compare(theirs, ours, images(2, 32, seed=5), over_t=name.startswith("ms_"))


def test_vgg11_matches_spikingjelly() -> None:
    """spiking_vgg11_bn, 10 classes: its parameter count and tensors in order; outputs on two
    32x32 images (1x1 after five pools, copied to 7x7 by the adaptive pool)."""
    pytest.importorskip("spikingjelly")
    with float64():  # no float32 copy of the 129M parameters first
        ours, theirs = zoo("spiking_vgg11", in_shape=(3, 32, 32)), spikingjelly("spiking_vgg11")
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == 128_812_810
    randomize(ours, seed=2)
    copy_by_order(ours, theirs)
    compare(theirs, ours, images(2, 32, seed=3))


def test_spike_driven_transformer_matches_spikingjelly() -> None:
    """sdt_8_384, 10 classes, SpikingJelly's LIF (tau 2; the attention neuron at 0.5): its
    parameter count and tensors in order; on two 32x32 images (2x2 tokens), T=2, float64, the
    same spikes at every neuron and the mean over T of the logits."""
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.model.spike_driven_transformer import sdt_8_384

    ours = zoo("spike_driven_transformer", in_shape=(3, 32, 32), neuron="lif")
    with torch.device("meta"):
        theirs = sdt_8_384(num_classes=10)
    functional.set_step_mode(theirs, "m")
    theirs = theirs.to_empty(device="cpu")
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == 16_435_594
    assert len(ours.neurons()) == 4 + 8 * (5 + 2) + 1  # embedding, 8 x (SDSA 4 + 1, MLP 2), head
    randomize(ours, seed=7, shift=0.5)  # the residual sums grow with depth: biases near 0.5
    copy_by_order(ours, theirs)
    compare(theirs, ours, images(2, 32, seed=8), over_t=True)


def copy_qkformer(theirs: nn.Module, ours: SpikingNetwork) -> None:
    """SpikingJelly's QKFormer weights into snnrun's: its modules are registered stage by stage
    (the three patch embeddings, then the three stages) but run interleaved, as snnrun's
    layers are listed; the stage-3 SSA's fused qkv is split (tests/test_attention.py)."""
    from spikingjelly.activation_based.layer.attention import SpikingSelfAttention as SJAttention
    from test_attention import copy_attention

    from snnrun.net.attention import SpikingSelfAttention

    sj_attn = [(n, m) for n, m in theirs.named_modules() if isinstance(m, SJAttention)]
    our_attn = [(n, m) for n, m in ours.named_modules() if isinstance(m, SpikingSelfAttention)]
    for (_, a), (_, b) in zip(sj_attn, our_attn, strict=True):
        copy_attention(a, b)
    order = ["patch_embed1", "stage1", "patch_embed2", "stage2", "patch_embed3", "stage3", "head"]
    skip_theirs = tuple(f"{n}." for n, _ in sj_attn)
    skip_ours = tuple(f"{n}." for n, _ in our_attn)
    rest = sorted((k for k in theirs.state_dict() if not k.startswith(skip_theirs)),
                  key=lambda k: order.index(k.split(".")[0]))  # fmt: skip
    targets = [k for k in ours.state_dict() if not k.startswith(skip_ours)]
    theirs_sd, ours_sd = theirs.state_dict(), ours.state_dict()
    pairs = list(zip(rest, targets, strict=True))
    assert all(theirs_sd[k].shape == ours_sd[j].shape for k, j in pairs)
    ours.load_state_dict({**ours_sd, **{j: theirs_sd[k] for k, j in pairs}})


@pytest.mark.parametrize("attention", ["token", "channel"])
def test_qkformer_matches_spikingjelly(attention: str) -> None:
    """qkformer_10_384 (its Q-K token attention, or the channel one), 10 classes, SpikingJelly's
    LIF: its parameter count; on two 32x32 images (8x8, 4x4 and 2x2 tokens), T=2, float64,
    the same spikes at every neuron and the mean over T of the logits."""
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.model.qkformer import QKFormer
    from test_attention import randomize as randomize_tokens

    ours = zoo("qkformer", f"model.attention={attention}", in_shape=(3, 32, 32), neuron="lif")
    with torch.device("meta"):  # qkformer_10_384's sizes, with the attention chosen
        theirs = QKFormer(num_classes=10, embed_dims=384, num_heads=(6, 6, 6),
                          depths=(1, 2, 7), qka_type=attention)  # fmt: skip
    functional.set_step_mode(theirs, "m")
    theirs = theirs.to_empty(device="cpu")
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == 16_091_434
    randomize_tokens(theirs, seed=4)
    copy_qkformer(theirs, ours)
    # a head's token mask fires when any of its 32 channels' Q spikes: stage 2's always does
    always = "attn_neuron" if attention == "token" else None
    compare(theirs, ours, images(2, 32, seed=3), over_t=True, may_always_fire=always)


# --- the stems ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["spiking_resnet18", "sew_resnet34"])  # a file and an heir
@pytest.mark.parametrize(("stem", "size", "kinds", "stages"), [
    ("imagenet", 224, ["conv2d", "batchnorm2d", "neuron", "maxpool2d"], [56, 28, 14, 7]),
    ("cifar", 32, ["conv2d", "batchnorm2d", "neuron"], [32, 16, 8, 4]),
])  # fmt: skip
def test_stem_is_chosen_by_model_stem(
    name: str, stem: str, size: int, kinds: list[str], stages: list[int]
) -> None:
    """``{type: sequential, layers: ${model.stems.${model.stem}}}`` resolves to the chosen stem
    (its width too); the stages then run at W, 2W, 4W, 8W channels and ``stages`` sizes."""
    overrides = [f"model.stem={stem}", "model.width=8"]
    conf = OmegaConf.to_container(compose([f"model={name}", *overrides]), resolve=True)
    stem_entry = conf["model"]["layers"][0]
    assert stem_entry == {"type": "sequential", "layers": conf["model"]["stems"][stem]}
    assert [e["type"] for e in stem_entry["layers"]] == kinds
    assert stem_entry["layers"][0]["out_channels"] == 8
    net = zoo(name, *overrides, in_shape=(3, size, size))
    shapes = {label: entry.shape for label, _, entry in net.entries()}
    assert [shapes[f"L{i}"] for i in (1, 2, 3, 4)] == [
        (8 * 2**i, s, s) for i, s in enumerate(stages)
    ]


# --- the SEW paper's DVS net ----------------------------------------------------------------
def authors_dvs_net(channels: int, blocks: int, classes: int, connect: str) -> nn.Module:
    """The authors' DVS128 Gesture ``SEWResNet`` (Spike-Element-Wise-ResNet,
    dvsgesture/smodels.py: ``ResNetN``), written with SpikingJelly 2.0's multi-step layers:
    Conv1x1-BN-PLIF, {SEWBlock - MaxPool2} x blocks, Flatten, Linear on the mean over T."""
    from spikingjelly.activation_based import layer, neuron

    def conv_bn_plif(c_in: int, c_out: int, k: int) -> nn.Sequential:
        return nn.Sequential(
            layer.Conv2d(c_in, c_out, k, padding=k // 2, bias=False, step_mode="m"),
            layer.BatchNorm2d(c_out, step_mode="m"),
            neuron.ParametricLIFNode(init_tau=2.0, detach_reset=True, step_mode="m"),
        )

    class SEWBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Sequential(conv_bn_plif(channels, channels, 3),
                                      conv_bn_plif(channels, channels, 3))  # fmt: skip

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.conv(x)
            return {"add": out + x, "and": out * x, "iand": x * (1.0 - out)}[connect]

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            convs = [conv_bn_plif(2, channels, 1)]
            for _ in range(blocks):
                convs += [SEWBlock(), layer.MaxPool2d(2, 2, step_mode="m")]
            self.conv = nn.Sequential(*convs, nn.Flatten(2))
            self.out = nn.Linear(channels, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [T, N, 2, H, W]
            return self.out(self.conv(x).mean(0))

    return Net()


def test_dvs_net_has_the_authors_parameters() -> None:
    """The paper's 7B-Net for [2, 128, 128] frames: C=32, 7 blocks, 11 classes, PLIF."""
    pytest.importorskip("spikingjelly")
    ours = zoo("sew_resnet_dvs", in_shape=(2, 128, 128), classes=11, neuron="plif")
    theirs = authors_dvs_net(32, 7, 11, "add")
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters())
    copy_by_order(ours, theirs)
    shapes = [entry.shape for _, _, entry in ours.entries() if entry.type == "maxpool2d"]
    assert shapes[-1] == (32, 1, 1) and len(shapes) == 7


@pytest.mark.parametrize("connect", ["add", "iand"])
def test_dvs_net_matches_the_authors(connect: str) -> None:
    """C=8, 5 blocks on two 32x32 event frames (the 7 blocks of 128x128 cost 16x more), T=2,
    PLIF neurons (learned decays drawn at random), float64: the same spikes at every neuron,
    and the authors' Linear(mean over T) is our output's mean over T."""
    pytest.importorskip("spikingjelly")
    small = ["model.channels=8", "model.blocks=5", f"model.connect={connect}"]
    small.append("neuron.detach_reset=true")  # the paper's; the forward pass is the same
    ours = zoo("sew_resnet_dvs", *small, in_shape=(2, 32, 32), classes=11, neuron="plif")
    randomize(ours, seed=10)
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        for _, plif in ours.neurons():
            plif.w.uniform_(-1.0, 1.0, generator=g)
    theirs = authors_dvs_net(8, 5, 11, connect)
    copy_by_order(ours, theirs)
    x = (torch.rand(2, 2, 2, 32, 32, generator=torch.Generator().manual_seed(11)) < 0.3).double()
    out = compare(theirs, ours, x, over_t=True)
    assert out.shape == (2, 2, 11) and len(ours.neurons()) == 1 + 2 * 5


# --- through the command --------------------------------------------------------------------
REDUCED = {  # the 34s are the 18s with more blocks (their files compose in the tests above)
    "spiking_resnet18": ["model.stem=cifar", "model.width=4", "model.blocks=[1,1,1,1]"],
    "sew_resnet18": ["model.width=4", "model.blocks=[1,1,1,1]", "model.connect=iand"],  # 28 -> 7
    "spiking_vgg11": ["model.width=4", "model.hidden=16", "model.pool=1", "model.ceil_mode=true"],
    "sew_resnet_dvs": ["model.channels=4", "model.blocks=4", "model.classes=10"],
    "ms_resnet18": ["model.width=4", "model.blocks=[1,1,1,1]"],  # 28 -> 14 -> 7 -> 4 -> 2 -> 1
    "spike_driven_transformer": ["model.embed_dim=16", "model.depths=1", "model.heads=2",
                                 "model.pooling=[none,none,pool,pool]"],
    "qkformer": ["model.embed_dim=32", "model.depths=[1,1,1]", "model.heads=[2,2,2]",
                 "model.attention=channel"],  # 28 -> 14 -> 7 (49 tokens) -> 4 -> 2
}  # fmt: skip


@pytest.mark.parametrize("name", list(REDUCED))
def test_zoo_network_trains_through_the_command(name: str, tmp_path: Path, monkeypatch) -> None:
    """A reduced form on 64 digits (1x28x28), T=2, cross-entropy on the mean output."""
    run_dir = tmp_path / "run"
    tiny = [a for a in TINY if not a.startswith(("model.", "dataset.", "T=", "batch_size="))]
    train_in_process(monkeypatch, *tiny, f"model={name}", *REDUCED[name], "loss=ce_rate", "T=2",
                     "batch_size=32", "dataset.train_limit=64", "dataset.test_limit=32",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    (record,) = read_metrics(run_dir)
    assert math.isfinite(record["train_loss"]) and 0.0 <= record["test_acc"] <= 1.0
    assert any(k.startswith("firing_rate/") for k in record)
    saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))["model"]
    assert saved["name"] == name
    if "stem" in saved:  # the chosen stem, resolved into the run's config
        assert saved["layers"][0]["layers"] == saved["stems"][saved["stem"]]
