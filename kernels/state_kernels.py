"""Fused Triton kernels for the two-state neurons ``alif`` and ``synaptic``, and their gradient.

The design of :mod:`snnrun.kernels.neuron_kernels`: ``x`` is ``[T, N]`` row-major, one program
owns ``BLOCK`` neurons for all T steps with both states ``(q, V)`` in float32 registers, and every
``CHUNK`` steps the forward writes the float32 states entering the chunk into
``ckpt [ceil(T/CHUNK), 2, N]`` (``ckpt[c, 0] = q``, ``ckpt[c, 1] = V``; ``ckpt[0]`` the initial
states). The equations are those of :mod:`snnrun.net.state_neurons` (``q`` is ``a`` or ``I``)::

    alif      H = the lif charge of V[t-1], X[t] (k, decay_input, V_r)
              z = H - (V_th + beta_a a[t]),  S = [z >= 0]
              V[t] = H (1 - S) + V_reset S (hard) | H - V_th S (soft),  a[t+1] = rho a[t] + S
    synaptic  I[t] = alpha I[t-1] + X[t]
              H = beta V[t-1] + I[t] - V_th [V[t-1] >= V_th],  z = H - V_th,  V[t] = H

Backward: chunks from last to first; each recomputes its ``H`` (and the states the gradient
reads) from its checkpoint into ``[CHUNK, BLOCK]`` register tiles, then walks the chunk backwards
with ``sg = g'(z)``, ``gV = grad_v[t] + grad_v_seq[t]`` (``grad_v`` from step t+1 or the last
state's gradient)::

    alif      gz = sg (grad_s + grad_a + [not detach] gV dV/dS)  dV/dS: V_reset - H | -V_th
              gH = gz + gV dV/dH|_S                              dV/dH|_S: 1 - S | 1
              grad_x = b gH (b = k with decay_input, else 1),   grad_v[t-1] = (1 - k) gH
              grad_a[t] = rho grad_a[t+1] - beta_a gz
    synaptic  gH = grad_s sg + gV,  gI = grad_i + gH,  grad_x = gI
              grad_i[t-1] = alpha gI,  grad_v[t-1] = beta gH
              grad_alpha += gI I[t-1],  grad_beta += gH V[t-1]   (per-program partial sums)

Memory traffic per neuron and step (``B`` bytes of the input dtype): forward reads X, writes S
(and V when asked), backward reads grad_s, X (and grad_v_seq when given), writes grad_x, plus
``2 * 4/CHUNK`` bytes of checkpoints each way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from snnrun.kernels.neuron_kernels import (
    CHUNK,
    _empty,
    _on_device,
    bwd_block,
    charge,
    fwd_block,
    reset,
    v_rest,
)
from snnrun.kernels.surrogate_jit import kernel_sg, surrogate_grad
from snnrun.net.state_loop import State

KIND_ALIF, KIND_SYNAPTIC = 0, 1


@dataclass(frozen=True)
class StateConfig:
    """A layer's constants: ``p0, p1`` are ``(k, rho)`` for alif (``alpha, beta`` for synaptic
    come by pointer); ``sg`` is the surrogate's code, ``sg_alpha`` its parameter."""

    kind: int
    v_th: float
    sg: int
    sg_alpha: float
    v_reset: float = 0.0
    p0: float = 0.0
    p1: float = 0.0
    beta_a: float = 0.0
    hard: int = 0  # Dynamics.reset_code: 0 soft, 1 hard, 2 hard to 0
    detach: bool = True
    decay_input: bool = True


@triton.jit
def _params(par_ptr, p0, p1, KIND: tl.constexpr):
    """alif: the runtime ``(k, rho)``; synaptic: ``(alpha, beta)`` loaded as float32."""
    if KIND == 0:
        c0 = p0
        c1 = p1
    else:
        c0 = tl.load(par_ptr).to(tl.float32)
        c1 = tl.load(par_ptr + 1).to(tl.float32)
    return c0, c1


@triton.jit
def _step(q, v, x, c0, c1, v_th, v_reset, beta_a,
          KIND: tl.constexpr, HARD: tl.constexpr, DECAY_INPUT: tl.constexpr):  # fmt: skip
    """One step: ``(H, z, q', V')`` from ``(q, V)`` = ``(a, V)`` or ``(I, V)`` and ``X``."""
    if KIND == 0:  # alif: the lif charge and reset (kind code 1) with an adaptive threshold
        h = charge(v, x, c0, v_th, v_rest(v_reset, HARD), 1, DECAY_INPUT, HARD)
        z = h - (v_th + beta_a * q)
        s = tl.where(z >= 0.0, 1.0, 0.0)
        v_new = reset(h, s, v_th, v_reset, 1, HARD)
        q_new = c1 * q + s
    else:  # synaptic: a current I, then the leaky charge (kind code 2) of V with I as input
        q_new = c0 * q + x
        h = charge(v, q_new, c1, v_th, 0.0, 2, False, 0)
        z = h - v_th
        v_new = h
    return h, z, q_new, v_new


@triton.jit
def _checkpoint(ckpt_ptr, c, N, cols, live):
    """The float32 states ``(q, V)`` entering chunk ``c``, from ``ckpt [ceil(T/CHUNK), 2, N]``."""
    q = tl.load(ckpt_ptr + tl.cast(2 * c, tl.int64) * N + cols, mask=live, other=0.0)
    v = tl.load(ckpt_ptr + tl.cast(2 * c + 1, tl.int64) * N + cols, mask=live, other=0.0)
    return q, v


@triton.jit
def _row(tile, rows, j):
    """Row ``j`` of a ``[CHUNK, BLOCK]`` register tile."""
    return tl.sum(tl.where(rows == j, tile, 0.0), axis=0)


@triton.jit
def states_fwd_kernel(
    x_ptr,  # [T, N] input dtype
    q0_ptr,  # [N] float32, a[0] or I[-1]
    v0_ptr,  # [N] float32, V[-1]
    par_ptr,  # [2] float32 (alpha, beta) for synaptic
    s_ptr,  # [T, N] out, input dtype
    qlast_ptr,  # [N] out, float32
    vlast_ptr,  # [N] out, float32
    ckpt_ptr,  # [ceil(T/CHUNK), 2, N] out, float32
    vseq_ptr,  # [T, N] out, input dtype (written when STORE_V)
    N, T, v_th, v_reset, p0, p1, beta_a,
    KIND: tl.constexpr, HARD: tl.constexpr, DECAY_INPUT: tl.constexpr,
    STORE_V: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Spikes, last states and chunk checkpoints for ``BLOCK`` neurons over all T steps."""
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = cols < N
    c0, c1 = _params(par_ptr, p0, p1, KIND)
    q = tl.load(q0_ptr + cols, mask=live, other=0.0)
    v = tl.load(v0_ptr + cols, mask=live, other=0.0)
    for c in range(tl.cdiv(T, CHUNK)):
        t0 = c * CHUNK
        tl.store(ckpt_ptr + tl.cast(2 * c, tl.int64) * N + cols, q, mask=live)
        tl.store(ckpt_ptr + tl.cast(2 * c + 1, tl.int64) * N + cols, v, mask=live)
        base = tl.cast(t0, tl.int64) * N + cols
        for j in tl.static_range(CHUNK):
            step = t0 + j < T
            m = live & step
            x = tl.load(x_ptr + base + j * N, mask=m, other=0.0).to(tl.float32)
            _h, z, q_new, v_new = _step(q, v, x, c0, c1, v_th, v_reset, beta_a,
                                        KIND, HARD, DECAY_INPUT)  # fmt: skip
            q = tl.where(step, q_new, q)
            v = tl.where(step, v_new, v)
            s = tl.where(z >= 0.0, 1.0, 0.0)
            tl.store(s_ptr + base + j * N, s.to(s_ptr.dtype.element_ty), mask=m)
            if STORE_V:
                tl.store(vseq_ptr + base + j * N, v.to(vseq_ptr.dtype.element_ty), mask=m)
    tl.store(qlast_ptr + cols, q, mask=live)
    tl.store(vlast_ptr + cols, v, mask=live)


@triton.jit
def alif_bwd_kernel(
    gs_ptr,  # [T, N] grad of spikes, input dtype
    gvs_ptr,  # [T, N] grad of the V sequence (read when HAS_GVS)
    gql_ptr,  # [N] float32 grad of the last a
    gvl_ptr,  # [N] float32 grad of the last V
    x_ptr,  # [T, N] saved input
    ckpt_ptr,  # [ceil(T/CHUNK), 2, N] float32
    gx_ptr,  # [T, N] out, input dtype
    gq0_ptr,  # [N] out, float32 grad of the initial a
    gv0_ptr,  # [N] out, float32 grad of the initial V
    N, T, v_th, v_reset, k, rho, beta_a, sg_alpha,
    HARD: tl.constexpr, DETACH: tl.constexpr, DECAY_INPUT: tl.constexpr,
    HAS_GVS: tl.constexpr, SG: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Gradients of x and the initial ``(a, V)`` for ``BLOCK`` alif neurons, chunks backwards."""
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = cols < N
    b = 1.0
    if DECAY_INPUT:
        b = k
    rows = tl.arange(0, CHUNK)[:, None]
    ga = tl.load(gql_ptr + cols, mask=live, other=0.0)
    gv = tl.load(gvl_ptr + cols, mask=live, other=0.0)
    n_chunks = tl.cdiv(T, CHUNK)
    for cc in range(n_chunks):
        c = n_chunks - 1 - cc
        t0 = c * CHUNK
        base = tl.cast(t0, tl.int64) * N + cols
        a, v = _checkpoint(ckpt_ptr, c, N, cols, live)
        hs = tl.zeros([CHUNK, BLOCK], tl.float32)
        zs = tl.zeros([CHUNK, BLOCK], tl.float32)
        for j in tl.static_range(CHUNK):
            m = live & (t0 + j < T)
            x = tl.load(x_ptr + base + j * N, mask=m, other=0.0).to(tl.float32)
            h, z, a, v = _step(a, v, x, k, rho, v_th, v_reset, beta_a, 0, HARD, DECAY_INPUT)
            hs = tl.where(rows == j, h[None, :], hs)
            zs = tl.where(rows == j, z[None, :], zs)
        for jj in tl.static_range(CHUNK):
            j = CHUNK - 1 - jj
            step = t0 + j < T
            m = live & step
            h = _row(hs, rows, j)
            z = _row(zs, rows, j)
            sg = surrogate_grad(z, sg_alpha, SG)
            s = tl.where(z >= 0.0, 1.0, 0.0)
            g_v = gv
            if HAS_GVS:
                g_v += tl.load(gvs_ptr + base + j * N, mask=m, other=0.0).to(tl.float32)
            g_s = tl.load(gs_ptr + base + j * N, mask=m, other=0.0).to(tl.float32) + ga
            if HARD:
                keep = 1.0 - s
                dv_ds = v_reset - h
            else:
                keep = 1.0
                dv_ds = -v_th
            if not DETACH:
                g_s += g_v * dv_ds
            gz = g_s * sg
            gh = gz + g_v * keep
            tl.store(gx_ptr + base + j * N, (b * gh).to(gx_ptr.dtype.element_ty), mask=m)
            gv = tl.where(step, (1.0 - k) * gh, gv)
            ga = tl.where(step, rho * ga - beta_a * gz, ga)
    tl.store(gq0_ptr + cols, ga, mask=live)
    tl.store(gv0_ptr + cols, gv, mask=live)


@triton.jit
def synaptic_bwd_kernel(
    gs_ptr,  # [T, N] grad of spikes, input dtype
    gvs_ptr,  # [T, N] grad of the V sequence (read when HAS_GVS)
    gql_ptr,  # [N] float32 grad of the last I
    gvl_ptr,  # [N] float32 grad of the last V
    x_ptr,  # [T, N] saved input
    ckpt_ptr,  # [ceil(T/CHUNK), 2, N] float32
    par_ptr,  # [2] float32 (alpha, beta)
    gx_ptr,  # [T, N] out, input dtype
    gq0_ptr,  # [N] out, float32 grad of the initial I
    gv0_ptr,  # [N] out, float32 grad of the initial V
    gpar_ptr,  # [programs, 2] out, float32 partial sums of grad (alpha, beta) (NEED_PGRAD)
    N, T, v_th, sg_alpha,
    HAS_GVS: tl.constexpr, NEED_PGRAD: tl.constexpr, SG: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Gradients of x, the initial ``(I, V)`` (and alpha, beta) for ``BLOCK`` synaptic neurons."""
    pid = tl.program_id(0)
    cols = pid * BLOCK + tl.arange(0, BLOCK)
    live = cols < N
    alpha, beta = _params(par_ptr, 0.0, 0.0, 1)
    rows = tl.arange(0, CHUNK)[:, None]
    gi = tl.load(gql_ptr + cols, mask=live, other=0.0)
    gv = tl.load(gvl_ptr + cols, mask=live, other=0.0)
    g_alpha = tl.zeros([BLOCK], tl.float32)
    g_beta = tl.zeros([BLOCK], tl.float32)
    n_chunks = tl.cdiv(T, CHUNK)
    for cc in range(n_chunks):
        c = n_chunks - 1 - cc
        t0 = c * CHUNK
        base = tl.cast(t0, tl.int64) * N + cols
        i, v = _checkpoint(ckpt_ptr, c, N, cols, live)
        hs = tl.zeros([CHUNK, BLOCK], tl.float32)
        i_prev = tl.zeros([CHUNK, BLOCK], tl.float32)
        v_prev = tl.zeros([CHUNK, BLOCK], tl.float32)
        for j in tl.static_range(CHUNK):
            m = live & (t0 + j < T)
            x = tl.load(x_ptr + base + j * N, mask=m, other=0.0).to(tl.float32)
            if NEED_PGRAD:
                i_prev = tl.where(rows == j, i[None, :], i_prev)
                v_prev = tl.where(rows == j, v[None, :], v_prev)
            h, _z, i, v = _step(i, v, x, alpha, beta, v_th, 0.0, 0.0, 1, False, False)
            hs = tl.where(rows == j, h[None, :], hs)
        for jj in tl.static_range(CHUNK):
            j = CHUNK - 1 - jj
            step = t0 + j < T
            m = live & step
            h = _row(hs, rows, j)
            sg = surrogate_grad(h - v_th, sg_alpha, SG)
            gh = tl.load(gs_ptr + base + j * N, mask=m, other=0.0).to(tl.float32) * sg + gv
            if HAS_GVS:
                gh += tl.load(gvs_ptr + base + j * N, mask=m, other=0.0).to(tl.float32)
            g_i = gi + gh
            tl.store(gx_ptr + base + j * N, g_i.to(gx_ptr.dtype.element_ty), mask=m)
            if NEED_PGRAD:
                g_alpha += tl.where(m, g_i * _row(i_prev, rows, j), 0.0)
                g_beta += tl.where(m, gh * _row(v_prev, rows, j), 0.0)
            gi = tl.where(step, alpha * g_i, gi)
            gv = tl.where(step, beta * gh, gv)
    tl.store(gq0_ptr + cols, gi, mask=live)
    tl.store(gv0_ptr + cols, gv, mask=live)
    if NEED_PGRAD:
        tl.store(gpar_ptr + 2 * pid, tl.sum(g_alpha, axis=0))
        tl.store(gpar_ptr + 2 * pid + 1, tl.sum(g_beta, axis=0))


def forward(
    x: torch.Tensor, q0: torch.Tensor, v0: torch.Tensor, par: torch.Tensor | None,
    cfg: StateConfig, store_v_seq: bool,
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """Launch the forward on ``x`` [T, N] contiguous, ``q0``, ``v0`` [N] float32 contiguous.

    Returns ``(spikes [T, N] x.dtype, q_last [N] f32, v_last [N] f32, v_seq [T, N] x.dtype or
    None, ckpt [ceil(T/CHUNK), 2, N] f32)``.
    """
    t, n = x.shape
    spikes = _empty(t, n, like=x)
    q_last, v_last = _empty(n, like=x, dtype=torch.float32), _empty(n, like=x, dtype=torch.float32)
    v_seq = _empty(t, n, like=x) if store_v_seq else None
    ckpt = _empty(triton.cdiv(t, CHUNK), 2, n, like=x, dtype=torch.float32)
    if n == 0:
        return spikes, q_last, v_last, v_seq, ckpt
    block = fwd_block(n, x.device)
    with _on_device(x):
        states_fwd_kernel[(triton.cdiv(n, block),)](
            x, q0, v0, par if par is not None else q0, spikes, q_last, v_last, ckpt,
            v_seq if store_v_seq else spikes, n, t, cfg.v_th, cfg.v_reset, cfg.p0, cfg.p1,
            cfg.beta_a, KIND=cfg.kind, HARD=cfg.hard, DECAY_INPUT=cfg.decay_input,
            STORE_V=store_v_seq, CHUNK=CHUNK, BLOCK=block, num_warps=4,
        )  # fmt: skip
    return spikes, q_last, v_last, v_seq, ckpt


def backward(
    grads: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor],
    x: torch.Tensor, ckpt: torch.Tensor, par: torch.Tensor | None, cfg: StateConfig,
    need_par_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Launch the backward. ``grads = (grad_s [T, N], grad_v_seq [T, N] or None, grad_q_last,
    grad_v_last [N] f32)``, contiguous. Returns ``(grad_x [T, N] x.dtype, grad_q0, grad_v0 [N]
    f32, grad_par [2] f32 or None)``."""
    gs, gvs, gql, gvl = grads
    t, n = x.shape
    gx = _empty(t, n, like=x)
    gq0, gv0 = _empty(n, like=x, dtype=torch.float32), _empty(n, like=x, dtype=torch.float32)
    block = bwd_block(x.device)
    programs = triton.cdiv(n, block)
    partials = _empty(max(programs, 1), 2, like=x, dtype=torch.float32)
    if n == 0:
        return gx, gq0, gv0, partials.zero_().sum(0) if need_par_grad else None
    common = dict(
        HAS_GVS=gvs is not None, SG=kernel_sg(cfg.sg), CHUNK=CHUNK, BLOCK=block, num_warps=4
    )
    gvs = gvs if gvs is not None else gs
    with _on_device(x):
        if cfg.kind == KIND_ALIF:
            alif_bwd_kernel[(programs,)](
                gs, gvs, gql, gvl, x, ckpt, gx, gq0, gv0, n, t, cfg.v_th, cfg.v_reset,
                cfg.p0, cfg.p1, cfg.beta_a, cfg.sg_alpha, HARD=cfg.hard, DETACH=cfg.detach,
                DECAY_INPUT=cfg.decay_input, **common,
            )  # fmt: skip
        else:
            synaptic_bwd_kernel[(programs,)](
                gs, gvs, gql, gvl, x, ckpt, par, gx, gq0, gv0, partials, n, t, cfg.v_th,
                cfg.sg_alpha, NEED_PGRAD=need_par_grad, **common,
            )  # fmt: skip
    return gx, gq0, gv0, partials.sum(0) if need_par_grad else None


class FusedStates(torch.autograd.Function):
    """The two-state neuron as one autograd node: inputs ``x [T, N]``, ``q0, v0 [N] f32``,
    ``par [2] f32 or None`` (synaptic's alpha, beta), the :class:`StateConfig` and whether to
    return ``V`` per step; outputs ``(spikes, q_last, v_last, v_seq or None)``. Saved: ``x`` and
    the checkpoints. Every output is differentiable; the unused ones skip their reads."""

    @staticmethod
    def forward(ctx: Any, x, q0, v0, par, cfg: StateConfig, store_v_seq: bool):  # type: ignore[override]
        spikes, q_last, v_last, v_seq, ckpt = forward(x, q0, v0, par, cfg, store_v_seq)
        ctx.save_for_backward(x, ckpt, par)
        ctx.cfg = cfg
        ctx.set_materialize_grads(False)
        return spikes, q_last, v_last, v_seq

    @staticmethod
    def backward(ctx: Any, g_s, g_q, g_v, g_vs):  # type: ignore[override]
        x, ckpt, par = ctx.saved_tensors
        n = x.shape[1]
        zeros = x.new_zeros(n, dtype=torch.float32)
        gs = g_s.to(x.dtype).contiguous() if g_s is not None else torch.zeros_like(x)
        gvs = g_vs.to(x.dtype).contiguous() if g_vs is not None else None
        grads = (gs, gvs, *(zeros if g is None else g.float().contiguous() for g in (g_q, g_v)))
        need_par = par is not None and ctx.needs_input_grad[3]
        gx, gq0, gv0, gpar = backward(grads, x, ckpt, par, ctx.cfg, need_par)
        return gx, gq0, gv0, gpar, None, None


def _config(owner: Any, kind: int, params: list[Any]) -> StateConfig:
    """The :class:`StateConfig` of an ``alif`` or ``synaptic`` layer."""
    dyn = owner.dynamics
    sg = (dyn.surrogate.spec.code, float(dyn.surrogate.value))
    if kind == KIND_SYNAPTIC:
        return StateConfig(kind, float(dyn.v_threshold), *sg)
    if isinstance(params[0], torch.Tensor):
        raise ValueError("the triton alif kernel takes 1/tau as a float (use neuron.backend=torch)")
    return StateConfig(
        kind, float(dyn.v_threshold), *sg, v_reset=float(dyn.v_reset or 0.0),
        p0=float(params[0]), p1=float(owner.rho), beta_a=float(owner.beta_a),
        hard=dyn.reset_code, detach=dyn.detach_reset, decay_input=dyn.decay_input,
    )  # fmt: skip


def _par(params: list[Any], like: torch.Tensor) -> torch.Tensor:
    """synaptic's ``(alpha, beta)`` as one float32 ``[2]`` tensor (gradients flow back)."""
    values = []
    for p in params:
        p = torch.as_tensor(p, device=like.device)
        if p.numel() != 1:
            raise ValueError(
                f"the triton backend takes one alpha and one beta per layer, got a tensor of "
                f"shape {tuple(p.shape)} (use neuron.backend=torch)"
            )
        values.append(p.reshape(()).to(torch.float32))
    return torch.stack(values)


def fused_states(
    kind: int, owner: Any, x_seq: torch.Tensor, state: State, params: list[Any], store_v_seq: bool
) -> tuple[torch.Tensor, State, torch.Tensor | None]:
    """``(spikes [T, ...] x.dtype, (q, V) last [...] float32, V per step [T, ...] or None)`` for
    the ``alif`` / ``synaptic`` layer ``owner``: ``x_seq`` flattened to ``[T, N]`` (copied once
    when not contiguous), the states cast to float32."""
    shape = x_seq.shape
    x = x_seq.reshape(shape[0], -1).contiguous()
    q0, v0 = (s.reshape(-1).to(device=x.device, dtype=torch.float32) for s in state)
    par = _par(params, x) if kind == KIND_SYNAPTIC else None
    cfg = _config(owner, kind, params)
    spikes, q, v, v_seq = FusedStates.apply(x, q0, v0, par, cfg, store_v_seq)
    last = (q.view(shape[1:]), v.view(shape[1:]))
    return spikes.view(shape), last, v_seq.view(shape) if v_seq is not None else None
