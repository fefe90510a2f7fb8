"""One training run: build every object from the resolved config, restore a checkpoint, fit.

This is the composition root: the only place that knows which registry builds which piece.
The run dir (:class:`~snnrun.run.rundir.RunDir`) is claimed for the whole run, fresh or resumed."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from snnrun.core.distributed import World, broadcast, gather
from snnrun.core.distributed import init as init_distributed
from snnrun.core.errors import SnnrunError, one_line
from snnrun.core.progress import console
from snnrun.core.stop import Stopped, graceful_stop
from snnrun.core.version import __version__
from snnrun.engine.builtin_callbacks import (
    ConsoleProgress,
    DivergedError,
    DivergenceGuard,
    EarlyStopping,
)
from snnrun.engine.callback import Callback, Watch, build_callbacks, declared_metrics, watches
from snnrun.engine.ema import NAME as EMA_NAME
from snnrun.engine.ema import WeightEMA
from snnrun.engine.memory_budget import plan_for
from snnrun.engine.mixup import build_mixup
from snnrun.engine.optim import follow_horizon
from snnrun.engine.profile import StepProfiler
from snnrun.engine.testing import LossStep
from snnrun.engine.trainer import Trainer, TrainSettings, TrainState
from snnrun.net.summary import markdown, summary_table, totals
from snnrun.run.build import (
    Run,
    build_run,
    data_identity,
    label_custom_network,
    refuse_existing_run,
    resolve_paths,
)
from snnrun.run.callbacks import Checkpoints, Logging, TrainingFigures
from snnrun.run.checkpoint import VERSION as CHECKPOINT_VERSION
from snnrun.run.checkpoint import Checkpoint, capture_rng, restore_rng
from snnrun.run.init_from import apply_init_from
from snnrun.run.provenance import provenance
from snnrun.run.resume import auto_resume
from snnrun.run.rundir import (
    CONFIG,
    INFO,
    LOCK,
    METRICS,
    METRICS_CSV,
    SUMMARY,
    WANDB_ID,
    RunDir,
    new_run_id,
)

RUN_FILES = (CONFIG, INFO, LOCK, METRICS, METRICS_CSV, SUMMARY, WANDB_ID)  # before epoch 1


def train(
    cfg: DictConfig, run_dir: Path, overrides: list[str], checkpoint: Checkpoint | None = None
) -> float:
    """Train the run in ``run_dir`` (continue it from ``checkpoint``); best test accuracy.

    Rank 0 claims the dir first (``run.lock``), fresh or resumed, so two processes never train
    in one dir; a fresh run refuses a dir that already holds a run, unless ``resume=auto``
    finds a run of the same config there and continues it (a requeued job).
    """
    config = label_custom_network(resolve_paths(cfg), overrides)
    world = init_distributed()
    rundir = RunDir(run_dir)
    if checkpoint is None and config.get("resume") == "auto":
        checkpoint = auto_resume(rundir, config)
    fresh = checkpoint is None
    checkpoint = _claim(rundir, checkpoint, world)
    try:
        with graceful_stop(rundir.path, trained=rundir.holds_run):
            return _fit(config, rundir, overrides, checkpoint, world)
    except BaseException as e:
        unstarted = not rundir.holds_run()
        if unstarted and fresh and world.is_main and not _in_sweep():
            _discard_unstarted(rundir)
        elif world.is_main:
            _record_end(rundir, e)
        if unstarted and isinstance(e, Stopped):
            raise Stopped(e.signum, None, trained=False, again=not _in_sweep()) from None
        raise
    finally:
        rundir.release()


def _record_end(rundir: RunDir, error: BaseException) -> None:
    """How a run that trained ended early, for ``snnrun runs`` (``ended.json``): stopped
    (SIGTERM, Ctrl-C), diverged, or failed (a crash); a user error (a refused resume) leaves
    the run as it stood, and a killed process writes nothing (``runs`` calls it failed)."""
    if isinstance(error, (Stopped, KeyboardInterrupt)):
        rundir.mark_ended("stopped", one_line(error))
    elif isinstance(error, DivergedError):
        rundir.mark_ended("diverged", one_line(error))
    elif isinstance(error, Exception) and not isinstance(error, SnnrunError):
        rundir.mark_ended("failed", f"{type(error).__name__}: {one_line(error)}")


def _in_sweep() -> bool:
    """Whether this run is a sweep job (its dir stays to show why it failed)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _discard_unstarted(rundir: RunDir) -> None:
    """A fresh run that ended before its first checkpoint leaves no run dir behind: it holds
    nothing to resume, and the same command starts again. Only snnrun's own files go; a folder
    holding anything else stays."""
    import shutil

    for name in (*RUN_FILES, ".hydra", "wandb", "tensorboard", "profile"):
        path = rundir.path / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        rundir.path.rmdir()


def _claim(rundir: RunDir, checkpoint: Checkpoint | None, world: World) -> Any:
    """Rank 0 claims the dir (and re-reads a resume's checkpoint under the claim); every rank
    raises rank 0's error, so none waits for the others forever."""
    error = None
    if world.is_main:
        try:
            rundir.claim()
            rundir.clear_failure()
            if checkpoint is None:
                refuse_existing_run(rundir.path)
            else:  # another process may have trained meanwhile
                checkpoint = rundir.load_checkpoint("latest")
        except SnnrunError as e:
            rundir.release()
            error = str(e)
    error = broadcast(error)
    if error:
        raise SnnrunError(error)
    return checkpoint


def _check_same_data(saved: dict[str, Any], now: dict[str, Any], config: dict[str, Any]) -> None:
    differs = [k for k in saved if k != "name" and saved.get(k) != now.get(k)]
    if differs and not config.get("allow_new_data"):
        details = ", ".join(
            f"{k} {saved[k]} -> {now.get(k)}" for k in differs if k != "fingerprint"
        )
        raise SnnrunError(
            f"the data under this run changed ({details or 'different samples'}; "
            f"dataset.root={config['dataset'].get('root')}); point dataset.root at the run's data, "
            "or add allow_new_data=true to continue on other data on purpose"
        )


def _fit(
    config: dict[str, Any],
    rundir: RunDir,
    overrides: list[str],
    checkpoint: Checkpoint | None,
    world: World,
) -> float:
    """Build, restore, train and report (``train`` holds the run dir); only rank 0 writes."""
    main = world.is_main
    console.quiet = not main
    console.print(f"run dir: {rundir.path}", highlight=False)
    user = {**build_callbacks(config.get("callbacks")), **_averaging(config)}  # fail fast
    mixing = build_mixup(config.get("mixup"))
    run = build_run(config, world)
    memory = _memory_plan(config, run)
    has_val = run.val_loader is not None
    best, stopping = watches(config, has_val, declared_metrics(user))  # before a resume writes
    data = {"name": config["dataset"]["name"], **data_identity(run.splits)}
    state, logger_state = TrainState(), None
    if checkpoint is None:
        run_id = broadcast(new_run_id())
        origin = _init_from(config, run, main)
        if main:
            info = {"run_id": run_id, "snnrun_version": __version__, "data": data,
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "provenance": provenance(run.device, world, config),
                    "memory": memory}  # fmt: skip
            if declared_metrics(user):  # the keys ``snnrun runs`` shows
                info["callback_metrics"] = list(declared_metrics(user))
            rundir.write_info({**info, "init_from": origin} if origin else info)
    else:
        run_id = checkpoint["run_id"]
        _check_same_data(checkpoint["data"], data, config)
        state, logger_state, change = _restore(checkpoint, run, user)
        if main:
            rundir.rewrite_metrics(state.history)
            made = provenance(run.device, world, config)  # each resume says what it ran with
            rundir.record_resume({"epochs": config["epochs"], **(change or {}), "provenance": made,
                                  "memory": memory})  # fmt: skip
        console.print(f"resuming {rundir.path} at epoch {state.epoch + 1} of {config['epochs']} "
                      f"({state.epoch} done, best test_acc {state.best_acc:.4f})")  # fmt: skip
    if main:
        rundir.write_config(config)
    _describe(run, rundir, main, stopping)

    def payload(st: TrainState) -> Checkpoint:
        return checkpoint_payload(run, st, overrides, run_id, data, user)

    loggers = Logging(run.logger, rundir, run_id, config, logger_state, config["log_every"])
    callbacks = _callbacks(config, run, rundir, [*filter(None, [mixing]), *user.values()], best,
                           stopping, loggers, payload)  # fmt: skip
    net = _compiled(run.model) if config["compile"] else run.model  # checkpoints keep .model
    trainer = Trainer(run, _data_parallel(net, run, config), net,
                      settings=TrainSettings.of(config), callbacks=callbacks)  # fmt: skip
    trainer.fit(config["epochs"], state, rundir.path)
    _report(state, rundir.path)
    return state.best_acc


def _memory_plan(config: dict[str, Any], run: Run) -> dict[str, Any]:
    """The ``memory`` group's plan on ``run.model`` (measured first for ``memory=auto`` or a
    ``memory.budget``): what ``run.json`` records."""
    options = config.get("memory") or {}
    step = LossStep(run.device, run.encoder, run.loss, run.precision, config["T"])

    @functools.cache
    def batch() -> tuple[torch.Tensor, torch.Tensor]:  # read only when plans are measured
        test = run.splits.test
        n = max(1, min(len(test), config["batch_size"] // run.world.size))
        x, y = (torch.stack(v) for v in zip(*(test[i] for i in range(n))))
        return x, y.to(run.device)

    plan, record = plan_for(options, run.model, lambda net: step(net, *batch())[1], run.device)
    if "measured" in record:
        shown = ", ".join(f"{m['spikes']}/{m['checkpoint']} {m['peak_mib']:,.0f} MiB "
                          f"{m['step_s']:.2f} s" for m in record["measured"])  # fmt: skip
        budget = f" under memory.budget={record['budget_mib']} MiB" if record["budget_mib"] else ""
        console.print(f"memory: {plan}{budget}, chosen from one step of each plan "
                      f"(spikes/checkpoint peak time: {shown})", highlight=False)  # fmt: skip
    return record


def _averaging(config: dict[str, Any]) -> dict[str, Callback]:
    """``ema.decay`` on: the weights' average (:mod:`snnrun.engine.ema`), a stateful callback
    saved in the checkpoint under its name ``ema``, which a callback of the user's cannot take."""
    decay = (config.get("ema") or {}).get("decay")
    if decay is None:
        return {}
    if EMA_NAME in (config.get("callbacks") or {}):
        raise SnnrunError(f"callbacks.{EMA_NAME} is the name of snnrun's weight average "
                          "(ema.decay); give your callback another name")  # fmt: skip
    return {EMA_NAME: WeightEMA(decay)}


def _init_from(config: dict[str, Any], run: Run, main: bool) -> dict[str, Any] | None:
    """``init_from``: rank 0 loads the weights (DDP then copies them to every rank); a refusal
    reaches every rank, so none waits for the others."""
    origin, error = None, None
    if main:
        try:
            origin = apply_init_from(config.get("init_from"), run.model)
        except SnnrunError as e:
            error = str(e)
    error = broadcast(error)
    if error:
        raise SnnrunError(error)
    return origin


def _compiled(model: torch.nn.Module) -> torch.nn.Module:
    """``compile=true``: ``torch.compile`` the network. Every stateless layer runs through the
    one ``TimeFolded.forward`` and each neuron layer breaks the graph, so dynamo compiles that
    code once per layer and mode: the default limit of 8 would drop most layers to eager."""
    dynamo = torch._dynamo.config
    limit = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
    setattr(dynamo, limit, max(getattr(dynamo, limit), 256))
    return torch.compile(model)


def _data_parallel(net: torch.nn.Module, run: Run, config: dict[str, Any]) -> torch.nn.Module:
    """Under torchrun: DistributedDataParallel (gradients averaged over ranks every step)."""
    if run.world.size == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    if config["sync_bn"]:
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    cuda = run.device.type == "cuda"
    return DistributedDataParallel(net, device_ids=[run.device.index] if cuda else None)


def _callbacks(
    config: dict[str, Any],
    run: Run,
    rundir: RunDir,
    user: list[Callback],
    best: Watch,
    stopping: Watch | None,
    loggers: Logging,
    payload: Callable[[TrainState], Checkpoint],
) -> list[Callback]:
    """The trainer's callbacks, in the order they are called: the profiler (``debug=profile``),
    the divergence guard (before anything is written), mixup and the weights' average (before the
    user's, who see the batch trained on), the user's (their keys join the record before
    anything reads it), early stopping, the console, the loggers, the checkpoints and
    metrics file, the figures of ``viz.every_n_epochs``."""
    main, debug = run.world.is_main, config.get("debug") or {}
    keep = debug.get("checkpoint", True)  # debug.checkpoint=false: the metrics line only
    steps = debug.get("profile_steps")
    profiler = [StepProfiler(rundir.path / "profile", steps, run.device)] if steps and main else []
    optimizer, stop_options = config["optimizer"], config.get("early_stopping") or {}
    guard = DivergenceGuard(optimizer.get("lr"), optimizer.get("clip_grad_norm"),
                            config["precision"]["name"], keep)  # fmt: skip
    patience, delta = stop_options.get("patience", 5), stop_options.get("min_delta", 0.0)
    every, fmt = config["viz"].get("every_n_epochs") or 0, config["viz"].get("format", "png")
    figures = [TrainingFigures(rundir, every, fmt, run.logger)] if main and keep else []
    files = Checkpoints(rundir, best, payload, keep, main)
    stop = EarlyStopping(stopping, patience, delta)
    return [*profiler, guard, *user, stop, ConsoleProgress(), loggers, files, *figures]


def checkpoint_payload(
    run: Run,
    state: TrainState,
    overrides: list[str],
    run_id: str,
    data: dict[str, Any],
    callbacks: dict[str, Callback],
) -> Checkpoint:
    """Everything a resume needs, the resolved config, the overrides that composed it, what
    rebuilding the network needs (``data``) and the user's callbacks' states by name: the
    :class:`Checkpoint` schema."""
    scaler = run.precision.scaler
    return {
        "version": CHECKPOINT_VERSION,
        "run_id": run_id,
        "data": data,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "state": vars(state),
        "rng": gather(capture_rng()),  # one entry per rank
        "logger": run.logger.state_dict(),
        "callbacks": {name: callback.state_dict() for name, callback in callbacks.items()},
        "config": run.config,
        "overrides": overrides,
    }


def _restore(
    payload: Checkpoint, run: Run, callbacks: dict[str, Callback]
) -> tuple[TrainState, dict[str, Any], dict[str, Any] | None]:
    """Load every state a checkpoint holds (a callback's by its name; one the checkpoint
    lacks starts afresh), the RNGs last, after all building is done; also the schedule's
    horizon change when ``epochs`` moved it (for ``run.json``)."""
    change = None
    try:
        run.model.load_state_dict(payload["model"])
        run.optimizer.load_state_dict(payload["optimizer"])
        if run.scheduler is not None and payload.get("scheduler") is not None:
            run.scheduler.load_state_dict(payload["scheduler"])
            change = follow_horizon(run.scheduler, run.config["scheduler"])
        if run.precision.scaler is not None and payload.get("scaler") is not None:
            run.precision.scaler.load_state_dict(payload["scaler"])
        state = TrainState(**payload["state"])
        saved = payload.get("callbacks") or {}
        for name, callback in callbacks.items():
            if name in saved:
                callback.load_state_dict(saved[name])
        _restore_rng(payload["rng"], run)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise SnnrunError(f"checkpoint does not fit the configured run: {one_line(e)}"
                          ) from None  # fmt: skip
    return state, payload.get("logger") or {}, change


def _restore_rng(states: list[dict[str, Any]] | dict[str, Any], run: Run) -> None:
    """This rank's saved random state; with another rank count, say what changes."""
    if isinstance(states, dict):  # saved before the per-rank list: one process
        states = [states]
    rank, size = run.world.rank, run.world.size
    if rank < len(states):
        restore_rng(states[rank])
    if len(states) != size:
        console.print(
            f"[yellow]note:[/] the run was saved with {len(states)} rank(s) and continues with "
            f"{size}: the data order (seed, epoch) and the global batch stay; the per-rank "
            "batch, BatchNorm statistics and random streams (Poisson input, dropout) change"
        )


def _describe(run: Run, rundir: RunDir, main: bool, stopping: Watch | None) -> None:
    """The model summary, printed (a table, then one line) and saved as ``summary.md``; the
    line ends with what changes training when turned on (clipping, early stopping)."""
    config, splits = run.config, run.splits
    sizes = totals(run.model, config["T"])
    params, memory = sizes["parameters"], sizes["activation_bytes_per_sample"] / 2**20
    if main:
        rundir.write_summary(markdown(run.model, config["T"]))
    console.print(summary_table(run.model, config["T"]), highlight=False)
    console.print(
        f"model={config['model']['name']} ({params:,} parameters, ~{memory:.2f} MiB of "
        f"activations per sample)  dataset={config['dataset']['name']} "
        f"({len(splits.train)} train / {len(splits.test)} test, input {list(splits.sample_shape)})"
        f"  T={config['T']}  device={run.device}  precision={config['precision']['name']}"
        f"{_memory_switch(run)}{_training_switches(config, stopping)}",
        highlight=False,
    )


def _memory_switch(run: Run) -> str:
    """``  memory=(spikes=bits checkpoint=blocks)`` when the plan is not the default."""
    plan = run.model.memory_plan
    return "" if plan is None or plan == type(plan)() else f"  memory=({plan})"


def _training_switches(config: dict[str, Any], stopping: Watch | None) -> str:
    """``  clip_grad_norm=1.0  early_stopping=val_acc (max, patience 5)``, each when on."""
    clip = config["optimizer"].get("clip_grad_norm")
    shown = f"  clip_grad_norm={clip}" if clip else ""
    if stopping is not None:
        patience = config["early_stopping"].get("patience", 5)
        shown += f"  early_stopping={stopping.monitor} ({stopping.mode}, patience {patience})"
    return shown


def _report(state: TrainState, run_dir: Path) -> None:
    if not state.history:
        return
    last = state.history[-1]
    console.print(
        f"final test_acc={last['test_acc']:.4f} (max {state.best_acc:.4f}) after "
        f"{state.epoch} epochs; run dir: {run_dir}",
        highlight=False,
    )
