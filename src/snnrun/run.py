"""One training run: build every object from the resolved config, restore a checkpoint, fit.

This is the composition root: the only place that knows which registry builds which piece.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from snnrun.checkpoint import (
    BEST,
    LATEST,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    seed_everything,
)
from snnrun.data import build_splits, make_loader
from snnrun.encoders import build_encoder
from snnrun.errors import SnnrunError
from snnrun.loggers import MetricsFile, build_logger
from snnrun.losses import build_loss
from snnrun.model import build_model
from snnrun.optim import build_optimizer, build_scheduler
from snnrun.precision import build_precision
from snnrun.progress import console
from snnrun.trainer import Trainer, TrainState

log = logging.getLogger("snnrun")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SnnrunError(f"device={name} but CUDA is not available; use device=auto or device=cpu")
    return device


def train(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> float:
    """Train (or, with ``cfg.resume`` set, continue) the run in ``run_dir``; best test accuracy."""
    conf: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    resume = Path(conf["resume"]) if conf.get("resume") else None
    if resume is None and (run_dir / LATEST).exists():
        raise SnnrunError(
            f"{run_dir} already holds a run; continue it with resume={run_dir} "
            "or pick another hydra.run.dir"
        )
    payload = load_checkpoint(resume) if resume else None

    device = resolve_device(conf["device"])
    seed_everything(conf["seed"])
    splits = build_splits(conf["dataset"])
    defaults = {"neuron": conf["neuron"], "surrogate": conf["surrogate"]}
    model = build_model(conf["model"], defaults, splits.sample_shape, splits.num_classes).to(device)
    optimizer = build_optimizer(conf["optimizer"], model.parameters())
    scheduler = build_scheduler(conf["scheduler"], optimizer)
    precision = build_precision(conf["precision"], device)
    logger = build_logger(conf["logger"])
    train_loader = make_loader(
        splits.train, conf["batch_size"], True, conf["seed"], conf["num_workers"]
    )
    test_loader = make_loader(
        splits.test, conf["batch_size"], False, conf["seed"], conf["num_workers"]
    )
    net = torch.compile(model) if conf.get("compile") else model  # checkpoints keep `model`

    state, logger_state = TrainState(), None
    metrics = MetricsFile(run_dir)
    if payload is not None:
        state, logger_state = _restore(
            payload, model, optimizer, scheduler, precision.scaler, train_loader.generator
        )
        metrics.rewrite(state.history)
        console.print(
            f"resuming {run_dir} at epoch {state.epoch} (best test_acc {state.best_acc:.4f})"
        )
    _describe(model, conf, splits, device)

    def on_epoch_end(st: TrainState, record: dict[str, Any], is_best: bool) -> None:
        ckpt = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": precision.scaler.state_dict() if precision.scaler is not None else None,
            "state": vars(st),
            "rng": capture_rng(train_loader.generator),
            "logger": logger.state_dict(),
            "config": conf,
            "overrides": overrides,
        }
        save_checkpoint(ckpt, run_dir / LATEST)
        if is_best:
            save_checkpoint(ckpt, run_dir / BEST)
        metrics.append(record)

    logger.start(run_dir, conf, logger_state)
    trainer = Trainer(
        net,
        build_encoder(conf["encoder"]),
        build_loss(conf["loss"]),
        optimizer,
        scheduler,
        precision,
        device,
        conf["T"],
        logger,
        conf["log_every"],
    )
    try:
        trainer.fit(train_loader, test_loader, conf["epochs"], state, on_epoch_end)
    finally:
        logger.finish()
    _report(state, run_dir)
    return state.best_acc


def _restore(
    payload: dict[str, Any], model, optimizer, scheduler, scaler, generator: torch.Generator
) -> tuple[TrainState, dict[str, Any]]:
    """Load every state a checkpoint holds; the RNGs last, after all building is done."""
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        if scheduler is not None and payload.get("scheduler") is not None:
            scheduler.load_state_dict(payload["scheduler"])
        if scaler is not None and payload.get("scaler") is not None:
            scaler.load_state_dict(payload["scaler"])
        state = TrainState(**payload["state"])
        restore_rng(payload["rng"], generator)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise SnnrunError(
            f"checkpoint does not fit the configured run: {str(e).strip().splitlines()[0]}"
        ) from None
    return state, payload.get("logger") or {}


def _describe(model: torch.nn.Module, conf: dict[str, Any], splits, device: torch.device) -> None:
    params = sum(p.numel() for p in model.parameters())
    console.print(model, highlight=False)
    console.print(
        f"model={conf['model']['name']} ({params:,} parameters)  dataset={conf['dataset']['name']} "
        f"({len(splits.train)} train / {len(splits.test)} test, input {list(splits.sample_shape)})"
        f"  T={conf['T']}  device={device}  precision={conf['precision']['name']}",
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
