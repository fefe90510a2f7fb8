"""The fused alif / synaptic kernels (written from the trace of their step,
``kernels/step_kernels.py``) against the float64 reference loop (``state_loop.reference_states``)
run with the very same step function.

As in ``test_kernels.py``: the reference is recomputed in float64 from the values the kernel saw
(half inputs upcast); neurons whose threshold argument (``H - theta``, and synaptic's ``V - V_th``
of its reset) comes within 1e-4 of 0 at some step may spike differently under rounding, so they
are left out of the value comparisons and their upstream gradients are zero. The loss weighs
the spikes, the V sequence and both last states, so that every gradient path is checked.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from test_kernels import AMBIGUOUS, DEVICE, HALF, ON_GPU, TWO_SIZES, needs_kernels, rel_err

import snnrun.kernels as kernels
from snnrun.neuron.contract import SpikingNeuron
from snnrun.neuron.neurons import build_neuron
from snnrun.neuron.state_loop import chunked_states, reference_states
from snnrun.neuron.state_neurons import SynapticNeuron

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

V_TH = 0.8
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
SURROGATES = ("atan", "sigmoid", "fast_sigmoid", "triangle")


@pytest.fixture
def poison(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kernel output starts as NaN, so an element the kernel skipped shows up."""
    from snnrun.kernels import neuron_kernels

    monkeypatch.setattr(neuron_kernels, "POISON", True)


@dataclass(frozen=True)
class Case:
    """One layer configuration: ``alif`` (reset, detach_reset, decay_input) or ``synaptic``
    (which of alpha / beta is learned)."""

    kind: str
    reset: str = "soft"  # alif: hard | hard0 (to V_reset = 0) | soft
    detach_reset: bool = False
    decay_input: bool = True
    learn: tuple[str, ...] = ()  # synaptic: ("alpha", "beta")
    surrogate: str = "atan"

    def layer(self, backend: str = "triton", **extra) -> SpikingNeuron:
        if self.kind == "alif":
            options = {"tau": 2.5, "tau_adapt": 4.0, "beta_a": 0.3,
                       "detach_reset": self.detach_reset, "decay_input": self.decay_input,
                       "v_reset": {"hard": -0.1, "hard0": 0.0}.get(self.reset)}  # fmt: skip
        else:
            options = {"alpha": 0.6, "beta": 0.7, "learn_alpha": "alpha" in self.learn,
                       "learn_beta": "beta" in self.learn}  # fmt: skip
        cfg = {"name": self.kind, "backend": backend, "v_threshold": V_TH, **options, **extra}
        return build_neuron(cfg, {"name": self.surrogate})


class _Recorder:
    """A surrogate that records its arguments (``H - theta`` at every step)."""

    def __init__(self, inner, seen: list[torch.Tensor]) -> None:
        self.inner, self.seen = inner, seen

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.seen.append(z.detach())
        return self.inner(z)


def flat(layer: SpikingNeuron) -> tuple[list, Any]:
    """The layer's parameter values and step as the backends take them."""
    return list(layer.params().values()), layer.flat_step


def make_inputs(case: Case, t: int, n: int, dtype: torch.dtype, seed: int):
    """``x [T, N]`` (dtype) and the initial states ``(q, V) [N]`` float32, random, many spikes."""
    g = torch.Generator().manual_seed(seed)
    if case.kind == "alif":
        x = 0.5 + 0.8 * torch.randn(t, n, generator=g)
        q0 = 0.5 * torch.rand(n, generator=g)
    else:
        x = 0.2 + 0.5 * torch.randn(t, n, generator=g)
        q0 = 0.3 * torch.randn(n, generator=g)
    v0 = 0.6 * torch.rand(n, generator=g) - 0.1
    return x.to(dtype), (q0, v0)


def unambiguous(ref: SpikingNeuron, x: torch.Tensor, state) -> torch.Tensor:
    """Neurons ``[N]`` whose every threshold decision is at least AMBIGUOUS away from a tie."""
    seen: list[torch.Tensor] = []
    dyn = ref.dynamics
    ref.dynamics = dataclasses.replace(dyn, surrogate=_Recorder(dyn.surrogate, seen))
    try:
        with torch.no_grad():
            _, _, v_seq = reference_states(x.double(), state, *flat(ref))
    finally:
        ref.dynamics = dyn
    margins = [torch.stack(seen)]
    if ref.dynamics.kind == "leaky":  # synaptic's reset reads V[t-1] >= V_th
        margins.append(torch.cat([state[1][None], v_seq]) - V_TH)
    return ~torch.cat(margins).abs().lt(AMBIGUOUS).any(0)


def run(layer, runner, x, state, weights, device: str, dtype: torch.dtype) -> dict:
    """Forward, then the backward of ``<S, gs> + <V_seq, gvs> + <q, gq> + <V, gv>``."""
    x = x.detach().to(device, dtype).requires_grad_()
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    state = tuple(s.detach().to(device, state_dtype).requires_grad_() for s in state)
    spikes, last, v_seq = runner(x, state, *flat(layer))
    outputs = (spikes, v_seq, *last)
    sum(((o * w.to(device, o.dtype)).sum() for o, w in zip(outputs, weights))).backward()
    out = {"s": spikes, "v_seq": v_seq, "q": last[0], "v": last[1], "gx": x.grad,
           "gq0": state[0].grad, "gv0": state[1].grad}  # fmt: skip
    for name, p in layer.named_parameters():
        out[f"g_{name}"] = p.grad
    return {k: v.detach().cpu() for k, v in out.items()}


def triton_states(x, state, params, step, store_v_seq=True):
    return kernels.triton_states(step.__self__, x, state, params, step, store_v_seq)


def check(case: Case, t: int, n: int, dtype: torch.dtype, seed: int = 0) -> dict:
    """The Triton path vs the float64 reference for one case; returns the kernel outputs."""
    layer = case.layer()
    ref = copy.deepcopy(layer).double()
    layer = layer.to(DEVICE)
    x, state = make_inputs(case, t, n, dtype, seed)
    keep = unambiguous(ref, x, tuple(s.double() for s in state))
    assert keep.float().mean() > 0.9, "too many near-threshold neurons for a meaningful test"
    g = torch.Generator().manual_seed(seed + 1)
    weights = [(torch.randn(t, n, generator=g) * keep).to(dtype),  # as the kernel gets them
               (torch.randn(t, n, generator=g) * keep).to(dtype),
               torch.randn(n, generator=g) * keep, torch.randn(n, generator=g) * keep]  # fmt: skip
    expected = run(ref, reference_states, x, state, weights, "cpu", torch.float64)
    out = run(layer, triton_states, x, state, weights, DEVICE, dtype)

    assert out["s"].dtype == out["v_seq"].dtype == out["gx"].dtype == dtype
    assert out["q"].dtype == out["v"].dtype == out["gv0"].dtype == torch.float32
    assert out.keys() == expected.keys()
    for name, value in out.items():
        assert not value.isnan().any(), f"{name} has unwritten (NaN) elements"
    assert torch.equal(out["s"][:, keep].double(), expected["s"][:, keep])
    half = dtype in HALF
    tolerances = {"v_seq": 2e-2 if half else 1e-6, "q": 1e-6, "v": 1e-6,
                  "gx": 2e-2 if half else 1e-5, "gq0": 1e-5, "gv0": 1e-5}  # fmt: skip
    kept = {"v_seq": (slice(None), keep), "q": keep, "v": keep}  # values: unambiguous only
    for name, tol in tolerances.items():
        sel = kept.get(name, slice(None))
        assert rel_err(out[name][sel], expected[name][sel]) < tol, name
    for name in (k for k in out if k.startswith("g_")):
        assert rel_err(out[name], expected[name]) < 1e-4, name
    return out


# --------------------------------------------------------------------------- the matrix


def _matrix() -> list:
    """alif: hard/hard to 0/soft x detach_reset x dtype (decay_input and the surrogate rotate);
    synaptic: fixed / learned alpha and beta x dtype."""
    params, i = [], 0
    for reset in ("hard", "hard0", "soft"):
        for detach in (False, True):
            for key, dtype in DTYPES.items():
                case = Case("alif", reset, detach, i % 2 == 0, surrogate=SURROGATES[i % 4])
                params.append(pytest.param(case, dtype, id=f"alif-{reset}-detach{detach}-{key}"))
                i += 1
    for learn in ((), ("alpha", "beta")):
        for key, dtype in DTYPES.items():
            case = Case("synaptic", learn=learn, surrogate=SURROGATES[i % 4])
            params.append(pytest.param(case, dtype, id=f"synaptic-{'+'.join(learn)}-{key}"))
            i += 1
    return params


@needs_kernels
@pytest.mark.parametrize(("case", "dtype"), _matrix())
def test_matrix_against_reference(case: Case, dtype: torch.dtype, poison: None) -> None:
    """T=11 crosses one chunk boundary (CHUNK=8); N=37 is one partial block."""
    out = check(case, 11, 37, dtype)
    rate = out["s"].float().mean().item()
    assert 0.05 < rate < 0.95, f"spike rate {rate:.2f}: inputs do not exercise the threshold"


@needs_kernels
@pytest.mark.parametrize(("t", "n"), TWO_SIZES)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize(
    "case",
    [Case("alif", "hard", surrogate="sigmoid"), Case("synaptic", learn=("alpha", "beta"))],
    ids=["alif", "synaptic"],
)
def test_every_kernel_and_dtype_at_two_sizes(case: Case, dtype: torch.dtype, t: int, n: int,
                                             poison: None) -> None:  # fmt: skip
    """The GPU run's quick subset (scripts/gpu_run.sh quick), as in test_kernels.py."""
    check(case, t, n, dtype, seed=t + n)


@needs_kernels
@pytest.mark.parametrize("learn", [("alpha",), ("beta",)])
def test_synaptic_one_learned_decay(learn: tuple[str, ...]) -> None:
    check(Case("synaptic", learn=learn), 11, 37, torch.float32)


@needs_kernels
@pytest.mark.parametrize("t", [1, 8, 19])
@pytest.mark.parametrize("n", [1, 1100])
@pytest.mark.parametrize(
    "case",
    [Case("alif", "hard"), Case("synaptic", learn=("alpha", "beta"))],
    ids=["alif", "synaptic"],
)
def test_sizes(case: Case, n: int, t: int, poison: None) -> None:
    """T below, at and past CHUNK (and not a multiple); N = 1 and several blocks with a tail."""
    check(case, t, n, torch.float32, seed=n + t)


# --------------------------------------------------------------------------- the layers


@needs_kernels
@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize(
    "case",
    [Case("alif", "hard", decay_input=False), Case("synaptic", learn=("alpha", "beta"))],
    ids=["alif", "synaptic"],
)
def test_layers_match_torch_backend(case: Case, step_mode: str) -> None:
    """Whole layers (spikes only in the loss; step mode 's' chains the float32 states through
    the calls) give the torch backend's spikes, V sequence and gradients."""
    x = (0.4 + 0.6 * torch.randn(13, 3, 7, generator=torch.Generator().manual_seed(4))).to(DEVICE)
    results = []
    for backend in ("torch", "triton"):
        layer = case.layer(backend, step_mode=step_mode, store_v_seq=True).to(DEVICE)
        xs = x.clone().requires_grad_()
        out = layer(xs) if step_mode == "m" else torch.stack([layer(step) for step in xs])
        (out * torch.arange(out.numel(), device=DEVICE).view(out.shape).sin()).sum().backward()
        results.append((out, layer.v_seq, xs.grad, *(p.grad for p in layer.parameters())))
    assert 0 < results[0][0].mean() < 1
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("kind", ["alif", "synaptic"])
def test_v_seq_only_when_asked(kind: str) -> None:
    """``store_v_seq=False`` returns no V sequence (the kernel skips writing it), same spikes."""
    layer = Case(kind).layer().to(DEVICE)
    x, state = make_inputs(Case(kind), 9, 20, torch.float32, seed=2)
    x, state = x.to(DEVICE), tuple(s.to(DEVICE) for s in state)
    with_v = triton_states(x, state, *flat(layer))
    without = triton_states(x, state, *flat(layer), store_v_seq=False)
    torch_loop = chunked_states(layer, x, state, *flat(layer), False)
    assert with_v[2] is not None and without[2] is None and torch_loop[2] is None
    assert torch.equal(with_v[0], without[0]) and torch.equal(with_v[0], torch_loop[0])


@needs_kernels
def test_empty_neuron_axis_and_per_neuron_decays() -> None:
    """No neurons: empty outputs. One alpha per neuron: the kernels take it (one value per
    neuron) and give the torch loop's values and gradient."""
    layer = Case("synaptic").layer().to(DEVICE)
    x = torch.zeros(4, 0, device=DEVICE)
    spikes, (i, v), v_seq = triton_states(x, (x[0], x[0]), *flat(layer))
    assert spikes.shape == v_seq.shape == (4, 0) and i.shape == v.shape == (0,)
    x = torch.rand(9, 5, device=DEVICE) * 2
    results = []
    for run_ in (triton_states, lambda *a: chunked_states(layer, *a, True)):
        alpha = torch.linspace(0.1, 0.9, 5, device=DEVICE).requires_grad_()
        spikes, last, _ = run_(x, (x[0] * 0, x[0] * 0), [alpha, flat(layer)[0][1]], layer.flat_step)
        (spikes.sum() + last[1].sum()).backward()
        results.append((spikes, last[1], alpha.grad))
    assert results[0][0].sum() > 0
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


class _Doubled(SynapticNeuron):
    """A subclass with a step of its own."""

    def step(self, x, state, params):
        return super().step(2.0 * x, state, params)


@needs_kernels
def test_a_redefined_step_gets_kernels_of_its_own() -> None:
    """The kernels are written from the layer's own step: a subclass's step reaches them."""
    layer = _Doubled(alpha=0.6, beta=0.7, backend="triton").double()
    x = torch.rand(11, 6, dtype=torch.float64)
    spikes = layer(x)
    expected, _, _ = reference_states(x, layer.initial_state(x[0]), *flat(layer))
    assert torch.equal(spikes, expected) and spikes.sum() > 0


@needs_kernels
@pytest.mark.skipif(ON_GPU, reason="the CPU fallback")
def test_cpu_without_interpreter_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CUDA device and no interpreter: one warning, the torch loop, no kernel launch."""
    from snnrun.kernels import step_kernels

    monkeypatch.setattr(kernels, "INTERPRET", False)
    monkeypatch.setattr(kernels, "HAVE_TRITON", True)
    monkeypatch.setattr(kernels, "_warned", set())
    monkeypatch.setattr(step_kernels, "traced_states", None)  # a launch would fail
    layer, ref = Case("alif").layer("triton"), Case("alif").layer("torch")
    x = torch.rand(9, 2, 5) * 1.5
    with pytest.warns(RuntimeWarning, match="needs a CUDA device"):
        spikes = layer(x)
    assert torch.equal(spikes, ref(x))
