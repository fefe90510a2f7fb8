"""``scripts/gpu_run.sh quick``, the prepared call for a lent GPU, dry-run on the CPU: every part
runs (kernels interpreted, toy sizes) and ``$OUT/gpu.md`` holds each part's table.

The process is the point: a shell script that a GPU loan runs once, with no second chance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, write_idx


def test_quick_dry_run_writes_every_table(tmp_path: Path) -> None:
    write_idx(tmp_path / "fmnist", 28, 300)
    out = tmp_path / "out"
    env = {**os.environ, "GPU_RUN_DRY": "1", "PYTHON": sys.executable, "OUT": str(out),
           "SHIM_DIR": str(tmp_path / "shim"), "FMNIST_ROOT": str(tmp_path / "fmnist")}  # fmt: skip
    env.pop("TRITON_INTERPRET", None)  # the script sets it per part
    proc = subprocess.run(["bash", "scripts/gpu_run.sh", "quick"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch" in (out / "env.txt").read_text()
    report = (out / "gpu.md").read_text()
    titles = [line for line in report.splitlines() if line.startswith("## ")]
    assert [t.split(".")[0] for t in titles] == ["## 1", "## 2", "## 3", "## 4"], titles
    assert report.count(" s, done.") == 4, report
    sections = report.split("\n## ")[1:]
    assert " passed" in sections[0] and "failed" not in sections[0]
    for impl in ("| snnrun torch |", "| snnrun triton |", "| spikingjelly |", "| snntorch |"):
        assert sections[1].count(impl) == 2, impl  # float32 and bfloat16
    for net in ("fmnist_csnn", "sew_resnet18_cifar", "spikformer", "alif"):
        assert f"\n{net} (input" in sections[2], net
    rows = [r for r in sections[2].splitlines() if r.startswith("| snnrun triton amp_bf16")]
    assert len(rows) == 4 and all("failed" not in r for r in rows), rows
    assert sections[2].count("| spikingjelly amp_bf16 |") == 3  # no SpikingJelly ALIF
    assert "| triton" in sections[3] and "| torch |" in sections[3] and "test acc" in sections[3]
