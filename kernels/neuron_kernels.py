# Kernels branch on constexprs with if-statements (not ternaries): the most portable Triton form.
# ruff: noqa: SIM108
"""Fused Triton kernels for the multi-step neuron update (if, lif/plif, leaky) and its gradient.

Layout: ``x`` is ``[T, N]`` row-major (the layer's ``[T, ...]`` flattened; non-contiguous inputs
are made contiguous once by the caller). One program owns ``BLOCK`` neurons for all ``T`` steps
and keeps their membrane in float32 registers; ``N`` is masked at the tail.

The equations are not written here: :data:`charge`, :data:`reset` and the derivatives are the
``eq_*`` functions of :mod:`snnrun.neuron.dynamics` (the ones the torch backends run), compiled by
:func:`snnrun.kernels.dialect.jit_copy`. With ``k`` the decay (``1/tau``, PLIF ``sigmoid(w)``,
leaky ``beta``), ``H[t] = charge(V[t-1], X[t])``, ``S[t] = [H[t] - V_th >= 0]``,
``V[t] = reset(H[t], S[t])``. A launch's scalars come from one place,
:class:`snnrun.kernels.neuron_op.KernelArgs`, whose fields are the kernels' last parameters.

Forward (:func:`neuron_fwd_kernel`) reads ``X`` and writes ``S`` (and ``V`` when ``STORE_V``), and
every ``CHUNK`` steps writes the float32 membrane entering the chunk, ``V[c*CHUNK - 1]``, into the
checkpoint tensor ``ckpt`` ``[ceil(T/CHUNK), N]`` (``ckpt[0] = V[-1] = v_init``).

Backward (:func:`neuron_bwd_kernel`) walks the chunks from last to first. For one chunk it loads
the checkpoint, recomputes the chunk's ``H`` (and ``dH/dk`` when the decay is learned) into
``[CHUNK, BLOCK]`` register tiles, then walks the chunk backwards with ``x_t = H[t] - V_th``,
``sg = g'(x_t)``::

    grad_h[t]   = grad_s[t] sg + grad_v[t] dV/dH[t]
    grad_x[t]   = dH/dX grad_h[t]        grad_v[t-1] = dH/dV[t-1] grad_h[t]
    grad_k     += grad_h[t] dH/dk        (when the decay is learned)

starting from ``grad_v[T-1] = grad_v_last`` and ending with ``grad_v_init = grad_v[-1]``.
``grad_k`` is summed per program into ``gdec[pid]`` (float32); the caller sums those partials in
torch (deterministic, no atomics).

Memory traffic per neuron and step, ``B`` = bytes of the input dtype: forward reads X, writes S
(2B) and the checkpoint (4/CHUNK bytes); backward reads grad_s and X, writes grad_x (3B) and
reads the checkpoint (4/CHUNK bytes). Saved for backward: only X (the layer input, alive anyway)
and the checkpoints. Total ``5B + 8/CHUNK`` bytes: with CHUNK = 8, 21 bytes for float32 (floor
20) and 11 bytes for bf16/fp16 (floor 10). ``store_v_seq`` adds B to the forward.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
import triton
import triton.language as tl

from snnrun.kernels.dialect import jit_copy
from snnrun.kernels.surrogate_jit import kernel_sg, surrogate_grad
from snnrun.neuron import dynamics

if TYPE_CHECKING:  # neuron_op imports this module on the first launch
    from snnrun.kernels.neuron_op import KernelArgs

CHUNK = 8  # steps between float32 checkpoints (a power of two: the backward tile height)
POISON = False  # tests: fill every output with NaN before the launch (to see each one written)

# The equations of snnrun.neuron.dynamics, compiled.
charge = jit_copy(dynamics.eq_charge, "charge")
reset = jit_copy(dynamics.eq_reset, "reset")
dv_dh = jit_copy(dynamics.eq_dv_dh, "dv_dh")
dh_dv = jit_copy(dynamics.eq_dh_dv, "dh_dv")
dh_dx = jit_copy(dynamics.eq_dh_dx, "dh_dx")
dh_dk = jit_copy(dynamics.eq_dh_dk, "dh_dk")


@triton.jit
def decay_of(dec_ptr, decay_value, DECAY_PTR: tl.constexpr):
    """The decay as float32: loaded from ``dec_ptr`` (a learned tensor) or the runtime float."""
    if DECAY_PTR:
        k = tl.load(dec_ptr).to(tl.float32)
    else:
        k = decay_value
    return k


@triton.jit
def v_rest(v_reset, HARD: tl.constexpr):
    """``V_r`` of the lif charge: ``V_reset`` for hard reset, 0 for soft."""
    if HARD:
        v_r = v_reset
    else:
        v_r = 0.0
    return v_r


@triton.jit
def neuron_fwd_kernel(
    x_ptr,  # [T, N] input dtype
    v0_ptr,  # [N] float32, V[-1]
    dec_ptr,  # [1] float32 learned decay (read when DECAY_PTR)
    s_ptr,  # [T, N] out, input dtype
    vlast_ptr,  # [N] out, float32
    ckpt_ptr,  # [ceil(T/CHUNK), N] out, float32
    vseq_ptr,  # [T, N] out, input dtype (written when STORE_V)
    N,
    T,
    DECAY_PTR: tl.constexpr,
    STORE_V: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK: tl.constexpr,
    v_th, v_reset, decay_value, alpha,  # KernelArgs (alpha, DETACH, SG: the backward's)
    KIND: tl.constexpr, HARD: tl.constexpr, DETACH: tl.constexpr, DECAY_INPUT: tl.constexpr,
    SG: tl.constexpr,
):  # fmt: skip
    """Spikes, final membrane and chunk checkpoints for ``BLOCK`` neurons over all T steps."""
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = cols < N
    k = decay_of(dec_ptr, decay_value, DECAY_PTR)
    v_r = v_rest(v_reset, HARD)
    v = tl.load(v0_ptr + cols, mask=live, other=0.0)
    for c in range(tl.cdiv(T, CHUNK)):
        t0 = c * CHUNK
        tl.store(ckpt_ptr + tl.cast(c, tl.int64) * N + cols, v, mask=live)
        base = tl.cast(t0, tl.int64) * N + cols
        for j in tl.static_range(CHUNK):
            step = t0 + j < T
            m = live & step
            x = tl.load(x_ptr + base + j * N, mask=m, other=0.0).to(tl.float32)
            h = charge(v, x, k, v_th, v_r, KIND, DECAY_INPUT, HARD)
            s = tl.where(h - v_th >= 0.0, 1.0, 0.0)
            v = tl.where(step, reset(h, s, v_th, v_reset, KIND, HARD), v)
            tl.store(s_ptr + base + j * N, s.to(s_ptr.dtype.element_ty), mask=m)
            if STORE_V:
                tl.store(vseq_ptr + base + j * N, v.to(vseq_ptr.dtype.element_ty), mask=m)
    tl.store(vlast_ptr + cols, v, mask=live)


@triton.jit
def neuron_bwd_kernel(
    gs_ptr,  # [T, N] grad of spikes, input dtype
    gvl_ptr,  # [N] float32 grad of v_last
    x_ptr,  # [T, N] saved input
    ckpt_ptr,  # [ceil(T/CHUNK), N] float32 checkpoints from the forward
    dec_ptr,  # [1] float32 learned decay (read when DECAY_PTR)
    gx_ptr,  # [T, N] out grad of x, input dtype
    gv0_ptr,  # [N] out grad of v_init, float32
    gdec_ptr,  # [programs] out partial sums of grad of the decay, float32 (when NEED_DGRAD)
    N,
    T,
    DECAY_PTR: tl.constexpr,
    NEED_DGRAD: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK: tl.constexpr,
    v_th, v_reset, decay_value, alpha,  # KernelArgs
    KIND: tl.constexpr, HARD: tl.constexpr, DETACH: tl.constexpr, DECAY_INPUT: tl.constexpr,
    SG: tl.constexpr,
):  # fmt: skip
    """Gradients of x, v_init (and the decay) for ``BLOCK`` neurons, chunk by chunk backwards."""
    pid = tl.program_id(0)
    cols = pid * BLOCK + tl.arange(0, BLOCK)
    live = cols < N
    k = decay_of(dec_ptr, decay_value, DECAY_PTR)
    v_r = v_rest(v_reset, HARD)
    a = dh_dv(k, KIND)
    b = dh_dx(k, KIND, DECAY_INPUT)
    rows = tl.arange(0, CHUNK)[:, None]
    gv = tl.load(gvl_ptr + cols, mask=live, other=0.0)
    gk = tl.zeros([BLOCK], tl.float32)
    n_chunks = tl.cdiv(T, CHUNK)
    for cc in range(n_chunks):
        c = n_chunks - 1 - cc
        t0 = c * CHUNK
        base = tl.cast(t0, tl.int64) * N + cols
        # Recompute the chunk forward from its checkpoint: H (and dH/dk) into register tiles.
        v = tl.load(ckpt_ptr + tl.cast(c, tl.int64) * N + cols, mask=live, other=0.0)
        hs = tl.zeros([CHUNK, BLOCK], tl.float32)
        ds = tl.zeros([CHUNK, BLOCK], tl.float32)
        for j in tl.static_range(CHUNK):
            m = live & (t0 + j < T)
            x = tl.load(x_ptr + base + j * N, mask=m, other=0.0).to(tl.float32)
            h = charge(v, x, k, v_th, v_r, KIND, DECAY_INPUT, HARD)
            hs = tl.where(rows == j, h[None, :], hs)
            if NEED_DGRAD:
                ds = tl.where(rows == j, dh_dk(v, x, v_r, KIND, DECAY_INPUT)[None, :], ds)
            v = reset(h, tl.where(h - v_th >= 0.0, 1.0, 0.0), v_th, v_reset, KIND, HARD)
        # Walk the chunk backwards.
        for jj in tl.static_range(CHUNK):
            j = CHUNK - 1 - jj
            step = t0 + j < T
            m = live & step
            h = tl.sum(tl.where(rows == j, hs, 0.0), axis=0)
            z = h - v_th
            sg = surrogate_grad(z, alpha, SG)
            s = tl.where(z >= 0.0, 1.0, 0.0)
            gs = tl.load(gs_ptr + base + j * N, mask=m, other=0.0).to(tl.float32)
            gh = gs * sg + gv * dv_dh(h, s, sg, v_th, v_reset, KIND, HARD, DETACH)
            tl.store(gx_ptr + base + j * N, (b * gh).to(gx_ptr.dtype.element_ty), mask=m)
            if NEED_DGRAD:
                dk = tl.sum(tl.where(rows == j, ds, 0.0), axis=0)
                gk += tl.where(m, gh * dk, 0.0)
            gv = tl.where(step, a * gh, gv)
    tl.store(gv0_ptr + cols, gv, mask=live)
    if NEED_DGRAD:
        tl.store(gdec_ptr + pid, tl.sum(gk, axis=0))


def fwd_block(n: int, device: torch.device) -> int:
    """Forward ``BLOCK`` (4 warps): on a GPU the largest power of two <= 1024 that still gives
    >= 512 programs (at least 128), so that 8 neurons per thread load as 128-bit vectors when N
    is large; under the CPU interpreter 1024 (fewer, larger programs run faster there).
    """
    if device.type != "cuda":
        return 1024
    block = 1024
    while block > 128 and triton.cdiv(n, block) < 512:
        block //= 2
    return block


def bwd_block(device: torch.device) -> int:
    """Backward ``BLOCK`` (4 warps): 128 on a GPU, one neuron per thread. The [CHUNK, BLOCK]
    tiles then share the layout of the row loads; with more neurons per thread Triton vectorizes
    the loads and converts every row to the tile layout through shared memory (seen in the
    sm_90 PTX: 86 barriers per chunk instead of 1). 512 under the CPU interpreter.
    """
    return 128 if device.type == "cuda" else 512


def _empty(*shape: int, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An output buffer (NaN-filled when :data:`POISON` is set)."""
    out = torch.empty(*shape, device=like.device, dtype=dtype or like.dtype)
    return out.fill_(float("nan")) if POISON else out


def _decay_args(decay: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(dec_ptr tensor, DECAY_PTR)``: the learned decay as float32 [1], or a dummy pointer."""
    if decay is None:
        return like, False
    return decay.detach().reshape(1).to(device=like.device, dtype=torch.float32), True


def forward(
    x: torch.Tensor,
    v_init: torch.Tensor,
    decay: torch.Tensor | None,
    args: KernelArgs,
    store_v_seq: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the forward on ``x`` [T, N] contiguous, ``v_init`` [N] float32.

    Returns ``(spikes [T, N] x.dtype, v_last [N] float32, v_seq [T, N] x.dtype or [0],
    ckpt [ceil(T/CHUNK), N] float32)``.
    """
    t, n = x.shape
    spikes = _empty(t, n, like=x)
    v_last = _empty(n, like=x, dtype=torch.float32)
    v_seq = _empty(t, n, like=x) if store_v_seq else x.new_empty(0)
    ckpt = _empty(triton.cdiv(t, CHUNK), n, like=x, dtype=torch.float32)
    if n == 0:
        return spikes, v_last, v_seq, ckpt
    dec, dec_ptr = _decay_args(decay, v_init)
    block = fwd_block(n, x.device)
    with _on_device(x):
        neuron_fwd_kernel[(triton.cdiv(n, block),)](
            x, v_init, dec, spikes, v_last, ckpt, v_seq if store_v_seq else spikes, n, t,
            DECAY_PTR=dec_ptr, STORE_V=store_v_seq, CHUNK=CHUNK, BLOCK=block, num_warps=4,
            **_constants(args),
        )  # fmt: skip
    return spikes, v_last, v_seq, ckpt


def backward(
    grad_s: torch.Tensor,
    grad_v_last: torch.Tensor,
    x: torch.Tensor,
    ckpt: torch.Tensor,
    decay: torch.Tensor | None,
    args: KernelArgs,
    need_decay_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward: ``(grad_x [T, N] x.dtype, grad_v_init [N] f32, grad_decay [] f32)``.

    ``grad_s`` [T, N] and ``grad_v_last`` [N] must be contiguous (float32 for the latter).
    """
    t, n = x.shape
    grad_x = _empty(t, n, like=x)
    grad_v0 = _empty(n, like=x, dtype=torch.float32)
    block = bwd_block(x.device)
    programs = triton.cdiv(n, block)
    if need_decay_grad:
        partials = _empty(max(programs, 1), like=x, dtype=torch.float32)
    else:
        partials = torch.zeros(max(programs, 1), device=x.device, dtype=torch.float32)
    if n == 0:
        return grad_x, grad_v0, torch.zeros((), device=x.device, dtype=torch.float32)
    dec, dec_ptr = _decay_args(decay, grad_v0)
    with _on_device(x):
        neuron_bwd_kernel[(programs,)](
            grad_s, grad_v_last, x, ckpt, dec, grad_x, grad_v0, partials, n, t,
            DECAY_PTR=dec_ptr, NEED_DGRAD=need_decay_grad, CHUNK=CHUNK, BLOCK=block,
            num_warps=4, **_constants(args),
        )  # fmt: skip
    return grad_x, grad_v0, partials.sum()


def _constants(args: KernelArgs) -> dict[str, float | int | bool | triton.runtime.JITFunction]:
    """``args`` as the kernels take them: ``SG`` through :func:`surrogate_jit.kernel_sg` (a
    user's surrogate as its jitted formula)."""
    return {**args.kwargs(), "SG": kernel_sg(args.SG)}


def _on_device(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make ``x``'s GPU current for the launch (Triton launches on the current device)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()
