"""The fused neuron as a ``torch.library`` custom op with autograd, and its Backend wrapper.

Two ops in the ``snnrun`` namespace, both opaque to ``torch.compile`` (so a compiled model keeps
the neuron as one node and never breaks its graph there):

- ``snnrun::neuron_forward(x [T, N], v_init [N] f32, decay?, floats, flags, store_v_seq)`` →
  ``(spikes [T, N], v_last [N] f32, v_seq [T, N] or [0], ckpt [ceil(T/8), N] f32)``
- ``snnrun::neuron_backward(grad_s, grad_v_last, x, ckpt, decay?, floats, flags, ...)`` →
  ``(grad_x [T, N], grad_v_init [N] f32, grad_decay [] f32)``

``register_fake`` gives both their shapes for tracing; ``register_autograd`` ties them together
(it builds the one ``torch.autograd.Function`` of the neuron): the forward saves ``x`` (the layer
input, alive anyway) and the float32 chunk checkpoints ``ckpt``; ``v_seq`` and ``ckpt`` are
non-differentiable outputs (``v_seq`` is a monitoring trace: gradients flow through ``spikes``
and ``v_last`` only). The decay is either a runtime float (LIF) or a tensor (PLIF ``sigmoid(w)``,
leaky ``beta``) read by the kernel from device memory, so a learned value never syncs the host
and never recompiles; its gradient comes back when it requires one.

This module needs only torch; the Triton kernels (:mod:`snnrun.kernels.neuron_kernels`) are
imported on the first launch.
"""

from dataclasses import dataclass, fields
from typing import Optional

import torch
from torch import Tensor

from snnrun.neuron.dynamics import Decay, Dynamics, MembraneResult

CHUNK = 8  # = neuron_kernels.CHUNK (kept here so that tracing needs no Triton import)


@dataclass(frozen=True)
class KernelArgs:
    """A layer's scalars for both kernels, built in one place (:meth:`of`); the field names are
    the kernels' parameter names, so a launch passes ``**asdict(args)``.

    The floats are runtime values (changing them does not recompile); the upper-case fields are
    compile-time constants: the kind code, hard reset, detach_reset, decay_input, the surrogate's
    code. The custom ops carry them as two lists (:meth:`pack`, :meth:`unpack`).
    """

    v_th: float
    v_reset: float
    decay_value: float
    alpha: float
    KIND: int
    HARD: int  # Dynamics.reset_code: 0 soft, 1 hard, 2 hard to 0
    DETACH: bool
    DECAY_INPUT: bool
    SG: int

    @classmethod
    def of(cls, dyn: Dynamics, decay_value: float = 0.0) -> "KernelArgs":
        return cls(
            float(dyn.v_threshold), float(dyn.v_reset or 0.0), float(decay_value),
            float(dyn.surrogate.value), dyn.code, dyn.reset_code, dyn.detach_reset,
            dyn.decay_input, dyn.surrogate.spec.code,
        )  # fmt: skip

    def pack(self) -> tuple[list[float], list[int]]:
        """``(floats, flags)`` for the custom ops' schemas."""
        values = list(self.kwargs().values())
        return [float(v) for v in values[:4]], [int(v) for v in values[4:]]

    @classmethod
    def unpack(cls, floats: list[float], flags: list[int]) -> "KernelArgs":
        kind, hard, detach, decay_input, sg = flags
        return cls(*floats, kind, hard, bool(detach), bool(decay_input), sg)

    def kwargs(self) -> dict[str, float | int | bool]:
        """The fields by name, in order (no copying: ``asdict`` would deep-copy on every launch)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _kernels():  # the Triton module, imported on first launch
    from snnrun.kernels import neuron_kernels

    return neuron_kernels


@torch.library.custom_op("snnrun::neuron_forward", mutates_args=())
def neuron_forward(
    x: Tensor,
    v_init: Tensor,
    decay: Optional[Tensor],  # noqa: UP045 - torch.library parses this annotation
    floats: list[float],
    flags: list[int],
    store_v_seq: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Multi-step neuron forward on ``x`` [T, N]; see the module docstring for the outputs."""
    args = KernelArgs.unpack(floats, flags)
    return _kernels().forward(x.contiguous(), v_init.contiguous().float(), decay, args, store_v_seq)


@neuron_forward.register_fake
def _(x, v_init, decay, floats, flags, store_v_seq):
    t, n = x.shape
    v_seq = x.new_empty(x.shape) if store_v_seq else x.new_empty(0)
    ckpt = x.new_empty(((t + CHUNK - 1) // CHUNK, n), dtype=torch.float32)
    return x.new_empty(x.shape), x.new_empty(n, dtype=torch.float32), v_seq, ckpt


@torch.library.custom_op("snnrun::neuron_backward", mutates_args=())
def neuron_backward(
    grad_s: Tensor,
    grad_v_last: Tensor,
    x: Tensor,
    ckpt: Tensor,
    decay: Optional[Tensor],  # noqa: UP045 - torch.library parses this annotation
    floats: list[float],
    flags: list[int],
    need_decay_grad: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(grad_x [T, N], grad_v_init [N] f32, grad_decay [] f32)``."""
    return _kernels().backward(
        grad_s.to(x.dtype).contiguous(), grad_v_last.float().contiguous(), x.contiguous(),
        ckpt.contiguous(), decay, KernelArgs.unpack(floats, flags), need_decay_grad,
    )  # fmt: skip


@neuron_backward.register_fake
def _(grad_s, grad_v_last, x, ckpt, decay, floats, flags, need_decay_grad):
    n = x.shape[1]
    return (
        x.new_empty(x.shape),
        x.new_empty(n, dtype=torch.float32),
        x.new_empty((), dtype=torch.float32),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, _, decay, floats, flags, _store = inputs
    _, _, v_seq, ckpt = output
    ctx.mark_non_differentiable(v_seq, ckpt)
    ctx.save_for_backward(x, ckpt, decay)
    ctx.floats, ctx.flags = floats, flags


def _backward(ctx, grad_s, grad_v_last, _grad_v_seq, _grad_ckpt):
    x, ckpt, decay = ctx.saved_tensors
    need_decay_grad = decay is not None and ctx.needs_input_grad[2]
    grad_x, grad_v0, grad_decay = torch.ops.snnrun.neuron_backward(
        grad_s, grad_v_last, x, ckpt, decay, ctx.floats, ctx.flags, need_decay_grad
    )
    grad_decay = grad_decay.to(decay.dtype).reshape(decay.shape) if need_decay_grad else None
    return grad_x, grad_v0, grad_decay, None, None, None


torch.library.register_autograd("snnrun::neuron_forward", _backward, setup_context=_setup_context)


def triton_neuron(
    x_seq: Tensor, v: Tensor, decay: Decay, dyn: Dynamics, store_v_seq: bool
) -> MembraneResult:
    """The ``triton`` backend: ``(spikes [T, ...] x.dtype, v_last [...] f32, v_seq or None)``.

    ``x_seq`` [T, ...] is flattened to [T, N]; a non-contiguous input is copied once to a
    contiguous one here. ``v`` is cast to float32 (the state is float32 in the kernel).
    """
    t = x_seq.shape[0]
    x = x_seq.reshape(t, -1).contiguous()
    v0 = v.reshape(-1).to(torch.float32)
    decay_t, decay_value = _split_decay(decay, x)
    floats, flags = KernelArgs.of(dyn, decay_value).pack()
    spikes, v_last, v_seq, _ = torch.ops.snnrun.neuron_forward(
        x, v0, decay_t, floats, flags, store_v_seq
    )
    shape = x_seq.shape
    return (
        spikes.view(shape),
        v_last.view(shape[1:]),
        v_seq.view(shape) if store_v_seq else None,
    )


def _split_decay(decay: Decay, x: Tensor) -> tuple[Tensor | None, float]:
    """``(tensor or None, float)``: a tensor decay goes by pointer, a float by value."""
    if isinstance(decay, Tensor):
        if decay.numel() != 1:
            raise ValueError(
                f"the triton backend takes one decay per layer, got a tensor of shape "
                f"{tuple(decay.shape)} (use neuron.backend=torch for per-neuron decays)"
            )
        return decay.to(device=x.device, dtype=torch.float32), 0.0
    return None, float(decay) if decay is not None else 0.0
