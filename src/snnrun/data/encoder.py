"""Input encoders: a batch from the loader → the input sequence ``[T, N, ...]``.

Static datasets give images ``[N, ...]`` in [0, 1], which ``direct``, ``poisson`` and ``latency``
expand over T. Sequence datasets (event frames, spike bins) give ``[N, T, ...]`` already, which
``none`` turns into ``[T, N, ...]`` with one transpose (a view; the first time-folded layer makes
it contiguous once), and ``delta`` into spikes where the sequence changes. Each builder declares
which kind it takes (:func:`takes_sequences`), and :func:`build_encoder` checks it against the
dataset. A user's encoder (``_target_``, :class:`snnrun.core.protocols.Encoder`) may say the same
with a ``sequence`` attribute (True: it takes ``[N, T, ...]`` sequences; False: static
``[N, ...]`` samples); without one it is taken for either kind, unchecked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from snnrun.core import protocols
from snnrun.core.errors import SnnrunError
from snnrun.core.plugin import has_target, instantiate_target
from snnrun.core.registry import Registry

Encoder = Callable[[torch.Tensor, int], torch.Tensor]
EncoderBuilder = Callable[..., Encoder]
ENCODERS: Registry[EncoderBuilder] = Registry("encoder")


def takes_sequences(builder: EncoderBuilder) -> EncoderBuilder:
    """Mark an encoder for datasets whose samples are sequences ``[T, ...]``."""
    builder.sequence = True  # type: ignore[attr-defined]
    return builder


@ENCODERS.register("direct")
def direct() -> Encoder:
    """The image itself at every step; an expanded view (stride 0 over T), no copy."""

    def encode(x: torch.Tensor, T: int) -> torch.Tensor:
        return x.unsqueeze(0).expand(T, *x.shape)

    return encode


@ENCODERS.register("poisson")
def poisson() -> Encoder:
    """Bernoulli spikes with probability = pixel intensity, drawn anew at every step."""

    def encode(x: torch.Tensor, T: int) -> torch.Tensor:
        return (torch.rand(T, *x.shape, device=x.device) < x).to(x.dtype)

    return encode


@ENCODERS.register("latency")
def latency(mode: str = "linear", tau: float = 1.0, threshold: float = 0.01) -> Encoder:
    """Time to first spike (snnTorch ``spikegen.latency`` with ``clip=True``): each input
    ``x`` in [0, 1] spikes once, the brighter the earlier, at step ``round(t)``:

    - ``linear``: ``t = (1 - x) (T - 1)`` (snnTorch's ``linear=True, normalize=True``);
    - ``log``: ``t = tau ln(x / (x - threshold))``, the time an RC circuit fed ``x`` takes to
      reach ``threshold`` (snnTorch's default); none when ``t > T - 1``.

    Inputs below ``threshold`` never spike. ``[N, ...] → [T, N, ...]``.
    """
    if mode not in ("linear", "log"):
        raise ValueError(f"latency mode must be linear or log, got {mode!r}")
    if not (tau > 0 and 0 <= threshold < 1):
        raise ValueError(f"latency needs tau > 0 and 0 <= threshold < 1, got {tau}, {threshold}")

    def encode(x: torch.Tensor, T: int) -> torch.Tensor:
        if mode == "linear":
            t = (1 - x).clamp(max=1 - threshold) * (T - 1)
        else:
            xc = x.clamp(min=threshold + 1e-7)
            t = tau * torch.log(xc / (xc - threshold))
        steps = t.round().long()
        fire = (x >= threshold) & (steps <= T - 1)
        out = torch.zeros(T, *x.shape, dtype=x.dtype, device=x.device)
        out.scatter_(0, steps.clamp(0, T - 1).unsqueeze(0), fire.unsqueeze(0).to(x.dtype))
        return out

    return encode


@ENCODERS.register("delta")
@takes_sequences
def delta(threshold: float = 0.1, padding: bool = False, off_spike: bool = False) -> Encoder:
    """Spikes where a sequence changes (snnTorch ``spikegen.delta``): ``[N, T, ...] →
    [T, N, ...]``, 1 where ``x[t] - x[t-1] >= threshold``; with ``off_spike``, -1 where it is
    ``<= -threshold``. ``x[-1]`` is 0 (``padding=True``: ``x[0]``, so step 0 never spikes)."""
    if threshold <= 0:
        raise ValueError(f"delta needs threshold > 0, got {threshold}")
    sequences = none()

    def encode(x: torch.Tensor, T: int) -> torch.Tensor:
        x_seq = sequences(x, T)
        before = torch.cat([x_seq[:1] if padding else torch.zeros_like(x_seq[:1]), x_seq[:-1]])
        change = x_seq - before
        spikes = (change >= threshold).to(x.dtype)
        return spikes - (change <= -threshold).to(x.dtype) if off_spike else spikes

    return encode


@ENCODERS.register("none")
@takes_sequences
def none() -> Encoder:
    """Sequences as they are: ``[N, T, ...] → [T, N, ...]`` (a transposed view)."""

    def encode(x: torch.Tensor, T: int) -> torch.Tensor:
        if x.dim() < 3 or x.shape[1] != T:
            raise SnnrunError(f"encoder=none expects sequence batches [N, T={T}, ...], got "
                              f"{list(x.shape)}; set dataset.T to T")  # fmt: skip
        return x.transpose(0, 1)

    return encode


def build_encoder(options: dict[str, Any], sequence: bool | None = None) -> Encoder:
    """The encoder ``options['name']`` (or the user's, ``_target_``); ``sequence`` (the
    dataset's kind, None = unchecked) must match what it takes."""
    if has_target(options):
        target = options["_target_"]
        encoder = protocols.check("encoder", instantiate_target(options, "encoder"), target)
        _check_kind(f"encoder: {target}", getattr(encoder, "sequence", None), sequence)
        return encoder
    options = dict(options)
    name = options.pop("name")
    builder = ENCODERS.get(name)
    _check_kind(f"encoder={name}", getattr(builder, "sequence", False), sequence)
    return builder(**options)


def _check_kind(encoder: str, takes: bool | None, sequence: bool | None) -> None:
    """``encoder`` takes sequences (``takes``; None: either kind) as the dataset gives them."""
    if sequence is None or takes is None or bool(takes) == sequence:
        return
    if sequence:
        raise SnnrunError(f"{encoder} expands static images, but this dataset's samples are "
                          "already sequences [T, ...]; use encoder=none")  # fmt: skip
    raise SnnrunError(f"{encoder} takes sequence datasets (event frames), but this dataset's "
                      "samples are static; use encoder=direct or poisson")  # fmt: skip
