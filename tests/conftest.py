"""Shared test setup: the Triton interpreter on CPU, real configs composed small, run helpers."""

from __future__ import annotations

import errno
import gzip
import os
import signal
import struct

# Triton reads this when kernels are defined, so it must be set before anything imports them.
if os.environ.get("SNNRUN_TEST_GPU") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, open_dict
from torch import nn

from snnrun.core.compose import compose_config
from snnrun.neuron.neurons import SpikingNeuron
from snnrun.run.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SNNRUN = Path(sys.executable).with_name("snnrun")

# A run small enough for a test: tiny CSNN on 256 digits, one epoch.
TINY = [
    "model.channels=4",
    "neuron=if",
    "dataset.train_limit=256",
    "dataset.test_limit=128",
    "epochs=1",
    "batch_size=64",
    "T=4",
    "optimizer.lr=0.01",
    "logger=none",
]


def write_idx(folder: Path, size: int, n: int) -> None:
    """MNIST-format files (gzipped idx, as Fashion-MNIST ships) of ``n`` random ``size x size``
    images per split."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        head = struct.pack(">4I", 0x803, n, size, size)
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(head + images.tobytes())
        )
        head = struct.pack(">2I", 0x801, n)
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(head + labels.tobytes())
        )


def read_metrics(run_dir: Path) -> list[dict]:
    return RunDir(run_dir).read_metrics()


def lively(net: nn.Module, gain: float) -> nn.Module:
    """``net`` with its conv/linear weights times ``gain`` (random weights spike more) and
    random BatchNorm statistics that matter, in place."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(gain)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net


def neuron_spikes(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every snnrun neuron layer's spikes ``[T, N, ...]`` for input ``x``, in module order."""
    seen: list[torch.Tensor] = []
    neurons = [m for m in net.modules() if isinstance(m, SpikingNeuron)]
    hooks = [m.register_forward_hook(lambda m, a, out: seen.append(out)) for m in neurons]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


TIMING = {"train_samples_per_s", "test_samples_per_s", "epoch_seconds", "peak_gpu_mem_mb"}


def without_timing(history: list[dict]) -> list[dict]:
    """Epoch records without their wall-clock numbers (what two equal runs share)."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


def compose(overrides: list[str]) -> DictConfig:
    """The real config, composed as the command line would."""
    return compose_config(overrides)


def run_snnrun(
    args: list[str],
    cwd: Path,
    check: bool = True,
    env: dict[str, str | None] | None = None,
    timeout: float = 300,
):
    """Run the installed ``snnrun`` command (``env`` values of None unset a variable)."""
    merged = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [str(SNNRUN), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in merged.items() if v is not None},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snnrun {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run ``snnrun args`` in-process; (exit code, stderr). Expects an error exit."""
    from snnrun.cli.command import main

    monkeypatch.setattr(sys, "argv", ["snnrun", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("snnrun: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def runs(monkeypatch, capsys, *args: str) -> str:
    """``snnrun runs args`` in this process; its standard output (it must not fail)."""
    from snnrun.cli.command import main

    monkeypatch.setattr(sys, "argv", ["snnrun", "runs", *args])
    main()
    return capsys.readouterr().out


def table_rows(out: str) -> dict[str, list[str]]:
    """``snnrun runs``' table rows by run dir: their cells (one line per run off a terminal)."""
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()
             if line.startswith("│")]  # fmt: skip
    return {c[0]: c for c in cells}


def make_user_package(tmp_path: Path, monkeypatch, name: str, source: str):
    """A package ``name`` holding ``source`` on ``sys.path`` (a user's module), yielded by
    name and forgotten after the test."""
    import textwrap

    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def train_in_process(monkeypatch, *args: str) -> None:
    """``snnrun args`` in this process (cheaper than a subprocess; torch is imported once)."""
    from snnrun.cli.command import main

    monkeypatch.setattr(sys, "argv", ["snnrun", *args])
    main()


def user_model_args(tmp_path: Path, name: str, yaml_text: str) -> list[str]:
    """TINY with the user's ``model=<name>`` (``yaml_text``) from a --config-dir of its own,
    LIF neurons at threshold 0.5 (firing from the first epoch)."""
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    (conf / f"{name}.yaml").write_text(yaml_text)
    return [*(a for a in TINY if not a.startswith("model.")), f"model={name}", "neuron=lif",
            "neuron.v_threshold=0.5", f"hydra.searchpath=[file://{conf.parent}]"]  # fmt: skip


def resumed_equals_unbroken(monkeypatch, tmp_path: Path, args: list[str]) -> Path:
    """``args`` for 2 epochs unbroken (``tmp_path/whole``), and for 1 epoch resumed to 2: every
    record equal but the timings; the unbroken run's dir."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train_in_process(monkeypatch, *args, "epochs=2", f"hydra.run.dir={whole}")
    train_in_process(monkeypatch, *args, "epochs=1", f"hydra.run.dir={resumed}")
    train_in_process(monkeypatch, f"resume={resumed}", "epochs=2")
    assert without_timing(read_metrics(resumed)) == without_timing(read_metrics(whole))
    return whole


def make_read_only(monkeypatch, folder: Path) -> None:
    """``os.mkdir`` below ``folder`` fails as on a read-only file system (tests run as root,
    whom file modes do not stop)."""
    real_mkdir = os.mkdir

    def read_only(path: object, *args: object, **kwargs: object) -> None:
        if Path(path).is_relative_to(folder):  # type: ignore[arg-type]
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        real_mkdir(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "mkdir", read_only)


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``args`` (the ``snnrun`` command's unless ``args[0]`` is a path) in its own
    process group, so that a test can signal or SIGKILL the whole of it."""
    cmd = args if Path(args[0]).is_absolute() else [str(SNNRUN), *args]
    return subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def wait_for_epochs(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``run_dir`` holds ``n`` epoch records (or the process ended, or ``timeout``)."""
    deadline = time.time() + timeout
    while len(read_metrics(run_dir)) < n and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert len(read_metrics(run_dir)) >= n, proc.communicate()


def killed_and_resumed(
    args: list[str], cwd: Path, epochs: int, env: dict[str, str] | None = None
) -> tuple[Path, list[dict]]:
    """``snnrun args`` unbroken (``cwd/whole``), and again (``cwd/killed``) SIGKILLed after its
    first epoch record and resumed; asserts the kill landed mid-training and every record of the
    resumed run equals the unbroken run's. Returns the killed run's dir and those records."""
    run_snnrun([*args, f"hydra.run.dir={cwd / 'whole'}"], cwd=cwd, env=env)
    expected = without_timing(read_metrics(cwd / "whole"))
    killed = cwd / "killed"
    proc = start([*args, f"hydra.run.dir={killed}"], cwd=cwd, env=env)
    wait_for_epochs(killed, 1, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert 1 <= len(read_metrics(killed)) < epochs, "the kill should land mid-training"
    run_snnrun([f"resume={killed}"], cwd=cwd, env=env)
    assert without_timing(read_metrics(killed)) == expected
    return killed, expected


def kill_everything_of(run_dir: Path) -> None:
    """SIGKILL every process whose command line names ``run_dir`` (torchrun starts each worker
    in a session of its own, so killing the launcher's process group leaves them running)."""
    marker = f"hydra.run.dir={run_dir}\0".encode()  # a whole argument, not a prefix
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass  # it ended meanwhile


def train_tiny(root: Path, *overrides: str) -> Path:
    """One epoch of ``TINY`` (with ``overrides``) into ``root/run``; the run dir."""
    run_snnrun([*TINY, *overrides, f"hydra.run.dir={root / 'run'}"], cwd=root)
    return root / "run"


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> DictConfig:
    cfg = compose(TINY)
    with open_dict(cfg):
        cfg.resume = None
    return cfg


def needs_shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {path} not present")
    return path
