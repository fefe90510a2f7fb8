"""A loss of your own: the focal loss (Lin, Goyal, Girshick, He and Dollar, "Focal Loss for
Dense Object Detection", ICCV 2017) on the output firing rates, for ``loss=focal``::

    L = mean_n  -(1 - p_n)^gamma log p_n,    p = softmax(mean_t O[t])[y]

``gamma = 0`` is snnrun's ``ce_rate``; a larger ``gamma`` weighs the samples the network still
gets wrong. (snnrun's own losses, ``tet`` among them, are written the same way:
``src/snnrun/engine/loss.py``.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class FocalRate:
    """``loss(out [T, N, classes], y [N]) -> scalar``; ``predict(out) -> [N]``: the argmax of
    the mean over T."""

    def __init__(self, gamma: float = 2.0) -> None:
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = gamma

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(out.float().mean(0), -1).gather(1, y[:, None])[:, 0]
        return (-((1.0 - log_p.exp()) ** self.gamma) * log_p).mean()

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return out.mean(0).argmax(-1)
