"""alif, synaptic and psn against handwritten references and the peers (float64), the chunked
torch backend against the reference loop, and each through the command."""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from test_events import write_shd

from snnrun.core.errors import SnnrunError
from snnrun.neuron.contract import SpikingNeuron
from snnrun.neuron.dynamics import charge
from snnrun.neuron.neurons import NEURONS, build_neuron, layer_options, make_dynamics
from snnrun.neuron.state_loop import CHUNK
from snnrun.neuron.state_neurons import ALIFNeuron, PSNNeuron, SynapticNeuron

from conftest import (
    TINY,
    assert_one_line_error,
    cli,
    read_metrics,
    train_in_process,
    without_timing,
)

ATAN = {"name": "atan", "alpha": 2.0}
T = 2 * CHUNK + 3  # three chunks, the last one short


def neuron(kind: str, backend: str = "torch", **options) -> torch.nn.Module:
    return build_neuron({"name": kind, "backend": backend, **options}, ATAN).double()


def alif_reference(x_seq, tau, tau_adapt, beta_a, v_th=1.0, v_reset=None):
    """The ALIF equations (Bellec et al.), written out: LIF charge, adaptive threshold."""
    rho = math.exp(-1.0 / tau_adapt)
    v = torch.zeros_like(x_seq[0]) if v_reset is None else torch.full_like(x_seq[0], v_reset)
    a, s_prev, out = torch.zeros_like(v), torch.zeros_like(v), []
    for x in x_seq:
        a = rho * a + s_prev
        h = v + (x - (v - (v_reset or 0.0))) / tau
        s = (h >= v_th + beta_a * a).to(x.dtype)
        v = h - v_th * s if v_reset is None else h * (1 - s) + v_reset * s
        out.append(s)
        s_prev = s
    return torch.stack(out)


@pytest.mark.parametrize("v_reset", [None, 0.0])
def test_alif_equals_the_equations(v_reset) -> None:
    x = torch.rand(T, 3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 1.5
    layer = neuron("alif", tau=3.0, tau_adapt=6.0, beta_a=0.7, v_reset=v_reset)
    expected = alif_reference(x, 3.0, 6.0, 0.7, v_reset=v_reset)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
    plain = alif_reference(x, 3.0, 6.0, 0.0, v_reset=v_reset)  # without adaptation
    assert expected.sum() < plain.sum() and expected.sum() > 0  # adaptation lowers the rate


def test_synaptic_equals_snntorch() -> None:
    """snnTorch 1.0's Synaptic step by step (its spikes as float64), spikes and membrane."""
    snn = pytest.importorskip("snntorch")
    step = lambda h: (h > 0).to(h.dtype)  # noqa: E731  (snnTorch's own spikes are float32)
    ref = snn.Synaptic(alpha=0.7, beta=0.85, threshold=1.0, spike_grad=step)
    layer = neuron("synaptic", alpha=0.7, beta=0.85, v_threshold=1.0, store_v_seq=True)
    x = torch.rand(T, 2, 6, dtype=torch.float64) * 0.8
    syn, mem = ref.init_synaptic()
    spikes, mems = [], []
    for x_t in x:
        s, syn, mem = ref(x_t, syn, mem)
        spikes.append(s)
        mems.append(mem)
    torch.testing.assert_close(layer(x), torch.stack(spikes), rtol=0, atol=0)
    torch.testing.assert_close(layer.v_seq, torch.stack(mems), rtol=0, atol=1e-12)
    assert 0 < torch.stack(spikes).mean() < 1


def test_psn_equals_spikingjelly_and_causal_masks_the_future() -> None:
    sj = pytest.importorskip("spikingjelly.activation_based.neuron")
    torch.manual_seed(0)
    ref = sj.PSN(T=T).double()
    layer = neuron("psn", T=T)
    layer.weight.data.copy_(ref.weight.data)
    layer.bias.data.copy_(ref.bias.data)
    x = torch.rand(T, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x), ref(x), rtol=0, atol=0)
    causal = neuron("psn", T=T, causal=True)
    y = causal(x)
    x_late = x.clone()
    x_late[-1] += 10.0  # only the last step's input changes
    assert torch.equal(causal(x_late)[:-1], y[:-1])
    assert not torch.equal(layer(x_late)[:-1], layer(x)[:-1])


@pytest.mark.parametrize("kind", ["alif", "synaptic"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_chunked_torch_backend_equals_the_reference_loop(kind: str, dtype: torch.dtype) -> None:
    """Values equal; gradients of the input, the initial... and the learned decays equal the
    autograd reference up to summation order, across several chunks."""
    options = ({"tau": 3.0, "tau_adapt": 5.0, "beta_a": 0.4, "v_reset": None}
               if kind == "alif" else {"learn_alpha": True, "learn_beta": True})  # fmt: skip
    results = {}
    for backend in ("autograd", "torch"):
        layer = neuron(kind, backend, **options).to(dtype)
        torch.manual_seed(1)
        x = (torch.rand(T, 2, 9) * 1.5).to(dtype).requires_grad_()
        out = layer(x)
        (out * torch.linspace(1, 2, T).view(T, 1, 1).to(dtype)).sum().backward()
        grads = [x.grad, *(p.grad for p in layer.parameters())]
        results[backend] = (out.detach(), grads)
    (ref_out, ref_grads), (out, grads) = results["autograd"], results["torch"]
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    assert 0 < ref_out.float().mean() < 1
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=tol, atol=tol)
    assert ref_grads[0].abs().sum() > 0


def test_psn_refuses_another_t_and_single_steps_as_one_line() -> None:
    layer = neuron("psn", T=4)
    with pytest.raises(SnnrunError, match=r"psn was built for T=4 steps and gets 6; run it at T=4"):
        layer(torch.rand(6, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="psn computes all T steps at once: it needs step_mode=m"):
        neuron("psn", T=4, step_mode="s")
    assert isinstance(neuron("alif"), ALIFNeuron) and isinstance(neuron("synaptic"), SynapticNeuron)
    assert isinstance(layer, PSNNeuron)


SMALL = [*TINY, "dataset.train_limit=64", "dataset.test_limit=32", "batch_size=32", "T=4"]
FC_SMALL = ["model=fc", *(a for a in SMALL if not a.startswith("model."))]  # neurons on [N, 10]


@pytest.mark.parametrize(
    "args",
    [
        ["neuron=synaptic", "neuron.learn_beta=true"],
        ["neuron=psn", "neuron.causal=true"],
        ["neuron=alif", "neuron.tau=4", "neuron.tau_adapt=20", "neuron.beta_a=0.2"],
    ],
    ids=["synaptic", "psn", "alif"],
)
def test_each_neuron_trains_and_resumes_exactly_through_the_command(
    args: list[str], tmp_path: Path, monkeypatch
) -> None:
    train_in_process(monkeypatch, *SMALL, *args, "epochs=2", f"hydra.run.dir={tmp_path / 'a'}")
    train_in_process(monkeypatch, *SMALL, *args, "epochs=1", f"hydra.run.dir={tmp_path / 'b'}")
    train_in_process(monkeypatch, f"resume={tmp_path / 'b'}", "epochs=2")
    whole = without_timing(read_metrics(tmp_path / "a"))
    assert without_timing(read_metrics(tmp_path / "b")) == whole
    assert "firing_rate/L2" in whole[-1]  # counted as a neuron layer


def test_a_recurrent_alif_network_on_shd_and_psn_at_another_t(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """The recurrent entry with alif neurons (an LSNN layer) trains on SHD in its real layout;
    eval of a psn run at another T is one line."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 10)):
        samples = [(np.sort(rng.uniform(0, 1.0, 80)), rng.integers(0, 700, 80)) for _ in range(n)]
        write_shd(tmp_path / "SHD" / f"shd_{split}.h5", samples, [i % 20 for i in range(n)])
    base = [a for a in SMALL if not a.startswith(("model.", "dataset."))]
    train_in_process(monkeypatch, *base, "model=rsnn", "model.hidden=16", "dataset=shd",
                     f"dataset.root={tmp_path}", "dataset.duration_ms=1000", "neuron=alif",
                     f"hydra.run.dir={tmp_path / 'shd'}")  # fmt: skip
    assert "firing_rate/L2.neuron" in read_metrics(tmp_path / "shd")[0]
    train_in_process(monkeypatch, *SMALL, "neuron=psn", f"hydra.run.dir={tmp_path / 'psn'}")
    code, err = cli(monkeypatch, capsys, "eval", str(tmp_path / "psn"), "T=6")
    assert_one_line_error(code, err, "psn was built for T=4 steps and gets 6")


class _AtanSpike(torch.autograd.Function):
    """snnTorch's ATan surrogate (``alpha/2 / (1 + (pi/2 alpha x)^2)``, alpha 2) keeping the
    input's dtype: snnTorch's own returns float32 spikes, which would end float64 there."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * 1.0 / (1 + (math.pi / 2 * 2.0 * x) ** 2)


@pytest.mark.parametrize("backend", ["autograd", "torch"])
def test_synaptic_gradients_equal_snntorch_bptt(backend: str) -> None:
    """snnTorch's Synaptic unrolled with autograd (learned alpha and beta) against snnrun's
    synaptic: gradients of the input, alpha and beta within 1e-6 in float64."""
    snn = pytest.importorskip("snntorch")
    ref = snn.Synaptic(alpha=0.7, beta=0.85, learn_alpha=True, learn_beta=True,
                       spike_grad=_AtanSpike.apply).double()  # fmt: skip
    layer = neuron("synaptic", backend, alpha=0.7, beta=0.85, learn_alpha=True, learn_beta=True)
    x = (torch.rand(T, 2, 6, dtype=torch.float64) * 0.8).requires_grad_()
    weights = torch.rand(T, 2, 6, dtype=torch.float64)
    syn, mem = ref.init_synaptic()
    spikes = []
    for x_t in x:
        s, syn, mem = ref(x_t, syn, mem)
        spikes.append(s)
    (torch.stack(spikes) * weights).sum().backward()
    expected = [x.grad.clone(), ref.alpha.grad, ref.beta.grad]
    x.grad = None
    (layer(x) * weights).sum().backward()
    got = [x.grad, layer.alpha.grad, layer.beta.grad]
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-6)
    assert expected[1].abs() > 0 and expected[2].abs() > 0


def test_options_these_neurons_do_not_have_are_refused() -> None:
    """psn's threshold is its learned bias and it has no reset; synaptic's reset is fixed; a
    psn cannot be a recurrent entry's neuron (it needs all T steps at once)."""
    from snnrun.net.layers import ModelBuildError
    from snnrun.net.model import build_model

    with pytest.raises(TypeError, match="psn takes no v_threshold"):
        neuron("psn", T=4, v_threshold=5.0)
    with pytest.raises(TypeError, match="synaptic takes no v_reset"):
        neuron("synaptic", v_reset=0.0)
    with pytest.raises(TypeError, match="T"):
        neuron("psn")  # T is the run's: conf/neuron/psn.yaml says T: ${T}
    groups = {"neuron": {"name": "lif", "backend": "torch"}, "surrogate": ATAN}
    recurrent = {"type": "recurrent", "name": "psn", "T": 4, "layers": [{"type": "linear"}]}
    with pytest.raises(ModelBuildError, match=r"model\.layers\[0\] \(recurrent\): psn computes"):
        build_model({"layers": [recurrent]}, groups, (3,), 3)


class _TraceLIF(SpikingNeuron):
    """A neuron no file of snnrun knows: LIF whose spikes leave a trace that inhibits it,
    ``u[t] = 0.5 u[t-1] + S[t-1]``, ``H = V + k (X - V) - w u``, soft reset."""

    STATES: ClassVar[dict[str, float]] = {"u": 0.0, "v": 0.0}
    OPTIONS = (*SpikingNeuron.OPTIONS, "tau", "w")

    def __init__(self, tau: float = 2.0, w: float = 0.3, **kw) -> None:
        super().__init__(make_dynamics("lif", {**kw, "v_reset": None}), **layer_options(kw))
        self.k, self.w = 1.0 / tau, w

    def params(self) -> dict:
        return {"k": self.k}

    def step(self, x, states, params):
        u, v_th = states["u"], self.dynamics.v_threshold
        h = charge(self.dynamics, states["v"], x, params["k"]) - self.w * u
        s = self.fire(h - v_th)
        return s, {"u": 0.5 * u + s, "v": h - v_th * s}


def test_a_neuron_with_new_dynamics_is_its_definition_and_its_yaml(
    tmp_path: Path, monkeypatch
) -> None:
    """docs/architecture.md's recipe: a registered step function and a neuron YAML (here in a
    user config folder) train through the command on every backend, with equal results."""
    monkeypatch.setitem(NEURONS._entries, "trace_lif", _TraceLIF)
    (tmp_path / "conf" / "neuron").mkdir(parents=True)
    (tmp_path / "conf" / "neuron" / "trace_lif.yaml").write_text(
        "name: trace_lif\ntau: 2.0\nw: 0.3\nv_threshold: 1.0\nbackend: torch\nstep_mode: m\n"
        "store_v_seq: false\n"
    )
    runs = {}
    for backend in ("autograd", "torch", "triton"):
        rundir = tmp_path / backend
        train_in_process(
            monkeypatch, *FC_SMALL, f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
            "neuron=trace_lif", f"neuron.backend={backend}", f"hydra.run.dir={rundir}",
        )  # fmt: skip
        runs[backend] = without_timing(read_metrics(rundir))
    assert runs["autograd"][-1]["firing_rate/L2"] > 0
    for backend in ("torch", "triton"):  # triton: kernels written from the trace of this step
        for got, want in zip(runs[backend], runs["autograd"], strict=True):
            assert got.keys() == want.keys()
            assert all(got[k] == pytest.approx(want[k], rel=1e-4, abs=1e-6) for k in want)


def test_alifs_drawn_charge_reaches_the_base_threshold_where_it_spikes() -> None:
    """The output figure draws ``charge_seq`` against ``v_threshold``: for alif that is the
    charge less the adaptive rise of the threshold, so spikes sit exactly where it is reached
    (the raw charge ``H`` of a spiking neuron with a raised threshold lies far above it)."""
    layer = neuron("alif", tau=4.0, tau_adapt=20.0, beta_a=0.5, store_v_seq=True)
    torch.manual_seed(0)
    x = torch.rand(T, 3, 40, dtype=torch.float64) * 4.0
    with torch.no_grad():
        spikes = layer(x)
    drawn = layer.charge_seq(x, layer.v_seq)
    assert spikes.sum() > 20
    assert (drawn[spikes == 1] >= 1.0 - 1e-12).all() and (drawn[spikes == 0] < 1.0 + 1e-12).all()
    raw = super(ALIFNeuron, layer).charge_seq(x, layer.v_seq)  # H itself
    assert ((raw >= 1.0) & (spikes == 0)).any()  # H alone would mark silent cells as spiking
