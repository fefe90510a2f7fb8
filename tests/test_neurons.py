"""Neuron and surrogate equations, checked against an independent float64 implementation.

The reference below is plain numpy: an explicit per-step loop for the forward (charge, fire,
reset as written in ``snnrun.neuron.dynamics``) and a hand-written backward-through-time recursion
for the gradients, so nothing here runs autograd through snnrun's code to produce expected values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from snnrun.neuron.neurons import IFNeuron, LeakyNeuron, LIFNeuron, PLIFNeuron
from snnrun.neuron.surrogate import SURROGATES, Surrogate

T, N = 8, 64
V_TH, V_RESET, TAU, BETA = 0.8, -0.2, 3.0, 0.6


# ---------------------------------------------------------------------------------------------
# independent surrogate derivatives g'(x) (numpy), with each surrogate's default parameter


def g_atan(x, alpha):
    """alpha/2 / (1 + (pi/2 alpha x)^2)."""
    return alpha / 2 / (1 + (math.pi / 2 * alpha * x) ** 2)


def g_sigmoid(x, alpha):
    """alpha sig(alpha x) (1 - sig(alpha x))."""
    s = 1 / (1 + np.exp(-alpha * x))
    return alpha * s * (1 - s)


def g_fast_sigmoid(x, slope):
    """1 / (slope |x| + 1)^2."""
    return 1 / (slope * np.abs(x) + 1) ** 2


def g_piecewise_quadratic(x, alpha):
    """alpha - alpha^2 |x| inside |x| <= 1/alpha, 0 outside."""
    return np.where(np.abs(x) <= 1 / alpha, alpha - alpha**2 * np.abs(x), 0.0)


def g_erf(x, alpha):
    """alpha / sqrt(pi) exp(-(alpha x)^2)."""
    return alpha / math.sqrt(math.pi) * np.exp(-((alpha * x) ** 2))


def g_soft_sign(x, alpha):
    """alpha / (2 (1 + alpha |x|)^2)."""
    return alpha / (2 * (1 + alpha * np.abs(x)) ** 2)


def g_triangle(x, gamma):
    """gamma max(0, 1 - |x|)."""
    return gamma * np.maximum(0.0, 1 - np.abs(x))


def g_rectangle(x, width):
    """1/width inside |x| < width/2, 0 outside."""
    return np.where(np.abs(x) < width / 2, 1 / width, 0.0)


REF_SURROGATES = {
    "atan": (g_atan, 2.0),
    "sigmoid": (g_sigmoid, 4.0),
    "fast_sigmoid": (g_fast_sigmoid, 25.0),
    "piecewise_quadratic": (g_piecewise_quadratic, 1.0),
    "erf": (g_erf, 2.0),
    "soft_sign": (g_soft_sign, 2.0),
    "triangle": (g_triangle, 1.0),
    "rectangle": (g_rectangle, 1.0),
}


# ---------------------------------------------------------------------------------------------
# independent neuron reference


@dataclass(frozen=True)
class Case:
    """One neuron configuration: kind, surrogate, reset ('hard' / 'soft' / 'subtract')."""

    kind: str  # if, lif, plif, leaky
    surrogate: str
    reset: str
    detach_reset: bool = False
    decay_input: bool = True

    @property
    def v_reset(self) -> float | None:
        return V_RESET if self.reset == "hard" else None

    @property
    def v0(self) -> float:
        """``V[-1]``."""
        return V_RESET if self.reset == "hard" else 0.0

    def __str__(self) -> str:
        di = "" if self.decay_input else "-nodi"
        dr = "-detach" if self.detach_reset else ""
        return f"{self.kind}{di}-{self.surrogate}-{self.reset}{dr}"


def make_cases() -> list[Case]:
    """Every kind x every surrogate x (hard, soft) x detach_reset (Leaky: its own reset)."""
    cases = []
    for sg in REF_SURROGATES:
        for kind, di in [
            ("if", True),
            ("lif", True),
            ("lif", False),
            ("plif", True),
            ("plif", False),
        ]:
            for reset in ("hard", "soft"):
                cases += [Case(kind, sg, reset, dr, di) for dr in (False, True)]
        cases.append(Case("leaky", sg, "subtract"))
    return cases


def build_layer(case: Case, **options) -> torch.nn.Module:
    """Our float64 layer for ``case`` (PLIF and Leaky with a learned decay)."""
    name = case.surrogate
    common = {"v_threshold": V_TH, "surrogate": Surrogate(name, REF_SURROGATES[name][1]), **options}
    if case.kind == "leaky":
        return LeakyNeuron(beta=BETA, learn_beta=True, **common).double()
    common.update(v_reset=case.v_reset, detach_reset=case.detach_reset)
    if case.kind == "if":
        return IFNeuron(**common).double()
    if case.kind == "lif":
        return LIFNeuron(tau=TAU, decay_input=case.decay_input, **common).double()
    return PLIFNeuron(init_tau=TAU, decay_input=case.decay_input, **common).double()


def decay_of(case: Case, layer) -> float:
    """The decay the reference uses: 1/tau, sigmoid(w) computed by hand, or beta."""
    if case.kind == "lif":
        return 1 / TAU
    if case.kind == "plif":
        return 1 / (1 + math.exp(-layer.w.item()))
    return layer.beta.item() if case.kind == "leaky" else 0.0


def ref_charge(case: Case, v, x, k):
    """``(H, dH/dV, dH/dX, dH/dk)`` for one step."""
    if case.kind == "if":
        return v + x, 1.0, 1.0, 0.0 * v
    if case.kind == "leaky":
        fired = (v >= V_TH).astype(float)  # previous spike, no gradient
        return k * v + x - V_TH * fired, k, 1.0, v
    vr = V_RESET if case.reset == "hard" else 0.0
    if case.decay_input:
        return v + k * (x - (v - vr)), 1 - k, k, x - (v - vr)
    return v - k * (v - vr) + x, 1 - k, 1.0, -(v - vr)


def ref_reset(case: Case, h, s, g):
    """``(V, dV/dH)`` for one step, given the spike ``s`` and the surrogate ``g = g'(H - th)``."""
    live = 0.0 if case.detach_reset else 1.0
    if case.reset == "hard":
        return np.where(s == 1, V_RESET, h), (1 - s) + live * (V_RESET - h) * g
    if case.reset == "soft":
        return h - V_TH * s, 1 - live * V_TH * g
    return h, np.ones_like(h)  # leaky: the reset happens in the next charge


def ref_forward(case: Case, x: np.ndarray, k: float) -> dict[str, np.ndarray]:
    """Per-step forward; keeps every local derivative the backward needs."""
    gfun, param = REF_SURROGATES[case.surrogate]
    v = np.full(x.shape[1:], case.v0)
    keys = ("S", "V", "g", "dVdH", "dHdV", "dHdX", "dHdk")
    rec = {key: [] for key in keys}
    for x_t in x:
        h, dhdv, dhdx, dhdk = ref_charge(case, v, x_t, k)
        s = (h - V_TH >= 0).astype(float)
        g = gfun(h - V_TH, param)
        v, dvdh = ref_reset(case, h, s, g)
        for key, val in zip(keys, (s, v, g, dvdh, dhdv, dhdx, dhdk)):
            rec[key].append(np.broadcast_to(val, v.shape))
    return {key: np.stack(vals) for key, vals in rec.items()}


def ref_backward(fwd: dict, ws, wq, wv) -> tuple[np.ndarray, float]:
    """Backward through time of ``L = sum(ws S) + sum(wq V_seq) + sum(wv V[T-1])``.

    Returns ``(dL/dX, dL/dk)``.
    """
    gx = np.zeros_like(fwd["S"])
    gk, carry = 0.0, np.zeros_like(wv)
    for t in reversed(range(len(gx))):
        g_v = wq[t] + carry + (wv if t == len(gx) - 1 else 0.0)
        g_h = ws[t] * fwd["g"][t] + g_v * fwd["dVdH"][t]
        gx[t] = g_h * fwd["dHdX"][t]
        gk += float((g_h * fwd["dHdk"][t]).sum())
        carry = g_h * fwd["dHdV"][t]
    return gx, gk


def decay_param_grad(case: Case, gk: float, k: float) -> float | None:
    """dL/d(learned parameter): PLIF's w via sigmoid', Leaky's beta through the clamp."""
    if case.kind == "plif":
        return gk * k * (1 - k)
    if case.kind == "leaky":
        return gk if 0.0 <= k <= 1.0 else 0.0
    return None


# ---------------------------------------------------------------------------------------------
# helpers


def random_input(seed: int, shape=(T, N), shift: float = 0.8) -> torch.Tensor:
    """Standard normal plus ``shift`` (float64): a good share of neurons spike."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64) + shift


def shift_for(case: Case) -> float:
    """Decaying the input (k = 1/3) needs a larger drive to reach the threshold."""
    return 1.3 if case.kind in ("lif", "plif") and case.decay_input else 0.6


def loss_weights(seed: int, shape=(T, N)) -> tuple[torch.Tensor, ...]:
    """Random weights for spikes, ``v_seq`` and the final ``v``."""
    gen = torch.Generator().manual_seed(1000 + seed)
    ws, wq = (torch.randn(*shape, generator=gen, dtype=torch.float64) for _ in range(2))
    return ws, wq, torch.randn(*shape[1:], generator=gen, dtype=torch.float64)


def weighted_loss(spikes, v_seq, v, weights) -> torch.Tensor:
    """``sum(ws S) + sum(wq v_seq) + sum(wv v)``."""
    ws, wq, wv = weights
    return (spikes * ws).sum() + (v_seq * wq).sum() + (v * wv).sum()


def run_multi(layer, x: torch.Tensor, weights) -> dict[str, torch.Tensor]:
    """Multi-step run; outputs, state and gradients w.r.t. ``x`` and the layer's parameters."""
    layer.reset()
    x = x.clone().requires_grad_(True)
    spikes = layer(x)
    return collect(layer, x, spikes, weights)


def run_single(layer, x: torch.Tensor, weights) -> dict[str, torch.Tensor]:
    """The same, one ``[N, ...]`` step per call (state kept by the layer between calls)."""
    layer.reset()
    x = x.clone().requires_grad_(True)
    spikes = torch.stack([layer(x_t) for x_t in x])
    return collect(layer, x, spikes, weights)


def collect(layer, x, spikes, weights) -> dict[str, torch.Tensor]:
    """Bundle spikes, ``v``, ``v_seq`` and the gradients of the weighted loss."""
    params = list(layer.parameters())
    grads = torch.autograd.grad(weighted_loss(spikes, layer.v_seq, layer.v, weights), [x, *params])
    out = {
        "spikes": spikes.detach(),
        "v": layer.v.detach(),
        "v_seq": layer.v_seq.detach(),
        "grad_x": grads[0],
    }
    if params:
        out["grad_param"] = grads[1]
    return out


# ---------------------------------------------------------------------------------------------
# (1) forward and input gradient vs the independent reference


@pytest.mark.parametrize("case", make_cases(), ids=str)
def test_neuron_matches_reference(case):
    """Spikes exact; membrane and gradients (input, learned decay) equal the reference."""
    layer = build_layer(case, store_v_seq=True)
    x, weights = random_input(1, shift=shift_for(case)), loss_weights(1)
    got = run_multi(layer, x, weights)
    k = decay_of(case, layer)
    fwd = ref_forward(case, x.numpy(), k)
    gx, gk = ref_backward(fwd, *(w.numpy() for w in weights))

    np.testing.assert_array_equal(got["spikes"].numpy(), fwd["S"])
    assert 0.05 < fwd["S"].mean() < 0.95, "the input does not exercise firing"
    np.testing.assert_allclose(got["v_seq"].numpy(), fwd["V"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["v"].numpy(), fwd["V"][-1], rtol=1e-12, atol=1e-12)
    assert np.abs(gx).sum() > 0
    np.testing.assert_allclose(got["grad_x"].numpy(), gx, rtol=1e-9, atol=1e-12)
    want = decay_param_grad(case, gk, k)
    assert ("grad_param" in got) == (want is not None)
    if want is not None:
        np.testing.assert_allclose(got["grad_param"].item(), want, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# (2) single-step == multi-step, (3) store_v_seq


STEP_CASES = [
    Case("if", "atan", "hard"),
    Case("if", "sigmoid", "soft", detach_reset=True),
    Case("lif", "atan", "hard"),
    Case("lif", "erf", "soft", decay_input=False),
    Case("plif", "atan", "hard"),
    Case("plif", "triangle", "soft", detach_reset=True),
    Case("leaky", "fast_sigmoid", "subtract"),
]


def compare_modes(case: Case, weights_v_seq: bool) -> tuple[dict, dict]:
    """``(multi, single)`` runs of ``case`` on the same input and loss weights."""
    shape = (T, 6, 5)
    x, (ws, wq, wv) = random_input(2, shape, shift_for(case)), loss_weights(2, shape)
    weights = (ws, wq if weights_v_seq else torch.zeros_like(wq), wv)
    multi = run_multi(build_layer(case, store_v_seq=True), x, weights)
    single = run_single(build_layer(case, step_mode="s", store_v_seq=True), x, weights)
    assert multi.keys() == single.keys()
    return multi, single


@pytest.mark.parametrize("case", STEP_CASES, ids=str)
def test_single_step_equals_multi_step(case):
    """step_mode='s' over T calls gives the very same outputs, state and input gradient as 'm'.

    The loss reads spikes and the final ``v`` (as training does).
    """
    multi, single = compare_modes(case, weights_v_seq=False)
    for key in ("spikes", "v", "v_seq", "grad_x"):
        assert torch.equal(single[key], multi[key]), key
    if "grad_param" in multi:  # summed over T in another order (one decay node per call)
        torch.testing.assert_close(
            single["grad_param"], multi["grad_param"], rtol=1e-12, atol=1e-14
        )


@pytest.mark.parametrize("case", STEP_CASES, ids=str)
def test_single_step_equals_multi_step_through_v_seq(case):
    """With a loss on ``v_seq`` too, gradients agree to rounding.

    ``v_seq`` is a stack in 'm' and a growing cat in 's', so autograd adds the three
    contributions to dL/dV[t] (v_seq, V and V - V_r in the next charge) in another order.
    """
    multi, single = compare_modes(case, weights_v_seq=True)
    for key in ("spikes", "v", "v_seq"):
        assert torch.equal(single[key], multi[key]), key
    for key in ("grad_x", "grad_param"):
        if key in multi:
            torch.testing.assert_close(single[key], multi[key], rtol=1e-12, atol=1e-14)


def test_single_step_state_persists_until_reset():
    """The membrane carries across calls; reset() starts again from V_rest."""
    layer = build_layer(Case("lif", "atan", "hard"), step_mode="s")
    x = random_input(3, (2, N), shift=1.3)
    first = layer(x[0])
    layer(x[1])
    assert not torch.equal(layer.v, torch.full_like(layer.v, V_RESET))
    layer.reset()
    assert layer.v is None
    assert torch.equal(layer(x[0]), first)


@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize("kind", ["if", "lif", "plif", "leaky"])
def test_store_v_seq(kind, step_mode):
    """store_v_seq keeps the membrane sequence [T, N, ...] in both modes; off keeps none."""
    case = Case(kind, "atan", "subtract" if kind == "leaky" else "soft")
    x = random_input(4, (T, 3, 4), shift=1.0)
    for store in (True, False):
        layer = build_layer(case, step_mode=step_mode, store_v_seq=store)
        with torch.no_grad():
            if step_mode == "m":
                layer(x)
            else:
                for x_t in x:
                    layer(x_t)
        if not store:
            assert layer.v_seq is None
            continue
        assert layer.v_seq.shape == (T, 3, 4)
        assert torch.equal(layer.v_seq[-1], layer.v)


# ---------------------------------------------------------------------------------------------
# (4) repr


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        (IFNeuron(v_threshold=0.8), ["v_threshold=0.8", "reset=hard(v_reset=0)"]),
        (
            LIFNeuron(tau=3.0, v_reset=None, surrogate=Surrogate("sigmoid", 4.0)),
            ["reset=soft", "tau=3", "surrogate=sigmoid(alpha=4)"],
        ),
        (PLIFNeuron(init_tau=2.0, v_reset=-0.2), ["reset=hard(v_reset=-0.2)", "tau=2 (learned)"]),
        (
            LeakyNeuron(beta=0.6, surrogate=Surrogate("fast_sigmoid", 25.0)),
            ["reset=subtract", "beta=0.6", "surrogate=fast_sigmoid(slope=25)"],
        ),
        (LeakyNeuron(beta=0.9, learn_beta=True), ["beta=0.9 (learned)"]),
    ],
    ids=["if", "lif", "plif", "leaky", "leaky-learned"],
)
def test_repr(layer, expected):
    """repr shows threshold, reset, tau/beta, surrogate and backend."""
    text = repr(layer)
    for part in [*expected, "v_threshold=", "surrogate=", "backend=torch"]:
        assert part in text, f"{part!r} missing from {text}"
    assert ("tau=" in text) == isinstance(layer, LIFNeuron | PLIFNeuron)
    assert ("beta=" in text) == isinstance(layer, LeakyNeuron)


# ---------------------------------------------------------------------------------------------
# (5) surrogates


def test_every_surrogate_has_a_reference():
    """The reference table covers every registered surrogate, with the same defaults."""
    assert sorted(REF_SURROGATES) == SURROGATES.names()
    for name, (_, default) in REF_SURROGATES.items():
        assert SURROGATES.get(name).default == default


def surrogate_grid(param: float) -> np.ndarray:
    """A dense grid over [-3, 3] plus the points where formulas switch (0, 1/p, p/2, 1)."""
    edges = [0.0, 1.0, 1 / param, param / 2, 1e-12, 1e-300]
    return np.concatenate([np.linspace(-3, 3, 2401), edges, [-e for e in edges]])


@pytest.mark.parametrize("scale", [1.0, 0.5, 3.0], ids=["default", "half", "x3"])
@pytest.mark.parametrize("name", list(REF_SURROGATES))
def test_surrogate_derivative_formula(name, scale):
    """g'(x) (directly and through autograd) equals the formula written out above."""
    gfun, default = REF_SURROGATES[name]
    param = default * scale
    x = surrogate_grid(param)
    want = gfun(x, param)
    sg = Surrogate(name, param)
    xt = torch.tensor(x, requires_grad=True)
    np.testing.assert_allclose(sg.grad(xt.detach()).numpy(), want, rtol=1e-12, atol=1e-12)
    upstream = torch.linspace(-2, 2, len(x), dtype=torch.float64)
    (grad,) = torch.autograd.grad((sg(xt) * upstream).sum(), xt)
    np.testing.assert_allclose(grad.numpy(), want * upstream.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(REF_SURROGATES))
def test_surrogate_forward_is_heaviside(name, dtype):
    """The forward is exactly (x >= 0), in the input's dtype (-0.0 counts as 0 and fires)."""
    x = torch.tensor(surrogate_grid(REF_SURROGATES[name][1]) - 1e-3, dtype=dtype)
    x = torch.cat([x, torch.tensor([0.0, -0.0, -1e-30, 1e-30], dtype=dtype)])
    s = Surrogate(name, REF_SURROGATES[name][1])(x)
    assert s.dtype == dtype
    assert torch.equal(s, (x >= 0).to(dtype))


# ---------------------------------------------------------------------------------------------
# (6) learned decays: PLIF's w, Leaky's clamped beta


@pytest.mark.parametrize("init_tau", [1.5, 2.0, 3.0, 10.0])
def test_plif_w_init_and_learns(init_tau):
    """w starts at -log(init_tau - 1), i.e. 1/sigmoid(w) = init_tau, and gets a gradient."""
    layer = PLIFNeuron(init_tau=init_tau)
    assert [name for name, _ in layer.named_parameters()] == ["w"]
    assert layer.w.item() == pytest.approx(-math.log(init_tau - 1), rel=1e-6, abs=1e-7)
    assert 1 / torch.sigmoid(layer.w).item() == pytest.approx(init_tau, rel=1e-6)
    layer(random_input(5, shift=1.3).float()).sum().backward()
    assert layer.w.grad is not None and layer.w.grad.abs().item() > 0
    before = layer.w.detach().clone()
    torch.optim.SGD(layer.parameters(), lr=0.1).step()
    assert not torch.equal(layer.w.detach(), before)


@pytest.mark.parametrize(("beta", "clamped"), [(1.5, 1.0), (-0.3, 0.0), (0.6, 0.6)])
def test_leaky_beta_clamped(beta, clamped):
    """A learned beta that training moved outside [0, 1] acts as clamp(beta, 0, 1), with a
    gradient of 0 (a starting value outside is refused: tests/test_neuron_values.py)."""
    x = random_input(6, shift=0.5)
    learned = LeakyNeuron(beta=0.5, learn_beta=True, store_v_seq=True)
    with torch.no_grad():
        learned.beta.fill_(beta)  # where training may take it
    learned = learned.double()
    fixed = LeakyNeuron(beta=clamped, store_v_seq=True).double()
    spikes = learned(x)
    assert torch.equal(spikes, fixed(x))
    assert torch.equal(learned.v_seq, fixed.v_seq)
    (learned.v_seq.sum() + spikes.sum()).backward()
    inside = 0.0 <= beta <= 1.0
    assert (learned.beta.grad.item() != 0.0) == inside
    assert not list(fixed.parameters()), "a fixed beta is a buffer, not a parameter"
