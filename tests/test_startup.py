"""The command's start-up (issue 31): ``snnrun --help`` took 10-16 s and ~800 MB on a loaded
2-core machine, because ``cli/command.py`` imported torch first (through ``core/distributed``
and ``core/stop``), and Hydra's help copied its config repository once per config group.
A fresh interpreter shows what start-up imports."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import REPO

RUN_MAIN = """
import sys
sys.argv = ["snnrun", *sys.argv[1:]]
from snnrun.cli.command import main
try:
    main()
except SystemExit as e:
    code = e.code or 0
else:
    code = 0
print(f"exit={code} torch={'torch' in sys.modules}", file=sys.stderr)
"""


def start_up(*args: str) -> tuple[str, str]:
    """``snnrun args`` in a fresh interpreter: (stdout, the exit code and whether torch was
    imported)."""
    proc = subprocess.run([sys.executable, "-c", RUN_MAIN, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    return proc.stdout, proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("args", [["--help"], ["-h", "model=sew_cnn"], ["--hydra-help"],
                                  ["--cfg", "job"], ["viz", "-h"]])  # fmt: skip
def test_help_never_imports_torch(args) -> None:
    """Before: ``torch=True`` (and 5.6 s here); after: no torch (1.4 s on a loaded machine)."""
    out, status = start_up(*args)
    assert status == "exit=0 torch=False", (status, out[-500:])
    assert "usage" in out or "== Config" in out or "Hydra" in out or "model:" in out


@pytest.mark.parametrize("args", [["runs", "outputs-none"], ["model.nope=1"], ["+foo=1"],
                                  ["optimizer.lr=abc"], ["model=nope"]])  # fmt: skip
def test_runs_and_a_refused_override_never_import_torch(args, tmp_path) -> None:
    """``snnrun runs`` reads run dirs, and a refused override is refused, without torch."""
    if args[0] == "runs":
        shutil.copytree(REPO / "tests" / "fixtures" / "run_3fa185d", tmp_path / "run")
        out, status = start_up("runs", str(tmp_path))
        assert "finished" in out, out
    else:
        out, status = start_up(*args, f"hydra.run.dir={tmp_path / 'r'}")
    assert status.endswith("torch=False"), (status, out[-500:])
    assert status.startswith("exit=0" if args[0] == "runs" else "exit=2"), status


def test_help_lists_the_groups_and_the_config() -> None:
    """The help is Hydra's, unchanged by listing the groups from one copy of its repository."""
    out, _ = start_up("--help", "model=sew_cnn")
    assert "model: csnn, fc, " in out and "neuron: alif, if, " in out
    assert "== Config ==" in out and "name: sew_cnn" in out
