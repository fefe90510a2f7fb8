"""Ending a run cleanly on SIGTERM (what SLURM sends on preemption) and Ctrl-C.

Inside :func:`graceful_stop` the first SIGTERM or SIGINT only raises a flag; the trainer
checks it after each step (:func:`check_stop`) and raises :class:`Stopped`, dropping the
unfinished epoch, so the run ends between steps with its last checkpoint whole and the logger
flushed. A second signal stops at once. The command line reports one line and exits with the
conventional status ``128 + signal number`` (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch.distributed as dist

from snnrun.core.distributed import any_rank, world
from snnrun.core.errors import SnnrunError

_requested: list[int] = []


class Stopped(BaseException):
    """The run was asked to stop; ``exit_code`` is ``128 + signal``."""

    def __init__(
        self, signum: int, run_dir: Path | None, trained: bool = True, again: bool = True
    ) -> None:
        """``run_dir``: where a resume continues; ``trained=False``: the run ended before its
        first checkpoint, so there is nothing to resume (``again``: the same command starts it
        again; not so for a sweep job)."""
        self.signum, self.run_dir, self.trained, self.again = signum, run_dir, trained, again
        name = signal.Signals(signum).name
        if not trained:
            where = " before the first epoch ended: nothing was trained" + (
                "; the same command starts again" if again else " in this job"
            )
        elif run_dir:
            where = f": the unfinished epoch was dropped; continue with: snnrun resume={run_dir}"
        else:
            where = ""
        super().__init__(f"stopped by {name}{where}")

    def __reduce__(self) -> tuple[type[Stopped], tuple[int, Path | None, bool, bool]]:
        """Rebuilt from its arguments: a sweep job's stop travels back from a joblib worker."""
        return Stopped, (self.signum, self.run_dir, self.trained, self.again)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_run_dir: list[Path | None] = [None]


def _on_signal(signum: int, frame: Any) -> None:
    if _requested:  # the second signal: stop now
        raise Stopped(signum, _run_dir[0])
    _requested.append(signum)


@contextmanager
def graceful_stop(run_dir: Path) -> Iterator[None]:
    """Turn SIGTERM/SIGINT into a stop request between steps (main thread only)."""
    try:
        previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    _requested.clear()
    _run_dir[0] = run_dir
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _run_dir[0] = None


def requested() -> int | None:
    """The signal that asked this process to stop (still set after :func:`graceful_stop`)."""
    return _requested[0] if _requested else None


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Outside :func:`graceful_stop` (start-up, a sweep's launcher), SIGTERM raises
    :class:`Stopped` as Ctrl-C raises ``KeyboardInterrupt``: the command ends with one line and
    143, and a joblib sweep's launcher takes its workers down with it."""
    try:
        previous = signal.signal(signal.SIGTERM, _stop_now)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_now(signum: int, frame: Any) -> None:
    raise Stopped(signum, None)


def check_stop(collective: bool = False) -> None:
    """Raise :class:`Stopped` when a stop was requested (``collective``: on any rank, so that
    every rank stops after the same step)."""
    if any_rank(bool(_requested)) if collective else _requested:
        raise Stopped(_requested[0] if _requested else signal.SIGTERM, _run_dir[0])


def peer_lost(error: BaseException, run_dir: Path | None) -> BaseException | None:
    """What a failed collective means on this rank, or None for any other error.

    Another rank ended (killed, out of memory, a stop it saw first): this rank's stop when it
    was asked to stop too, otherwise one line with the resume hint instead of the backend's
    traceback.
    """
    w = world()
    text = str(error)
    collective = isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError)
        and re.search(r"by peer|Broken pipe|Connection (?:closed|reset|refused)", text)
    )
    if w.size == 1 or not collective:
        return None
    signum = _requested[0] if _requested else None
    if signum is not None:
        return Stopped(signum, run_dir)
    cause = re.sub(r"^\[[^\]]*\]\s*", "", text).split(". ")[0].splitlines()[0][:160]
    return SnnrunError(
        f"rank {w.rank} of {w.size}: another rank ended mid-run (killed, out of memory, or an "
        f"error: see its output) and a collective failed ({cause}); the run dir keeps its last "
        f"epoch: continue with: torchrun ... -m snnrun resume={run_dir or '<run dir>'}"
    )
