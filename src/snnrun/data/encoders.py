"""Input encoders: a batch from the loader → the input sequence ``[T, N, ...]``.

Static datasets give images ``[N, ...]`` in [0, 1], which ``direct`` and ``poisson`` expand over
T. Sequence datasets (event frames, spike bins) give ``[N, T, ...]`` already, which ``none``
turns into ``[T, N, ...]`` with one transpose (a view; the first time-folded layer makes it
contiguous once). Each builder declares which kind it takes (:func:`takes_sequences`), and
:func:`build_encoder` checks it against the dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from snnrun.core.errors import SnnrunError
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


def build_encoder(cfg: dict[str, Any], sequence: bool | None = None) -> Encoder:
    """The encoder ``cfg['name']``; ``sequence`` (the dataset's kind, None = unchecked) must
    match what it takes."""
    options = dict(cfg)
    name = options.pop("name")
    builder = ENCODERS.get(name)
    takes = getattr(builder, "sequence", False)
    if sequence is not None and takes != sequence:
        if sequence:
            raise SnnrunError(f"encoder={name} expands static images, but this dataset's samples "
                              "are already sequences [T, ...]; use encoder=none")  # fmt: skip
        raise SnnrunError(f"encoder={name} takes sequence datasets (event frames), but this "
                          "dataset's samples are static; use encoder=direct or poisson"
                          )  # fmt: skip
    return builder(**options)
