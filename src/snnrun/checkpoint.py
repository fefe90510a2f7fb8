"""Checkpoints: atomic writes, RNG capture/restore, and validated loading.

A checkpoint is one ``torch.save``'d dict (see ``snnrun.run._checkpoint_payload``). Writes go
to a temporary file in the same folder, are fsync'ed, then renamed over the target, so a kill at
any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnrun.errors import SnnrunError

_UMASK = os.umask(0)
os.umask(_UMASK)
LATEST = "checkpoint_latest.pt"
BEST = "checkpoint_best.pt"
REQUIRED_KEYS = ("model", "optimizer", "state", "rng", "config")


class CheckpointError(SnnrunError, RuntimeError):
    """A checkpoint that is missing, unreadable or incomplete."""


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync, then rename onto ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load on the CPU; any failure is a :class:`CheckpointError` naming the file."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(
            f"corrupt checkpoint {path}: {type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            "; resume from checkpoint_best.pt or start a new run"
        ) from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise CheckpointError(f"{path} is not an snnrun checkpoint (missing {', '.join(missing)})")
    return payload


def capture_rng(loader_generator: torch.Generator) -> dict[str, Any]:
    """Every random state a run draws from: python, numpy, torch (CPU, CUDA), loader order."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "loader": loader_generator.get_state(),
    }


def restore_rng(state: dict[str, Any], loader_generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    loader_generator.set_state(state["loader"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
