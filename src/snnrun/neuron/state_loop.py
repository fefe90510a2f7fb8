"""The time loop of every neuron with a state, and :data:`BACKENDS`, the one registry of its
backends.

A neuron is defined once (:mod:`snnrun.neuron.contract`); a backend gets its step as
``step(x, state, params) -> (S, state)`` with the states as a tuple (the membrane last) and the
parameters as a list, elementwise over ``[N, ...]`` in the ``tl`` dialect (autograd-traceable;
the surrogate gives ``S`` its gradient). A backend is a :data:`Backend`:

- ``autograd``: :func:`reference_states`, a Python loop over T with autograd through every op;
- ``torch`` (registered by :mod:`snnrun.neuron.neuron_loop`): the handwritten one-membrane node
  where the layer's step is those equations (``closed_form``), else :func:`chunked_states`,
  :class:`_ChunkedLoop`, one autograd node per layer: the forward runs without a graph
  and keeps only ``X`` and the float32 state at every :data:`CHUNK`-th step (it writes ``V`` per
  step only when asked); the backward walks the chunks in reverse, re-running each chunk's steps
  with autograd from its saved state and back-propagating through them
  (``torch.autograd.grad``), so memory grows with ``T / CHUNK`` states rather than with every
  intermediate of every step. The values are the reference's; the gradients equal them up to
  float summation order.
- ``triton`` (registered by ``snnrun.kernels``): the one-membrane kernels, or fused kernels
  written from a trace of the step with the same chunked design (``kernels/step_kernels.py``);
  where they cannot run (no CUDA device, no Triton: one warning), the ``torch`` backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from snnrun.core.registry import Registry

CHUNK = 8  # steps between saved states (the Triton kernels' checkpoint interval too)
State = tuple[torch.Tensor, ...]
Step = Callable[[torch.Tensor, State, Sequence[Any]], tuple[torch.Tensor, State]]
StatesResult = tuple[torch.Tensor, State, torch.Tensor | None]
# (layer, x_seq, state, params, step, store_v_seq) -> (spikes, last state, V per step or None)
Backend = Callable[[Any, torch.Tensor, State, Sequence[Any], Step, bool], StatesResult]
BACKENDS: Registry[Backend] = Registry("neuron backend")


def reference_states(
    x_seq: torch.Tensor, state: State, params: Sequence[Any], step: Step, store_v: bool = True
) -> tuple[torch.Tensor, State, torch.Tensor | None]:
    """Spikes ``[T, N, ...]``, the last state and ``V`` after each step ``[T, N, ...]`` (a
    state's last entry is the membrane ``V``; None unless ``store_v``)."""
    spikes, vs = [], []
    for x in x_seq:
        s, state = step(x, state, params)
        spikes.append(s)
        if store_v:
            vs.append(state[-1])
    return torch.stack(spikes), state, torch.stack(vs) if store_v else None


class _ChunkedLoop(torch.autograd.Function):
    """See the module docstring; inputs: x_seq, n states, then the params (tensors or floats)."""

    @staticmethod
    def forward(
        ctx: Any, step: Step, n_states: int, store_v: bool, x_seq: torch.Tensor, *rest: Any
    ):  # type: ignore[override]
        state, params = tuple(rest[:n_states]), rest[n_states:]
        saved, spikes = [], torch.empty_like(x_seq)
        vs = torch.empty_like(x_seq) if store_v else x_seq.new_empty(0)
        for t in range(x_seq.shape[0]):
            if t % CHUNK == 0:
                saved.append(tuple(_wide(s) for s in state))
            spikes[t], state = step(x_seq[t], state, params)
            if store_v:
                vs[t] = state[-1]
        ctx.step, ctx.n_states, ctx.saved_states = step, n_states, saved
        tensors = [p for p in params if isinstance(p, torch.Tensor)]
        ctx.param_is_tensor = [isinstance(p, torch.Tensor) for p in params]
        ctx.floats = [p for p in params if not isinstance(p, torch.Tensor)]
        ctx.dtypes = [s.dtype for s in state]
        ctx.save_for_backward(x_seq, *tensors)
        ctx.set_materialize_grads(False)
        return (spikes, vs, *(s.detach() for s in state))

    @staticmethod
    def backward(ctx: Any, g_spikes, g_vs, *g_last):  # type: ignore[override]
        x_seq, *tensors = ctx.saved_tensors
        params = _params(ctx.param_is_tensor, tensors, ctx.floats)
        learned = [i for i, p in enumerate(params)
                   if isinstance(p, torch.Tensor) and p.requires_grad]  # fmt: skip
        g_params: list[torch.Tensor | None] = [None] * len(params)
        g_x = torch.zeros_like(x_seq)
        g_state = list(g_last)
        T = x_seq.shape[0]
        for c in range(len(ctx.saved_states) - 1, -1, -1):
            start, stop = c * CHUNK, min((c + 1) * CHUNK, T)
            with torch.enable_grad():
                saved = zip(ctx.saved_states[c], ctx.dtypes)
                state = tuple(s.to(d).requires_grad_() for s, d in saved)
                xs = x_seq[start:stop].detach().requires_grad_()
                local = [p.detach().requires_grad_() if i in learned else p
                         for i, p in enumerate(params)]  # fmt: skip
                s_out, v_out, cur = [], [], state
                for t in range(stop - start):
                    s, cur = ctx.step(xs[t], cur, local)
                    s_out.append(s)
                    v_out.append(cur[-1])
                outputs, grads_in = list(cur), _zeros_for(g_state, cur)
                if g_spikes is not None:
                    outputs.append(torch.stack(s_out))
                    grads_in.append(g_spikes[start:stop])
                if g_vs is not None and g_vs.numel():
                    outputs.append(torch.stack(v_out))
                    grads_in.append(g_vs[start:stop])
                wrt = [xs, *state, *(local[i] for i in learned)]
                grads = torch.autograd.grad(outputs, wrt, grads_in, allow_unused=True)
            g_x[start:stop] = grads[0] if grads[0] is not None else 0
            g_state = list(grads[1 : 1 + ctx.n_states])
            for j, i in enumerate(learned):
                g = grads[1 + ctx.n_states + j]
                if g is not None:
                    g_params[i] = g if g_params[i] is None else g_params[i] + g
        return (None, None, None, g_x, *g_state, *g_params)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """A saved state: float32 for half types (exact), the tensor's own type when wider."""
    return t.detach().to(torch.promote_types(t.dtype, torch.float32)).clone()


def _params(is_tensor: list[bool], tensors: list[torch.Tensor], floats: list[Any]) -> list[Any]:
    t, f = iter(tensors), iter(floats)
    return [next(t) if flag else next(f) for flag in is_tensor]


def _zeros_for(grads: list[torch.Tensor | None], like: State) -> list[torch.Tensor]:
    return [g if g is not None else torch.zeros_like(s) for g, s in zip(grads, like)]


def run_states(
    owner: Any, x_seq: torch.Tensor, state: State, params: Sequence[Any], step: Step
) -> StatesResult:
    """``(spikes, last state, V after each step)`` of the layer ``owner`` through its backend;
    ``V`` is None unless ``owner.store_v_seq`` (the fused kernels then skip writing it)."""
    backend = BACKENDS.get(owner.backend)
    return backend(owner, x_seq, state, params, step, owner.store_v_seq)


@BACKENDS.register("autograd")
def autograd_states(
    owner: Any, x_seq: torch.Tensor, state: State, params: Sequence[Any], step: Step,
    store_v_seq: bool,
) -> StatesResult:  # fmt: skip
    """The reference loop (:func:`reference_states`)."""
    return reference_states(x_seq, state, params, step, store_v_seq)


def chunked_states(
    owner: Any, x_seq: torch.Tensor, state: State, params: Sequence[Any], step: Step,
    store_v_seq: bool,
) -> StatesResult:  # fmt: skip
    """The chunked-recompute node (:class:`_ChunkedLoop`)."""
    spikes, vs, *rest = _ChunkedLoop.apply(step, len(state), store_v_seq, x_seq, *state, *params)
    return spikes, tuple(rest), vs if store_v_seq else None
