"""Building one run: every object from the resolved config (the composition root).

This is the only place that knows which registry builds which piece: dataset splits, the
network (neurons with their backend), optimizer and schedule, precision, logger, encoder, loss,
monitors and the seeded loaders. Values the groups cannot check (``T``, ``batch_size``,
non-finite numbers) are refused here as one line.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from snnrun.core.compose import flatten
from snnrun.core.distributed import World
from snnrun.core.errors import SnnrunError, one_line
from snnrun.core.plugin import has_target
from snnrun.core.progress import console
from snnrun.data.dataset import Splits, build_splits, make_loader
from snnrun.data.encoder import Encoder, build_encoder
from snnrun.engine.loss import RateLoss, build_loss
from snnrun.engine.memory_budget import check_options as check_memory_options
from snnrun.engine.monitor import Monitor, build_monitors
from snnrun.engine.optim import build_optimizer, build_scheduler
from snnrun.engine.precision import Precision, build_precision
from snnrun.engine.trainer import TrainSettings
from snnrun.net.layers import walk_entries
from snnrun.net.model import SpikingNetwork, build_model
from snnrun.nir.graph import pin_files
from snnrun.run.checkpoint import seed_everything
from snnrun.run.logger import RunLogger, build_logger
from snnrun.run.rundir import RunDir


@dataclass
class Run:
    """Everything one run is made of, built from its config."""

    config: dict[str, Any]
    device: torch.device
    splits: Splits
    model: SpikingNetwork
    optimizer: torch.optim.Optimizer
    scheduler: Any
    precision: Precision
    logger: RunLogger
    encoder: Encoder
    loss: RateLoss
    monitors: list[Monitor]
    train_loader: torch.utils.data.DataLoader | None
    test_loader: torch.utils.data.DataLoader
    world: World = field(default_factory=World)
    val_loader: torch.utils.data.DataLoader | None = None  # dataset.val_fraction > 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this rank's GPU (``cuda:LOCAL_RANK``) when CUDA is there, else the CPU."""
    if name == "auto" or (name == "cuda" and local_rank):
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SnnrunError(f"device={name!r} is not a device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SnnrunError(f"device={name} but CUDA is not available; use device=auto or device=cpu")
    return device


def refuse_existing_run(run_dir: Path) -> None:
    """A fresh run never writes into another run's dir."""
    if RunDir(run_dir).holds_run():
        raise SnnrunError(
            f"{run_dir} already holds a run; continue it with resume={run_dir} "
            "or pick another hydra.run.dir"
        )


def check_values(config: dict[str, Any]) -> None:
    """Types and ranges the groups cannot check themselves; non-finite numbers anywhere."""
    for key in ("T", "batch_size", "log_every", "seed", "num_workers"):
        low = 0 if key in ("seed", "num_workers") else 1
        if not isinstance(config[key], int) or isinstance(config[key], bool) or config[key] < low:
            kind = "non-negative" if low == 0 else "positive"
            raise SnnrunError(f"{key} must be a {kind} integer, got {config[key]!r}")
    if not isinstance(config["epochs"], int) or config["epochs"] < 0:
        raise SnnrunError(f"epochs must be a non-negative integer, got {config['epochs']!r}")
    check_memory_options(config.get("memory") or {})
    for key, value in flatten(config, lists=True).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise SnnrunError(f"{key}={value} is not a finite number; give it a real value")


def neuron_groups(config: dict[str, Any]) -> dict[str, Any]:
    """The groups every neuron layer falls back to."""
    return {"neuron": config["neuron"], "surrogate": config["surrogate"]}


def place(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move ``model`` to ``device``; on a CPU, the convolutions of a network without 1x1 kernels
    go NHWC (oneDNN's native layout: x1.44 train samples/s on the snnTorch CSNN,
    ``scripts/bench_layout.py``), and their activations follow. oneDNN's AVX2 1x1 convolution
    backward hangs or corrupts memory on NHWC tensors (docs/upstream/onednn_channels_last_hang.md),
    so a network holding one keeps torch's default layout."""
    model.to(device)
    if device.type == "cpu" and nhwc_is_safe(model):
        model.to(memory_format=torch.channels_last)
    return model


def nhwc_is_safe(model: torch.nn.Module) -> bool:
    """The network has 2-d convolutions, none with a 1x1 kernel (the kernel oneDNN breaks)."""
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return bool(convs) and all(tuple(m.kernel_size) != (1, 1) for m in convs)


def record_backend_that_runs(config: dict[str, Any], device: torch.device) -> None:
    """``neuron.backend=triton`` where the kernels cannot run (a CPU, no Triton): the torch
    backend runs, so the config (``config.yaml``, the model print) says torch, with one note."""
    from snnrun.kernels import fallback_reason

    reason = fallback_reason(device.type)
    entries = [config["neuron"], *walk_entries(config["model"].get("layers"))]
    entries += [e["neuron"] for e in entries[1:] if isinstance(e.get("neuron"), Mapping)]
    switched = [e for e in entries if e.get("backend") == "triton"]
    if reason is None or not switched:
        return
    for entry in switched:
        entry["backend"] = "torch"
    console.print(f"[yellow]note:[/] {reason}; config.yaml records neuron.backend=torch")


def build_run(config: dict[str, Any], world: World | None = None) -> Run:
    """Build every piece; a bad value in any group is one :class:`SnnrunError`.

    Every rank builds the same network from the same seed; then each rank draws from its own
    stream (``seed + rank``: encoders, dropout, augmentation).
    """
    check_values(config)
    world = world or World()
    device = resolve_device(config["device"], world.local_rank)
    if config["sync_bn"] and device.type != "cuda":
        raise SnnrunError("sync_bn=true needs CUDA (SyncBatchNorm has no CPU kernel); drop it")
    record_backend_that_runs(config, device)
    seed_everything(config["seed"])
    splits = build_splits(config["dataset"])
    augment = config.get("augment") or {}
    if splits.sequence and (has_target(augment) or augment.get("name", "none") != "none"):
        chosen = augment["_target_"] if has_target(augment) else augment["name"]
        raise SnnrunError(
            f"augment={chosen} is for static images; event datasets take dataset.augment.flip / "
            "crop_padding / nda / event_drop / event_drop_time / event_drop_area"
        )
    model = build_model(
        config["model"], neuron_groups(config), splits.sample_shape, splits.num_classes
    )
    place(model, device)
    settings = TrainSettings.of(config)
    total_batch = config["batch_size"] * settings.accumulate
    optimizer = _built(
        config, "optimizer", build_optimizer, config["optimizer"], model, total_batch
    )
    batch, seed, workers = config["batch_size"], config["seed"], config["num_workers"]
    train_loader = make_loader(splits.train, batch, True, seed, workers, world)
    steps = settings.optimizer_steps(len(train_loader))
    scheduler = _built(config, "scheduler", build_scheduler, config["scheduler"], optimizer, steps)
    logger = _built(config, "logger", build_logger, config["logger"])
    encoder = _built(config, "encoder", build_encoder, config["encoder"], splits.sequence)
    loss = _built(config, "loss", build_loss, config["loss"], model)
    monitors = _built(config, "monitor", build_monitors, config["monitor"], model)
    if world.rank:
        seed_everything(config["seed"] + world.rank)
    return Run(
        config=config,
        device=device,
        splits=splits,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        precision=build_precision(config["precision"], device),
        logger=logger if world.is_main else RunLogger(),
        encoder=encoder,
        loss=loss,
        monitors=monitors,
        train_loader=train_loader,
        test_loader=make_loader(splits.test, batch, False, seed, workers, world),
        val_loader=make_loader(splits.val, batch, False, seed, workers, world)
        if splits.val is not None
        else None,
        world=world,
    )


def _built(config: dict[str, Any], section: str, build: Any, *args: Any) -> Any:
    """``build(*args)``; a bad value in ``section`` is one line naming the section."""
    try:
        return build(*args)
    except (TypeError, ValueError) as e:
        raise SnnrunError(f"bad {section} config {config[section]}: {one_line(e)}") from None


def resolve_paths(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config with its paths absolute before anything copies them (a layer entry
    interpolating ``${model.path}`` included), so that a resume, ``eval`` or ``load_run`` from
    another folder reads the same files; NIR files are pinned by their SHA-256."""
    cfg = cfg.copy()
    with open_dict(cfg):
        for key in ("dataset.root", "dataset.cache_dir", "model.path"):
            value = OmegaConf.select(cfg, key)
            if value:
                OmegaConf.update(cfg, key, os.path.abspath(os.path.expanduser(value)))
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    pin_files(config["model"])
    return config


def label_custom_network(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``model.layers=[...]`` on the command line builds another network than its model group
    names: it is labelled ``custom`` (in the summary, ``config.yaml`` and ``snnrun runs``)
    unless ``model.name=`` labels it."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    if "model.layers" in keys and "model.name" not in keys:
        config["model"]["name"] = "custom"
    return config


def data_identity(splits: Splits) -> dict[str, Any]:
    """What a resume can check about the data under a run (shape, classes, sizes, content)."""
    return {
        "sample_shape": list(splits.sample_shape),
        "num_classes": splits.num_classes,
        "train_size": len(splits.train),
        "test_size": len(splits.test),
        "fingerprint": _fingerprint(splits),
    }


def _fingerprint(splits: Splits, per_split: int = 8) -> str:
    """A hash of each split's first samples and labels: same name and sizes, other data."""
    digest = hashlib.sha256()
    for dataset in (splits.train, splits.test):
        for i in range(min(len(dataset), per_split)):
            x, y = dataset[i]
            digest.update(torch.as_tensor(x).contiguous().cpu().numpy().tobytes())
            digest.update(str(int(y)).encode())
    return digest.hexdigest()[:16]
