"""The ``snnrun`` command: Hydra composes ``conf/`` into one config and :func:`train` runs it.

``snnrun [overrides]`` trains; ``snnrun -m a=1,2`` sweeps (one run dir per job);
``snnrun resume=<run dir>`` continues a run in place. Mistakes a user can fix (unknown config
names, bad paths, shapes, corrupt checkpoints) end as one line ``snnrun: error: ...``, exit 2.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from snnrun.checkpoint import LATEST
from snnrun.errors import SnnrunError
from snnrun.resume import compose_config, one_line, resume_config

log = logging.getLogger("snnrun")


def _fail(error: BaseException) -> None:
    print(f"snnrun: error: {one_line(error)}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="pkg://snnrun.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    """Hydra's task: one training run in Hydra's run (or sweep job) dir."""
    from snnrun.run import train

    hc = HydraConfig.get()
    try:
        return train(cfg, Path(hc.runtime.output_dir), list(hc.overrides.task))
    except (SnnrunError, OmegaConfBaseException) as e:
        _fail(e)
        raise  # unreachable: _fail exits


def _resume(target: str, overrides: list[str]) -> None:
    """Continue the run that ``target`` names, in its own dir, with its saved config."""
    from snnrun.run import train

    cfg, run_dir, all_overrides = resume_config(target, overrides)
    logging.basicConfig(
        level=logging.INFO,
        filename=run_dir / "snnrun.log",
        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
    )
    train(cfg, run_dir, all_overrides)


def _check_fresh_run(args: list[str]) -> None:
    """Before Hydra writes anything: the overrides compose and the run dir is not a run's."""
    if any(a.startswith("-") for a in args):
        return  # --help, -m, --cfg ...: Hydra handles these itself
    try:
        compose_config(args)
    except Exception as e:
        raise SnnrunError(one_line(e) + _known_keys_hint(str(e), args)) from None
    for a in args:
        if a.startswith("hydra.run.dir="):
            run_dir = Path(a.split("=", 1)[1]).expanduser()
            if (run_dir / LATEST).exists():
                raise SnnrunError(
                    f"{run_dir} already holds a run; continue it with "
                    f"resume={run_dir} or pick another hydra.run.dir"
                )


def _known_keys_hint(message: str, args: list[str]) -> str:
    """For "Could not override 'neuron.tau'": the keys that section does have."""
    match = re.search(r"Could not override '([\w.]+)\.(\w+)'", message)
    if not match:
        return ""
    section, key = match.groups()
    try:
        node = OmegaConf.select(
            compose_config([a for a in args if not a.startswith(f"{section}.{key}=")]), section
        )
    except Exception:
        return ""
    if not isinstance(node, DictConfig):
        return ""
    return f" ({section} has no {key!r}; its keys: {', '.join(map(str, node.keys()))})"


def main() -> None:
    """Console entry point."""
    args = sys.argv[1:]
    resume = [a for a in args if a.startswith("resume=")]
    try:
        if resume and resume[-1] != "resume=null":
            if "-m" in args or "--multirun" in args:
                raise SnnrunError(
                    "resume one run at a time (drop -m); each sweep job has its own run dir"
                )
            rest = [a for a in args if not a.startswith("resume=")]
            _resume(resume[-1].split("=", 1)[1], rest)
            return
        _check_fresh_run(args)
    except (SnnrunError, OmegaConfBaseException) as e:
        _fail(e)
    _hydra_main()


if __name__ == "__main__":
    main()
