"""A :class:`snnrun.Neuron`'s fused Triton kernels, from a trace of its step, and their launch.

:func:`traced_states` traces the layer's step (:class:`snnrun.neuron.dialect.Trace`), has
:mod:`.step_codegen` write the ``fwd`` / ``bwd`` kernels' text, compiles it once per text
(:func:`compiled`: the text is given to ``linecache`` under a name of its own, where
``triton.jit`` reads a function's source) and runs both through one autograd node,
:class:`TracedStates`. ``x [T, ...]`` is flattened to ``[T, N]`` (copied once when not
contiguous); the states are computed in float32 (float64 for a float64 input). A parameter
tensor goes to the kernel as one value or, when it has more, expanded to one per neuron; its
gradient comes back per neuron and autograd sums it to the parameter's shape.

Saved for the backward: ``x`` and the checkpoints ``[ceil(T/CHUNK), S, N]``; the spikes are not.
"""

from __future__ import annotations

import hashlib
import linecache
from collections.abc import Sequence
from typing import Any

import torch
import triton
import triton.language as tl

from snnrun.kernels.neuron_kernels import CHUNK, _empty, _on_device, bwd_block, fwd_block
from snnrun.kernels.step_codegen import kernel_source
from snnrun.kernels.surrogate_jit import kernel_sg, surrogate_grad
from snnrun.neuron.dialect import Trace, Var
from snnrun.neuron.state_loop import State, Step

Kernels = tuple[Any, Any]
_COMPILED: dict[str, Kernels] = {}


def compiled(source: str) -> Kernels:
    """``(fwd, bwd)`` of the kernel text ``source``, compiled once per process."""
    if source not in _COMPILED:
        name = f"<snnrun-neuron-{hashlib.sha1(source.encode()).hexdigest()[:12]}>"
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)
        scope = {"tl": tl, "triton": triton, "surrogate_grad": surrogate_grad,
                 "__name__": __name__, "__builtins__": __builtins__}  # fmt: skip
        exec(compile(source, name, "exec"), scope)
        _COMPILED[source] = (scope["fwd"], scope["bwd"])
    return _COMPILED[source]


def traced(step: Step, n_states: int, params: Sequence[Any]) -> tuple[Trace, Any, State]:
    """The trace of one ``step`` on the inputs ``x``, ``q0``... and ``p0``... (a parameter that
    is a Python number stays a number: a constant of the kernel)."""
    trace = Trace()
    state = tuple(trace.input(f"q{i}") for i in range(n_states))
    tensors = iter(range(len(params)))  # the tensors are p0, p1 ... in order (numbers stay)
    values = [trace.input(f"p{next(tensors)}") if isinstance(p, torch.Tensor) else p
              for p in params]  # fmt: skip
    spike, new = step(trace.input("x"), state, values)
    return trace, spike, new


class TracedStates(torch.autograd.Function):
    """Inputs: the kernels, the surrogate's ``(code, parameter)``, the state count, whether to
    keep ``V``, ``x [T, N]``, the states ``[N]`` (ACC) and the parameters (``[1]`` or ``[N]``,
    ACC); outputs the spikes, ``V`` per step (or an empty tensor) and the last states."""

    @staticmethod
    def forward(ctx: Any, kernels: Kernels, surrogate, n: int, store_v: bool, x, *rest):  # type: ignore[override]
        states, params = rest[:n], rest[n:]
        t, m = x.shape
        acc = states[0].dtype
        spikes = _empty(t, m, like=x)
        v_seq = _empty(t, m, like=x) if store_v else x.new_empty(0)
        last = [_empty(m, like=x, dtype=acc) for _ in range(n)]
        ckpt = _empty(triton.cdiv(t, CHUNK), n, m, like=x, dtype=acc)
        if m:
            block = fwd_block(m, x.device)
            with _on_device(x):
                kernels[0][(triton.cdiv(m, block),)](
                    x, *states, *params, spikes, *last, ckpt, v_seq if store_v else spikes, m, t,
                    STORE_V=store_v, CHUNK=CHUNK, BLOCK=block, ACC=_acc(acc), num_warps=4,
                )  # fmt: skip
        ctx.save_for_backward(x, ckpt, *params)
        ctx.kernels, ctx.surrogate, ctx.n = kernels, surrogate, n
        ctx.set_materialize_grads(False)
        return (spikes, v_seq, *last)

    @staticmethod
    def backward(ctx: Any, g_s, g_vs, *g_last):  # type: ignore[override]
        x, ckpt, *params = ctx.saved_tensors
        t, m = x.shape
        acc = ckpt.dtype
        gs = g_s.to(x.dtype).contiguous() if g_s is not None else torch.zeros_like(x)
        gvs = g_vs.to(x.dtype).contiguous() if g_vs is not None and g_vs.numel() else None
        glast = [x.new_zeros(m, dtype=acc) if g is None else g.to(acc).contiguous()
                 for g in g_last]  # fmt: skip
        gx = _empty(t, m, like=x)
        g0 = [_empty(m, like=x, dtype=acc) for _ in range(ctx.n)]
        gp = [_empty(m, like=x, dtype=acc) for _ in params]
        if m:
            block = bwd_block(x.device)
            code, alpha = ctx.surrogate
            with _on_device(x):
                ctx.kernels[1][(triton.cdiv(m, block),)](
                    gs, gvs if gvs is not None else gs, *glast, x, ckpt, *params, gx, *g0, *gp,
                    m, t, alpha, HAS_GVS=gvs is not None, SG=kernel_sg(code), CHUNK=CHUNK,
                    BLOCK=block, ACC=_acc(acc), num_warps=4,
                )  # fmt: skip
        g_params = [g.sum().reshape(1) if p.numel() == 1 else g for g, p in zip(gp, params)]
        return (None, None, None, None, gx, *g0, *g_params)


def _acc(dtype: torch.dtype) -> Any:
    return tl.float64 if dtype == torch.float64 else tl.float32


def traced_states(
    owner: Any, x_seq: torch.Tensor, state: State, params: Sequence[Any], step: Step,
    store_v_seq: bool,
) -> tuple[torch.Tensor, State, torch.Tensor | None]:  # fmt: skip
    """``(spikes [T, ...] x.dtype, last states [...] ACC, V per step [T, ...] or None)``."""
    trace, spike, new = traced(step, len(state), params)
    if not isinstance(spike, Var):
        raise TypeError(f"{type(owner).__name__}.step must return its spikes from self.fire(z)")
    tensors = [p for p in params if isinstance(p, torch.Tensor)]
    kinds = ["scalar" if p.numel() == 1 else "element" for p in tensors]
    kernels = compiled(kernel_source(trace.ops, spike, new, kinds))
    shape = x_seq.shape
    x = x_seq.reshape(shape[0], -1).contiguous()
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    states = [s.expand(shape[1:]).reshape(-1).to(acc) for s in state]
    flat = [p.to(device=x.device, dtype=acc).reshape(1) if p.numel() == 1
            else p.to(device=x.device, dtype=acc).expand(shape[1:]).reshape(-1)
            for p in tensors]  # fmt: skip
    sg = owner.dynamics.surrogate
    out = TracedStates.apply(
        kernels, (sg.spec.code, float(sg.value)), len(state), store_v_seq, x, *states, *flat
    )
    spikes, v_seq, *last = out
    return (
        spikes.view(shape),
        tuple(s.view(shape[1:]) for s in last),
        v_seq.view(shape) if store_v_seq else None,
    )
