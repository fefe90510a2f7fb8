"""The ``snnrun`` command: Hydra composes ``conf/`` into one config and :func:`train` runs it.

``snnrun [overrides]`` trains; ``snnrun -m a=1,2`` sweeps (one run dir per job);
``snnrun resume=<run dir>`` continues a run in place. Mistakes a user can fix (unknown config
names, bad values, paths, shapes, corrupt checkpoints) end as one line ``snnrun: error: ...``,
exit 2; in a sweep a failing job prints that line and the sweep goes on.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from snnrun.errors import SnnrunError
from snnrun.resume import compose_config, one_line, resume_config

USER_ERRORS = (SnnrunError, OmegaConfBaseException)
HYDRA_FLAGS_WITHOUT_RUN = (
    "--help",
    "-h",
    "--hydra-help",
    "--cfg",
    "-c",
    "--info",
    "--shell-completion",
    "-sc",
    "--version",
)


def _error_line(error: BaseException) -> str:
    return f"snnrun: error: {one_line(error)}"


def _fail(error: BaseException) -> None:
    print(_error_line(error), file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="pkg://snnrun.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    """Hydra's task: one training run in Hydra's run (or sweep job) dir."""
    from snnrun.run import train

    hc = HydraConfig.get()
    try:
        return train(cfg, Path(hc.runtime.output_dir), list(hc.overrides.task))
    except USER_ERRORS as e:
        if hc.mode != RunMode.MULTIRUN:
            _fail(e)
        print(f"{_error_line(e)} (job {hc.job.num}; the sweep goes on)", file=sys.stderr)
        return float("nan")


def _resume(target: str, overrides: list[str]) -> None:
    """Continue the run that ``target`` names, in its own dir, with its saved config."""
    from snnrun.run import train

    cfg, run_dir, all_overrides, checkpoint = resume_config(target, overrides)
    train(cfg, run_dir, all_overrides, checkpoint)


def _first_job(args: list[str]) -> list[str]:
    """The overrides of a sweep's first job (``lr=0.1,0.05`` → ``lr=0.1``)."""
    first = []
    for o in OverridesParser.create().parse_overrides(args):
        if o.is_sweep_override():
            first.append(f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}")
        else:
            first.append(o.input_line)
    return first


def _check_overrides(args: list[str]) -> None:
    """Before Hydra writes anything: the overrides (of the first job) compose, and an explicit
    run dir does not hold a run already."""
    overrides = [a for a in args if not a.startswith("-")]
    try:
        compose_config(_first_job(overrides) if "-m" in args or "--multirun" in args else overrides)
    except Exception as e:
        raise SnnrunError(one_line(e) + _known_keys_hint(str(e), overrides)) from None
    from snnrun.run import refuse_existing_run

    for a in overrides:
        if a.startswith("hydra.run.dir="):
            refuse_existing_run(Path(a.split("=", 1)[1]).expanduser())


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
        if not any(a.split("=")[0] in HYDRA_FLAGS_WITHOUT_RUN for a in args):
            _check_overrides(args)
    except USER_ERRORS as e:
        _fail(e)
    _hydra_main()


if __name__ == "__main__":
    main()
