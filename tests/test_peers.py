"""Agreement with the peers: SpikingJelly (IF, LIF, PLIF, surrogates) and snnTorch (Leaky).

Each case feeds the same random input (scaled so that a good share of neurons spike) to a peer
neuron and to ours with the same parameters, then compares:

- spikes: exactly equal;
- membrane (``v_seq`` and the final ``v``): bit-exact where both do the same arithmetic, else
  within 1e-6 relative;
- gradients of one random weighted loss over spikes, ``v_seq`` and the final ``v`` with respect
  to the input (and PLIF's ``w`` / Leaky's learned ``beta``): within 1e-6 relative.

Everything runs in float64 (both peers support it), which makes the comparison sharp. SpikingJelly
2.0 sends float64 through ``spikingjelly/_ops/<neuron>/reference.py:multi_step`` with the
``activation_based.surrogate`` functions; float32 goes through its registered operator
(``torch.ops.sj_lif.forward`` ...), which on CPU runs ``reference._forward_impl`` with the separate
surrogate formulas of ``spikingjelly/_ops/surrogate.py``: compared too, at float32 tolerance.
Every test is skipped when its peer is not installed.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from snnrun.neuron.neurons import IFNeuron, LeakyNeuron, LIFNeuron, PLIFNeuron
from snnrun.neuron.surrogate import Surrogate

pytestmark = pytest.mark.peers

T, N = 8, 256
RTOL, ATOL = 1e-6, 1e-12

# snnrun surrogate name -> (SpikingJelly class, its default alpha); same g'(x), same alpha.
SJ_SURROGATES = {
    "atan": ("ATan", 2.0),
    "sigmoid": ("Sigmoid", 4.0),
    "piecewise_quadratic": ("PiecewiseQuadratic", 1.0),
    "erf": ("Erf", 2.0),
    "soft_sign": ("SoftSign", 2.0),
}
RESETS = {"hard0": 0.0, "hard-0.3": -0.3, "soft": None}
KINDS = ("if", "lif", "lif_no_decay_input", "plif", "plif_no_decay_input")


@pytest.fixture(scope="module")
def sj() -> SimpleNamespace:
    """SpikingJelly's neuron and surrogate modules (skip when it is not installed)."""
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    return SimpleNamespace(neuron=neuron, surrogate=surrogate)


@pytest.fixture(scope="module")
def snntorch() -> SimpleNamespace:
    """snnTorch and its surrogate module (skip when it is not installed)."""
    snn = pytest.importorskip("snntorch")
    surrogate = pytest.importorskip("snntorch.surrogate")
    return SimpleNamespace(snn=snn, surrogate=surrogate)


# ---------------------------------------------------------------------------------------------
# helpers


def random_input(seed: int, dtype=torch.float64, shift: float = 0.8) -> torch.Tensor:
    """``[T, N]`` standard normal plus ``shift``: many neurons spike, many do not."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(T, N, generator=gen, dtype=torch.float64) + shift).to(dtype)


def loss_weights(seed: int, dtype=torch.float64) -> tuple[torch.Tensor, ...]:
    """Random weights for spikes, ``v_seq`` and the final ``v``, exact in float32.

    snnTorch returns float32 spikes, so the gradient reaching them is rounded to float32; weights
    that float32 represents exactly keep that rounding from blurring the comparison.
    """
    gen = torch.Generator().manual_seed(10_000 + seed)
    ws, wq = (torch.randn(T, N, generator=gen).to(dtype) for _ in range(2))
    return ws, wq, torch.randn(N, generator=gen).to(dtype)


def run_layer(layer, x: torch.Tensor, params=(), seed: int = 0) -> dict[str, torch.Tensor]:
    """Run a multi-step layer (ours or SpikingJelly's; both keep ``.v`` and ``.v_seq``).

    Returns spikes, membrane and the gradients of a weighted loss w.r.t. ``x`` and ``params``.
    """
    layer.reset()
    x = x.clone().requires_grad_(True)
    spikes = layer(x)
    return finish(spikes, layer.v_seq, layer.v, x, params, seed)


def finish(spikes, v_seq, v, x, params, seed: int) -> dict[str, torch.Tensor]:
    """Bundle the outputs with the gradients of ``sum(ws*S) + sum(wq*v_seq) + sum(wv*v)``."""
    ws, wq, wv = loss_weights(seed, x.dtype)
    loss = (spikes * ws).sum() + (v_seq * wq).sum() + (v * wv).sum()
    grads = torch.autograd.grad(loss, [x, *params])
    out = {"spikes": spikes.detach().to(x.dtype), "v_seq": v_seq.detach(), "v": v.detach()}
    out.update({f"grad{i}": g for i, g in enumerate(grads)})
    return out


def assert_agree(
    ours: dict, peer: dict, exact_membrane: bool = True, rtol: float = RTOL, atol: float = ATOL
) -> None:
    """Spikes equal, membrane equal (or close), every gradient close."""
    assert torch.equal(ours["spikes"], peer["spikes"]), "spikes differ"
    rate = ours["spikes"].mean().item()
    assert 0.05 < rate < 0.95, f"spike rate {rate:.3f}: the input does not exercise firing"
    for key in ("v_seq", "v"):
        if exact_membrane:
            assert torch.equal(ours[key], peer[key]), f"{key} not bit-exact"
        else:
            torch.testing.assert_close(ours[key], peer[key], rtol=rtol, atol=atol)
    grads = sorted(k for k in ours if k.startswith("grad"))
    assert grads == sorted(k for k in peer if k.startswith("grad"))
    for key in grads:
        assert ours[key].abs().sum() > 0, f"{key} is all zero: nothing compared"
        torch.testing.assert_close(ours[key], peer[key], rtol=rtol, atol=atol, msg=key)


def surrogate_pair(sj, name: str, alpha: float | None = None):
    """``(ours, SpikingJelly's)`` surrogate of the same name and alpha (default: SJ's default)."""
    cls, default = SJ_SURROGATES[name]
    alpha = default if alpha is None else alpha
    return Surrogate(name, alpha), getattr(sj.surrogate, cls)(alpha=alpha)


def build_pair(sj, kind: str, v_reset, detach_reset: bool, surrogate: str, tau: float = 2.0):
    """``(ours, SpikingJelly's)`` multi-step neuron layers with identical settings."""
    common = {"v_reset": v_reset, "detach_reset": detach_reset, "store_v_seq": True}
    decay_input = not kind.endswith("no_decay_input")
    ours_sg, sj_sg = surrogate_pair(sj, surrogate)
    sjc = {**common, "surrogate_function": sj_sg, "step_mode": "m"}
    ours_c = {**common, "surrogate": ours_sg, "step_mode": "m"}
    if kind == "if":
        return IFNeuron(**ours_c), sj.neuron.IFNode(**sjc)
    if kind.startswith("lif"):
        return (
            LIFNeuron(tau=tau, decay_input=decay_input, **ours_c),
            sj.neuron.LIFNode(tau=tau, decay_input=decay_input, **sjc),
        )
    return (
        PLIFNeuron(init_tau=tau, decay_input=decay_input, **ours_c).double(),
        sj.neuron.ParametricLIFNode(init_tau=tau, decay_input=decay_input, **sjc).double(),
    )


def shift_for(kind: str) -> float:
    """Input offset that makes a good share spike: decaying the input (k < 1) needs more."""
    return 1.6 if kind in ("lif", "plif") else 0.8


def params_of(layer) -> tuple[torch.Tensor, ...]:
    """The learned decay (PLIF's ``w``), if any."""
    return tuple(layer.parameters())


# ---------------------------------------------------------------------------------------------
# SpikingJelly: neurons


@pytest.mark.parametrize("surrogate", list(SJ_SURROGATES))
@pytest.mark.parametrize("detach_reset", [False, True], ids=["attached", "detach"])
@pytest.mark.parametrize("reset", list(RESETS))
@pytest.mark.parametrize("kind", KINDS)
def test_spikingjelly_neurons_float64(sj, kind, reset, detach_reset, surrogate):
    """IF / LIF / PLIF (decay_input on and off), hard and soft reset, detach_reset on and off.

    tau = 2 for LIF (1/tau exact) and init_tau = 3 for PLIF (both sides multiply by sigmoid(w)),
    so the arithmetic is the same on both sides and the membrane must be bit-exact.
    """
    tau = 3.0 if kind.startswith("plif") else 2.0
    ours, peer = build_pair(sj, kind, RESETS[reset], detach_reset, surrogate, tau)
    x = random_input(seed=1, shift=shift_for(kind))
    assert_agree(run_layer(ours, x, params_of(ours)), run_layer(peer, x, params_of(peer)))


@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("reset", list(RESETS))
def test_spikingjelly_lif_tau3_close(sj, reset, decay_input):
    """LIF with tau = 3: spikes equal, membrane and gradients within 1e-6 relative.

    (Not bit-exact: SpikingJelly divides by tau, snnrun multiplies by k = 1/tau, the decay the
    kernels also take; the membrane differs in the last bit.)
    """
    kind = "lif" if decay_input else "lif_no_decay_input"
    ours, peer = build_pair(sj, kind, RESETS[reset], False, "atan", tau=3.0)
    x = random_input(seed=2, shift=shift_for(kind))
    assert_agree(run_layer(ours, x), run_layer(peer, x), exact_membrane=False)


@pytest.mark.parametrize("surrogate", list(SJ_SURROGATES))
@pytest.mark.parametrize("detach_reset", [False, True], ids=["attached", "detach"])
@pytest.mark.parametrize("reset", list(RESETS))
@pytest.mark.parametrize("kind", KINDS)
def test_spikingjelly_neurons_float32(sj, kind, reset, detach_reset, surrogate):
    """float32: SpikingJelly's registered neuron operator and its own surrogate formulas.

    Forward is bit-exact (same arithmetic); the surrogate derivatives are written differently
    (e.g. SoftSign as ``1 / (2 alpha (1/alpha + |x|)^2)``), so gradients agree to float32
    rounding (1e-5 relative) rather than 1e-6.
    """
    ours, peer = build_pair(sj, kind, RESETS[reset], detach_reset, surrogate)
    ours, peer = ours.float(), peer.float()
    x = random_input(seed=4, dtype=torch.float32, shift=shift_for(kind))
    assert_agree(
        run_layer(ours, x, params_of(ours)),
        run_layer(peer, x, params_of(peer)),
        rtol=1e-5,
        atol=1e-6,
    )


# ---------------------------------------------------------------------------------------------
# SpikingJelly / snnTorch: surrogate derivatives


def surrogate_grid(dtype=torch.float64) -> torch.Tensor:
    """x values over [-3, 3] (dense) plus random ones; no exact 0, where forwards may differ."""
    gen = torch.Generator().manual_seed(5)
    grid = torch.linspace(-3.0, 3.0, 1200, dtype=torch.float64)  # even count: 0 not included
    return torch.cat([grid, torch.randn(500, generator=gen, dtype=torch.float64)]).to(dtype)


def spike_and_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fn(x), d sum(fn(x)) / dx)`` for a spike function ``fn``."""
    x = x.clone().requires_grad_(True)
    s = fn(x)
    (g,) = torch.autograd.grad(s.sum(), x)
    return s.detach(), g


@pytest.mark.parametrize("scale", [1.0, 0.5, 3.0], ids=["default", "half", "x3"])
@pytest.mark.parametrize("name", list(SJ_SURROGATES))
def test_spikingjelly_surrogate_derivatives(sj, name, scale):
    """g'(x) and the Heaviside forward agree with SpikingJelly's, default and other alphas."""
    ours, peer = surrogate_pair(sj, name, SJ_SURROGATES[name][1] * scale)
    x = surrogate_grid()
    s_peer, g_peer = spike_and_grad(peer, x)
    s_ours, g_ours = spike_and_grad(ours, x)
    assert torch.equal(s_ours, s_peer)
    assert g_ours.abs().sum() > 0
    torch.testing.assert_close(g_ours, g_peer, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ours.grad(x), g_peer, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("slope", [25.0, 5.0])
def test_snntorch_fast_sigmoid_derivative(snntorch, slope):
    """fast_sigmoid: g'(x) = 1 / (slope |x| + 1)^2 as in snnTorch.

    snnTorch fires on ``x > 0`` (strict), snnrun on ``x >= 0``: the forwards differ exactly at
    ``x == 0``, which random floats never hit in practice; the check below pins that down.
    """
    x = torch.cat([surrogate_grid(torch.float32), torch.zeros(1)])
    s_peer, g_peer = spike_and_grad(snntorch.surrogate.fast_sigmoid(slope=slope), x)
    s_ours, g_ours = spike_and_grad(Surrogate("fast_sigmoid", slope), x)
    assert torch.equal(s_ours != s_peer, x == 0)
    torch.testing.assert_close(g_ours, g_peer, rtol=RTOL, atol=0.0)


# ---------------------------------------------------------------------------------------------
# snnTorch: Leaky


def run_snntorch_leaky(leaky, x: torch.Tensor, params=(), seed: int = 0) -> dict:
    """Step snnTorch's ``Leaky`` over T with its own hidden state; same loss as ours."""
    leaky.reset_mem()
    x = x.clone().requires_grad_(True)
    spikes, mems = zip(*(leaky(x_t) for x_t in x))
    v_seq = torch.stack(mems)
    return finish(torch.stack(spikes), v_seq, v_seq[-1], x, params, seed)


@pytest.mark.parametrize("learn_beta", [False, True], ids=["fixed", "learned"])
@pytest.mark.parametrize(("beta", "threshold"), [(0.5, 1.0), (0.9, 0.75)])
def test_snntorch_leaky(snntorch, beta, threshold, learn_beta):
    """``snntorch.Leaky(beta, spike_grad=fast_sigmoid(25))`` vs our LeakyNeuron, multi-step.

    Both charge as ``beta*U + X - thr*R`` with ``R`` the detached previous spike, so the membrane
    is bit-exact. (snnTorch's spike test is ``U - thr > 0``, ours ``>= 0``: irrelevant here.)
    snnTorch keeps ``threshold`` (and ``beta``) as float32 tensors, so the thresholds here are
    exact in float32 (0.7 would become 0.699999988 on its side and 0.7 on ours).
    """
    peer = snntorch.snn.Leaky(
        beta=beta,
        threshold=threshold,
        learn_beta=learn_beta,
        spike_grad=snntorch.surrogate.fast_sigmoid(slope=25),
    ).double()
    ours = LeakyNeuron(
        beta=beta,
        learn_beta=learn_beta,
        v_threshold=threshold,
        surrogate=Surrogate("fast_sigmoid", 25.0),
        store_v_seq=True,
    ).double()
    x = random_input(seed=6, shift=0.5 * threshold)
    got = run_layer(ours, x, params_of(ours))
    want = run_snntorch_leaky(peer, x, params_of(peer))
    assert len(params_of(ours)) == int(learn_beta)
    assert_agree(got, want)
