"""Spikes saved for the backward as what they are: bits (8 per byte) or bytes, not floats.

A convolution, linear layer, max-pool or product of spikes saves its input for its backward;
when that input is a neuron's output (or a max-pool, ``and``/``iand`` of spikes, or a count
from an ``add`` of spikes), :class:`SpikeStore` keeps it packed and unpacks it, exactly, when
the backward asks for it. The gradients are bit-identical: the same autograd operations run on
the same values (``0``/``1`` and small integers are exact in every float dtype).

Which tensors are spikes is decided when the plan is applied (``net/memory.py``), from the
network's structure: each producer's forward hook :func:`mark` s its output with the largest
value it can hold (``1``: spikes; ``k``: counts ``0..k``). While a training forward runs in
:meth:`SpikeStore.region`, every tensor autograd saves is looked up by its storage: one that
shares a live marked tensor's storage (the tensor itself or a view such as ``flatten(0, 1)``)
is packed, every other is kept as it is, but int64 tensors (a max-pool's indices), narrowed to
int16 or int32 where their values fit. The first region checks that what it packed unpacks to
the same values, so a neuron whose output is not spikes is named rather than trained wrongly.
Under a plan that packs, a max-pool saves only its indices (:func:`indices_only_forward`): its
backward never reads the input's values.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair, _single

from snnrun.core.errors import SnnrunError

SPIKE_MODES = ("float", "uint8", "bits")
SMALL = 4096  # int64 saved tensors below this many values are kept as they are
_MAGIC = 0x0102040810204080  # byte i (0 or 1) of a word to bit 56 + i, no carries
_SHIFTS = torch.arange(8, dtype=torch.uint8)
_ACTIVE: SpikeStore | None = None  # the store of the training forward now running


def pack_bits(flat: torch.Tensor) -> torch.Tensor:
    """``[n]`` values that are 0 or 1 → ``[ceil(n/8)]`` uint8, 8 values per byte."""
    b = flat.ne(0)
    pad = (-b.numel()) % 8
    if pad:
        b = torch.cat((b, b.new_zeros(pad)))
    words = b.view(torch.uint8).view(torch.int64)  # 8 bytes of 0/1 per word (little-endian)
    return ((words * _MAGIC) >> 56).bitwise_and_(0xFF).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """The inverse of :func:`pack_bits`: ``[n]`` values 0 or 1 of ``dtype``."""
    bits = packed.unsqueeze(-1).bitwise_right_shift(_SHIFTS.to(packed.device)).bitwise_and_(1)
    return bits.view(-1)[:n].to(dtype)


@dataclass(frozen=True)
class Packed:
    """A saved tensor kept packed: its values, and how to rebuild it exactly."""

    data: torch.Tensor  # uint8: bits or bytes
    bits: bool
    shape: tuple[int, ...]  # in memory order
    order: tuple[int, ...]  # the permutation from memory order back to the tensor's
    dtype: torch.dtype
    label: str

    def unpack(self) -> torch.Tensor:
        n = self.data.numel() if not self.bits else _numel(self.shape)
        flat = unpack_bits(self.data, n, self.dtype) if self.bits else self.data.to(self.dtype)
        return flat.view(self.shape).permute(self.order)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def memory_order(t: torch.Tensor) -> tuple[int, ...] | None:
    """The permutation that makes ``t`` contiguous when it is dense (no gaps, no overlap:
    contiguous, channels-last, a transpose), else None."""
    order = tuple(sorted(range(t.dim()), key=lambda d: -t.stride(d)))
    return order if t.permute(order).is_contiguous() else None


class SpikeStore:
    """Packs the marked spike tensors that autograd saves during a training forward.

    ``mode``: ``bits`` (8 spikes per byte; counts as bytes) or ``uint8`` (one byte each)."""

    def __init__(self, mode: str) -> None:
        if mode not in SPIKE_MODES[1:]:
            raise ValueError(f"a spike store packs as uint8 or bits, not {mode!r}")
        self.mode = mode
        self.marked: dict[int, tuple[weakref.ref, int, str]] = {}
        self.checked = False  # the first region checks what it packs

    @contextlib.contextmanager
    def region(self) -> Iterator[None]:
        """Within: saved tensors sharing a marked tensor's storage are packed."""
        global _ACTIVE
        if not torch.is_grad_enabled():
            yield
            return
        previous, _ACTIVE = _ACTIVE, self
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack):
                yield
        finally:
            _ACTIVE = previous
            self.marked.clear()
        self.checked = True

    def mark(self, t: torch.Tensor, largest: int, label: str) -> None:
        if t.numel():
            self.marked[t.untyped_storage().data_ptr()] = (weakref.ref(t), largest, label)

    def _pack(self, t: torch.Tensor) -> torch.Tensor | Packed | Narrowed:
        if not t.numel():
            return t
        if t.dtype == torch.int64 and t.numel() >= SMALL:
            return _narrowed(t)
        try:
            found = self.marked.get(t.untyped_storage().data_ptr())
        except (RuntimeError, NotImplementedError):  # a tensor without storage (a fake one)
            return t
        if found is None or found[0]() is None:
            return t
        _, largest, label = found
        order = memory_order(t)
        if order is None or largest > 255:
            return t
        flat = t.permute(order).reshape(-1)
        bits = self.mode == "bits" and largest == 1
        data = pack_bits(flat) if bits else flat.to(torch.uint8)
        inverse = tuple(sorted(range(len(order)), key=order.__getitem__))
        shape = tuple(t.shape[d] for d in order)
        packed = Packed(data, bits, shape, inverse, t.dtype, label)
        if not self.checked and not torch.equal(packed.unpack(), t):
            what = "spikes (0 or 1)" if largest == 1 else f"counts 0..{largest}"
            raise SnnrunError(
                f"{label}'s output was to be {what} but holds other values, so it cannot be "
                "saved packed; set memory.spikes=float"
            )
        return packed


def _narrowed(t: torch.Tensor) -> torch.Tensor | Narrowed:
    """An int64 tensor (a max-pool's indices) kept as int16 or int32 when its values fit."""
    low, high = torch.aminmax(t)
    for dtype in (torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return Narrowed(t.to(dtype))
    return t


@dataclass(frozen=True)
class Narrowed:
    """An int64 saved tensor kept in a narrower integer type (its values fit)."""

    data: torch.Tensor

    def unpack(self) -> torch.Tensor:
        return self.data.to(torch.int64)


def _unpack(saved: torch.Tensor | Packed | Narrowed) -> torch.Tensor:
    return saved if isinstance(saved, torch.Tensor) else saved.unpack()


def mark_output(module: nn.Module, args: object, output: torch.Tensor) -> None:
    """A forward hook: ``output`` holds values ``0..module.snnrun_spike_max`` (1: spikes)."""
    if _ACTIVE is not None and isinstance(output, torch.Tensor):
        _ACTIVE.mark(output, module.snnrun_spike_max, module.snnrun_spike_label)


class _IndicesOnlyMaxPool(torch.autograd.Function):
    """A max-pool that saves only its indices: the backward routes each output's gradient to
    the input position it took (``scatter_add`` into zeros where no two windows overlap, so
    no input position gets two gradients; else ATen's own backward, which reads only the
    input's shape), the same values as ``max_pool{1,2}d``'s backward, without the input."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, pool: nn.Module) -> torch.Tensor:
        fn = F.max_pool2d if isinstance(pool, nn.MaxPool2d) else F.max_pool1d
        out, indices = fn(x, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                          ceil_mode=pool.ceil_mode, return_indices=True)  # fmt: skip
        ctx.save_for_backward(indices)
        ctx.like = (x.shape, x.dtype, x.device, _format(x))
        ctx.pool = pool
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (indices,) = ctx.saved_tensors
        shape, dtype, device, memory_format = ctx.like
        if not _overlaps(ctx.pool):
            gx = torch.zeros(shape, dtype=dtype, device=device).to(memory_format=memory_format)
            gx.flatten(2).scatter_add_(2, indices.flatten(2), grad.flatten(2))
            return gx, None
        pool, two = ctx.pool, len(shape) == 4
        like = torch.zeros((), dtype=dtype, device=device).expand(shape if two else (*shape, 1))
        pair = (lambda v: list(_pair(v))) if two else (lambda v: [*_single(v), 1])
        gx = torch.ops.aten.max_pool2d_with_indices_backward(
            grad if two else grad.unsqueeze(-1), like, pair(pool.kernel_size),
            pair(pool.stride or pool.kernel_size), pair(pool.padding), pair(pool.dilation),
            pool.ceil_mode, indices if two else indices.unsqueeze(-1),
        )  # fmt: skip
        return (gx if two else gx.squeeze(-1)), None


def _format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _overlaps(pool: nn.Module) -> bool:
    """Whether two of the pool's windows can share an input position."""
    dims = 2 if isinstance(pool, nn.MaxPool2d) else 1
    tup = _pair if dims == 2 else _single
    kernel, stride, dilation = (tup(v) for v in (pool.kernel_size, pool.stride or
                                                 pool.kernel_size, pool.dilation))  # fmt: skip
    return any(k > s or d != 1 for k, s, d in zip(kernel, stride, dilation))


def indices_only_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A max-pool's forward that, in a training forward, keeps only its indices (set as the
    module's ``forward`` by the plan). A channels-last input to overlapping windows keeps the
    plain path: ATen's backward would return it in the default layout."""
    plain = not (torch.is_grad_enabled() and x.requires_grad) or self.return_indices
    if plain or (_overlaps(self) and _format(x) == torch.channels_last):
        return type(self).forward(self, x)
    return _IndicesOnlyMaxPool.apply(x, self)
