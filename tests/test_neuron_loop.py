"""The default ``torch`` backend (handwritten backward) against the ``autograd`` reference loop.

In float64 the values must be bit-equal (same operation order) and the gradients of the spikes,
the last membrane, the input, the initial membrane and a learned decay equal to rounding; in
float32/bfloat16/float16 they must match the float64 reference as closely as the reference in
that dtype does.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from snnrun.neuron.dynamics import Dynamics, reference_loop
from snnrun.neuron.neuron_loop import handwritten_loop, torch_states
from snnrun.neuron.neurons import build_neuron, reset_states
from snnrun.neuron.state_loop import BACKENDS
from snnrun.neuron.surrogate import SURROGATES, Surrogate

V_TH, V_RESET = 0.8, -0.1


def dynamics(kind: str, reset: str, detach: bool, decay_input: bool, surrogate: str) -> Dynamics:
    spec = SURROGATES.get(surrogate)
    leaky = kind == "leaky"
    return Dynamics(
        kind=kind,
        v_threshold=V_TH,
        v_reset={"hard": V_RESET, "hard0": 0.0}.get(reset) if not leaky else None,
        detach_reset=True if leaky else detach,
        decay_input=decay_input,
        surrogate=Surrogate(spec.name, spec.default * 1.3),
    )


def decay_for(kind: str, learned: bool, shape: tuple[int, ...] = ()) -> float | torch.Tensor | None:
    if kind == "if":
        return None
    value = 0.45 if kind == "lif" else 0.6
    if not learned and kind == "lif":
        return value
    return torch.full(shape, value, dtype=torch.float64, requires_grad=learned)


def run(backend, x, v0, decay, dyn: Dynamics, gs, gv) -> dict[str, torch.Tensor]:
    """Forward with ``store_v_seq``, backward of ``<S, gs> + <V_last, gv> + <V_seq, flip(gs)>``;
    every result."""
    x = x.detach().clone().requires_grad_()
    v0 = v0.detach().clone().requires_grad_()
    d = decay
    if torch.is_tensor(decay):
        d = decay.detach().clone().requires_grad_(decay.requires_grad)
    s, v_last, v_seq = backend(x, v0, d, dyn, True)
    ((s * gs).sum() + (v_last * gv).sum() + (v_seq * gs.flip(0)).sum()).backward()
    out = {"s": s, "v_last": v_last, "v_seq": v_seq, "gx": x.grad, "gv0": v0.grad}
    if torch.is_tensor(d) and d.requires_grad:
        out["gd"] = d.grad
    return {k: v.detach() for k, v in out.items()}


def inputs(t: int, shape: tuple[int, ...], dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.8 * torch.randn(t, *shape, generator=g, dtype=torch.float64)).to(dtype)
    v0 = (0.6 * torch.rand(*shape, generator=g, dtype=torch.float64) - 0.1).to(dtype)
    gs = torch.randn(t, *shape, generator=g, dtype=torch.float64).to(dtype)
    gv = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
    return x, v0, gs, gv


def _cases() -> list:
    params = []
    for kind, surrogate in itertools.product(("if", "lif", "leaky"), SURROGATES.names()):
        resets = ("hard", "hard0", "soft") if kind != "leaky" else ("subtract",)
        for reset, detach, decay_input in itertools.product(resets, (False, True), (True, False)):
            if (kind != "lif" and not decay_input) or (kind == "leaky" and detach):
                continue
            for learned in (False, True) if kind != "if" else (False,):
                flags = f"d{int(detach)}-i{int(decay_input)}-l{int(learned)}"
                case = (kind, reset, detach, decay_input, surrogate, learned)
                params.append(pytest.param(*case, id=f"{kind}-{reset}-{surrogate}-{flags}"))
    return params


CASE_KEYS = ("kind", "reset", "detach", "decay_input", "surrogate", "learned")


@pytest.mark.parametrize(CASE_KEYS, _cases())
def test_float64_equals_the_autograd_loop(kind, reset, detach, decay_input, surrogate, learned):
    dyn = dynamics(kind, reset, detach, decay_input, surrogate)
    x, v0, gs, gv = inputs(6, (5, 7))
    decay = decay_for(kind, learned)
    ref = run(reference_loop, x, v0, decay, dyn, gs, gv)
    out = run(handwritten_loop, x, v0, decay, dyn, gs, gv)
    assert out.keys() == ref.keys()
    for key in ("s", "v_last", "v_seq"):
        assert torch.equal(out[key], ref[key]), key
    assert 0.05 < ref["s"].mean() < 0.95, "the inputs must make spikes and silences"
    for key in ("gx", "gv0", "gd"):
        if key in ref:
            torch.testing.assert_close(out[key], ref[key], rtol=1e-12, atol=1e-12, msg=key)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["if", "lif", "leaky"])
def test_low_precision_as_close_as_the_reference(kind: str, dtype: torch.dtype) -> None:
    """Both backends in ``dtype`` against float64: the fused one errs no more than 2x the
    reference (and agrees on every spike the reference gets right)."""
    dyn = dynamics(kind, "hard", False, True, "atan")
    x, v0, gs, gv = inputs(5, (33, 17), seed=3)
    decay = decay_for(kind, learned=kind != "if")
    exact = run(reference_loop, x, v0, decay, dyn, gs, gv)
    low = [x.to(dtype), v0.to(dtype), gs.to(dtype), gv.to(dtype)]
    d_low = decay.detach().float().requires_grad_() if torch.is_tensor(decay) else decay
    ref = run(reference_loop, low[0], low[1], d_low, dyn, *low[2:])
    out = run(handwritten_loop, low[0], low[1], d_low, dyn, *low[2:])
    for key in ("s", "v_last", "gx", "gv0"):
        assert out[key].dtype == ref[key].dtype, key
    assert torch.equal(out["s"], ref["s"])
    for key in ("v_last", "gx", "gv0", "gd"):
        if key in exact:
            err = (out[key].double() - exact[key]).abs().max()
            ref_err = (ref[key].double() - exact[key]).abs().max()
            scale = exact[key].abs().max()
            assert err <= 2 * ref_err + 1e-6 * scale, key


def test_per_neuron_decay_gets_its_own_gradient() -> None:
    """A decay tensor shaped like the neurons' trailing axes gets a gradient of that shape."""
    dyn = dynamics("lif", "hard", False, True, "sigmoid")
    x, v0, gs, gv = inputs(4, (3, 2, 5))
    decay = decay_for("lif", learned=True, shape=(2, 1))
    decay = (decay.detach() + torch.tensor([[0.0], [0.2]], dtype=torch.float64)).requires_grad_()
    ref = run(reference_loop, x, v0, decay, dyn, gs, gv)
    out = run(handwritten_loop, x, v0, decay, dyn, gs, gv)
    assert out["gd"].shape == (2, 1)
    torch.testing.assert_close(out["gd"], ref["gd"], rtol=1e-12, atol=1e-12)


def test_unused_outputs_and_frozen_inputs() -> None:
    """Only the spikes used, or only the last membrane; an input without gradient."""
    dyn = dynamics("lif", "soft", False, False, "atan")
    x, v0, gs, _ = inputs(3, (11,))
    grads = []
    for backend in (reference_loop, handwritten_loop):
        xi = x.clone().requires_grad_()
        s, v_last, _ = backend(xi, v0, 0.5, dyn, False)
        s.mul(gs).sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-12)
    xi = x.clone().requires_grad_()
    _, v_last, v_seq = handwritten_loop(xi, v0, 0.5, dyn, False)
    assert v_seq is None
    v_last.sum().backward()
    assert xi.grad.abs().sum() > 0
    s, _, _ = handwritten_loop(x, v0, 0.5, dyn, True)  # nothing requires grad: no graph at all
    assert s.grad_fn is None


@pytest.mark.parametrize("kind", ["if", "lif", "plif", "leaky"])
def test_layers_default_to_it_and_step_mode_s_carries_the_gradient(kind: str) -> None:
    """``backend: torch`` (the default) is this loop; T single steps give the multi-step
    result and the same gradients, through the membrane carried between calls."""
    assert BACKENDS.get("torch") is torch_states
    grads = {}
    for mode in ("m", "s"):
        torch.manual_seed(0)
        layer = build_neuron({"name": kind, "step_mode": mode}, {"name": "atan"})
        x = (0.4 + torch.randn(5, 4, 3)).requires_grad_()
        out = layer(x) if mode == "m" else torch.stack([layer(xt) for xt in x])
        assert layer.closed_form() is layer.dynamics
        if mode == "m":  # the step is the equations: their handwritten node, one per layer
            assert type(out.grad_fn).__name__ == "_NeuronLoopBackward"
        (out * torch.linspace(-1, 1, 3)).sum().backward()
        grads[mode] = (out.detach(), x.grad)
        reset_states(layer)
    assert torch.equal(grads["m"][0], grads["s"][0])
    torch.testing.assert_close(grads["m"][1], grads["s"][1])


def test_an_input_repeated_over_time_gets_a_gradient_per_step() -> None:
    """A direct-encoded image's first layers run once and reach the neuron expanded over T
    (stride 0): each step's gradient is its own (written into a dense buffer, never aliased)."""
    one = torch.randn(1, 3, 4, dtype=torch.float64) + 0.6
    dyn = dynamics("lif", "hard0", False, True, "atan")
    gs = torch.randn(5, 3, 4, dtype=torch.float64)
    grads = []
    for loop in (handwritten_loop, reference_loop):
        x = one.clone().requires_grad_()
        s, _, _ = loop(x.expand(5, 3, 4), torch.zeros(3, 4, dtype=torch.float64), 0.5, dyn, False)
        (s * gs).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)


def test_channels_last_input_keeps_its_layout() -> None:
    """A conv's NHWC output ``[T, N, C, H, W]`` comes back as NHWC spikes and gradients."""
    x = torch.randn(2 * 3, 4, 5, 5).to(memory_format=torch.channels_last).view(2, 3, 4, 5, 5)
    x.requires_grad_()
    dyn = dynamics("if", "hard", False, True, "atan")
    s, _, _ = handwritten_loop(x, torch.zeros(3, 4, 5, 5), None, dyn, False)
    assert s.stride() == x.stride()
    s.sum().backward()
    ref = x.detach().clone().requires_grad_()
    reference_loop(ref, torch.zeros(3, 4, 5, 5), None, dyn, False)[0].sum().backward()
    torch.testing.assert_close(x.grad, ref.grad)
