"""Input encoders: a batch of images ``[N, ...]`` in [0, 1] → an input sequence ``[T, N, ...]``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from snnrun.registry import Registry

Encoder = Callable[[torch.Tensor, int], torch.Tensor]
ENCODERS: Registry[Callable[..., Encoder]] = Registry("encoder")


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


def build_encoder(cfg: dict[str, Any]) -> Encoder:
    options = dict(cfg)
    return ENCODERS.get(options.pop("name"))(**options)
