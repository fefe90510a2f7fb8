"""Optimizer and learning-rate scheduler registries.

A scheduler steps once per epoch, or after every optimizer step when it says ``per_step = True``
(``cosine`` with ``warmup_epochs`` or ``cooldown_epochs``: timm's shape, :class:`WarmupCosine`).

A group with ``_target_`` builds the user's class instead (:mod:`snnrun.core.protocols`):
``Optimizer(params, **keys)`` and ``Scheduler(optimizer, **keys)``, the group's other keys as
arguments (over a built-in group, its keys: ``optimizer._target_=...`` over ``optimizer=sgd``
passes ``lr``, ``momentum``, ``weight_decay``); ``clip_grad_norm`` stays the trainer's.

``decay_bias_and_norm: false`` applies ``weight_decay`` to the weights of two or more dimensions
only (:func:`parameter_groups`, timm's ``filter_bias_and_bn``), a user's optimizer included.
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


class WarmupCosine(torch.optim.lr_scheduler.LRScheduler):
    """timm's ``CosineLRScheduler`` stepped after every optimizer step (``t_in_epochs=False``,
    one cycle, ``warmup_prefix=False``). At step ``t``, counted from 0 over the run::

        lr(t) = warmup_lr + t (lr - warmup_lr) / W                       t < W
              = eta_min + (lr - eta_min) (1 + cos(pi t / C)) / 2        W <= t < C
              = eta_min                                                  t >= C (cooldown)

    with ``W = warmup_epochs x S`` and ``C = (T_max - cooldown_epochs) x S`` steps (``S``: the
    optimizer steps of one epoch). The cosine counts from step 0, so the warmup ends on its
    curve, as timm's does; ``lr`` is the optimizer's."""

    per_step = True  # the trainer steps it after every optimizer step

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        steps_per_epoch: int,
        T_max: float,
        eta_min: float,
        warmup_epochs: float,
        warmup_lr: float,
        cooldown_epochs: float,
    ) -> None:
        if warmup_epochs < 0 or cooldown_epochs < 0 or cooldown_epochs >= T_max:
            raise ValueError(
                f"cosine needs warmup_epochs >= 0 and 0 <= cooldown_epochs < T_max={T_max}, got "
                f"{warmup_epochs} and {cooldown_epochs}; set scheduler.warmup_epochs / "
                "scheduler.cooldown_epochs"
            )
        self.steps_per_epoch, self.eta_min, self.warmup_lr = steps_per_epoch, eta_min, warmup_lr
        self.warmup = round(warmup_epochs * steps_per_epoch)
        self.cooldown_epochs, self.T_max = cooldown_epochs, T_max
        self.cosine = round((T_max - cooldown_epochs) * steps_per_epoch)
        super().__init__(optimizer)

    def set_horizon(self, T_max: float) -> None:
        """The cosine's length in epochs becomes ``T_max`` (a resume with more epochs)."""
        self.T_max = T_max
        self.cosine = round((T_max - self.cooldown_epochs) * self.steps_per_epoch)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [self.lr_at(self.last_epoch, base) for base in self.base_lrs]

    def lr_at(self, t: int, base: float) -> float:
        """``lr(t)`` for the optimizer's learning rate ``base`` (the class docstring)."""
        if t < self.warmup:
            return self.warmup_lr + t * (base - self.warmup_lr) / self.warmup
        if t >= self.cosine:
            return self.eta_min
        cos = math.cos(math.pi * t / self.cosine)
        return self.eta_min + 0.5 * (base - self.eta_min) * (1 + cos)


@SCHEDULERS.register("cosine")
def _cosine(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    T_max: int,
    eta_min: float = 0.0,
    warmup_epochs: float = 0,
    warmup_lr: float = 1e-5,
    cooldown_epochs: float = 0,
):
    """Cosine annealing over ``T_max`` epochs: per epoch (torch's ``CosineAnnealingLR``), or
    with ``warmup_epochs`` / ``cooldown_epochs`` timm's per-step shape (:class:`WarmupCosine`)."""
    if warmup_epochs or cooldown_epochs:
        return WarmupCosine(optimizer, steps_per_epoch, T_max, eta_min, warmup_epochs, warmup_lr,
                            cooldown_epochs)  # fmt: skip
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=T_max, eta_min=eta_min)


@SCHEDULERS.register("step")
def _step(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, step_size: int, gamma: float = 0.1
):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


@SCHEDULERS.register("none")
def _none(optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    return None


def build_optimizer(options: dict[str, Any], model: torch.nn.Module, total_batch: int = 1):
    """The optimizer of ``model``'s parameters (:func:`parameter_groups`); ``clip_grad_norm``
    is the trainer's (checked here: positive or null); ``lr`` scaled to ``total_batch`` when
    ``lr_base_size`` is set (:func:`scaled_lr`)."""
    options = scaled_lr(options, total_batch)
    name = options.pop("name", None)
    decay_all = options.pop("decay_bias_and_norm", True)
    if not isinstance(decay_all, bool):
        raise ValueError(f"decay_bias_and_norm must be true or false, got {decay_all!r}")
    params = parameter_groups(model, options.get("weight_decay", 0.0), decay_all)
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


def parameter_groups(
    model: torch.nn.Module, weight_decay: float, decay_all: bool
) -> Iterable[torch.nn.Parameter] | list[dict[str, Any]]:
    """``model``'s parameters as the optimizer takes them: one group (``decay_all``, or no
    weight decay), else two: the weights of two or more dimensions (``weight_decay``) and the
    rest, which no decay pulls to zero: biases, normalization scales and shifts, a neuron's
    learned decay or threshold (``ndim <= 1``; ``weight_decay: 0``)."""
    if decay_all or not weight_decay:
        return model.parameters()
    params = list(model.parameters())
    return [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def scaled_lr(options: dict[str, Any], total_batch: int) -> dict[str, Any]:
    """The options with ``lr`` for the run's total batch ``B`` (``batch_size x
    accumulate_grad_batches``) when ``lr_base_size`` says for which batch it is given:
    ``lr B / lr_base_size`` (``lr_base_scale: linear``) or ``lr sqrt(B / lr_base_size)``
    (``sqrt``, timm's rule for adaptive optimizers); both keys removed."""
    options = dict(options)
    size, scale = options.pop("lr_base_size", None), options.pop("lr_base_scale", "linear")
    if size is None:
        return options
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"lr_base_size must be a whole number of samples or null, got {size!r}")
    if scale not in ("linear", "sqrt"):
        raise ValueError(f"lr_base_scale must be linear or sqrt, got {scale!r}")
    ratio = total_batch / size
    options["lr"] = options["lr"] * (ratio if scale == "linear" else math.sqrt(ratio))
    return options


def build_scheduler(
    options: dict[str, Any], optimizer: torch.optim.Optimizer, steps_per_epoch: int
):
    """The scheduler, or None for ``scheduler=none``; ``steps_per_epoch``: the optimizer steps
    of one epoch (on this rank), for a scheduler stepped per step."""
    if has_target(options):
        built = instantiate_target(options, "scheduler", optimizer)
        return protocols.check("scheduler", built, options["_target_"])
    options = dict(options)
    return SCHEDULERS.get(options.pop("name"))(optimizer, steps_per_epoch, **options)


def follow_horizon(scheduler: Any, options: dict[str, Any]) -> dict[str, Any] | None:
    """After a restore: a cosine schedule whose ``T_max`` changed on resume (``epochs=N``)
    continues on the new horizon, at its closed-form learning rate for the current epoch.

    The change is printed; returned for the run's record (``epoch``: the next one to run,
    counted from 1; ``T_max``, ``lr``: before and after), or None when nothing changes.
    """
    if isinstance(scheduler, WarmupCosine):
        return _warmup_horizon(scheduler, options)
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


def _warmup_horizon(scheduler: WarmupCosine, options: dict[str, Any]) -> dict[str, Any] | None:
    old_T = scheduler.T_max
    if old_T == options["T_max"]:
        return None
    old_lr = scheduler.optimizer.param_groups[0]["lr"]
    scheduler.set_horizon(options["T_max"])
    change = {"epoch": scheduler.last_epoch // scheduler.steps_per_epoch + 1,
              "T_max": [old_T, options["T_max"]],
              "lr": [old_lr, scheduler.optimizer.param_groups[0]["lr"]]}  # fmt: skip
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
