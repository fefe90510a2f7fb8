"""Optimizer and learning-rate scheduler registries (schedulers step once per epoch).

A group with ``_target_`` builds the user's class instead (:mod:`snnrun.core.protocols`):
``Optimizer(params, **keys)`` and ``Scheduler(optimizer, **keys)``, the group's other keys as
arguments (over a built-in group, its keys: ``optimizer._target_=...`` over ``optimizer=sgd``
passes ``lr``, ``momentum``, ``weight_decay``); ``clip_grad_norm`` stays the trainer's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from snnrun.core import protocols
from snnrun.core.plugin import has_target, instantiate_target
from snnrun.core.registry import Registry

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
SCHEDULERS: Registry[Callable[..., Any]] = Registry("scheduler")

OPTIMIZERS.register("sgd")(torch.optim.SGD)
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("adamw")(torch.optim.AdamW)


@SCHEDULERS.register("cosine")
def _cosine(optimizer: torch.optim.Optimizer, T_max: int, eta_min: float = 0.0):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=T_max, eta_min=eta_min)


@SCHEDULERS.register("step")
def _step(optimizer: torch.optim.Optimizer, step_size: int, gamma: float = 0.1):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


@SCHEDULERS.register("none")
def _none(optimizer: torch.optim.Optimizer):
    return None


def build_optimizer(options: dict[str, Any], params: Iterable[torch.nn.Parameter]):
    """The optimizer; ``clip_grad_norm`` is the trainer's (checked here: positive or null)."""
    options = dict(options)
    name = options.pop("name", None)
    clip = options.pop("clip_grad_norm", None)
    if clip is not None and (
        not isinstance(clip, (int, float)) or isinstance(clip, bool) or clip <= 0
    ):
        raise ValueError(f"clip_grad_norm must be a positive number or null, got {clip!r}")
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    if has_target(options):
        built = instantiate_target(options, "optimizer", params)
        return protocols.check("optimizer", built, options["_target_"])
    return OPTIMIZERS.get(name)(params, **options)


def build_scheduler(options: dict[str, Any], optimizer: torch.optim.Optimizer):
    """The scheduler, or None for ``scheduler=none``."""
    if has_target(options):
        built = instantiate_target(options, "scheduler", optimizer)
        return protocols.check("scheduler", built, options["_target_"])
    options = dict(options)
    return SCHEDULERS.get(options.pop("name"))(optimizer, **options)


def follow_horizon(scheduler: Any, options: dict[str, Any]) -> dict[str, Any] | None:
    """After a restore: a cosine schedule whose ``T_max`` changed on resume (``epochs=N``)
    continues on the new horizon, at its closed-form learning rate for the current epoch.

    The change is printed; returned for the run's record (``epoch``: the next one to run,
    counted from 1; ``T_max``, ``lr``: before and after), or None when nothing changes.
    """
    if not isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        return None
    if scheduler.T_max == options["T_max"]:
        return None
    groups = scheduler.optimizer.param_groups
    old_T, old_lr = scheduler.T_max, groups[0]["lr"]
    scheduler.T_max = options["T_max"]
    progress = (1 + math.cos(math.pi * scheduler.last_epoch / scheduler.T_max)) / 2
    for group, base_lr in zip(groups, scheduler.base_lrs):
        group["lr"] = scheduler.eta_min + (base_lr - scheduler.eta_min) * progress
    change = {"epoch": scheduler.last_epoch + 1, "T_max": [old_T, scheduler.T_max],
              "lr": [old_lr, groups[0]["lr"]]}  # fmt: skip
    _say_horizon(change)
    return change


def _say_horizon(change: dict[str, Any]) -> None:
    from snnrun.core.progress import console

    (old_T, new_T), (old_lr, new_lr) = change["T_max"], change["lr"]
    console.print(
        f"[yellow]note:[/] the cosine schedule's horizon moves from T_max={old_T} to {new_T} "
        f"epochs from epoch {change['epoch']} on: the learning rate goes from {old_lr:.3g} to "
        f"{new_lr:.3g} (config.yaml now says T_max={new_T}; each epoch's record keeps its lr)",
        highlight=False,
    )
