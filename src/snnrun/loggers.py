"""Where a run's numbers go besides ``metrics.jsonl``: the logger registry (``wandb``, ``none``).

``logger=wandb`` logs the resolved config, the per-step train loss and the per-epoch metrics
against a ``global_step`` metric that checkpoints restore (W&B's own step restarts at 0 for a
resumed offline run), and each epoch's checkpoint as a model artifact (aliases ``latest``, and
``best`` on the best epoch). Its files live in ``<run dir>/wandb``; the W&B run id is the
snnrun run id. On resume, epochs of the run's history that no local ``.wandb`` file holds (a
SIGKILL loses what W&B had not flushed) are logged again, so W&B holds every epoch
``metrics.jsonl`` holds. ``mode`` defaults to ``offline``; ``WANDB_MODE`` in the environment,
when set, wins (also on resume, whose saved config holds the mode the run started with).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from snnrun.errors import SnnrunError
from snnrun.registry import Registry
from snnrun.wandb_files import logged_epochs

if TYPE_CHECKING:
    from snnrun.rundir import RunDir

WANDB_MODES = ("offline", "online", "disabled")


class RunLogger:
    """Base logger: does nothing. Subclasses send numbers somewhere."""

    wants_steps = False  # whether log_step is worth a host sync for the loss

    def start(
        self,
        rundir: RunDir,
        run_id: str,
        config: dict[str, Any],
        state: dict[str, Any] | None,
        history: list[dict[str, Any]],
    ) -> None:
        """Open the run; ``state`` is what :meth:`state_dict` returned before a resume and
        ``history`` the epoch records the run already has."""

    def log_step(self, global_step: int, metrics: dict[str, float]) -> None: ...

    def log_epoch(self, global_step: int, metrics: dict[str, float]) -> None: ...

    def log_checkpoint(self, rundir: RunDir, epoch: int, is_best: bool) -> None: ...

    def log_figures(self, figures: dict[str, Any], global_step: int | None = None) -> None: ...

    def finish(self) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}


LOGGERS: Registry[type[RunLogger]] = Registry("logger")
LOGGERS.register("none")(RunLogger)


@LOGGERS.register("wandb")
class WandbLogger(RunLogger):
    """Weights & Biases, offline by default."""

    wants_steps = True

    def __init__(
        self,
        project: str = "snnrun",
        mode: str = "offline",
        entity: str | None = None,
        tags: list[str] | None = None,
        log_checkpoints: bool = True,
    ) -> None:
        mode = os.environ.get("WANDB_MODE") or mode or "offline"
        if mode not in WANDB_MODES:
            raise SnnrunError(f"W&B mode {mode!r}; use one of {', '.join(WANDB_MODES)}")
        self.project, self.mode, self.entity = project, mode, entity
        self.tags = list(tags or [])
        self.log_checkpoints = log_checkpoints
        self.run = None
        self.run_id: str | None = None

    def start(
        self,
        rundir: RunDir,
        run_id: str,
        config: dict[str, Any],
        state: dict[str, Any] | None,
        history: list[dict[str, Any]],
    ) -> None:
        import wandb

        self.run_id = (state or {}).get("run_id") or rundir.read_wandb_id() or run_id
        fetched = str(rundir.read_info().get("from", "")).startswith("wandb:")
        already = {r["epoch"] for r in history} if fetched else logged_epochs(rundir.wandb_dir)
        rundir.write_wandb_id(self.run_id)
        try:
            self.run = wandb.init(
                project=self.project,
                entity=self.entity,
                id=self.run_id,
                resume="allow",
                dir=str(rundir.path),
                mode=self.mode,
                config=config,
                tags=self.tags,
                name=f"{rundir.path.parent.name}/{rundir.path.name}",
            )
        except Exception as e:  # login, network and service errors come in many types
            reason = " ".join(str(e).split())[:200] or type(e).__name__
            raise SnnrunError(
                f"W&B could not start a {self.mode} run ({reason}); "
                "set WANDB_MODE=offline or logger=none"
            ) from None
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")
        for record in history:  # what a killed segment never flushed
            if record["epoch"] not in already:
                self.log_epoch(record.get("global_step", 0), record)

    def log_step(self, global_step: int, metrics: dict[str, float]) -> None:
        self.run.log({**{f"train/{k}": v for k, v in metrics.items()}, "global_step": global_step})

    def log_epoch(self, global_step: int, metrics: dict[str, float]) -> None:
        self.run.log({**{f"epoch/{k}": v for k, v in metrics.items()}, "global_step": global_step})

    def log_checkpoint(self, rundir: RunDir, epoch: int, is_best: bool) -> None:
        """The latest checkpoint as a model artifact; W&B copies and uploads it in the
        background, so the loop waits only for the copy."""
        if not self.log_checkpoints:
            return
        import wandb

        artifact = wandb.Artifact(f"model-{self.run_id}", type="model", metadata={"epoch": epoch})
        artifact.add_file(str(rundir.checkpoint("latest")), name="checkpoint.pt")
        aliases = ["latest", f"epoch-{epoch}"] + (["best"] if is_best else [])
        self.run.log_artifact(artifact, aliases=aliases)

    def log_figures(self, figures: dict[str, Any], global_step: int | None = None) -> None:
        """PNG/GIF figures as W&B images (W&B shows no SVG/PDF images)."""
        import wandb

        row = {f"figures/{k}": wandb.Image(str(v)) for k, v in figures.items()
               if str(v).endswith((".png", ".gif"))}  # fmt: skip
        if row:
            self.run.log(
                {**row, **({"global_step": global_step} if global_step is not None else {})}
            )

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}


def build_logger(cfg: dict[str, Any]) -> RunLogger:
    options = dict(cfg)
    return LOGGERS.get(options.pop("name"))(**options)
