"""Checkpoints: atomic writes, RNG capture/restore, and safe, validated loading.

A checkpoint is one ``torch.save``'d dict (see ``snnrun.run.checkpoint_payload``) holding only
tensors, numbers, strings, lists, tuples and dicts, and it is loaded with
``torch.load(weights_only=True)``: opening someone else's checkpoint runs no code from it.
Before loading, every record's CRC-32 (which ``torch.save``'s zip writer stores) is checked,
since ``torch.load`` does not: a checkpoint whose bytes changed after it was written (a bad
disk, a careless copy) is refused rather than read as other weights. This reads the file once
more, at about the speed of ``torch.load`` itself (0.5 s for 512 MB), and needs nothing beside
the checkpoint, so checkpoints written before this check are verified too.
Writes go to a temporary file in the same folder, are fsync'ed, then renamed over the target,
so a kill or a full disk at any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypedDict

from snnrun.core.errors import SnnrunError
from snnrun.core.migrate import explicit_entry_neurons, renamed_neuron_keys

if TYPE_CHECKING:
    import torch

_UMASK = os.umask(0)
os.umask(_UMASK)
VERSION = 4  # 1: before the key existed (3fa185d and earlier); 2: the neuron's key was "kind";
# 3: an entry naming another neuron took the run's neuron group's keys
REQUIRED_KEYS = ("model", "optimizer", "state", "rng", "config")


class Checkpoint(TypedDict):
    """The one schema of ``checkpoint_latest.pt`` / ``checkpoint_best.pt`` (tensors and plain
    data only). ``state["epoch"]`` is the number of epochs done; ``state["history"]`` the
    ``metrics.jsonl`` records up to it."""

    version: int
    run_id: str
    data: dict[str, Any]  # what rebuilding the network needs: sample_shape, num_classes, ...
    model: dict[str, torch.Tensor]  # the network's state dict (never a compiled wrapper's)
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    scaler: dict[str, Any] | None  # GradScaler (amp_fp16)
    state: dict[str, Any]  # TrainState: epoch, global_step, best_acc, history
    rng: list[dict[str, Any]]  # one entry per rank (version 1 of one process: a dict)
    logger: dict[str, Any]
    callbacks: dict[str, dict[str, Any]]  # each user callback's state_dict() by name (not before)
    config: dict[str, Any]  # the resolved config
    overrides: list[str]  # what composed it


def migrate(payload: dict[str, Any], path: Path) -> Checkpoint:
    """A loaded payload as the current :class:`Checkpoint`: version 1 gains its version; up to
    version 2 the config and overrides name the neuron with ``kind`` (now ``name``); up to
    version 3 an entry naming another neuron took the group's keys (written out now); a
    checkpoint of a newer snnrun is refused as one line."""
    version = payload.setdefault("version", 1)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{path} was written by a newer snnrun (checkpoint version {version}, this one reads "
            f"up to {VERSION}); upgrade snnrun to open it"
        )
    if version < 3:
        payload["config"] = renamed_neuron_keys(payload["config"])
        payload["overrides"] = [
            "neuron.name=" + o.removeprefix("neuron.kind=") if o.startswith("neuron.kind=") else o
            for o in payload.get("overrides", [])
        ]
    if version < 4:
        from snnrun.neuron.neurons import NEURONS

        options_of = lambda name: NEURONS.get(name).OPTIONS  # noqa: E731
        payload["config"] = explicit_entry_neurons(payload["config"], options_of)
    payload["version"] = VERSION
    return payload  # type: ignore[return-value]


class CheckpointError(SnnrunError, RuntimeError):
    """A checkpoint that is missing, unreadable, unsafe or incomplete."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint file that is not whole (cut short, bytes changed); ``what`` says how."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        super().__init__(f"corrupt checkpoint {path}: {what}; restore it from a copy")


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
    import torch

    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path) -> Checkpoint:
    """Verify, then load on the CPU with ``weights_only=True`` (one open file: what was checked
    is what loads); any failure is one :class:`CheckpointError`."""
    import torch

    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; pass the path of an snnrun checkpoint")
    with path.open("rb") as f:
        damage = damaged(f)
        if damage:
            raise CorruptCheckpoint(path, damage)
        f.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                payload = torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise CheckpointError(
                f"refusing {path}: it holds pickled Python objects, not only tensors and plain "
                "data (loading it could run code); only open checkpoints written by snnrun"
            ) from None
        except Exception as e:
            raise CorruptCheckpoint(path, f"{type(e).__name__}: {_reason(e)}") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise CheckpointError(f"{path} is not an snnrun checkpoint (missing {', '.join(missing)})")
    return migrate(payload, path)


def damaged(f: BinaryIO) -> str | None:
    """Why the file ``f`` is not a whole checkpoint as written (cut short, bytes changed), or
    None. Reads it all: every record's CRC-32 is checked, which ``torch.load`` skips."""
    if not zipfile.is_zipfile(f):
        size = f.seek(0, os.SEEK_END)
        return f"it is not a whole zip archive ({size} bytes: cut short, or not a checkpoint)"
    try:
        with zipfile.ZipFile(f) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"its zip structure is broken ({e})"
    if bad is not None:
        return f"its bytes changed after snnrun wrote it ({bad} fails the zip's CRC-32 check)"
    return None


def _reason(e: Exception) -> str:
    """The informative line of a load error (torch's weights_only text wraps the cause)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    causes = [line for line in lines if "Unsupported" in line or "error" in line.lower()]
    return (causes[-1] if causes else lines[0] if lines else type(e).__name__)[:200]


def capture_rng() -> dict[str, Any]:
    """Every random state a process draws from: python, numpy, torch (CPU, CUDA). (The data
    order is a function of seed and epoch, see ``distributed.ShardedBatches``.)

    numpy's key array is stored as a tensor so that the checkpoint loads with weights_only.
    """
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
