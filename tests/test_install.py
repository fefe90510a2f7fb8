"""The installed command finds its configs from any folder: editable install and built wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import torch

from conftest import REPO, TINY, read_metrics, run_snnrun


def test_editable_install_runs_outside_the_repo(tmp_path) -> None:
    """... and run.json records what the run was made with: the command, the versions, the
    install's git commit (this checkout's), no git state for a working dir outside a repo."""
    proc = run_snnrun([*TINY, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert "final test_acc=" in proc.stdout
    assert len(read_metrics(tmp_path / "run")) == 1
    made = json.loads((tmp_path / "run" / "run.json").read_text())["provenance"]
    assert made["command"] == ["snnrun", *TINY, f"hydra.run.dir={tmp_path / 'run'}"]
    assert made["versions"]["torch"] == torch.__version__ and made["versions"]["snnrun"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    assert made["git"]["snnrun"]["commit"] == head and made["git"]["cwd"] is None
    assert made["world_size"] == 1 and made["host"] and made["device"]


def test_built_wheel_ships_configs_and_kernels(tmp_path) -> None:
    """Build the wheel from the tracked files, install it alone into a folder, train with it
    from outside the repo."""
    source = tmp_path / "source"  # a copy: the build leaves nothing in the repo
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name, follow_symlinks=False)  # src/snnrun/kernels
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(source)], check=True, capture_output=True)  # fmt: skip
    (wheel,) = wheels.glob("snnrun-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)  # fmt: skip
    for shipped in (
        "conf/config.yaml",
        "conf/model/csnn.yaml",
        "kernels/neuron_kernels.py",
        "neuron/contract.py",
    ):
        assert (site / "snnrun" / shipped).is_file(), shipped
    code = (
        "import sys, snnrun; assert snnrun.__file__.startswith(sys.argv[1]), snnrun.__file__;"
        "from snnrun.cli import main; sys.argv = ['snnrun', *sys.argv[2:]]; main()"
    )
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", code, str(site), *TINY,
                           f"hydra.run.dir={run_dir}"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(site)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(read_metrics(run_dir)) == 1
