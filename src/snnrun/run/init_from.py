"""``init_from=<run dir or checkpoint>``: a new run that starts from another run's weights.

Only the network's weights (and buffers such as BatchNorm statistics) are taken: the optimizer,
schedule, epochs and random state start afresh, and the run dir is new; ``run.json`` records
where the weights came from. ``init_from.which`` picks a run dir's checkpoint (``best`` or
``latest``). ``init_from.strict=true`` (the default) needs every tensor to match by name and
shape, else one line names the first that does not; ``strict=false`` loads the tensors that
match and leaves the others as initialised (a new head for another class count), listed in
``run.json``. A source none of whose tensors matches is refused either way (it would train from
scratch). A resume never re-applies it: its weights come from its own checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from snnrun.core.errors import SnnrunError
from snnrun.core.progress import console
from snnrun.engine.ema import evaluated_weights
from snnrun.run.checkpoint import Checkpoint, load_checkpoint
from snnrun.run.rundir import CHECKPOINTS, RunDir


def check_init_from(config: dict[str, Any]) -> None:
    """Refuse, as one line and before anything is written, a source that is not there."""
    source = config.get("init_from") or {}
    if source.get("path"):
        _source_path(source)


def _source_path(source: dict[str, Any]) -> Path:
    path = Path(str(source["path"])).expanduser()
    if not path.exists():
        raise SnnrunError(
            f"init_from={path} does not exist; give a run dir (outputs/<date>/<time>) or a "
            "checkpoint file"
        )
    if source.get("which", "best") not in CHECKPOINTS:
        raise SnnrunError(
            f"init_from.which={source['which']!r}; use one of {', '.join(CHECKPOINTS)}"
        )
    return path.resolve()


def apply_init_from(source: dict[str, Any] | None, model: torch.nn.Module) -> dict[str, Any] | None:
    """Load ``source``'s weights into ``model``; what ``run.json`` records of it (None: off)."""
    if not source or not source.get("path"):
        return None
    path = _source_path(source)
    which = source.get("which", "best")
    payload, file = _read(path, which)
    loaded, skipped = _load(model, payload, bool(source.get("strict", True)), file)
    epoch = payload["state"].get("epoch")
    console.print(
        f"init_from: {len(loaded)} of {len(loaded) + len(skipped)} tensors from {file} "
        f"(run {payload['run_id']}, epoch {epoch})"
        + (f"; left as initialised: {', '.join(skipped)}" if skipped else "")
    )
    return {"path": str(file), "run_id": payload["run_id"], "epoch": epoch, "skipped": skipped}


def _read(path: Path, which: str) -> tuple[Checkpoint, Path]:
    if path.is_dir():
        return RunDir(path).load_checkpoint(which, key="init_from.which"), path / CHECKPOINTS[which]
    return load_checkpoint(path), path


def _load(
    model: torch.nn.Module, payload: Checkpoint, strict: bool, file: Path
) -> tuple[list[str], list[str]]:
    """(loaded, skipped) tensor names; with ``strict`` any difference is one line, and so is
    a source none of whose tensors fits."""
    own, weights = model.state_dict(), evaluated_weights(payload)
    fits = {k for k, v in own.items() if k in weights and weights[k].shape == v.shape}
    if own and not fits:
        trained = (payload["config"].get("model") or {}).get("name", "?")
        raise SnnrunError(
            f"init_from: no tensor of {file} matches this network by name and shape (0 of "
            f"{len(own)}; that run trained model={trained}); build the network that run "
            "trained, or drop init_from to train from scratch"
        )
    if strict:
        _refuse_differences(own, weights, file)
    model.load_state_dict({k: weights[k] for k in fits}, strict=False)
    return sorted(fits), [k for k in own if k not in fits]


def _refuse_differences(
    own: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], file: Path
) -> None:
    fix = "or init_from.strict=false to load only the tensors that match"
    for key, value in own.items():
        if key not in weights:
            raise SnnrunError(f"init_from: {file} has no {key} (this network's); {fix}")
        if weights[key].shape != value.shape:
            raise SnnrunError(
                f"init_from: {key} is {list(weights[key].shape)} in {file} but "
                f"{list(value.shape)} here; build the same network, {fix}"
            )
    extra = [k for k in weights if k not in own]
    if extra:
        raise SnnrunError(f"init_from: {file} holds {extra[0]}, which this network lacks; {fix}")
