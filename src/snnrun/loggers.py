"""Where a run's numbers go: ``metrics.jsonl`` in the run dir (always) and an optional logger.

``logger=wandb`` logs the resolved config, the per-step train loss and the per-epoch metrics
against a ``global_step`` metric that checkpoints restore (W&B's own step restarts at 0 for a
resumed offline run). Its files live in ``<run dir>/wandb``; the run id is kept in
``<run dir>/wandb_run_id.txt`` and in each checkpoint so a resume continues the same run.
``mode`` defaults to ``offline``; ``WANDB_MODE`` in the environment, when set, wins (also on
resume, whose saved config holds the mode the run started with).
"""

from __future__ import annotations

import json
import os
import secrets
import string
from pathlib import Path
from typing import Any

from snnrun.checkpoint import atomic_write_bytes
from snnrun.errors import SnnrunError
from snnrun.registry import Registry

METRICS_FILE = "metrics.jsonl"
WANDB_MODES = ("offline", "online", "disabled")


class MetricsFile:
    """One JSON object per epoch, appended and flushed to ``<run dir>/metrics.jsonl``."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS_FILE

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the file with exactly ``records`` (a resume drops epochs past its checkpoint)."""
        text = "".join(json.dumps(r) + "\n" for r in records).encode()
        atomic_write_bytes(self.path, lambda f: f.write(text))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunLogger:
    """Base logger: does nothing. Subclasses send numbers somewhere."""

    def start(self, run_dir: Path, config: dict[str, Any], state: dict[str, Any] | None) -> None:
        """Open the run; ``state`` is what :meth:`state_dict` returned before a resume."""

    def log_step(self, global_step: int, metrics: dict[str, float]) -> None: ...

    def log_epoch(self, global_step: int, metrics: dict[str, float]) -> None: ...

    def finish(self) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}


LOGGERS: Registry[type[RunLogger]] = Registry("logger")
LOGGERS.register("none")(RunLogger)


@LOGGERS.register("wandb")
class WandbLogger(RunLogger):
    """Weights & Biases, offline by default."""

    RUN_ID_FILE = "wandb_run_id.txt"

    def __init__(
        self,
        project: str = "snnrun",
        mode: str = "offline",
        entity: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        mode = os.environ.get("WANDB_MODE") or mode or "offline"
        if mode not in WANDB_MODES:
            raise SnnrunError(f"W&B mode {mode!r}; use one of {', '.join(WANDB_MODES)}")
        self.project, self.mode, self.entity = project, mode, entity
        self.tags = list(tags or [])
        self.run = None
        self.run_id: str | None = None

    def start(self, run_dir: Path, config: dict[str, Any], state: dict[str, Any] | None) -> None:
        import wandb

        saved = (state or {}).get("run_id") or _read_run_id(run_dir)
        self.run_id = saved or _new_run_id()
        (run_dir / self.RUN_ID_FILE).write_text(self.run_id + "\n")
        try:
            self.run = wandb.init(
                project=self.project,
                entity=self.entity,
                id=self.run_id,
                resume="allow",
                dir=str(run_dir),
                mode=self.mode,
                config=config,
                tags=self.tags,
                name=f"{run_dir.parent.name}/{run_dir.name}",
            )
        except Exception as e:  # login, network and service errors come in many types
            reason = " ".join(str(e).split())[:200] or type(e).__name__
            raise SnnrunError(
                f"W&B could not start a {self.mode} run ({reason}); "
                "set WANDB_MODE=offline or logger=none"
            ) from None
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")

    def log_step(self, global_step: int, metrics: dict[str, float]) -> None:
        self.run.log({**{f"train/{k}": v for k, v in metrics.items()}, "global_step": global_step})

    def log_epoch(self, global_step: int, metrics: dict[str, float]) -> None:
        self.run.log({**{f"epoch/{k}": v for k, v in metrics.items()}, "global_step": global_step})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}


def _new_run_id() -> str:
    """8 random [a-z0-9] characters, drawn without touching the run's seeded RNGs."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _read_run_id(run_dir: Path) -> str | None:
    path = run_dir / WandbLogger.RUN_ID_FILE
    return path.read_text().strip() or None if path.is_file() else None


def build_logger(cfg: dict[str, Any]) -> RunLogger:
    options = dict(cfg)
    return LOGGERS.get(options.pop("name"))(**options)
