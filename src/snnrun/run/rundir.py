"""The run dir: the one module that knows its layout.

``outputs/<date>/<time>/`` (or a sweep job's folder) holds:

- ``config.yaml``: the resolved config the run trains with (rewritten on every resume);
- ``run.json``: the run's identity (``run_id``) and what a network needs to be rebuilt without
  its dataset (per-sample input shape, class count, dataset name and split sizes); rebuilt from
  the checkpoints (which carry both) when it is lost or damaged (a damaged one is kept as
  ``run.json.damaged``); ``provenance``: what the run was started with (command, versions, git
  state, host, device, world size); ``resumes``: what each resume changed and ran with;
- ``metrics.csv`` / ``tensorboard/``: with ``logger=csv`` / ``logger=tensorboard``;
- ``metrics.jsonl``: one JSON object per epoch (a last line cut short by a crash is skipped);
- ``checkpoint_latest.pt`` / ``checkpoint_best.pt``: written atomically, carrying the same
  ``run_id`` as ``run.json`` (a checkpoint copied in from another run is refused);
- ``summary.md``: the model summary (layers, outputs ``[T, N, ...]``, parameters, memory);
- ``run.lock``: held (``flock``) by the process training in the dir; the kernel releases it
  when that process ends in any way, so a stale claim never blocks a later run;
- ``wandb/``, ``wandb_run_id.txt``: the W&B files; ``figures/``: ``snnrun viz`` output;
- ``eval/``: ``snnrun eval`` results (``<timestamp>.json`` and a confusion matrix each);
- ``export/``: ``snnrun export`` output (``model.nir``);
- ``failed.txt``: why a sweep job failed (cleared when it trains again);
- ``ended.json``: how a run that trained ended before its planned epochs (``stopped``,
  ``diverged``, ``failed``; :meth:`RunDir.mark_ended`), read by ``snnrun runs``
  (:meth:`RunDir.status`);
- ``.hydra/``: Hydra's record of the first start (``config.yaml`` above is the truth).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import secrets
import shlex
import string
import time
from pathlib import Path
from typing import Any

import yaml

from snnrun.core.errors import SnnrunError
from snnrun.core.migrate import renamed_neuron_keys
from snnrun.run.checkpoint import (
    Checkpoint,
    CheckpointError,
    CorruptCheckpoint,
    atomic_write_bytes,
    load_checkpoint,
    save_checkpoint,
)

LATEST = "checkpoint_latest.pt"
BEST = "checkpoint_best.pt"
CHECKPOINTS = {"latest": LATEST, "best": BEST}
METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
CONFIG = "config.yaml"
INFO = "run.json"
DAMAGED_INFO = "run.json.damaged"  # a damaged run.json, moved aside when it is rebuilt
LOCK = "run.lock"
WANDB_ID = "wandb_run_id.txt"
FAILED = "failed.txt"
FIGURES = "figures"
SUMMARY = "summary.md"
EVALS = "eval"
EXPORTS = "export"
ENDED = "ended.json"
HYDRA_DIR = ".hydra"
# a run's status (:meth:`RunDir.status`), and those an end record (``ended.json``) can name
STATUSES = ("running", "finished", "stopped", "failed", "diverged", "debug", "damaged")
ENDS = ("stopped", "failed", "diverged")


class RunDirError(SnnrunError):
    """A path that is not (or not this) run dir, or one another process holds."""


def new_run_id() -> str:
    """8 random [a-z0-9] characters, drawn without touching the run's seeded RNGs."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class RunDir:
    """Reads and writes one run dir; every file name lives here."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- where things are -------------------------------------------------------------------
    def checkpoint(self, which: str = "latest") -> Path:
        if which not in CHECKPOINTS:
            raise RunDirError(f"which={which!r}; use one of {', '.join(CHECKPOINTS)}")
        return self.path / CHECKPOINTS[which]

    @property
    def figures(self) -> Path:
        return self.path / FIGURES

    @property
    def evals(self) -> Path:
        return self.path / EVALS

    @property
    def exports(self) -> Path:
        return self.path / EXPORTS

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    @property
    def wandb_dir(self) -> Path:
        return self.path / "wandb"

    def holds_run(self) -> bool:
        """Whether a run has finished at least one epoch here."""
        return (self.path / LATEST).is_file()

    def has_files(self) -> bool:
        """Whether anything of a run (beyond Hydra's ``.hydra/``) was written here."""
        names = (LATEST, BEST, METRICS, INFO)
        return any((self.path / n).exists() for n in names)

    # --- claiming -----------------------------------------------------------------------------
    def claim(self) -> None:
        """Hold ``run.lock`` for this process's lifetime; refuse when another process holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_soon(fd)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirError(
                f"{self.path} is in use by another snnrun process (pid {owner}); wait for it "
                "to end, or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        for stale in self.path.glob(".*.tmp"):  # a killed writer's half-written file
            stale.unlink(missing_ok=True)

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    # --- config and identity ------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        text = yaml.safe_dump(config, sort_keys=False, default_flow_style=None).encode()
        atomic_write_bytes(self.path / CONFIG, lambda f: f.write(text))

    def read_config(self) -> dict[str, Any]:
        path = self.path / CONFIG
        if not path.is_file():
            raise RunDirError(f"{self.path} has no {CONFIG}; pass the folder of an snnrun run")
        return renamed_neuron_keys(yaml.safe_load(path.read_text()))

    def write_info(self, info: dict[str, Any]) -> None:
        text = (json.dumps(info, indent=2) + "\n").encode()
        atomic_write_bytes(self.path / INFO, lambda f: f.write(text))

    def read_info(self) -> dict[str, Any]:
        """``run.json``; a lost or damaged one is rebuilt from the checkpoints (see
        :meth:`_recover_info`)."""
        path = self.path / INFO
        if not path.is_file():
            return self._recover_info()
        info, damage = _parse_info(path.read_bytes())
        return info if damage is None else self._recover_info(damage)

    def info_damage(self) -> str | None:
        """What is wrong with ``run.json`` when it is there but no JSON object (cut short,
        bytes changed), else None (also when it is missing or cannot be opened)."""
        try:
            return _parse_info((self.path / INFO).read_bytes())[1]
        except OSError:
            return None

    def record_resume(self, change: dict[str, Any]) -> None:
        """Append a resume's record (what it changed, what it ran with: ``change``, with the
        time) to ``run.json``'s ``resumes`` list."""
        info, when = self.read_info(), time.strftime("%Y-%m-%d %H:%M:%S")
        info.setdefault("resumes", []).append({"time": when, **change})
        self.write_info(info)

    def _recover_info(self, damage: str | None = None) -> dict[str, Any]:
        """``run.json`` rebuilt from the first intact checkpoint (latest, then best), when every
        run id the dir holds (checkpoints, W&B id) agrees; written back (a ``damage``d one moved
        to ``run.json.damaged`` first), with a note."""
        lost = f"no {INFO}" if damage is None else f"a damaged {INFO} ({damage})"
        ids, source = {}, None
        for name in (LATEST, BEST):
            try:
                payload = load_checkpoint(self.path / name)
            except CheckpointError:  # missing or damaged: the other one may do
                continue
            ids[name], source = payload["run_id"], source or (name, payload)
        if source is None and damage is not None:
            raise RunDirError(
                f"{self.path / INFO} is damaged ({damage}), and no intact checkpoint is here to "
                "rebuild it from; mend it (it is JSON) or put back a copy"
            )
        if source is None:
            raise RunDirError(
                f"{self.path} has no {INFO} and no intact checkpoint to rebuild it from (not an "
                "snnrun run dir?); pass the folder of a run that finished at least one epoch"
            )
        if self.read_wandb_id():
            ids[WANDB_ID] = self.read_wandb_id()
        if len(set(ids.values())) > 1:
            names = ", ".join(f"{k}: {v}" for k, v in ids.items())
            raise RunDirError(
                f"{self.path} has {lost}, and its files name different runs ({names}); "
                "put back its run.json, or remove the file copied in from another run"
            )
        name, payload = source
        when, was = time.strftime("%Y-%m-%d %H:%M:%S"), "missing" if damage is None else "damaged"
        info = {"run_id": payload["run_id"], "data": payload["data"],
                "recovered": f"rebuilt from {name} on {when} ({INFO} was {was})"}  # fmt: skip
        done = self._write_recovered(info, name, damage is not None)
        what = (
            f"{self.path} had no {INFO}"
            if damage is None
            else f"{self.path / INFO} is damaged ({damage})"
        )
        _note(f"{what}; {done} (run {payload['run_id']})")
        return info

    def _write_recovered(self, info: dict[str, Any], name: str, damaged: bool) -> str:
        """Write the rebuilt ``run.json`` (a damaged one moved aside first); what was done."""
        try:
            if damaged:
                os.replace(self.path / INFO, self.path / DAMAGED_INFO)
            self.write_info(info)
        except OSError as e:
            return f"read the run from {name} (could not write {INFO} back: {e.strerror})"
        kept = f"kept it as {DAMAGED_INFO} and " if damaged else ""
        return f"{kept}rebuilt it from {name}"

    def write_summary(self, text: str) -> None:
        """The model summary (``summary.md``: layers, output shapes, parameters, memory)."""
        atomic_write_bytes(self.path / SUMMARY, lambda f: f.write(text.encode()))

    # --- metrics ------------------------------------------------------------------------------
    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch records. A last line cut short (a crash mid-write) is skipped with a
        note; a bad line before it is one error naming the file and line."""
        path = self.path / METRICS
        if not path.is_file():
            return []
        text = path.read_bytes().decode("utf-8", errors="replace")
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        records = []
        for n, line in lines:
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                if n == lines[-1][0]:
                    _note(f"{path} line {n} is cut short (a crash while writing it?); skipped")
                    break
                why = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
                raise RunDirError(
                    f"corrupt {path}, line {n}: {why}; mend or delete that line"
                ) from None
            records.append(record)
        return records

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one line; a failed write is cut back off, leaving the file as it was."""
        path = self.path / METRICS
        with path.open("ab") as f:
            size = f.tell()
            try:
                f.write((json.dumps(record) + "\n").encode())
                f.flush()
                os.fsync(f.fileno())
            except BaseException:
                f.truncate(size)
                raise

    def write_metrics_csv(self, records: list[dict[str, Any]]) -> None:
        """``metrics.csv`` (``logger=csv``): the records as a table, columns in first-seen
        order, written whole (atomically)."""
        columns = list(dict.fromkeys(k for r in records for k in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)
        text = buffer.getvalue().encode()
        atomic_write_bytes(self.path / METRICS_CSV, lambda f: f.write(text))

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace the file with exactly ``records`` (a resume drops epochs past its checkpoint)."""
        text = "".join(json.dumps(r) + "\n" for r in records).encode()
        atomic_write_bytes(self.path / METRICS, lambda f: f.write(text))

    # --- checkpoints --------------------------------------------------------------------------
    def save_epoch(self, payload: dict[str, Any], record: dict[str, Any], is_best: bool) -> None:
        """Latest checkpoint, then the metrics line, then the best checkpoint: a failure at any
        point leaves the latest checkpoint and ``metrics.jsonl`` agreeing (or the checkpoint
        one epoch ahead, which a resume rewrites the metrics from)."""
        save_checkpoint(payload, self.path / LATEST)
        self.append_metrics(record)
        if is_best:
            save_checkpoint(payload, self.path / BEST)

    def load_checkpoint(self, which: str = "latest", key: str = "which") -> Checkpoint:
        """A checkpoint of this dir's run; one that belongs to another run is refused. ``key``:
        how the caller picks the checkpoint, for a damaged one's advice (``which``: eval, viz,
        export and resume; ``init_from.which``)."""
        path = self.checkpoint(which)
        if not path.is_file():
            raise RunDirError(
                f"{self.path} has no {path.name}; pass the folder of a run that finished at "
                "least one epoch"
            )
        try:
            payload = load_checkpoint(path)
        except CorruptCheckpoint as e:
            raise RunDirError(f"corrupt checkpoint {path}: {e.what}; {self._way_on(which, key)}"
                              ) from None  # fmt: skip
        own, theirs = self.read_info().get("run_id"), payload.get("run_id")
        if own != theirs:
            raise RunDirError(
                f"{path} belongs to run {theirs!r}, not to this dir's run {own!r} (copied from "
                "another run dir?); put it back, or resume that run from its own dir"
            )
        return payload

    def _way_on(self, damaged: str, key: str) -> str:
        """What a user can do when checkpoint ``damaged`` is not whole: use the other one (with
        ``key``; ``which`` also names the commands that take it, and how to continue training)."""
        other = "best" if damaged == "latest" else "latest"
        instead = "start a new run" if key == "which" else "start from another run"
        try:
            payload = load_checkpoint(self.checkpoint(other))
        except CheckpointError:
            return (f"there is no intact {self.checkpoint(other).name} to fall back on: restore "
                    f"{self.checkpoint(damaged).name} from a copy, or {instead}")  # fmt: skip
        good = f"{self.checkpoint(other).name} (epoch {payload['state']['epoch']}) is intact"
        if key != "which":
            return f"{good}: use it with {key}={other}"
        if other == "latest":
            return f"{good}: use it with which=latest (eval, viz, export)"
        best, latest = (shlex.quote(str(self.checkpoint(w))) for w in ("best", "latest"))
        return (
            f"{good}: use it with which=best (eval, viz, export), or continue training from it: "
            f"cp {best} {latest}, then snnrun resume={shlex.quote(str(self.path))} (the records "
            "of the epochs after it are dropped)"
        )

    # --- sweep job status ---------------------------------------------------------------------
    def mark_failed(self, message: str) -> None:
        """Record why this (sweep job's) run failed; a later successful epoch clears it."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / FAILED).write_text(message + "\n")

    def failure(self) -> str | None:
        path = self.path / FAILED
        return path.read_text().strip() if path.is_file() else None

    def clear_failure(self) -> None:
        (self.path / FAILED).unlink(missing_ok=True)

    # --- how the run stands -------------------------------------------------------------------
    def held(self) -> tuple[bool, str]:
        """(whether a live process holds ``run.lock``, its pid as the file says). Probed by
        taking a shared ``flock`` without waiting and dropping it at once: a training owner
        (exclusive) is never disturbed; a process claiming the dir in those microseconds
        would be told it is in use."""
        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY)
        except OSError:  # no lock file (or unreadable): nobody trains here
            return False, ""
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True, os.pread(fd, 64, 0).decode(errors="replace").strip()
        finally:
            os.close(fd)  # closing drops a shared lock taken above
        return False, ""

    def mark_ended(self, status: str, why: str) -> None:
        """Record that the run ended before its planned epochs: ``status`` ``stopped``
        (SIGTERM, Ctrl-C), ``diverged`` (non-finite loss or parameters) or ``failed`` (a
        crash), its one-line ``why``, the epochs done and the time. Written while an error
        propagates, so a failed write is ignored (that error matters more)."""
        if status not in ENDS:
            raise ValueError(f"status={status!r}; use one of {', '.join(ENDS)}")
        with contextlib.suppress(OSError, RunDirError):  # RunDirError: a corrupt metrics file
            record = {"status": status, "why": why, "epochs": len(self.read_metrics()),
                      "time": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
            text = (json.dumps(record) + "\n").encode()
            atomic_write_bytes(self.path / ENDED, lambda f: f.write(text))

    def ended(self, epochs: int) -> dict[str, Any] | None:
        """The end record, when it still tells how the run stands: written at ``epochs``
        epochs (the dir's count now) and after the last resume started; else None."""
        try:
            record = json.loads((self.path / ENDED).read_text())
        except (OSError, ValueError):  # none, or unreadable: no record
            return None
        if not isinstance(record, dict) or record.get("status") not in ENDS:
            return None
        resumes = self._info_as_is().get("resumes") or [{}]
        if record.get("epochs") != epochs or str(record.get("time")) < resumes[-1].get("time", ""):
            return None
        return record

    def status(
        self, planned: int | None, history: list[dict[str, Any]], debug: str = "none"
    ) -> tuple[str, str]:
        """(status, note) of the run with ``planned`` epochs, its records ``history`` and the
        ``debug`` mode its config names:

        - ``running``: a live process holds ``run.lock`` (note: its pid);
        - ``damaged``: ``run.json`` cannot be read (note: what is wrong, and the fix);
        - ``finished``: every planned epoch done;
        - ``debug``: every planned epoch done in a debug mode (``debug=fast_dev_run``, ...): a
          check that the run works, not a result;
        - ``stopped``: an early stop (the last record says ``early_stop``; it cannot be
          continued) or a stop by SIGTERM / Ctrl-C (an end record; ``resume=`` continues it);
        - ``diverged``: the loss or a parameter became NaN/inf (an end record);
        - ``failed``: none of these: a crash or a killed process (note: a sweep job's
          ``failed.txt`` or the end record's reason, when there is one).
        """
        running, pid = self.held()
        if running:
            return "running", f"pid {pid}" if pid else ""
        damage = self.info_damage()
        if damage is not None:
            return "damaged", (
                f"{INFO} is damaged ({damage}); snnrun eval, viz, export or resume of the run "
                f"rebuilds it from the checkpoints (keeping the damaged one as {DAMAGED_INFO})"
            )
        if planned is not None and len(history) >= planned:
            if debug != "none":
                return "debug", f"debug={debug}, not a full run"
            return "finished", ""
        if history and history[-1].get("early_stop"):
            return "stopped", "early stop"
        record = self.ended(len(history))
        if record is not None:
            return record["status"], str(record.get("why", ""))
        failure = self.failure()
        return "failed", failure.splitlines()[0] if failure else "killed or crashed (no end record)"

    def is_run(self) -> bool:
        """Whether snnrun started a run here: its lock, records or checkpoints, or a sweep
        job's ``failed.txt`` (a run killed while building leaves only ``run.lock``)."""
        return self.has_files() or any((self.path / n).is_file() for n in (LOCK, FAILED))

    def known_config(self) -> dict[str, Any]:
        """``config.yaml``, else Hydra's ``.hydra/config.yaml`` (a run that ended before writing
        its own), else ``{}``; an unreadable file counts as missing."""
        for path in (self.path / CONFIG, self.path / HYDRA_DIR / CONFIG):
            try:
                config = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(config, dict):
                return renamed_neuron_keys(config)
        return {}

    def started(self) -> float:
        """When the run started (seconds since the epoch): ``run.json``'s ``started`` when it
        has one, else the time Hydra wrote ``.hydra/``, else ``config.yaml``'s (its last start)."""
        started = self._info_as_is().get("started")
        if isinstance(started, str):
            with contextlib.suppress(ValueError):
                return time.mktime(time.strptime(started, "%Y-%m-%d %H:%M:%S"))
        for path in (self.path / HYDRA_DIR / "hydra.yaml", self.path / CONFIG, self.path):
            with contextlib.suppress(OSError):
                return path.stat().st_mtime
        return 0.0

    def overrides(self) -> list[str]:
        """The ``key=value`` overrides the run was started with (one per key, the last given),
        without ``hydra.*`` (where it ran): ``.hydra/overrides.yaml``, else the command in
        ``run.json``."""
        path = self.path / HYDRA_DIR / "overrides.yaml"
        try:
            found = yaml.safe_load(path.read_text()) if path.is_file() else None
        except (OSError, yaml.YAMLError):
            found = None
        if not isinstance(found, list):
            command = (self._info_as_is().get("provenance") or {}).get("command") or []
            found = [a for a in command[1:] if "=" in a and not a.startswith("-")]
        last = {str(o).split("=")[0]: str(o) for o in found}  # a key given twice: the last
        return [o for key, o in last.items() if not key.lstrip("+~").startswith("hydra.")]

    def _info_as_is(self) -> dict[str, Any]:
        """``run.json`` as it is, ``{}`` when missing or unreadable (never rebuilt here)."""
        try:
            return _parse_info((self.path / INFO).read_bytes())[0]
        except OSError:
            return {}

    # --- W&B ----------------------------------------------------------------------------------
    def read_wandb_id(self) -> str | None:
        path = self.path / WANDB_ID
        return (path.read_text().strip() or None) if path.is_file() else None

    def write_wandb_id(self, run_id: str) -> None:
        (self.path / WANDB_ID).write_text(run_id + "\n")


def _parse_info(data: bytes) -> tuple[dict[str, Any], str | None]:
    """(``run.json``'s object, None), or (``{}``, what is wrong with it)."""
    try:
        info = json.loads(data.decode())
    except UnicodeDecodeError:
        return {}, "not UTF-8 text"
    except json.JSONDecodeError as e:
        return {}, f"{e.msg.removesuffix(' at').removesuffix(' starting')} at line {e.lineno}"
    return (info, None) if isinstance(info, dict) else ({}, "not a JSON object")


def _lock_soon(fd: int, tries: int = 10) -> None:
    """``flock(LOCK_EX)`` without waiting for an owner, but over ~100 ms: ``snnrun runs`` probes
    the lock with a brief shared hold (:meth:`RunDir.held`), which must not refuse a start."""
    for _ in range(tries - 1):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(0.01)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _note(text: str) -> None:
    from rich.markup import escape

    from snnrun.core.progress import console

    console.print(f"[yellow]note:[/] {escape(text)}", highlight=False)


def default_run_dir() -> Path:
    """``outputs/<date>/<time>``, as Hydra names a run's dir (``hydra.run.dir``)."""
    return Path("outputs") / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S")


def find_run_dir(target: str | Path) -> tuple[RunDir, str]:
    """(run dir, which checkpoint) for a run dir or a checkpoint path inside one."""
    path = Path(target).expanduser()
    if not path.exists():
        raise RunDirError(
            f"{path} does not exist; pass a run dir such as outputs/<date>/<time> or a "
            "checkpoint file in one"
        )
    if path.is_dir():
        return RunDir(path), "latest"
    names = {v: k for k, v in CHECKPOINTS.items()}
    if path.name not in names:
        raise RunDirError(f"{path} is not a run dir nor one of its {', '.join(names)}")
    return RunDir(path.parent), names[path.name]
