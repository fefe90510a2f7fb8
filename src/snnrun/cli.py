"""The ``snnrun`` command: training through Hydra, and tool verbs.

- ``snnrun [overrides]`` trains (Hydra composes ``conf/`` into one config; :func:`run.train`);
  ``snnrun -m a=1,2`` sweeps (one run dir per job); ``snnrun resume=<run dir>`` continues a run.
- ``snnrun viz|eval|export <run dir> [key=value ...]``: tools reading a run dir (:data:`VERBS`).

Mistakes a user can fix (unknown config names, bad values, paths, shapes, corrupt checkpoints,
a full disk) end as one line ``snnrun: error: ...``, exit 2, nothing half-written; in a sweep a
failing job (a user error or any crash) prints one line, is marked failed, the sweep goes on and
then exits 1. SIGTERM and Ctrl-C end a run between steps, exit ``128 + signal``.
"""

from __future__ import annotations

import errno
import importlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from snnrun.compose import compose_config, config_dir_overrides, one_line
from snnrun.errors import SnnrunError
from snnrun.stop import Stopped

T = TypeVar("T")
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
# verb -> "module:function" taking the arguments after the verb (the module has a USAGE line)
VERBS = {
    "viz": "snnrun.viz:main",
    "eval": "snnrun.evaluate:main",
    "export": "snnrun.export:main",
}
# sections whose builders take their keys as keyword arguments and refuse unknown ones
OPEN_SECTIONS = ("model", "neuron", "surrogate", "dataset", "encoder", "loss", "optimizer",
                 "scheduler", "logger")  # fmt: skip


def _error_line(error: BaseException) -> str:
    return f"snnrun: error: {one_line(error)}"


def _fail(error: BaseException) -> None:
    print(_error_line(error), file=sys.stderr)
    sys.exit(2)


def os_error(e: OSError) -> SnnrunError:
    """A failed file operation as one line naming the file and the fix."""
    where = f" {e.filename}" if e.filename else ""
    if e.errno == errno.ENOSPC:
        fix = "free disk space, then continue the run with resume=<run dir>"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make that folder writable, or choose another one with hydra.run.dir=..."
    else:
        fix = "check the path and the disk"
    return SnnrunError(f"cannot write{where}: {e.strerror or e}; {fix} (nothing was half-written)")


@hydra.main(version_base="1.3", config_path="pkg://snnrun.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> Any:
    """Hydra's task: one training run in Hydra's run (or sweep job) dir; its best test
    accuracy, or a sweep job's :class:`~snnrun.sweep.JobFailed` (any exception)."""
    from snnrun.distributed import peer_lost
    from snnrun.run import train
    from snnrun.sweep import fail_job

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    overrides = [*list(hc.overrides.task), *_searchpath(hc)]
    sweep = hc.mode == RunMode.MULTIRUN
    try:
        try:
            return train(cfg, run_dir, overrides)
        except OSError as e:
            raise os_error(e) from None
        except RuntimeError as e:  # under torchrun: another rank ended
            lost = peer_lost(e, run_dir)
            if lost is None:
                raise
            raise lost from None
    except USER_ERRORS as e:
        if not sweep:
            _fail(e)
        return fail_job(run_dir, hc.job.num, e, user_error=True)
    except Exception as e:
        if not sweep:
            raise
        return fail_job(run_dir, hc.job.num, e, user_error=False)


def _searchpath(hc: Any) -> list[str]:
    """Where the run found configs besides the package (``hydra.searchpath``, ``--config-dir``),
    kept with its overrides so that a resume composes the same way."""
    kept = [o for o in hc.overrides.hydra if o.startswith("hydra.searchpath=")]
    dirs = [s.path for s in hc.runtime.config_sources if s.provider == "command-line"]
    if dirs:
        kept.append(f"hydra.searchpath=[{','.join(dirs)}]")
    return kept


def _resume(target: str, overrides: list[str]) -> None:
    """Continue the run that ``target`` names, in its own dir, with its saved config
    (``wandb:<entity>/<project>/<id>``: fetched into a new run dir first)."""
    from snnrun.resume import resume_config
    from snnrun.run import train

    if target.startswith("wandb:"):
        from snnrun.rundir import default_run_dir
        from snnrun.wandb_resume import fetch_run

        dirs = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")]
        overrides = [o for o in overrides if not o.startswith("hydra.run.dir=")]
        target = str(fetch_run(target, Path(dirs[-1]) if dirs else default_run_dir()))
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


def _value_args(args: list[str]) -> list[str]:
    """The key=value overrides (flags and the values of ``--config-dir``-style flags left out)."""
    skip = {i + 1 for i, a in enumerate(args) if a in ("--config-dir", "-cd", "--config-name",
                                                        "-cn", "--config-path", "-cp")}  # fmt: skip
    return [a for i, a in enumerate(args) if not a.startswith("-") and i not in skip]


def _check_overrides(args: list[str]) -> None:
    """Before Hydra writes anything: the overrides (of the first job) compose, added keys are
    used, and the run or sweep dir does not hold runs already."""
    from snnrun.run import refuse_existing_run

    overrides = _value_args(args) + config_dir_overrides(args)
    sweep = "-m" in args or "--multirun" in args
    auto = "resume=auto" in overrides  # a relaunched job continues its dir's run
    job = _first_job(overrides) if sweep else overrides
    try:
        cfg = compose_config(job)
    except Exception as e:
        raise SnnrunError(_without_append_hint(one_line(e)) + _known_keys_hint(str(e), overrides)
                          ) from None  # fmt: skip
    _refuse_unused_keys(overrides)
    _check_value_types(job, cfg)
    _check_values(cfg)
    for a in overrides:
        key, _, value = a.partition("=")
        if key == "hydra.run.dir" and not sweep:
            if not auto:
                refuse_existing_run(Path(value).expanduser())
            _make_dir(Path(value).expanduser())
        if key == "hydra.sweep.dir" and sweep and not auto:
            _refuse_existing_sweep(Path(value).expanduser())


def _check_value_types(overrides: list[str], cfg: DictConfig) -> None:
    """A value whose key takes a number or a boolean (judged by the key's value without the
    override) but got a word: ``neuron.tau=abc`` is one line naming the key."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    values = [
        o
        for o in parsed
        if not (o.is_add() or o.is_delete() or o.key_or_group.startswith("hydra"))
        and not isinstance(OmegaConf.select(cfg, o.key_or_group, default=None), DictConfig)
    ]
    if not values:
        return
    value_lines = {o.input_line for o in values}
    defaults = compose_config([o for o in overrides if o not in value_lines])
    for o in values:
        key, value = o.key_or_group, o.value()
        default = OmegaConf.select(defaults, key, default=None)
        wants_bool = isinstance(default, bool)
        wants_number = isinstance(default, (int, float)) and not wants_bool
        if (wants_bool and not isinstance(value, bool)) or (
            wants_number and (isinstance(value, (str, bool)))
        ):
            kind = "true or false" if wants_bool else "a number"
            raise SnnrunError(f"{o.input_line}: {key} takes {kind} (its default is {default!r})")


def _check_values(cfg: DictConfig) -> None:
    """The run-level checks of :func:`run.check_values` (``T=0``, ``batch_size=0``...) and the
    logger's keys (``+logger.notes=x``) before Hydra creates the run dir."""
    from snnrun.loggers import check_logger_conf
    from snnrun.run import check_values

    try:
        conf = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        return  # an interpolation only a run resolves: the run checks it
    check_values(conf)  # type: ignore[arg-type]
    check_logger_conf(conf["logger"])  # type: ignore[index]


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error(e) from None


def _refuse_existing_sweep(sweep_dir: Path) -> None:
    from snnrun.rundir import RunDir

    if sweep_dir.is_dir() and any(RunDir(p).has_files() for p in sweep_dir.iterdir()):
        raise SnnrunError(
            f"{sweep_dir} already holds a sweep's runs; pick another hydra.sweep.dir (or resume "
            "a job with resume=<job dir>)"
        )
    _make_dir(sweep_dir)


def _without_append_hint(message: str) -> str:
    return re.sub(r"\s*To append to your config use \+\S+", "", message)


def _refuse_unused_keys(overrides: list[str]) -> None:
    """``+key=value`` adds a key; outside the open sections nothing would read it."""
    for a in overrides:
        if a.startswith("+"):
            key = a.lstrip("+").split("=", 1)[0]
            if key.startswith("hydra.") or key.split(".")[0] in OPEN_SECTIONS:
                continue
            raise SnnrunError(
                f"{a}: snnrun has no key {key!r} and would ignore it; see snnrun --cfg job "
                "for the keys there are"
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


def verb_options(
    verb: str,
    args: list[str],
    usage: str,
    options: Callable[[Path], T],
    set_option: Callable[[T, str, str], None],
) -> T:
    """A verb's ``<run dir> [key=value ...]``: ``options(run dir)``, then ``set_option`` for
    each pair in order; anything else is one line with the verb's usage."""
    paths = [a for a in args if "=" not in a]
    if len(paths) != 1 or paths[0].startswith("-"):
        raise SnnrunError(f"{verb} needs one run dir; usage: {usage}")
    opts = options(Path(paths[0]).expanduser())
    for key, value in (a.split("=", 1) for a in args if "=" in a):
        set_option(opts, key, value)
    return opts


def _run_verb(verb: str, args: list[str]) -> None:
    """``snnrun <verb> ...``: the verb's ``main``; no arguments or ``-h`` print its usage."""
    module_name, function = VERBS[verb].split(":")
    module = importlib.import_module(module_name)
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: {module.USAGE}")
        return
    getattr(module, function)(args)


def main() -> None:
    """Console entry point."""
    from snnrun.stop import stop_on_sigterm

    args = sys.argv[1:]
    try:
        try:
            with stop_on_sigterm():
                _dispatch(args)
        except BrokenPipeError:  # the reader went away (snnrun --help | head): not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no 2nd at exit
            sys.exit(141)  # 128 + SIGPIPE, as a shell reports a command whose reader left
        except OSError as e:
            raise os_error(e) from None
        except RuntimeError as e:  # a resume under torchrun: another rank ended
            from snnrun.distributed import peer_lost

            lost = peer_lost(e, None)
            if lost is None:
                raise
            raise lost from None
    except USER_ERRORS as e:
        _fail(e)
    except Stopped as e:
        from snnrun.distributed import world
        from snnrun.sweep import stop_hint

        if world().is_main:  # under torchrun every rank stops; rank 0 says so
            print(f"snnrun: {e}{'' if e.run_dir else stop_hint(args)}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        from snnrun.sweep import stop_hint

        print(f"snnrun: interrupted{stop_hint(args)}", file=sys.stderr)
        sys.exit(130)


def _dispatch(args: list[str]) -> None:
    if args and args[0] in VERBS:
        _run_verb(args[0], args[1:])
        return
    resume = [a for a in args if a.startswith("resume=")]
    if resume and resume[-1] not in ("resume=null", "resume=auto"):
        if "-m" in args or "--multirun" in args:
            raise SnnrunError(
                "resume one run at a time (drop -m); each sweep job has its own run dir"
            )
        _resume(resume[-1].split("=", 1)[1], [a for a in args if not a.startswith("resume=")])
        return
    if not any(a.split("=")[0] in HYDRA_FLAGS_WITHOUT_RUN for a in args):
        _share_run_dir(args)
        _check_overrides(sys.argv[1:])
    _hydra_main()
    _exit_if_sweep_failed(args)


def _share_run_dir(args: list[str]) -> None:
    """Under torchrun, every rank trains in rank 0's run dir (Hydra's timestamp could differ
    between ranks); the other ranks leave Hydra's ``.hydra/`` record to rank 0."""
    from snnrun import distributed

    world = distributed.init()
    if world.size == 1:
        return
    if "-m" in args or "--multirun" in args:
        raise SnnrunError("torchrun runs one job; sweep with -m outside torchrun")
    if not any(a.startswith("hydra.run.dir=") for a in args):
        from snnrun.rundir import default_run_dir

        sys.argv.append(f"hydra.run.dir={distributed.broadcast(str(default_run_dir()))}")
    if not world.is_main:
        sys.argv.append("hydra.output_subdir=null")


def _exit_if_sweep_failed(args: list[str]) -> None:
    from snnrun.sweep import FAILED, SUMMARY_TXT, SWEEP_DIR

    if FAILED:
        why = f"why: {SWEEP_DIR[-1] / SUMMARY_TXT} and each job's failed.txt"
        print(f"snnrun: error: {len(FAILED)} sweep job(s) failed: {', '.join(FAILED)}; {why}",
              file=sys.stderr)  # fmt: skip
        sys.exit(1)


if __name__ == "__main__":
    main()
