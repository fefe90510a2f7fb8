"""Where a run's numbers go besides ``metrics.jsonl``: the logger registry (``wandb``, ``csv``,
``tensorboard``, ``none``), one or several at once.

Each ``conf/logger/<name>.yaml`` says ``use: {<name>: true}`` beside its options, so that
``logger=[wandb,tensorboard]`` composes ``use: {wandb: true, tensorboard: true}`` and the options
of both; :func:`build_logger` then gives a :class:`Loggers` that passes every call to each.

``logger=wandb`` logs the resolved config, the per-step train loss and the per-epoch metrics
against a ``global_step`` metric that checkpoints restore (W&B's own step restarts at 0 for a
resumed offline run), and checkpoints as versions of the model artifact ``model-<run id>``
(aliases ``latest``, ``best``, ``epoch-<n>``). ``checkpoints`` says which: ``latest_best``
(default: the latest and the best, when each training segment ends, stopped or not),
``all`` (every epoch's) or ``none``. W&B copies each version into its staging folder
(``$WANDB_DATA_DIR/artifacts/staging``, default ``~/.local/share/wandb/...``) until it is
uploaded: offline, until ``wandb sync``. Its files live in ``<run dir>/wandb``; the W&B run id
is the snnrun run id. On resume, epochs and kept checkpoints (latest, best) that no local
``.wandb`` file holds (a SIGKILL loses what W&B had not flushed) are logged again. W&B's own
banner and summary are off; one line says where the run went and how to upload it. ``mode``
defaults to ``offline``; ``WANDB_MODE`` in the environment, when set, wins (also on resume,
whose saved config holds the mode the run started with).
"""

from __future__ import annotations

import errno
import inspect
import os
import shlex
import tempfile
from typing import TYPE_CHECKING, Any

from snnrun.core.errors import SnnrunError, one_line
from snnrun.core.progress import console
from snnrun.core.registry import Registry
from snnrun.run.wandb_files import artifact_epochs, logged_epochs

if TYPE_CHECKING:
    from snnrun.run.rundir import RunDir

WANDB_MODES = ("offline", "online", "disabled")
CHECKPOINT_CHOICES = ("latest_best", "all", "none")


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
        checkpoints: str = "latest_best",
    ) -> None:
        mode = os.environ.get("WANDB_MODE") or mode or "offline"
        if mode not in WANDB_MODES:
            raise SnnrunError(f"W&B mode {mode!r}; use one of {', '.join(WANDB_MODES)}")
        if checkpoints not in CHECKPOINT_CHOICES:
            raise SnnrunError(
                f"logger.checkpoints={checkpoints!r}; use one of {', '.join(CHECKPOINT_CHOICES)}"
            )
        self.project, self.mode, self.entity = project, mode, entity
        self.tags = list(tags or [])
        self.checkpoints = checkpoints
        self.run = None
        self.run_id: str | None = None
        self.rundir: RunDir | None = None
        self.latest: int | None = None  # epoch of checkpoint_latest.pt / checkpoint_best.pt
        self.best: int | None = None
        self.logged: set[int] = set()  # epochs whose checkpoint is an artifact version
        self.staged = False

    def start(
        self,
        rundir: RunDir,
        run_id: str,
        config: dict[str, Any],
        state: dict[str, Any] | None,
        history: list[dict[str, Any]],
    ) -> None:
        import wandb

        self.rundir = rundir
        self.run_id = (state or {}).get("run_id") or rundir.read_wandb_id() or run_id
        already = self._read_past(rundir, history)
        if self.mode != "disabled":
            _check_writable(rundir, state is not None)
        rundir.write_wandb_id(self.run_id)
        _quiet(wandb)
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
            reason = one_line(e, 200)
            online = "check `wandb login` and the network, or set WANDB_MODE=offline; "
            raise SnnrunError(
                f"W&B could not start a {self.mode} run ({reason}); "
                f"{online if self.mode == 'online' else ''}{_without_wandb(state is not None)}"
            ) from None
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")
        for record in history:  # what a killed segment never flushed
            if record["epoch"] not in already:
                self.log_epoch(record.get("global_step", 0), record)
        if self.checkpoints == "all":
            self._log_kept()

    def _read_past(self, rundir: RunDir, history: list[dict[str, Any]]) -> set[int]:
        """Note the kept checkpoints' epochs and those already artifact versions; the epochs
        whose record W&B already holds (a run fetched from W&B: all of its history)."""
        if history:
            self.latest = history[-1]["epoch"]
            self.best = max(history, key=lambda r: r["test_acc"])["epoch"]  # the first best
        if str(rundir.read_info().get("from", "")).startswith("wandb:"):
            self.logged = {self.latest} if self.latest is not None else set()  # fetched
            return {r["epoch"] for r in history}
        self.logged = artifact_epochs(rundir.wandb_dir, self._artifact)
        return logged_epochs(rundir.wandb_dir)

    @property
    def _artifact(self) -> str:
        return f"model-{self.run_id}"

    def log_step(self, global_step: int, metrics: dict[str, float]) -> None:
        self.run.log({**{f"train/{k}": v for k, v in metrics.items()}, "global_step": global_step})

    def log_epoch(self, global_step: int, metrics: dict[str, float]) -> None:
        self.run.log({**{f"epoch/{k}": v for k, v in metrics.items()}, "global_step": global_step})

    def log_checkpoint(self, rundir: RunDir, epoch: int, is_best: bool) -> None:
        """Note the epoch's checkpoints; with ``checkpoints=all`` log the latest now (W&B
        copies it and uploads in the background, so the loop waits only for the copy)."""
        self.latest = epoch
        if is_best:
            self.best = epoch
        if self.checkpoints == "all":
            self._log_model("latest", epoch)

    def _log_kept(self) -> None:
        """The kept checkpoints that are no artifact version yet: the best, then the latest
        (W&B moves ``latest`` to the version logged last)."""
        if self.best is not None and self.best != self.latest:
            self._log_model("best", self.best)
        if self.latest is not None:
            self._log_model("latest", self.latest)

    def _log_model(self, which: str, epoch: int) -> None:
        import wandb

        path = self.rundir.checkpoint(which) if self.rundir else None
        if epoch in self.logged or path is None or not path.is_file():
            return
        aliases = [f"epoch-{epoch}"]
        aliases += ["latest"] if which == "latest" else []
        aliases += ["best"] if epoch == self.best else []
        artifact = wandb.Artifact(self._artifact, type="model", metadata={"epoch": epoch})
        artifact.add_file(str(path), name="checkpoint.pt", skip_cache=True)
        self.run.log_artifact(artifact, aliases=aliases)
        self.logged.add(epoch)
        self.staged = True

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
        """Log the kept checkpoints (``latest_best``), close the run, say where it went."""
        if self.run is None:
            return
        url = self.run.url if self.mode == "online" else None
        try:
            if self.checkpoints == "latest_best":
                self._log_kept()
        except Exception as e:  # a full disk under W&B's staging folder ends no run
            console.print(
                f"[yellow]warning:[/] W&B checkpoint artifacts not logged ({e}); the next "
                "resume logs them"
            )
        finally:
            self.run.finish()
            self.run = None
        where = self._where(url)
        if where:
            console.print(where, highlight=False, soft_wrap=True)

    def _where(self, url: str | None) -> str | None:
        """The one line about the run's W&B files."""
        if self.mode == "online":
            return f"W&B: {url}" if url else None
        if self.mode != "offline" or self.rundir is None:
            return None
        line = (
            f"W&B: offline files in {self.rundir.wandb_dir}; upload every segment of the run "
            f"with: wandb sync {shlex.quote(str(self.rundir.wandb_dir))}/offline-run-*"
        )
        if self.staged:
            line += f" (checkpoint artifacts wait in {staging_dir()} until then)"
        return line

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}


def _quiet(wandb: Any) -> None:
    """W&B without its banner, summary and sync hint (info); warnings and errors stay."""
    settings = wandb.setup(settings=wandb.Settings(quiet=True, show_info=False)).settings
    wandb.termsetup(settings, None)


def staging_dir() -> str:
    """Where W&B copies an artifact's files until they are uploaded (``WANDB_DATA_DIR``)."""
    from wandb import env

    return os.path.join(env.get_data_dir(), "artifacts", "staging")


def _without_wandb(resuming: bool) -> str:
    """How to go on without W&B: a fresh run drops it; a resume (whose logger group cannot
    change) turns it off, and a later resume with W&B logs what it missed."""
    if resuming:
        return (
            "or go on without W&B for now with WANDB_MODE=disabled (a later resume with W&B "
            "logs the epochs it missed)"
        )
    return "or train without W&B: logger=none"


def _check_writable(rundir: RunDir, resuming: bool) -> None:
    """W&B writes under ``<run dir>/wandb``: say so, with the fix, before it fails."""
    folder = rundir.wandb_dir
    try:
        folder.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder):  # W&B makes a folder per segment
            pass
    except OSError as e:
        raise SnnrunError(
            f"cannot write W&B's files in {folder} ({e.strerror or e}); make that folder "
            f"writable, {_without_wandb(resuming)}"
        ) from None


@LOGGERS.register("csv")
class CsvLogger(RunLogger):
    """``metrics.csv`` beside ``metrics.jsonl``: one row per epoch, a column per key (written
    whole each epoch, so a resume's history and keys added later stay in one table)."""

    def start(self, rundir, run_id, config, state, history) -> None:  # type: ignore[override]
        self.rundir, self.history = rundir, list(history)
        rundir.write_metrics_csv(self.history)

    def log_epoch(self, global_step: int, metrics: dict[str, float]) -> None:
        self.history.append(dict(metrics))
        self.rundir.write_metrics_csv(self.history)


@LOGGERS.register("tensorboard")
class TensorBoardLogger(RunLogger):
    """TensorBoard event files in ``<run dir>/tensorboard``: the per-step training loss, every
    number of each epoch's record, and the figures of ``viz.every_n_epochs``, all against
    ``global_step``. A resume drops what a killed segment logged past its checkpoint
    (``purge_step``), and logs the epochs of ``metrics.jsonl`` again when the folder holds no
    event file (deleted). A failed write (a full disk, a folder made read-only) is one line
    naming the folder, never a traceback of TensorBoard's writer thread."""

    wants_steps = True

    def start(self, rundir, run_id, config, state, history) -> None:  # type: ignore[override]
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise SnnrunError(
                "logger=tensorboard needs the tensorboard package: pip install tensorboard "
                "(or pip install 'snnrun[tensorboard]')"
            ) from None
        self.rundir, self.folder = rundir, rundir.tensorboard_dir
        lost = not any(self.folder.glob("events.out.tfevents.*"))
        purge = history[-1]["global_step"] + 1 if history else None
        try:
            self.folder.mkdir(exist_ok=True)
            with tempfile.TemporaryFile(dir=self.folder):  # the writer thread would fail later
                pass
            self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=purge)
        except OSError as e:
            raise self._cannot_write(e) from None
        self.file = _guard_event_file(self.writer)
        if lost:
            for record in history:  # the folder was deleted: what metrics.jsonl holds
                self.log_epoch(record.get("global_step", 0), record)

    def log_step(self, global_step: int, metrics: dict[str, float]) -> None:
        self._check()
        for key, value in metrics.items():
            self.writer.add_scalar(f"train_step/{key}", value, global_step)

    def log_epoch(self, global_step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, global_step)
        self.writer.flush()
        self._check()

    def log_figures(self, figures: dict[str, Any], global_step: int | None = None) -> None:
        import numpy as np
        from PIL import Image

        for name, path in figures.items():
            if str(path).endswith(".png"):
                image = np.asarray(Image.open(path).convert("RGB"))
                self.writer.add_image(f"figures/{name}", image, global_step, dataformats="HWC")
        self.writer.flush()
        self._check()

    def finish(self) -> None:
        self.writer.close()
        self._check()

    def _check(self) -> None:
        """A write the writer thread could not make, as one line (once)."""
        if self.file is None:  # a TensorBoard whose writer we cannot reach: its own errors
            return
        error, self.file.error = self.file.error, None
        if error is not None:
            self.file.failed = True
            raise self._cannot_write(error)

    def _cannot_write(self, e: OSError) -> SnnrunError:
        fix = "free disk space there" if e.errno == errno.ENOSPC else "make that folder writable"
        again = (f"continue the run with snnrun resume={self.rundir.path}"
                 if self.rundir.holds_run()
                 else "start the run again (or leave tensorboard out of logger=)")  # fmt: skip
        return SnnrunError(
            f"cannot write TensorBoard's files in {self.folder} ({e.strerror or e}); {fix}, "
            f"then {again}"
        )


class _GuardedFile:
    """TensorBoard's event file as its writer thread sees it: a failed write is kept for the
    main thread (``error``) instead of ending the thread with a traceback; once one failed
    (``failed`` after it is reported), later records are dropped."""

    def __init__(self, file: Any) -> None:
        self.file, self.error, self.failed = file, None, False

    def _call(self, method: str, *args: Any) -> None:
        try:
            getattr(self.file, method)(*args)
        except OSError as e:
            self.error = self.error or e

    def write(self, data: bytes) -> None:
        if not (self.failed or self.error):
            self._call("write", data)

    def flush(self) -> None:
        if not (self.failed or self.error):
            self._call("flush")

    def close(self) -> None:
        self._call("close")

    @property
    def closed(self) -> bool:
        return self.file.closed


def _guard_event_file(writer: Any) -> _GuardedFile | None:
    """Put a :class:`_GuardedFile` between ``writer``'s record writer and its event file (private
    attributes of tensorboard 2.x; None where another version has none of them)."""
    try:
        records = writer._get_file_writer().event_writer._async_writer._writer  # RecordWriter
        records._writer = _GuardedFile(records._writer)
    except AttributeError:
        return None
    return records._writer


class Loggers(RunLogger):
    """Several loggers at once: every call goes to each, in the order chosen; the state a
    checkpoint keeps is each one's, by name."""

    def __init__(self, loggers: dict[str, RunLogger]) -> None:
        self.loggers = loggers
        self.wants_steps = any(logger.wants_steps for logger in loggers.values())

    def start(self, rundir, run_id, config, state, history) -> None:  # type: ignore[override]
        for name, logger in self.loggers.items():
            own = None if state is None else state.get(name, {})
            logger.start(rundir, run_id, config, own, history)

    def log_step(self, global_step: int, metrics: dict[str, float]) -> None:
        for logger in self.loggers.values():
            logger.log_step(global_step, metrics)

    def log_epoch(self, global_step: int, metrics: dict[str, float]) -> None:
        for logger in self.loggers.values():
            logger.log_epoch(global_step, metrics)

    def log_checkpoint(self, rundir: RunDir, epoch: int, is_best: bool) -> None:
        for logger in self.loggers.values():
            logger.log_checkpoint(rundir, epoch, is_best)

    def log_figures(self, figures: dict[str, Any], global_step: int | None = None) -> None:
        for logger in self.loggers.values():
            logger.log_figures(figures, global_step)

    def finish(self) -> None:
        """Finish every logger, even when one fails (the first failure is raised after)."""
        failure: BaseException | None = None
        for logger in self.loggers.values():
            try:
                logger.finish()
            except Exception as e:  # each logger raises its own kinds
                failure = failure or e
        if failure is not None:
            raise failure

    def state_dict(self) -> dict[str, Any]:
        return {name: logger.state_dict() for name, logger in self.loggers.items()}


def logger_names(options: dict[str, Any]) -> list[str]:
    """The loggers a ``logger`` section selects: its ``use`` keys that are true, or the
    ``name`` of a config saved before several loggers could be chosen."""
    if "use" in options:
        return [name for name, on in (options["use"] or {}).items() if on]
    name = options.get("name")
    return [name] if name and name != "none" else []


def check_logger_conf(options: dict[str, Any]) -> None:
    """Refuse, as one line, a logger section its builder would refuse: an unknown key (for
    example ``+logger.notes=x``) or a bad value. Nothing is written."""
    build_logger(options)


def build_logger(options: dict[str, Any], names: list[str] | None = None) -> RunLogger:
    """The selected loggers (not started; ``names``: only these), each given the options its
    class takes; a key that none of them takes is one line naming the known."""
    names = logger_names(options) if names is None else names
    options = {k: v for k, v in options.items() if k not in ("use", "name")}
    keys = {name: _keys(LOGGERS.get(name)) for name in names}
    unknown = [k for k in options if not any(k in known for known in keys.values())]
    if unknown:
        known = list(dict.fromkeys(k for ks in keys.values() for k in ks))
        raise SnnrunError(
            f"logger={'+'.join(names) or 'none'} has no key {unknown[0]!r} (its keys: "
            f"{', '.join(known) or 'none'}); drop logger.{unknown[0]}"
        )
    loggers = {
        name: LOGGERS.get(name)(**{k: v for k, v in options.items() if k in keys[name]})
        for name in names
    }
    if len(loggers) == 1:
        return next(iter(loggers.values()))
    return Loggers(loggers) if loggers else RunLogger()


def _keys(cls: type[RunLogger]) -> list[str]:
    return [] if cls is RunLogger else list(inspect.signature(cls).parameters)
