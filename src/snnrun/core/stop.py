"""Ending a run cleanly on SIGTERM (what SLURM sends on preemption) and Ctrl-C.

Inside :func:`graceful_stop` the first SIGTERM or SIGINT only raises a flag; the trainer
checks it after each step (:func:`check_stop`) and raises :class:`Stopped`, dropping the
unfinished epoch, so the run ends between steps with its last checkpoint whole and the logger
flushed. A second signal stops at once. The command line reports one line and exits with the
conventional status ``128 + signal number`` (130 for Ctrl-C, 143 for SIGTERM).

A main thread stuck in native code (a deadlocked kernel) never runs a Python signal handler.
So, while the command runs (:func:`stop_on_sigterm`, :func:`graceful_stop`), a watchdog thread
hears each SIGTERM and SIGINT through ``signal.set_wakeup_fd``: when the main thread has not run
its handler :data:`GRACE_S` seconds later (``SNNRUN_STOP_GRACE_S`` to change it), it prints the
same stop line and ends the process with ``128 + signal``. A main thread that ran the handler
is alive: its stop (a last step, the logger's flush) takes the time it needs, and a second
signal that it cannot handle is judged the same way. The watchdog runs while the stuck call has
let go of the GIL, as torch's kernels and ``ctypes`` calls do.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from snnrun.core.distributed import any_rank, world
from snnrun.core.errors import SnnrunError

GRACE_S = 10.0  # seconds the main thread has to run a stop signal's handler
GRACE_ENV = "SNNRUN_STOP_GRACE_S"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HANDLED_BEFORE_S = 1.0  # a handler run this long before the watchdog read the signal counts

_requested: list[int] = []
_handled_at = [-math.inf]  # time.monotonic() of the last stop handler run in the main thread


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
_trained: list[Callable[[], bool] | None] = [None]  # whether the run has a checkpoint yet


def _on_signal(signum: int, frame: Any) -> None:
    _handled_at[0] = time.monotonic()
    if _requested:  # the second signal: stop now
        raise Stopped(signum, _run_dir[0])
    _requested.append(signum)


@contextmanager
def graceful_stop(run_dir: Path, trained: Callable[[], bool] | None = None) -> Iterator[None]:
    """Turn SIGTERM/SIGINT into a stop request between steps (main thread only).

    ``trained``: whether the run has a checkpoint yet, for the watchdog's stop line (without
    it, the line names no resume)."""
    try:
        previous = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    _requested.clear()
    _run_dir[0], _trained[0] = run_dir, trained
    try:
        with _watched():
            yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _run_dir[0], _trained[0] = None, None


def requested() -> int | None:
    """The signal that asked this process to stop (still set after :func:`graceful_stop`)."""
    return _requested[0] if _requested else None


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Outside :func:`graceful_stop` (start-up, a sweep's launcher), SIGTERM raises
    :class:`Stopped` as Ctrl-C raises ``KeyboardInterrupt``: the command ends with one line and
    143, and a joblib sweep's launcher takes its workers down with it. (SIGINT's handler is
    Python's, noted for the watchdog.)"""
    ours = [s for s in STOP_SIGNALS if s == signal.SIGTERM or _is_python_default(s)]
    try:
        previous = {s: signal.signal(s, _stop_now) for s in ours}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        with _watched():
            yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _is_python_default(signum: int) -> bool:
    """Whether ``signum`` has Python's own handler (SIGINT's ``KeyboardInterrupt``), not one a
    caller set, nor SIG_IGN (a background job's SIGINT)."""
    return signal.getsignal(signum) is signal.default_int_handler


def _stop_now(signum: int, frame: Any) -> None:
    _handled_at[0] = time.monotonic()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
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
    import torch.distributed as dist

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


def _grace_s() -> float:
    text = os.environ.get(GRACE_ENV)
    try:
        grace = GRACE_S if text is None else float(text)
    except ValueError:
        grace = -1.0
    if not grace >= 0:  # also NaN
        raise SnnrunError(f"{GRACE_ENV}={text} is not a number of seconds; give e.g. 10")
    return grace


class _Watchdog:
    """A daemon thread that reads the signals written to the wakeup pipe (by Python's C-level
    handler, which runs whatever the main thread does) and ends the process when the main
    thread has not run a SIGTERM's or SIGINT's Python handler ``grace`` seconds later, unless
    :meth:`disarm` (the command ended) came first."""

    def __init__(self, grace: float) -> None:
        self.grace, self.is_main = grace, world().is_main
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)
        self.previous = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        self.disarmed, self.lock = threading.Event(), threading.Lock()
        threading.Thread(target=self._watch, name="snnrun-stop-watchdog", daemon=True).start()

    def _watch(self) -> None:
        try:
            while (signum := self._next_stop_signal()) is not None:
                read_at = time.monotonic()
                if self.disarmed.wait(self.grace):
                    return
                if _handled_at[0] < read_at - HANDLED_BEFORE_S:  # stuck: it never ran Python
                    self._end(signum)
        finally:
            os.close(self.read_fd)

    def _next_stop_signal(self) -> int | None:
        while data := os.read(self.read_fd, 64):  # b"": the write end closed (disarmed)
            signals = [s for s in data if s in STOP_SIGNALS]
            if signals:
                return signals[0]
        return None

    def _end(self, signum: int) -> None:
        with self.lock:
            if self.disarmed.is_set():
                return
            if self.is_main:  # under torchrun every rank ends; rank 0 says so
                os.write(2, f"{_stop_line(signum)}\n".encode())
            os._exit(128 + signum)

    def disarm(self) -> None:
        with self.lock:
            self.disarmed.set()
        signal.set_wakeup_fd(self.previous)
        os.close(self.write_fd)


_watchdog: list[_Watchdog] = []  # the armed one, while the command runs


@contextmanager
def _watched() -> Iterator[None]:
    """Arm the watchdog for the block (main thread only; an armed one covers inner blocks)."""
    if _watchdog:
        yield
        return
    _watchdog.append(_Watchdog(_grace_s()))
    try:
        yield
    finally:
        if _watchdog:  # (a forked child dropped it)
            _watchdog.pop().disarm()


def _stop_line(signum: int) -> str:
    """The line the command prints for this stop (cli/command.py), from what is known now."""
    run_dir, trained = _run_dir[0], _trained[0]
    if run_dir is None and signum == signal.SIGINT:
        return "snnrun: interrupted"  # as for Ctrl-C outside a run
    if run_dir is None or trained is None:
        return f"snnrun: {Stopped(signum, None)}"
    if trained():
        return f"snnrun: {Stopped(signum, run_dir)}"
    return f"snnrun: {Stopped(signum, None, trained=False)}"


def _forget_watchdog_in_child() -> None:
    """A forked child (a data-loader or cache worker) writes its signals into no pipe of the
    parent's: only the parent's own signals count."""
    if _watchdog:
        _watchdog.clear()
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)


os.register_at_fork(after_in_child=_forget_watchdog_in_child)
