"""``ema.decay``: an exponential moving average of the weights, written as a callback.

After every optimizer step each floating-point entry ``e`` of the model's state dict (weights,
learnable neuron parameters, BatchNorm statistics) follows the live value ``w``:

    e <- decay e + (1 - decay) w

and the integer entries (BatchNorm's batch counter) are copied; the average starts as the
weights at the first step (timm's ``ModelEmaV3`` without its decay warmup; ``decay`` 0.9999 in
DeiT, 0.999 for short runs). The epoch's validation and test passes run on the average: the
record's accuracies, ``checkpoint.monitor`` and so ``checkpoint_best.pt`` are the average's,
and ``snnrun eval``, ``export`` and ``init_from`` load it (:func:`evaluated_weights`). The
checkpoint keeps both: ``model`` (the live weights training continues from) and the average
under ``callbacks.ema``.
"""

from __future__ import annotations

from typing import Any

import torch

from snnrun.core.errors import SnnrunError
from snnrun.engine.callback import Callback, FitContext

NAME = "ema"  # the callback's name in the checkpoint's callbacks


class WeightEMA(Callback):
    """The average of the module docstring; ``run.model``'s weights are swapped for it around
    each evaluation and swapped back after."""

    def __init__(self, decay: float) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
            raise SnnrunError(f"ema.decay must be in (0, 1) (e.g. 0.999), got {decay!r}; "
                              "ema.decay=null turns the average off")  # fmt: skip
        self.decay = float(decay)
        self.average: dict[str, torch.Tensor] | None = None
        self.live: list[torch.Tensor] = []  # the live weights while the average is swapped in

    def on_fit_start(self, run: FitContext) -> None:
        weights = run.model.state_dict()
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in weights.items()}
        else:  # restored from a checkpoint
            self.average = {k: self.average[k].to(v.device, v.dtype) for k, v in weights.items()}

    @torch.no_grad()
    def on_train_batch_end(self, run: FitContext, batch: Any, loss: torch.Tensor) -> None:
        if run.stepped:
            self.update(run.model.state_dict())

    @torch.no_grad()
    def update(self, weights: dict[str, torch.Tensor]) -> None:
        """One step of the average towards ``weights`` (the model's state dict)."""
        assert self.average is not None
        floats = [(self.average[k], w) for k, w in weights.items() if w.is_floating_point()]
        if floats:
            averages, values = zip(*floats)
            torch._foreach_lerp_(list(averages), list(values), 1.0 - self.decay)
        for k, w in weights.items():
            if not w.is_floating_point():
                self.average[k].copy_(w)

    @torch.no_grad()
    def on_evaluate_start(self, run: FitContext) -> None:
        assert self.average is not None
        weights = run.model.state_dict()
        self.live = [w.clone() for w in weights.values()]
        for k, w in weights.items():
            w.copy_(self.average[k])

    @torch.no_grad()
    def on_evaluate_end(self, run: FitContext) -> None:
        for w, live in zip(run.model.state_dict().values(), self.live):
            w.copy_(live)
        self.live = []

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "weights": self.average}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average = dict(state["weights"])


def evaluated_weights(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint is evaluated with: the average when its run had ``ema.decay``
    on, else its ``model``."""
    average = (payload.get("callbacks") or {}).get(NAME) or {}
    on = (payload.get("config", {}).get("ema") or {}).get("decay")
    return average["weights"] if on and average.get("weights") is not None else payload["model"]
