"""The ``torch`` backend: for a one-membrane neuron (``closed_form``: if, lif, plif, leaky) the
time loop in plain PyTorch with a handwritten backward; for every other neuron the
chunked-recompute node of :mod:`snnrun.neuron.state_loop`.

Same equations (read from :mod:`snnrun.neuron.dynamics`) and operation order as the reference loop
(:func:`~snnrun.neuron.dynamics.reference_loop`, the ``autograd`` backend's), but one autograd
node per layer instead of ~10 per step: the forward runs without a graph and keeps only
``H [T, N, ...]`` (and, for a learned decay, ``X`` and ``V[-1]``); the backward walks time in
reverse (once: no double backward):

    gH[t]   = gS[t] g'(H[t] - V_th) + gV[t] dV[t]/dH[t]
    gX[t]   = gH[t] dH[t]/dX[t]            gV[t-1] = gH[t] dH[t]/dV[t-1]
    gk     += gH[t] dH[t]/dk               (k = 1/tau or beta, when it is learned)

with ``dV/dH`` = ``1 - S + (V_reset - H) g'`` (hard reset), ``1 - V_th g'`` (soft),
the ``g'`` term dropped under ``detach_reset``, and ``1`` for leaky; ``dH/dX`` = ``k`` (LIF with
``decay_input``) else 1; ``dH/dV`` = ``1 - k`` (LIF), ``beta`` (leaky), 1 (IF); a gradient of
the stored ``v_seq`` adds to ``gV[t]``. Any device and dtype.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from snnrun.neuron.dynamics import (
    Decay,
    Dynamics,
    MembraneResult,
    charge,
    dh_dk,
    dh_dv,
    dh_dx,
    dv_dh,
    next_v,
    v_after,
)
from snnrun.neuron.state_loop import BACKENDS, State, StatesResult, Step, chunked_states


class _NeuronLoop(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x_seq, v_init, decay_t, decay_f, dyn, store_v_seq):  # type: ignore[override]
        k = decay_t if decay_t is not None else decay_f
        layout = _time_major(x_seq)
        spikes = _empty(layout)
        v_seq = _empty(layout) if store_v_seq else None
        h_seq = []  # H[t] as charged: kept for the backward, no copy into one buffer
        v = v_init
        for t in range(x_seq.shape[0]):
            h = charge(dyn, v, x_seq[t], k).to(x_seq.dtype)
            s = spikes[t]
            torch.ge(h, dyn.v_threshold, out=s)  # S[t] in x's dtype, in place
            v = next_v(dyn, h, s)
            h_seq.append(h)
            if v_seq is not None:
                v_seq[t].copy_(v)
        ctx.learns_k = decay_t is not None and decay_t.requires_grad
        inputs = (x_seq, v_init) if ctx.learns_k else (None, None)  # dH/dk reads them
        ctx.save_for_backward(decay_t, *inputs, *h_seq)
        ctx.dyn, ctx.k, ctx.layout = dyn, k, layout
        return spikes, v.clone() if dyn.kind == "leaky" else v, v_seq  # leaky's v is H[T-1]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_spikes, g_v_last, g_v_seq):  # type: ignore[override]
        decay_t, x_seq, v_init, *h_seq = ctx.saved_tensors
        dyn, k = ctx.dyn, ctx.k
        want_k = ctx.learns_k and ctx.needs_input_grad[2]
        g_x = _empty(ctx.layout) if ctx.needs_input_grad[0] else None
        acc = torch.promote_types(decay_t.dtype, torch.float32) if want_k else None
        g_k = decay_t.new_zeros(decay_t.shape, dtype=acc) if want_k else None
        g_v = g_v_last
        a, b = dh_dv(dyn, k), dh_dx(dyn, k)  # dH/dV[t-1], dH/dX
        for t in range(len(h_seq) - 1, -1, -1):
            if g_v_seq is not None:
                g_v = g_v_seq[t] if g_v is None else g_v + g_v_seq[t]
            h = h_seq[t]
            s = torch.ge(h, dyn.v_threshold, out=torch.empty_like(h))  # S[t] in h's dtype: one pass
            sg = dyn.surrogate.grad(h - dyn.v_threshold)
            g_h = g_spikes[t] * sg if g_spikes is not None else torch.zeros_like(h)
            if g_v is not None:
                through_reset = dv_dh(dyn, h, s, sg)
                g_h = g_h.add_(g_v) if through_reset is None else g_h.addcmul_(g_v, through_reset)
            if g_x is not None and isinstance(b, torch.Tensor):
                g_x[t] = g_h * b  # a learned decay may promote (float32 under fp16 autocast)
            elif g_x is not None:
                torch.mul(g_h, b, out=g_x[t])  # written in place: no temporary
            if want_k:
                v_prev = v_init if t == 0 else v_after(dyn, h_seq[t - 1])
                g_k += (g_h * dh_dk(dyn, v_prev, x_seq[t])).sum_to_size(decay_t.shape).to(acc)
            g_v = _times(g_h, a)
        g_decay = g_k.to(decay_t.dtype) if want_k else None
        return g_x, g_v, g_decay, None, None, None


Layout = tuple[torch.Size, tuple[int, ...], torch.dtype, torch.device]


def _time_major(x_seq: torch.Tensor) -> Layout:
    """``[T, N, ...]`` laid out step after step, each step as ``empty_like(x_seq[0])`` lays it:
    an NHWC step stays NHWC, and an input repeated over T with stride 0 (a direct-encoded
    image's static head) gets T dense steps. Shape, strides, dtype, device: no data."""
    if not x_seq.shape[0]:
        return x_seq.shape, x_seq.stride(), x_seq.dtype, x_seq.device
    step = torch.empty_like(x_seq[0], device="meta")
    return x_seq.shape, (step.numel(), *step.stride()), x_seq.dtype, x_seq.device


def _empty(layout: Layout) -> torch.Tensor:
    shape, stride, dtype, device = layout
    return torch.empty_strided(shape, stride, dtype=dtype, device=device)


def _times(g: torch.Tensor, factor: Decay) -> torch.Tensor:
    """``g * factor``, skipping the product where the factor is the number 1."""
    return g if not isinstance(factor, torch.Tensor) and factor == 1.0 else g * factor


def handwritten_loop(
    x_seq: torch.Tensor, v: torch.Tensor, decay: Decay, dyn: Dynamics, store_v_seq: bool
) -> MembraneResult:
    """Multi-step update ``[T, N, ...]`` with one autograd node (see the module docstring)."""
    decay_t = decay if isinstance(decay, torch.Tensor) else None
    decay_f = None if decay_t is not None else decay
    return _NeuronLoop.apply(x_seq, v, decay_t, decay_f, dyn, store_v_seq)


@BACKENDS.register("torch")
def torch_states(
    owner: Any, x_seq: torch.Tensor, state: State, params: list[Any], step: Step,
    store_v_seq: bool,
) -> StatesResult:  # fmt: skip
    """:func:`handwritten_loop` where ``owner.closed_form()`` gives the equations (``params``
    ``[k, v_th]``), else :func:`~snnrun.neuron.state_loop.chunked_states`."""
    dyn = owner.closed_form()
    if dyn is None:
        return chunked_states(owner, x_seq, state, params, step, store_v_seq)
    spikes, v, v_seq = handwritten_loop(x_seq, state[0], params[0], dyn, store_v_seq)
    return spikes, (v,), v_seq
