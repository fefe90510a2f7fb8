"""The fused Triton neuron kernels against the float64 torch reference (``reference_loop``).

On a CPU the kernels run through Triton's interpreter (``TRITON_INTERPRET=1``, set by conftest
before anything defines them); with ``SNNRUN_TEST_GPU=1`` on a CUDA machine they run compiled.
Every comparison recomputes the reference in float64 from the very input values the kernel saw
(half inputs are upcast), with autograd through the torch loop as the ground truth for the
surrogate backward (gradcheck says nothing about a Heaviside forward). Neurons whose charge ``H``
comes within 1e-4 of the threshold at some step may spike differently under rounding: they are
left out of the spike and membrane comparisons, and their upstream gradients are set to zero so
that the gradients (the decay's included, a sum over all neurons) stay comparable.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import snnrun.kernels as kernels
from snnrun.neuron.dynamics import Dynamics, charge, reference_loop
from snnrun.neuron.surrogate import SURROGATES, Surrogate

REPO = Path(__file__).resolve().parents[1]
ON_GPU = torch.cuda.is_available() and not kernels.INTERPRET
DEVICE = "cuda" if ON_GPU else "cpu"
RUNNABLE = kernels.HAVE_TRITON and (ON_GPU or kernels.INTERPRET)
needs_kernels = pytest.mark.skipif(
    not RUNNABLE, reason="needs triton and a CUDA device or TRITON_INTERPRET=1"
)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

V_TH = 0.8
V_RESET = -0.1
AMBIGUOUS = 1e-4  # |H - V_th| below this: the spike may flip under float32 rounding
HALF = (torch.float16, torch.bfloat16)
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


@pytest.fixture
def poison(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kernel output starts as NaN, so an element the kernel skipped shows up."""
    from snnrun.kernels import neuron_kernels

    monkeypatch.setattr(neuron_kernels, "POISON", True)


# --------------------------------------------------------------------------- cases and harness


@dataclass(frozen=True)
class Case:
    """One neuron configuration: the layer kind and how its decay arrives."""

    neuron: str  # if | lif | plif | leaky (leaky: learned beta) | leaky_fixed
    reset: str = "hard"  # hard | hard0 (to V_reset = 0) | soft (leaky is always subtractive)
    surrogate: str = "atan"
    detach_reset: bool = False
    decay_input: bool = True

    def dynamics(self) -> Dynamics:
        spec = SURROGATES.get(self.surrogate)
        kind = {"plif": "lif", "leaky_fixed": "leaky"}.get(self.neuron, self.neuron)
        leaky = kind == "leaky"
        return Dynamics(
            kind=kind,
            v_threshold=V_TH,
            v_reset={"hard": V_RESET, "hard0": 0.0}.get(self.reset) if not leaky else None,
            detach_reset=True if leaky else self.detach_reset,
            decay_input=self.decay_input,
            surrogate=Surrogate(spec.name, round(spec.default * 1.3, 3)),
        )

    def decay(self) -> float | torch.Tensor | None:
        """if: None; lif: the float 1/tau; plif, leaky: a tensor (learned unless leaky_fixed)."""
        if self.neuron == "if":
            return None
        if self.neuron == "lif":
            return 1.0 / 1.7
        value = {"plif": 0.45, "leaky": 0.6, "leaky_fixed": 0.6}[self.neuron]
        return torch.tensor(value, requires_grad=self.neuron != "leaky_fixed")


def make_inputs(t: int, n: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, ...]:
    """``(x [T, N] dtype, v_init [N] f32)`` on DEVICE: random, never zeros, many spikes."""
    g = torch.Generator().manual_seed(seed)
    x = 0.5 + 0.8 * torch.randn(t, n, generator=g)
    v0 = 0.6 * torch.rand(n, generator=g) - 0.1
    return x.to(DEVICE, dtype), v0.to(DEVICE)


def _leaf(value: float | torch.Tensor | None, dtype: torch.dtype, device: str):
    if not isinstance(value, torch.Tensor):
        return value
    return value.detach().to(device, dtype).requires_grad_(value.requires_grad)


def reference_charge(x, v0, decay, dyn: Dynamics) -> torch.Tensor:
    """``H`` [T, N] in float64 from the same inputs (to find near-threshold neurons)."""
    with torch.no_grad():
        x64, v64, d64 = x.double().cpu(), v0.double().cpu(), _leaf(decay, torch.float64, "cpu")
        _, _, v_seq = reference_loop(x64, v64, d64, dyn, True)
        v_prev = torch.cat([v64[None], v_seq[:-1]])
        return charge(dyn, v_prev, x64, d64)


def run(backend, x, v0, decay, dyn, gs, gv, dtype: torch.dtype, device: str) -> dict:
    """Forward with ``store_v_seq``, then backward of ``<S, gs> + <V_last, gv>``."""
    x = x.detach().to(device, dtype).requires_grad_()
    v0 = v0.detach().to(device, torch.float64 if dtype == torch.float64 else torch.float32)
    v0.requires_grad_()
    d = _leaf(decay, torch.float64 if dtype == torch.float64 else torch.float32, device)
    s, v_last, v_seq = backend(x, v0, d, dyn, True)
    loss = (s * gs.to(device, s.dtype)).sum() + (v_last * gv.to(device, v_last.dtype)).sum()
    loss.backward()
    out = {"s": s, "v_last": v_last, "v_seq": v_seq, "gx": x.grad, "gv0": v0.grad}
    if isinstance(d, torch.Tensor) and d.requires_grad:
        out["gd"] = d.grad
    return {k: v.detach().cpu() for k, v in out.items()}


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest error relative to the largest expected magnitude."""
    scale = expected.abs().max().clamp_min(1e-12)
    return ((actual.double() - expected.double()).abs().max() / scale).item()


def check_case(case: Case, t: int, n: int, dtype: torch.dtype, seed: int = 0) -> dict:
    """Kernel vs float64 reference for one case; returns the kernel outputs."""
    dyn, decay = case.dynamics(), case.decay()
    x, v0 = make_inputs(t, n, dtype, seed)
    h = reference_charge(x, v0, decay, dyn)
    keep = ~((h - V_TH).abs() < AMBIGUOUS).any(0)
    assert keep.float().mean() > 0.9, "too many near-threshold neurons for a meaningful test"
    g = torch.Generator().manual_seed(seed + 1)
    gs = (torch.randn(t, n, generator=g) * keep).to(dtype)
    gv = torch.randn(n, generator=g) * keep
    ref = run(reference_loop, x, v0, decay, dyn, gs, gv, torch.float64, "cpu")
    out = run(kernels.triton_membrane, x, v0, decay, dyn, gs, gv, dtype, DEVICE)

    assert out["s"].dtype == dtype and out["v_seq"].dtype == dtype
    assert out["v_last"].dtype == torch.float32 and out["gx"].dtype == dtype
    for name, value in out.items():
        assert not value.isnan().any(), f"{name} has unwritten (NaN) elements"
    assert torch.equal(out["s"][:, keep].double(), ref["s"][:, keep])
    half = dtype in HALF
    assert rel_err(out["v_last"][keep], ref["v_last"][keep]) < 1e-6
    assert rel_err(out["v_seq"][:, keep], ref["v_seq"][:, keep]) < (2e-2 if half else 1e-6)
    assert rel_err(out["gx"], ref["gx"]) < (2e-2 if half else 1e-5)
    assert rel_err(out["gv0"], ref["gv0"]) < 1e-5
    assert ("gd" in out) == ("gd" in ref)
    if "gd" in ref:
        assert rel_err(out["gd"], ref["gd"]) < 1e-4
    return out


# --------------------------------------------------------------------------- the matrix


def _matrix() -> list:
    """Every neuron x surrogate x reset mode x dtype; detach_reset and decay_input rotate."""
    params = []
    for neuron in ("if", "lif", "plif", "leaky"):
        for reset in ("hard", "soft") if neuron != "leaky" else ("subtract",):
            for name in SURROGATES.names():
                code = SURROGATES.get(name).code
                case = Case(neuron, reset, name, code % 2 == 1, code // 2 % 2 == 0)
                for key, dtype in DTYPES.items():
                    params.append(pytest.param(case, dtype, id=f"{neuron}-{reset}-{name}-{key}"))
    return params


@needs_kernels
@pytest.mark.parametrize(("case", "dtype"), _matrix())
def test_matrix_against_reference(case: Case, dtype: torch.dtype, poison: None) -> None:
    """T=11 crosses one chunk boundary (CHUNK=8); N=37 is one partial block."""
    out = check_case(case, 11, 37, dtype)
    rate = out["s"].float().mean().item()
    assert 0.05 < rate < 0.95, f"spike rate {rate:.2f}: inputs do not exercise the threshold"


# The GPU run's quick subset (scripts/gpu_run.sh quick): every kernel and dtype at a small size
# and at one of 2M neuron-steps (several blocks with a tail, four chunks); the large size is
# -m slow on a CPU (interpreted), plain on a GPU.
TWO_SIZES = [
    pytest.param(11, 37, id="11x37"),
    pytest.param(32, 65613, id="32x65613", marks=[] if ON_GPU else [pytest.mark.slow]),
]
EVERY_KERNEL = [
    Case("if", "hard", "sigmoid"),
    Case("lif", "hard0", "atan", detach_reset=True),
    Case("plif", "soft", "erf", decay_input=False),
    Case("leaky", "subtract", "triangle"),
]


@needs_kernels
@pytest.mark.parametrize(("t", "n"), TWO_SIZES)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case", EVERY_KERNEL, ids=lambda c: c.neuron)
def test_every_kernel_and_dtype_at_two_sizes(case: Case, dtype: torch.dtype, t: int, n: int,
                                             poison: None) -> None:  # fmt: skip
    check_case(case, t, n, dtype, seed=t + n)


@needs_kernels
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("reset", ["hard", "hard0", "soft"])
@pytest.mark.parametrize("neuron", ["lif", "plif"])
def test_lif_options(neuron: str, reset: str, detach_reset: bool, decay_input: bool) -> None:
    check_case(Case(neuron, reset, "sigmoid", detach_reset, decay_input), 11, 37, torch.float32)


@needs_kernels
@pytest.mark.parametrize("neuron", ["leaky", "leaky_fixed", "if"])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_other_options(neuron: str, detach_reset: bool) -> None:
    """Fixed leaky beta (a tensor without grad) and IF with detach_reset both ways, soft and
    hard to 0."""
    for reset in ("soft", "hard0"):
        check_case(Case(neuron, reset, "fast_sigmoid", detach_reset), 11, 37, torch.float32)


@needs_kernels
@pytest.mark.parametrize("t", [1, 3, 16])
@pytest.mark.parametrize("n", [1, 7, 1000, 4099])
@pytest.mark.parametrize(
    ("case", "dtype"),
    [
        pytest.param(Case("lif", "hard", "atan"), torch.float32, id="lif-hard-f32"),
        pytest.param(Case("plif", "soft", "erf", True), torch.bfloat16, id="plif-soft-bf16"),
    ],
)
def test_sizes(case: Case, dtype: torch.dtype, n: int, t: int, poison: None) -> None:
    check_case(case, t, n, dtype, seed=n + t)


@needs_kernels
@pytest.mark.parametrize("t", [7, 8, 9, 17, 24])
def test_chunk_boundaries(t: int, poison: None) -> None:
    """T below, at, just past and at multiples of CHUNK; learned decay and leaky reset."""
    check_case(Case("plif", "hard", "triangle"), t, 129, torch.float32, seed=t)
    check_case(Case("leaky", "soft", "rectangle"), t, 129, torch.float32, seed=t)


# --------------------------------------------------------------------------- op-level checks


@needs_kernels
@pytest.mark.parametrize("t", [1, 8, 19])
def test_checkpoints_hold_the_chunk_start_membrane(t: int, poison: None) -> None:
    """``ckpt[c] = V[8c - 1]`` (``ckpt[0] = v_init``), every element written."""
    x, v0 = make_inputs(t, 45, torch.float32, seed=3)
    dyn = Case("lif").dynamics()
    from snnrun.kernels import neuron_kernels, neuron_op

    floats, flags = neuron_op.KernelArgs.of(dyn, 0.5).pack()
    _, v_last, v_seq, ckpt = torch.ops.snnrun.neuron_forward(x, v0, None, floats, flags, True)

    assert neuron_op.CHUNK == neuron_kernels.CHUNK == 8  # the fake impl's shape = the kernel's
    assert ckpt.shape == ((t + 7) // 8, 45) and ckpt.dtype == torch.float32
    expected = torch.cat([v0[None], v_seq[7:-1:8]]) if t > 8 else v0[None]
    assert torch.equal(ckpt, expected)
    assert torch.equal(v_last, v_seq[-1])
    assert dyn.hard_reset


@needs_kernels
def test_non_contiguous_input_matches_contiguous() -> None:
    """A strided view is copied once to a contiguous [T, N]; results are the same bits."""
    g = torch.Generator().manual_seed(5)
    base = (0.5 + 0.8 * torch.randn(6, 3, 10, 2, generator=g)).to(DEVICE)
    strided = base.transpose(1, 2)[..., ::2]  # [6, 10, 3, 1], not contiguous
    assert not strided.is_contiguous()
    dense = strided.contiguous()
    dyn = Case("lif", "soft").dynamics()
    results = []
    for x in (strided, dense):
        x = x.detach().requires_grad_()
        s, v_last, _ = kernels.triton_membrane(x, torch.zeros_like(x[0]), 0.5, dyn, False)
        (s.sum() + v_last.square().sum()).backward()
        assert s.shape == x.shape and v_last.shape == x.shape[1:]
        results.append((s, v_last, x.grad))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@needs_kernels
@pytest.mark.parametrize("neuron", ["lif", "plif", "leaky"])
def test_state_carries_across_calls(neuron: str) -> None:
    """Two calls chained through ``v_last -> v_init`` equal one call, gradients included."""
    case = Case(neuron, "soft", "atan")
    dyn = case.dynamics()
    x, v0 = make_inputs(13, 50, torch.float32, seed=11)
    gs = torch.randn(13, 50, generator=torch.Generator().manual_seed(2)).to(DEVICE)

    def loss_and_grads(split: int) -> tuple[torch.Tensor, ...]:
        xs = x.detach().clone().requires_grad_()
        v = v0.detach().clone().requires_grad_()
        d = _leaf(case.decay(), torch.float32, DEVICE)
        state, spikes = v, []
        for part in (xs[:split], xs[split:]) if split else (xs,):
            s, state, _ = kernels.triton_membrane(part, state, d, dyn, False)
            spikes.append(s)
        s = torch.cat(spikes)
        ((s * gs).sum() + state.sum()).backward()
        grads = (xs.grad, v.grad) + ((d.grad,) if isinstance(d, torch.Tensor) else ())
        return (s, state, *grads)

    for a, b in zip(loss_and_grads(0), loss_and_grads(5)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@needs_kernels
def test_v_last_unused_and_v_seq_not_differentiable() -> None:
    """Only spikes in the loss (grad of v_last materialized as zeros); v_seq carries no grad."""
    x, v0 = make_inputs(9, 20, torch.float32, seed=4)
    dyn = Case("lif", "hard").dynamics()
    x64 = x.double().requires_grad_()
    s64, _, _ = reference_loop(x64, v0.double(), 0.5, dyn, False)
    s64.sum().backward()
    x = x.requires_grad_()
    s, v_last, v_seq = kernels.triton_membrane(x, v0, 0.5, dyn, True)
    assert v_last.requires_grad and not v_seq.requires_grad
    s.sum().backward()
    assert rel_err(x.grad.cpu(), x64.grad.cpu()) < 1e-5  # both on one device


@needs_kernels
def test_shapes_and_empty_neuron_axis() -> None:
    dyn = Case("if").dynamics()
    x = torch.randn(3, 2, 4, 5, 5, device=DEVICE)
    s, v_last, v_seq = kernels.triton_membrane(x, torch.zeros_like(x[0]), None, dyn, False)
    assert s.shape == x.shape and v_last.shape == x.shape[1:] and v_seq is None
    assert v_last.dtype == torch.float32
    empty = torch.zeros(4, 0, device=DEVICE)
    v0 = torch.zeros(0, device=DEVICE)
    s, v_last, v_seq = kernels.triton_membrane(empty, v0, None, dyn, True)
    assert s.shape == (4, 0) and v_last.shape == (0,) and v_seq.shape == (4, 0)
    with pytest.raises(ValueError, match="one decay per layer"):
        kernels.triton_membrane(x, x[0], torch.full((5,), 0.5), Case("plif").dynamics(), False)


# --------------------------------------------------------------------------- the layers


@needs_kernels
@pytest.mark.parametrize(
    ("kind", "options"),
    [("lif", {"tau": 2.0}), ("plif", {"init_tau": 2.5}), ("leaky", {"learn_beta": True})],
)
@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_layers_match_torch_backend(kind: str, options: dict, step_mode: str) -> None:
    """The neuron layers give the torch backend's spikes and learned-decay gradient."""
    from snnrun.neuron.neurons import NEURONS, reset_states

    x = (0.6 + 0.8 * torch.randn(6, 4, 9, generator=torch.Generator().manual_seed(7))).to(DEVICE)
    results = []
    for backend in ("torch", "triton"):
        layer = NEURONS.get(kind)(backend=backend, step_mode=step_mode, **options).to(DEVICE)
        xs = x.clone().requires_grad_()
        out = layer(xs) if step_mode == "m" else torch.stack([layer(step) for step in xs])
        (out * torch.arange(out.numel(), device=DEVICE).view(out.shape).sin()).sum().backward()
        learned = [p.grad for p in layer.parameters()]
        results.append((out, xs.grad, *learned))
        reset_states(layer)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- mixed precision


@needs_kernels
def test_autocast_bf16_sees_the_cast_input() -> None:
    """Under autocast the op gets the bf16 activation; same result as calling it on bf16."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 24).to(DEVICE)
    x = torch.randn(5, 8, 16, device=DEVICE)
    dyn = Case("plif", "soft").dynamics()
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        y = linear(x)
        s, v_last, _ = kernels.triton_membrane(
            y, torch.zeros_like(y[0]), torch.tensor(0.5), dyn, False
        )
    assert y.dtype == torch.bfloat16 and s.dtype == torch.bfloat16
    (s.float().sum() + v_last.sum()).backward()
    assert linear.weight.grad is not None and linear.weight.grad.isfinite().all()
    plain, v_plain, _ = kernels.triton_membrane(
        y.detach(), torch.zeros_like(y[0]), torch.tensor(0.5), dyn, False
    )
    assert torch.equal(s, plain) and torch.equal(v_last, v_plain)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grad_scaler_scales_exactly(dtype: torch.dtype) -> None:
    """A power-of-two loss scale (GradScaler's) comes back exactly scaled in every gradient."""
    x, v0 = make_inputs(10, 33, dtype, seed=9)
    dyn = Case("plif", "hard").dynamics()
    scaler = torch.amp.GradScaler(DEVICE, init_scale=2.0**12)
    grads = []
    for scale in (False, True):
        xs, v = x.detach().clone().requires_grad_(), v0.detach().clone().requires_grad_()
        d = torch.tensor(0.45, device=DEVICE, requires_grad=True)
        s, v_last, _ = kernels.triton_membrane(xs, v, d, dyn, False)
        loss = s.float().sum() + v_last.sum()
        (scaler.scale(loss) if scale else loss).backward()
        grads.append((xs.grad, v.grad, d.grad))
    for plain, scaled in zip(*grads):
        assert torch.equal(scaled, plain * 2.0**12)


# --------------------------------------------------------------------------- torch.compile


@needs_kernels
def test_torch_compile_fullgraph() -> None:
    """The op traces with its fake impls: no graph break, same outputs and gradients."""
    dyn = Case("plif", "hard").dynamics()

    def step(x: torch.Tensor, v: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        s, v_last, _ = kernels.triton_membrane(x * 1.5, v, d.sigmoid(), dyn, False)
        return s.sum() + v_last.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    x, v0 = make_inputs(9, 40, torch.float32, seed=12)
    results = []
    for fn in (step, compiled):
        xs, v = x.detach().clone().requires_grad_(), v0.detach().clone().requires_grad_()
        w = torch.tensor(0.3, device=DEVICE, requires_grad=True)
        loss = fn(xs, v, w)
        loss.backward()
        results.append((loss, xs.grad, v.grad, w.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@needs_kernels
def test_torch_compile_model_with_neuron_layers() -> None:
    """A model whose neuron layers (with state) use the triton backend compiles in one graph."""
    from snnrun.neuron.neurons import NEURONS, reset_states

    torch.manual_seed(3)
    net = torch.nn.Sequential(
        torch.nn.Linear(8, 16), NEURONS.get("plif")(backend="triton"),
        torch.nn.Linear(16, 4), NEURONS.get("leaky")(backend="triton", learn_beta=True),
    ).to(DEVICE)  # fmt: skip

    def loss(x: torch.Tensor) -> torch.Tensor:
        reset_states(net)
        return (net(x) * torch.linspace(-1, 1, 4, device=DEVICE)).sum()

    x = 2.0 * torch.randn(6, 5, 8, device=DEVICE)
    grads = []
    for fn in (loss, torch.compile(loss, fullgraph=True, backend="aot_eager")):
        net.zero_grad()
        fn(x).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- surrogates


if RUNNABLE:  # a tiny kernel that evaluates surrogate_grad (Triton reads its module globals)
    import triton
    import triton.language as tl

    from snnrun.kernels.surrogate_jit import surrogate_grad

    @triton.jit
    def evaluate_surrogate(x_ptr, y_ptr, n, alpha, SG: tl.constexpr, BLOCK: tl.constexpr):
        cols = tl.arange(0, BLOCK)
        x = tl.load(x_ptr + cols, mask=cols < n, other=0.0)
        tl.store(y_ptr + cols, surrogate_grad(x, alpha, SG), mask=cols < n)


@needs_kernels
def test_every_surrogate_dispatches_to_its_own_formula() -> None:
    """Each registered code runs its own formula (so a surrogate added without a branch fails)."""
    from snnrun.kernels.surrogate_jit import KERNEL_SURROGATES, surrogate_code

    assert sorted(KERNEL_SURROGATES) == SURROGATES.names()
    x = torch.linspace(-2.0, 2.0, 101, device=DEVICE)
    outputs = {}
    for name in SURROGATES.names():
        spec = SURROGATES.get(name)
        assert surrogate_code(name) == spec.code
        alpha = spec.default * 1.1
        y = torch.full_like(x, float("nan"))
        evaluate_surrogate[(1,)](x, y, x.numel(), alpha, SG=spec.code, BLOCK=128)
        expected = spec.formula(x.double(), alpha)
        torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-6, msg=name)
        outputs[name] = y
    names = list(outputs)
    for i, a in enumerate(names):  # distinct formulas, so a swapped branch cannot pass
        for b in names[i + 1 :]:
            assert not torch.allclose(outputs[a], outputs[b]), (a, b)


@needs_kernels
def test_unknown_surrogate_code_fails_loudly() -> None:
    from snnrun.kernels.surrogate_jit import surrogate_code

    with pytest.raises(NotImplementedError, match="no branch"):
        surrogate_code("not-a-surrogate")
    x = torch.zeros(4, device=DEVICE)
    with pytest.raises(Exception) as caught:  # Triton raises different types per path
        evaluate_surrogate[(1,)](x, x.clone(), 4, 1.0, SG=len(SURROGATES.names()), BLOCK=4)
    chain, error = [], caught.value
    while error is not None:  # compiled: the message sits in the cause; interpreted: in the error
        chain.append(repr(error))
        error = error.__cause__
    assert any("without a Triton branch" in text for text in chain), chain


# --------------------------------------------------------------------------- fallbacks


FALLBACK_SCRIPT = textwrap.dedent(
    """
    import sys
    import warnings
    import torch
    import snnrun.kernels as kernels
    from snnrun.neuron.dynamics import Dynamics, reference_loop

    assert "triton" not in sys.modules, "importing snnrun.kernels must not import triton"
    dyn = Dynamics("lif")
    x = torch.randn(7, 30).add(0.6).requires_grad_()
    v = torch.zeros(30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = torch.compile(kernels.triton_membrane, fullgraph=True, backend="eager")
        s_compiled = compiled(x, v, 0.5, dyn, False)[0]  # the fallback traces without a break
        s, v_last, _ = kernels.triton_membrane(x, v, 0.5, dyn, False)
        kernels.triton_membrane(x, v, 0.5, dyn, False)
    ref, v_ref, _ = reference_loop(x, v, 0.5, dyn, False)
    assert torch.equal(s, ref) and torch.equal(v_last, v_ref) and torch.equal(s_compiled, ref)
    messages = [str(w.message) for w in caught if "neuron.backend=triton" in str(w.message)]
    print(len(messages), messages[0] if messages else "")
    """
)


def test_cpu_without_interpreter_falls_back_with_one_warning() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", FALLBACK_SCRIPT], capture_output=True, text=True, env=env,
        cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, message = proc.stdout.strip().split(" ", 1)
    assert count == "1"
    if kernels.HAVE_TRITON:
        expected = (
            "neuron.backend=triton needs a CUDA device; falling back to the torch backend on cpu"
        )
        assert message == expected
    else:
        assert "pip install triton" in message


def test_missing_triton_falls_back_naming_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "HAVE_TRITON", False)
    monkeypatch.setattr(kernels, "_warned", set())
    dyn = Dynamics("if")
    x = torch.randn(4, 6) + 0.5
    with pytest.warns(RuntimeWarning, match=r"pip install triton"):
        s, _, _ = kernels.triton_membrane(x, torch.zeros(6), None, dyn, False)
    assert torch.equal(s, reference_loop(x, torch.zeros(6), None, dyn, False)[0])


# --------------------------------------------------------------------------- real compiler

SM90_SCRIPT = textwrap.dedent(
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from snnrun.kernels import neuron_kernels as K

    def sig(fn, types):
        names = list(fn.arg_names)
        return {n: types.get(n, "constexpr") for n in names}

    ptr = lambda dt: "*" + dt
    aligned = {(i,): [["tt.divisibility", 16]] for i in range(8)}
    for dt in ("fp32", "bf16", "fp16"):
        for kind in (0, 1, 2):
            fwd = dict(x_ptr=ptr(dt), v0_ptr="*fp32", dec_ptr="*fp32", s_ptr=ptr(dt),
                       vlast_ptr="*fp32", ckpt_ptr="*fp32", vseq_ptr=ptr(dt), N="i32", T="i32",
                       v_th="fp32", v_reset="fp32", decay_value="fp32", alpha="fp32")
            cf = dict(KIND=kind, HARD=kind == 1, DETACH=False, DECAY_INPUT=True, SG=0,
                      DECAY_PTR=kind > 0, STORE_V=True, CHUNK=K.CHUNK, BLOCK=1024)
            triton.compile(ASTSource(K.neuron_fwd_kernel, sig(K.neuron_fwd_kernel, fwd), cf,
                                     aligned), target=GPUTarget("cuda", 90, 32))
    for sg in range(8):
        bwd = dict(gs_ptr="*bf16", gvl_ptr="*fp32", x_ptr="*bf16", ckpt_ptr="*fp32",
                   dec_ptr="*fp32", gx_ptr="*bf16", gv0_ptr="*fp32", gdec_ptr="*fp32", N="i32",
                   T="i32", v_th="fp32", v_reset="fp32", decay_value="fp32", alpha="fp32")
        cb = dict(KIND=sg % 3, HARD=sg % 2 == 0, DETACH=sg % 4 == 1, DECAY_INPUT=sg < 4,
                  DECAY_PTR=True, NEED_DGRAD=sg % 3 > 0, SG=sg, CHUNK=K.CHUNK, BLOCK=128)
        k = triton.compile(ASTSource(K.neuron_bwd_kernel, sig(K.neuron_bwd_kernel, bwd), cb,
                                     aligned), target=GPUTarget("cuda", 90, 32))
        assert k.asm["ptx"].count("bar.sync") <= 1, "tile layout conversions through smem"
    import torch
    import triton.language as tl
    from snnrun.kernels.step_codegen import kernel_source
    from snnrun.kernels.step_kernels import compiled, traced
    from snnrun.neuron.neurons import build_neuron

    import snnrun
    from snnrun import tl as d

    class EveryOp(snnrun.Neuron):  # every operation of the dialect, a tensor parameter per neuron
        STATES = {"v": 0.0, "u": 0.1}

        def params(self):
            return {"k": torch.ones(3)}

        def step(self, x, st, p):
            v, u = st["v"], st["u"]
            h = (v + d.sigmoid(x) * p["k"] - d.exp(-d.abs(u)) / (2.0 + u * u)
                 + d.maximum(x, 0.1) - d.minimum(v, -1.0))
            s = self.fire(h - self.v_threshold)
            v = d.where((h > 2.0) | (u < -5.0), 0.0, h - d.detach(s))
            return s, {"v": v, "u": u * 0.9 + s}

    layers = [build_neuron({"name": "alif", "v_reset": 0.0}, {"name": "atan"}),
              build_neuron({"name": "synaptic", "learn_alpha": True}, {"name": "atan"}),
              EveryOp()]
    half = ("x_ptr", "s_ptr", "vseq_ptr", "gs_ptr", "gvs_ptr", "gx_ptr")
    for layer in layers:
        step, params = layer.flat_step, list(layer.params().values())
        trace, spike, new = traced(step, 2, params)
        kinds = ["scalar" if p.numel() == 1 else "element"
                 for p in params if isinstance(p, torch.Tensor)]
        fwd, bwd = compiled(kernel_source(trace.ops, spike, new, kinds))
        for fn, cb in ((fwd, dict(STORE_V=True)), (bwd, dict(HAS_GVS=True, SG=0))):
            cb = dict(cb, CHUNK=K.CHUNK, BLOCK=128, ACC=tl.float32)
            types = {n: ("*bf16" if n in half else "*fp32") if n.endswith("_ptr") else
                     "i32" if n in ("N", "T") else "fp32" for n in fn.arg_names if n not in cb}
            triton.compile(ASTSource(fn, sig(fn, types), cb, aligned),
                           target=GPUTarget("cuda", 90, 32))
    print("ok")
    """
)


@pytest.mark.skipif(ON_GPU, reason="the GPU tests compile the kernels for the real device")
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_kernels_compile_for_sm90_without_a_gpu() -> None:
    """Triton's real compiler (not the interpreter) builds every kernel variant for sm_90."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", SM90_SCRIPT], capture_output=True, text=True, env=env,
        cwd=REPO, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0 and "ptxas" in proc.stderr and "not found" in proc.stderr:
        pytest.skip("this Triton has no ptxas to finish the build")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("ok")
