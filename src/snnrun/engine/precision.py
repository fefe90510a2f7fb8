"""Numeric precision: float32, or autocast with float16 (+ GradScaler) or bfloat16.

Works on CPU where torch's CPU autocast supports the dtype; otherwise one clear error.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from snnrun.core.errors import SnnrunError
from snnrun.core.progress import console
from snnrun.core.registry import Registry


class PrecisionError(SnnrunError, RuntimeError):
    """A precision the device cannot run."""


@dataclass
class Precision:
    """How to run forward passes and scale the loss on one device."""

    name: str
    dtype: torch.dtype | None  # None: plain float32
    device_type: str
    scaler: torch.amp.GradScaler | None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


PRECISIONS: Registry[tuple[torch.dtype | None, bool]] = Registry("precision")
PRECISIONS.register("fp32")((None, False))
PRECISIONS.register("amp_fp16")((torch.float16, True))
PRECISIONS.register("amp_bf16")((torch.bfloat16, False))


def build_precision(options: dict[str, Any], device: torch.device) -> Precision:
    dtype, scaled = PRECISIONS.get(options["name"])
    if dtype is not None:
        _check_autocast(device.type, dtype, options["name"])
    if dtype == torch.float16 and device.type == "cpu":
        console.print(  # one line, on rank 0 only (the other ranks' console is quiet)
            "[yellow]warning:[/] precision=amp_fp16 on cpu runs emulated float16 kernels "
            "(several times slower than fp32 here); precision=fp32 or amp_bf16 is faster on cpu"
        )
    scaler = torch.amp.GradScaler(device.type) if scaled else None
    return Precision(options["name"], dtype, device.type, scaler)


def _check_autocast(device_type: str, dtype: torch.dtype, name: str) -> None:
    """Raise when autocast would silently do nothing for this device and dtype."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.autocast(device_type, dtype=dtype):
                pass
        except RuntimeError as e:
            raise PrecisionError(
                f"precision={name} is not supported on {device_type}: {e}; use precision=fp32"
            ) from None
    if any("autocast" in str(w.message).lower() for w in caught):
        raise PrecisionError(
            f"precision={name} is not supported on {device_type} by this torch "
            "version; use precision=fp32 or precision=amp_bf16"
        )
