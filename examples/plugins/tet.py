"""TET: the Temporal Efficient Training loss (Deng, Li, Zhang and Gu, "Temporal Efficient
Training of Spiking Neural Network via Gradient Re-weighting", ICLR 2022), for ``loss=tet``.

Each time step's output is held to the label on its own, instead of their mean (eq. 8, with
the MSE term of eq. 10 that keeps the outputs near a constant ``phi``)::

    L = (1 - lamb) (1/T) sum_t CE(O_t, y)  +  lamb (1/T) sum_t MSE(O_t, phi)

The defaults are the authors' code's (github.com/Gus-Lab/temporal_efficient_training:
``--lamb 1e-3``, ``--means 1.0``, the target of the MSE term).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class TET:
    """``loss(out [T, N, classes], y [N]) -> scalar``; ``predict(out) -> [N]``: the argmax of
    the mean over T."""

    def __init__(self, lamb: float = 1e-3, phi: float = 1.0) -> None:
        if not 0 <= lamb <= 1:
            raise ValueError(f"lamb must lie in [0, 1], got {lamb}")
        self.lamb, self.phi = lamb, phi

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = out.float()
        T = out.shape[0]
        ce = F.cross_entropy(out.flatten(0, 1), y.repeat(T))  # the mean over t of CE(O_t, y)
        if self.lamb == 0:
            return ce
        mse = F.mse_loss(out, torch.full_like(out, self.phi))  # the mean over t of MSE(O_t, phi)
        return (1 - self.lamb) * ce + self.lamb * mse

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return out.mean(0).argmax(-1)
