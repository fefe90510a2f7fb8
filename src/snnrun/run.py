"""One training run: build every object from the resolved config, restore a checkpoint, fit.

This is the composition root: the only place that knows which registry builds which piece.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from snnrun.checkpoint import (
    BEST,
    LATEST,
    capture_rng,
    restore_rng,
    save_checkpoint,
    seed_everything,
)
from snnrun.data import Splits, build_splits, make_loader
from snnrun.encoders import Encoder, build_encoder
from snnrun.errors import SnnrunError
from snnrun.loggers import MetricsFile, RunLogger, build_logger
from snnrun.losses import RateLoss, build_loss
from snnrun.model import SpikingNetwork, build_model
from snnrun.optim import build_optimizer, build_scheduler, follow_horizon
from snnrun.precision import Precision, build_precision
from snnrun.progress import console
from snnrun.trainer import Trainer, TrainState

RUN_MARKER = "run.pid"


@dataclass
class Run:
    """Everything one run is made of, built from its config."""

    conf: dict[str, Any]
    device: torch.device
    splits: Splits
    model: SpikingNetwork
    optimizer: torch.optim.Optimizer
    scheduler: Any
    precision: Precision
    logger: RunLogger
    encoder: Encoder
    loss: RateLoss
    train_loader: torch.utils.data.DataLoader
    test_loader: torch.utils.data.DataLoader


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SnnrunError(f"device={name!r} is not a device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SnnrunError(f"device={name} but CUDA is not available; use device=auto or device=cpu")
    return device


def refuse_existing_run(run_dir: Path) -> None:
    """A fresh run never writes into another run's dir."""
    if (run_dir / LATEST).exists():
        raise SnnrunError(
            f"{run_dir} already holds a run; continue it with resume={run_dir} "
            "or pick another hydra.run.dir"
        )


def claim_run_dir(run_dir: Path) -> None:
    """Mark ``run_dir`` as this run's (``run.pid``, created exclusively), so that two runs
    started in the same second into the same timestamped dir cannot both train there."""
    refuse_existing_run(run_dir)
    try:
        fd = os.open(run_dir / RUN_MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        owner = (run_dir / RUN_MARKER).read_text().strip()
        raise SnnrunError(f"{run_dir} was claimed by another run (pid {owner}); pick another "
                          "hydra.run.dir, or delete its run.pid if that process is gone"
                          ) from None  # fmt: skip
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")


def _check_values(conf: dict[str, Any]) -> None:
    for key in ("T", "batch_size", "log_every"):
        if not isinstance(conf[key], int) or conf[key] < 1:
            raise SnnrunError(f"{key} must be a positive integer, got {conf[key]!r}")
    if not isinstance(conf["epochs"], int) or conf["epochs"] < 0:
        raise SnnrunError(f"epochs must be a non-negative integer, got {conf['epochs']!r}")


def build_run(conf: dict[str, Any]) -> Run:
    """Build every piece; a bad value in any group is one :class:`SnnrunError`."""
    _check_values(conf)
    device = resolve_device(conf["device"])
    seed_everything(conf["seed"])
    splits = build_splits(conf["dataset"])
    defaults = {"neuron": conf["neuron"], "surrogate": conf["surrogate"]}
    model = build_model(conf["model"], defaults, splits.sample_shape, splits.num_classes)
    try:
        optimizer = build_optimizer(conf["optimizer"], model.to(device).parameters())
        scheduler = build_scheduler(conf["scheduler"], optimizer)
        logger = build_logger(conf["logger"])
        encoder, loss = build_encoder(conf["encoder"]), build_loss(conf["loss"])
    except (TypeError, ValueError) as e:
        raise SnnrunError(f"bad config value: {e}") from None
    batch, seed, workers = conf["batch_size"], conf["seed"], conf["num_workers"]
    return Run(
        conf=conf,
        device=device,
        splits=splits,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        precision=build_precision(conf["precision"], device),
        logger=logger,
        encoder=encoder,
        loss=loss,
        train_loader=make_loader(splits.train, batch, True, seed, workers),
        test_loader=make_loader(splits.test, batch, False, seed, workers),
    )


def train(
    cfg: DictConfig, run_dir: Path, overrides: list[str], checkpoint: dict[str, Any] | None = None
) -> float:
    """Train the run in ``run_dir`` (continue it from ``checkpoint``); best test accuracy."""
    conf: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    if checkpoint is not None:
        return _fit(conf, run_dir, overrides, checkpoint)
    claim_run_dir(run_dir)
    try:
        return _fit(conf, run_dir, overrides, None)
    except BaseException:
        if not (run_dir / LATEST).exists():  # nothing trained yet: free the dir again
            (run_dir / RUN_MARKER).unlink(missing_ok=True)
        raise


def _fit(
    conf: dict[str, Any], run_dir: Path, overrides: list[str], checkpoint: dict[str, Any] | None
) -> float:
    """Build, restore, train and report (``train`` owns the run dir)."""
    if conf["dataset"].get("root"):  # absolute, so a resume from elsewhere finds the data
        conf["dataset"]["root"] = os.path.abspath(os.path.expanduser(conf["dataset"]["root"]))
    run = build_run(conf)
    state, logger_state = TrainState(), None
    metrics = MetricsFile(run_dir)
    if checkpoint is not None:
        state, logger_state = _restore(checkpoint, run)
        metrics.rewrite(state.history)
        console.print(f"resuming {run_dir} at epoch {state.epoch} "
                      f"(best test_acc {state.best_acc:.4f})")  # fmt: skip
    _describe(run)

    def on_epoch_end(st: TrainState, record: dict[str, Any], is_best: bool) -> None:
        payload = _checkpoint_payload(run, st, overrides)
        save_checkpoint(payload, run_dir / LATEST)
        if is_best:
            save_checkpoint(payload, run_dir / BEST)
        metrics.append(record)

    net = torch.compile(run.model) if conf["compile"] else run.model  # checkpoints keep .model
    trainer = Trainer(net, run.encoder, run.loss, run.optimizer, run.scheduler, run.precision,
                      run.device, conf["T"], run.logger, conf["log_every"])  # fmt: skip
    run.logger.start(run_dir, conf, logger_state)
    try:
        trainer.fit(run.train_loader, run.test_loader, conf["epochs"], state, on_epoch_end)
    finally:
        run.logger.finish()
    _report(state, run_dir)
    return state.best_acc


def _checkpoint_payload(run: Run, state: TrainState, overrides: list[str]) -> dict[str, Any]:
    """Everything a resume needs, the resolved config and the overrides that composed it."""
    scaler = run.precision.scaler
    return {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "state": vars(state),
        "rng": capture_rng(run.train_loader.generator),
        "logger": run.logger.state_dict(),
        "config": run.conf,
        "overrides": overrides,
    }


def _restore(payload: dict[str, Any], run: Run) -> tuple[TrainState, dict[str, Any]]:
    """Load every state a checkpoint holds; the RNGs last, after all building is done."""
    try:
        run.model.load_state_dict(payload["model"])
        run.optimizer.load_state_dict(payload["optimizer"])
        if run.scheduler is not None and payload.get("scheduler") is not None:
            run.scheduler.load_state_dict(payload["scheduler"])
            follow_horizon(run.scheduler, run.conf["scheduler"])
        if run.precision.scaler is not None and payload.get("scaler") is not None:
            run.precision.scaler.load_state_dict(payload["scaler"])
        state = TrainState(**payload["state"])
        restore_rng(payload["rng"], run.train_loader.generator)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise SnnrunError(f"checkpoint does not fit the configured run: {' '.join(str(e).split())}"
                          ) from None  # fmt: skip
    return state, payload.get("logger") or {}


def _describe(run: Run) -> None:
    conf, splits = run.conf, run.splits
    params = sum(p.numel() for p in run.model.parameters())
    console.print(run.model, highlight=False)
    console.print(
        f"model={conf['model']['name']} ({params:,} parameters)  dataset={conf['dataset']['name']} "
        f"({len(splits.train)} train / {len(splits.test)} test, input {list(splits.sample_shape)})"
        f"  T={conf['T']}  device={run.device}  precision={conf['precision']['name']}",
        highlight=False,
    )


def _report(state: TrainState, run_dir: Path) -> None:
    if not state.history:
        return
    last = state.history[-1]
    console.print(
        f"final test_acc={last['test_acc']:.4f} (max {state.best_acc:.4f}) after "
        f"{state.epoch} epochs; run dir: {run_dir}",
        highlight=False,
    )
