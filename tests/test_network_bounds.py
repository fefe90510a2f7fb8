"""A ``repeat`` is bounded before it is built, and a long build ends on SIGTERM (issue 31):
``times: 1000000000`` built for minutes, grew to 3.5 GB and ignored SIGTERM."""

from __future__ import annotations

import os
import signal
import time

from conftest import TINY, assert_one_line_error, cli, start

FC = [a for a in TINY if not a.startswith("model.")] + ["model=fc"]


def repeat_of(times: int, copy: str) -> str:
    return (f"model.layers=[{{type:flatten}},{{type:linear,out_features:10,bias:false}},"
            f"{{type:repeat,times:{times},layers:[{copy}]}},{{type:neuron}}]")  # fmt: skip


def test_a_billion_copies_are_one_line_naming_the_entry_and_the_figure(
    monkeypatch, capsys, tmp_path
) -> None:
    """Before: building for minutes (killed here by the test's timeout). After: one line."""
    args = [*FC, repeat_of(1_000_000_000, "{type:linear,out_features:10},{type:neuron}"),
            f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    started = time.time()
    code, err = cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "model.layers[2] (repeat)", "times=1,000,000,000",
                          "about 4,000,000,000 modules", "at most 100,000 modules",
                          "lower times")  # fmt: skip
    assert time.time() - started < 30


def test_nested_repeats_are_bounded_by_the_outer_one(monkeypatch, capsys, tmp_path) -> None:
    inner = "{type:repeat,times:1000,layers:[{type:neuron}]}"
    args = [*FC, repeat_of(1000, inner), f"hydra.run.dir={tmp_path / 'run'}"]
    code, err = cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "model.layers[2] (repeat)", "times=1,000", "modules")


def test_sigterm_ends_a_long_build_between_copies(tmp_path) -> None:
    """20,000 copies (80,000 modules: under the bound) take many seconds to build. Before: the
    build went on (past the test's 60 s). After: SIGTERM ends it at once with the stop line (not
    the watchdog: its grace is set far off here)."""
    args = [*FC, repeat_of(20_000, "{type:linear,out_features:10},{type:neuron}"),
            f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    proc = start(args, tmp_path, {"SNNRUN_STOP_GRACE_S": "600"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "run dir: ...", printed just before the build
        assert line.startswith("run dir:"), (line, proc.communicate())
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        sent = time.time()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err
    assert time.time() - sent < 10, err
    lines = [line for line in err.splitlines() if line.startswith("snnrun")]
    assert len(lines) == 1 and "stopped by SIGTERM before the first epoch ended" in lines[0], err
