"""The installed command finds its configs from any folder: editable install and built wheel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from snnrun.loggers import read_metrics

from conftest import REPO, SNNRUN, TINY, run_snnrun


def test_editable_install_runs_outside_the_repo(tmp_path) -> None:
    proc = run_snnrun([*TINY, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert "final test_acc=" in proc.stdout
    assert len(read_metrics(tmp_path / "run")) == 1
    assert SNNRUN.is_file()


def test_built_wheel_ships_configs_and_kernels(tmp_path) -> None:
    """Build the wheel, install it alone into a folder, train from outside the repo."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("snnrun-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    assert (site / "snnrun" / "conf" / "config.yaml").is_file()
    assert (site / "snnrun" / "conf" / "model" / "csnn.yaml").is_file()
    assert (site / "snnrun" / "kernels" / "__init__.py").is_file()
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = (
        "import sys, snnrun; assert snnrun.__file__.startswith(sys.argv[1]), snnrun.__file__;"
        "from snnrun.cli import main; sys.argv = ['snnrun', *sys.argv[2:]]; main()"
    )
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(site), *TINY, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(read_metrics(run_dir)) == 1
    assert not Path(tmp_path / "conf").exists()
