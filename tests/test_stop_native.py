"""SIGTERM ends a run whose main thread is stuck in native code (issue 31).

Python runs a signal handler only between bytecodes, so a main thread that never comes back
from C (oneDNN's 1x1 convolution backward deadlocked on a CPU:
docs/upstream/onednn_channels_last_hang.md) never sees the stop flag. A watchdog thread hears
the signal through ``signal.set_wakeup_fd`` and, after ``SNNRUN_STOP_GRACE_S``, ends the
process with the usual stop line and ``128 + signal``.
"""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import pytest

from snnrun.core import stop
from snnrun.core.stop import Stopped, check_stop, graceful_stop

from conftest import TINY, assert_one_line_error, cli, start

# User layers whose first training forward (not the build's shape probe) hangs: ``Stuck`` in C,
# as oneDNN did (a second lock of a held pthread mutex waits on a futex, which no signal
# interrupts; ctypes lets go of the GIL); ``Slow`` in Python, for 2 grace periods.
LAYERS = """
    import ctypes
    import time
    from pathlib import Path

    import torch
    from torch import nn

    class Stuck(nn.Module):
        def forward(self, x):
            if self.training and torch.is_grad_enabled():
                Path("stuck").touch()
                libc = ctypes.CDLL(None)
                mutex = ctypes.create_string_buffer(64)  # zeroed: a default mutex
                libc.pthread_mutex_lock(mutex)
                libc.pthread_mutex_lock(mutex)  # never returns
            return x

    class Slow(nn.Module):
        def forward(self, x):
            if self.training and torch.is_grad_enabled() and not Path("stuck").exists():
                Path("stuck").touch()
                end = time.time() + 2 * GRACE_S
                while time.time() < end:
                    time.sleep(0.01)
            return x
"""
GRACE_S = 2.0


def stuck_run(tmp_path: Path, layer: str = "Stuck"):
    code = textwrap.dedent(LAYERS).replace("GRACE_S", str(GRACE_S))
    (tmp_path / "stuck_layer.py").write_text(code)
    layers = (f"model.layers=[{{type:flatten}},{{type:module,_target_:stuck_layer.{layer}}},"
              "{type:linear,out_features:10,bias:false},{type:neuron}]")  # fmt: skip
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, "SNNRUN_STOP_GRACE_S": str(GRACE_S)}
    tiny = [a for a in TINY if not a.startswith("model.")]
    args = [*tiny, "model=fc", layers, f"hydra.run.dir={tmp_path / 'run'}"]
    proc = start(args, tmp_path, env)
    deadline = time.time() + 120
    while not (tmp_path / "stuck").exists() and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.5)  # inside the C call
    assert proc.poll() is None
    return proc


@pytest.mark.parametrize(("sig", "code", "words"), [
    (signal.SIGTERM, 143, "snnrun: stopped by SIGTERM"),
    (signal.SIGINT, 130, "snnrun: stopped by SIGINT"),
])  # fmt: skip
def test_a_signal_ends_a_run_stuck_in_native_code(tmp_path, sig, code, words) -> None:
    """Before: SIGTERM was ignored (the flag waits for a step that never ends; only SIGKILL
    ended it). After: the stop line and ``128 + signal`` once the grace period is over."""
    proc = stuck_run(tmp_path)
    proc.send_signal(sig)
    sent = time.time()
    try:
        _, err = proc.communicate(timeout=GRACE_S + 20)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == code, err
    assert time.time() - sent >= GRACE_S - 0.1  # the graceful path had its chance
    lines = [line for line in err.splitlines() if line.startswith("snnrun")]
    assert len(lines) == 1 and lines[0].startswith(words), err
    assert "Traceback" not in err


def test_a_slow_graceful_stop_takes_the_time_it_needs(tmp_path) -> None:
    """A main thread that runs Python (it ran the handler) is not stuck: a step that lasts past
    the grace period ends, then the run stops between steps with its own line."""
    proc = stuck_run(tmp_path, "Slow")
    proc.send_signal(signal.SIGTERM)
    sent = time.time()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert time.time() - sent > GRACE_S
    lines = [line for line in err.splitlines() if line.startswith("snnrun")]
    assert len(lines) == 1 and "before the first epoch ended: nothing was trained" in lines[0]
    assert not (tmp_path / "run").exists()  # the graceful path's clean-up ran


def test_a_graceful_stop_disarms_the_watchdog(monkeypatch, tmp_path) -> None:
    """The usual path is unchanged: the flag, a stop between steps; past the grace period this
    process lives on and the watchdog thread is gone."""
    monkeypatch.setenv("SNNRUN_STOP_GRACE_S", "0.3")
    monkeypatch.setattr(stop, "_requested", [])  # the request must not outlive this test
    with pytest.raises(Stopped), graceful_stop(tmp_path):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs: the flag is set
        check_stop()
    time.sleep(0.6)
    assert not [t for t in threading.enumerate() if t.name == "snnrun-stop-watchdog"]


def test_a_bad_grace_period_is_one_line(monkeypatch, capsys) -> None:
    monkeypatch.setenv("SNNRUN_STOP_GRACE_S", "soon")
    code, err = cli(monkeypatch, capsys, "T=1")
    assert_one_line_error(code, err, "SNNRUN_STOP_GRACE_S=soon", "number of seconds")
