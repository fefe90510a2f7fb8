"""What a run was made with, for ``run.json``: the command, the versions, the code (snnrun's and
the user's ``_target_`` modules') and the machine (each start and each resume record their
own)."""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import snnrun.core.version
from snnrun.core.distributed import World
from snnrun.core.plugin import user_modules


def provenance(device: torch.device, world: World, config: dict[str, Any]) -> dict[str, Any]:
    """``command`` (argv), ``versions`` (python, torch, triton, cuda, snnrun), ``git`` (the
    commit and dirty flag of the snnrun install and of the working directory, each None outside
    a repository), ``user_modules`` (each module a ``_target_`` of ``config`` was imported
    from, outside snnrun: ``{module: {"file", "sha256"}}``), ``host``, ``device`` (its name) and
    ``world_size``."""
    return {
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "triton": _version("triton"),
            "cuda": torch.version.cuda,
            "snnrun": snnrun.core.version.__version__,
        },
        "git": {
            "snnrun": git_state(Path(snnrun.core.version.__file__).parent),
            "cwd": git_state(Path.cwd()),
        },
        "user_modules": user_modules(config),
        "host": socket.gethostname(),
        "device": device_name(device),
        "world_size": world.size,
    }


def git_state(folder: Path) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git repository holding ``folder``; None when there is
    none (an installed wheel, a plain folder) or git is missing."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                                  text=True, timeout=10)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": bool(status and status.strip())}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or device.type


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
