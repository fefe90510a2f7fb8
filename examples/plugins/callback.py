"""Callbacks of your own: metrics a researcher wants in every epoch's record.

.. code-block:: console

    PYTHONPATH=examples snnrun +callbacks.weights._target_=plugins.callback.WeightNorm \\
        +callbacks.loss_ema._target_=plugins.callback.LossEMA checkpoint.monitor=loss_ema \\
        checkpoint.mode=min

``weight_norm`` / ``weight_norm_ema`` and ``loss_ema`` then appear in ``metrics.jsonl``, on the
console line, in every logger and in ``snnrun runs``; ``checkpoint.monitor`` and
``early_stopping.monitor`` may name them (they are declared in ``metrics``). Both are stateful:
their moving averages are saved in each checkpoint, so a resumed run continues them exactly.
"""

from __future__ import annotations

from typing import Any

import torch

from snnrun import Callback


class WeightNorm(Callback):
    """The L2 norm of all the network's weights after each epoch (``weight_norm``) and its
    exponential moving average over epochs (``weight_norm_ema``, factor ``beta``)."""

    metrics = ("weight_norm", "weight_norm_ema")

    def __init__(self, beta: float = 0.9) -> None:
        self.beta = beta
        self.ema: float | None = None

    def on_epoch_end(self, run: Any, record: dict[str, Any]) -> dict[str, float]:
        with torch.no_grad():  # in float64, rounded to float32: a float32 norm of bit-equal
            # weights differed in its last bit from one process to the next (a CPU reduction's
            # summation order is not fixed), which broke the records' exact resume
            norms = [p.detach().double().norm() for p in run.model.parameters()]
            norm = float(torch.stack(norms).norm().float())  # one sync per epoch
        self.ema = norm if self.ema is None else self.beta * self.ema + (1 - self.beta) * norm
        return {"weight_norm": norm, "weight_norm_ema": self.ema}

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema = state["ema"]


class LossEMA(Callback):
    """An exponential moving average of the training loss over steps (``loss_ema``, factor
    ``beta``), kept on the device: no host sync per step, one per epoch."""

    metrics = ("loss_ema",)

    def __init__(self, beta: float = 0.98) -> None:
        self.beta = beta
        self.ema: torch.Tensor | None = None

    def on_train_batch_end(self, run: Any, batch: Any, loss: torch.Tensor) -> None:
        loss = loss.float()
        if self.ema is None:
            self.ema = loss.clone()
        else:
            self.ema = self.beta * self.ema.to(loss.device) + (1 - self.beta) * loss

    def on_epoch_end(self, run: Any, record: dict[str, Any]) -> dict[str, float]:
        return {"loss_ema": float(self.ema)} if self.ema is not None else {}

    def state_dict(self) -> dict[str, Any]:
        return {"ema": None if self.ema is None else self.ema.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema = state["ema"]
