"""Callbacks: the trainer's one seam (``snnrun.Callback``, the ``callbacks:`` config mapping).

The trainer trains (loss step, validation and test passes, gradient clipping, the scheduler);
everything else a run does around that is a callback on this seam, snnrun's own behaviours
included (:mod:`snnrun.engine.builtin_callbacks`, :mod:`snnrun.run.callbacks`). Your own:

.. code-block:: yaml

    callbacks:
      weight_norm: {_target_: my_pkg.WeightNorm, beta: 0.9}

The mapping is by name, so a recipe's callback can be overridden
(``callbacks.weight_norm.beta=0.5``) or removed (``~callbacks.weight_norm`` or
``callbacks.weight_norm=null``). Imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snnrun.core.errors import SnnrunError
from snnrun.core.plugin import PluginError, instantiate_target

if TYPE_CHECKING:
    import torch

    from snnrun.engine.trainer import TrainState
    from snnrun.run.build import Run

HOOKS = ("on_fit_start", "on_train_batch_end", "on_epoch_end", "on_checkpoint", "on_fit_end",
         "state_dict", "load_state_dict")  # fmt: skip
# hooks a callback that is no Callback subclass may lack (added after the first ones)
OPTIONAL_HOOKS = ("on_train_batch_start", "on_evaluate_start", "on_evaluate_end")


class Callback:
    """Base class of a callback: override the hooks you need; each does nothing here.

    ``run`` (every hook's first argument) is the :class:`FitContext`: the run's built pieces
    (``run.model``, ``run.optimizer``, ``run.device``, ``run.config``, ``run.train_loader`` ...,
    those of :class:`snnrun.run.build.Run`), ``run.state`` (``epoch``: the epochs done,
    ``global_step``, ``history``: the epoch records so far), ``run.dir`` (the run dir, a
    ``Path``) and ``run.epochs`` (the epochs planned).

    - ``on_fit_start(run)``: before the first epoch (also of a resume).
    - ``on_train_batch_start(run, batch) -> (x, y) | None``: before each training batch's
      forward; ``batch`` is ``(x, y)`` as the loader gives them (``x [N, ...]`` on the CPU,
      ``y [N]`` on the device). Return a changed batch to train on it instead (mixup returns
      mixed inputs and soft targets ``y [N, classes]``: every built-in loss takes them).
    - ``on_train_batch_end(run, batch, loss)``: after each training batch (``run.stepped``:
      whether the optimizer stepped on it; with ``accumulate_grad_batches`` k, every k-th);
      ``batch`` is the batch trained on, ``loss`` the detached scalar tensor on the device
      (``.item()`` waits for the device: do it every few steps, not every step).
    - ``on_evaluate_start(run)`` / ``on_evaluate_end(run)``: around each epoch's validation
      and test passes (the EMA swaps its averaged weights in and back out).
    - ``on_epoch_end(run, record) -> dict | None``: after the test pass, on the epoch's
      record (``epoch`` 0-based, ``train_loss``, ``test_acc`` ...; ``run.state.epoch`` already
      counts this epoch). The keys returned join the record: ``metrics.jsonl``, every logger,
      the console line; ``checkpoint.monitor`` and ``early_stopping.monitor`` may name them
      when ``metrics`` declares them. Called on every rank.
    - ``on_checkpoint(run, path)``: after a checkpoint file is written whole (rank 0).
    - ``on_fit_end(run, record)``: once when training ends, however it ends (done, stopped
      early, an error); ``record`` the last epoch's (None: no epoch ended).
    - ``state_dict() -> dict`` / ``load_state_dict(state)``: what the callback must carry over
      a resume (plain data and tensors), saved in every checkpoint under its name.
    """

    metrics: tuple[str, ...] = ()  # the record keys on_epoch_end returns

    def on_fit_start(self, run: FitContext) -> None: ...

    def on_train_batch_start(
        self, run: FitContext, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None

    def on_train_batch_end(
        self, run: FitContext, batch: tuple[torch.Tensor, torch.Tensor], loss: torch.Tensor
    ) -> None: ...

    def on_evaluate_start(self, run: FitContext) -> None: ...

    def on_evaluate_end(self, run: FitContext) -> None: ...

    def on_epoch_end(self, run: FitContext, record: dict[str, Any]) -> dict[str, Any] | None:
        return None

    def on_checkpoint(self, run: FitContext, path: Path) -> None: ...

    def on_fit_end(self, run: FitContext, record: dict[str, Any] | None) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class FitContext:
    """What the hooks get as ``run``: the built :class:`~snnrun.run.build.Run` (its attributes
    read through), ``state``, ``dir``, ``epochs``, ``stepped`` (whether the optimizer stepped on
    the last training batch) and ``added`` (the keys the callbacks returned for the current
    record, for the console line); :meth:`checkpoint_written` tells every callback of a
    checkpoint file (called by whichever callback wrote it)."""

    def __init__(self, built: Run, state: TrainState, directory: Path | None, epochs: int,
                 callbacks: list[Callback]) -> None:  # fmt: skip
        self.built, self.state, self.dir, self.epochs = built, state, directory, epochs
        self.callbacks = callbacks
        self.stepped = False
        self.added: dict[str, Any] = {}  # the keys the callbacks added to this epoch's record

    def __getattr__(self, name: str) -> Any:
        return getattr(self.built, name)

    def checkpoint_written(self, path: Path) -> None:
        for callback in self.callbacks:
            callback.on_checkpoint(self, path)


def build_callbacks(options: Mapping[str, Any] | None) -> dict[str, Callback]:
    """The ``callbacks:`` mapping built, by name (a null entry: removed); a target that is no
    :class:`Callback` and lacks a hook is one line naming it."""
    built = {}
    for name, entry in (options or {}).items():
        if entry is None:
            continue
        label = f"callbacks.{name}"
        if not isinstance(entry, Mapping) or "_target_" not in entry:
            raise SnnrunError(f"{label} must name its class: {{_target_: my_pkg.MyCallback, "
                              f"<keyword>: <value>}} (or null to remove it)")  # fmt: skip
        built[name] = _checked(instantiate_target(entry, label), label, entry["_target_"])
    return built


def _checked(obj: Any, label: str, target: str) -> Callback:
    """``obj`` as a callback: a :class:`Callback`, or an object with every hook."""
    if isinstance(obj, Callback):
        return obj
    missing = [h for h in HOOKS if not callable(getattr(obj, h, None))]
    if missing:
        raise PluginError(f"{label}: {target} is no snnrun.Callback (it has no "
                          f"{', '.join(missing)}); subclass snnrun.Callback")  # fmt: skip
    return obj  # type: ignore[no-any-return]


def declared_metrics(callbacks: Mapping[str, Any]) -> tuple[str, ...]:
    """The record keys the callbacks declare (``metrics``), in order, once each."""
    keys = [k for cb in callbacks.values() for k in getattr(cb, "metrics", ())]
    return tuple(dict.fromkeys(keys))


RECORD_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")
VAL_KEYS = ("val_loss", "val_acc")


class Watch:
    """A record key watched for improvement (the ``checkpoint`` and ``early_stopping``
    sections): ``monitor`` (``auto``: ``val_acc`` with a validation split, else ``test_acc``)
    and ``mode`` (``max`` or ``min``); a bad one is one line naming the section. ``extra``:
    the keys the callbacks declare."""

    def __init__(self, section: str, options: dict[str, Any], has_val: bool,
                 extra: tuple[str, ...] = ()) -> None:  # fmt: skip
        monitor = options.get("monitor") or "auto"
        self.monitor = ("val_acc" if has_val else "test_acc") if monitor == "auto" else monitor
        self.mode = options.get("mode", "max")
        if monitor == "auto" and self.mode != "max":
            raise SnnrunError(f"{section}.monitor=auto watches an accuracy ({self.monitor}); "
                              f"use {section}.mode=max, or name the key to watch")  # fmt: skip
        known = RECORD_KEYS + (VAL_KEYS if has_val else ()) + extra
        if self.monitor not in known:
            hint = " (val_* needs dataset.val_fraction > 0)" if self.monitor in VAL_KEYS else ""
            raise SnnrunError(f"{section}.monitor={self.monitor!r} is no key of the epoch record; "
                              f"use one of {', '.join(known)}{hint}")  # fmt: skip
        if self.mode not in ("max", "min"):
            raise SnnrunError(f"{section}.mode={self.mode!r}; use max or min")

    def best_of(self, history: list[dict[str, Any]]) -> float | None:
        values = [r[self.monitor] for r in history if self.monitor in r]
        if not values:
            return None
        return max(values) if self.mode == "max" else min(values)

    def improves(self, record: dict[str, Any], best: float | None, delta: float = 0.0) -> bool:
        if self.monitor not in record:
            raise SnnrunError(f"{self.monitor} is missing from the record of epoch "
                              f"{record['epoch'] + 1} (a callback declares it but did not return "
                              "it); return it every epoch, or watch another key")  # fmt: skip
        value = record[self.monitor]
        if best is None:
            return True
        return value > best + delta if self.mode == "max" else value < best - delta


def check_early_stopping(options: dict[str, Any]) -> None:
    """``early_stopping.patience`` (a whole number of epochs, 0: stop at the first epoch
    without an improvement) and ``min_delta`` (not negative): a bad one is one line."""
    patience, delta = options.get("patience", 5), options.get("min_delta", 0.0)
    if not isinstance(patience, int) or isinstance(patience, bool) or patience < 0:
        raise SnnrunError(f"early_stopping.patience must be a non-negative integer (0: stop at "
                          f"the first epoch without an improvement), got {patience!r}")  # fmt: skip
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or delta < 0:
        raise SnnrunError(f"early_stopping.min_delta must be >= 0 (the improvement that counts), "
                          f"got {delta!r}")  # fmt: skip


def watches(config: dict[str, Any], has_val: bool,
            extra: tuple[str, ...] = ()) -> tuple[Watch, Watch | None]:  # fmt: skip
    """``checkpoint``'s watch and ``early_stopping``'s (None: off, ``monitor: null``), each
    checked: a bad key, mode, patience or min_delta is one line."""
    stopping = config.get("early_stopping") or {}
    check_early_stopping(stopping)
    best = Watch("checkpoint", config.get("checkpoint", {}), has_val, extra)
    watch = Watch("early_stopping", stopping, has_val, extra) if stopping.get("monitor") else None
    return best, watch
