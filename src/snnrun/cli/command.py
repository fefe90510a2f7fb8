"""The ``snnrun`` command: training through Hydra, and tool verbs.

- ``snnrun [overrides]`` trains (Hydra composes ``conf/`` into one config; :func:`run.train`);
  ``snnrun -m a=1,2`` sweeps (one run dir per job); ``snnrun resume=<run dir>`` continues a run.
- ``snnrun viz|eval|export <run dir> [key=value ...]``: tools reading a run dir (:data:`VERBS`);
  ``snnrun runs [folder]``: the past runs with their status.

Mistakes a user can fix (unknown config names, bad values, paths, shapes, corrupt checkpoints,
a full disk) end as one line ``snnrun: error: ...``, exit 2, nothing half-written; in a sweep a
failing job (a user error or any crash) prints one line, is marked failed, the sweep goes on and
then exits 1. SIGTERM and Ctrl-C end a run between steps, exit ``128 + signal``.

This module and ``core/`` import no torch: ``--help`` never loads it; each verb and the training
run import what they use."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from snnrun.cli.options import os_error
from snnrun.cli.precheck import check_overrides, spell_out_init_from, spell_out_targets
from snnrun.core import distributed
from snnrun.core.errors import SnnrunError, one_line
from snnrun.core.stop import Stopped

USER_ERRORS = (SnnrunError, OmegaConfBaseException)


HELP_FLAGS = ("--help", "-h", "--hydra-help")
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
VERBS = ("viz", "eval", "export", "runs")


def _error_line(error: BaseException) -> str:
    return f"snnrun: error: {one_line(error)}"


def _fail(error: BaseException) -> None:
    print(_error_line(error), file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="pkg://snnrun.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> Any:
    """Hydra's task: one training run in Hydra's run (or sweep job) dir; its best test
    accuracy, or a sweep job's :class:`~snnrun.run.sweep.JobFailed` (any exception)."""
    from snnrun.core.stop import peer_lost
    from snnrun.run.session import train
    from snnrun.run.sweep import fail_job

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
    from snnrun.cli.precheck import refuse_idle_early_stopping
    from snnrun.run.resume import resume_config
    from snnrun.run.session import train

    if target.startswith("wandb:"):
        from snnrun.run.rundir import default_run_dir
        from snnrun.run.wandb_resume import fetch_run

        dirs = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")]
        overrides = [o for o in overrides if not o.startswith("hydra.run.dir=")]
        target = str(fetch_run(target, Path(dirs[-1]) if dirs else default_run_dir()))
    cfg, run_dir, all_overrides, checkpoint = resume_config(target, overrides)
    refuse_idle_early_stopping([o for o in overrides if "=" in o], cfg.get("early_stopping") or {})
    train(cfg, run_dir, all_overrides, checkpoint)


def _run_verb(verb: str, args: list[str]) -> None:
    """``snnrun <verb> ...``: the verb's ``main``; ``-h`` prints its usage, and so does no
    argument unless the verb needs none (``ARGS_OPTIONAL``: ``snnrun runs``)."""
    module = _verb_module(verb)
    bare = not args and not getattr(module, "ARGS_OPTIONAL", False)
    if bare or (args and args[0] in ("-h", "--help")):
        print(f"usage: {module.USAGE}")
        return
    module.main(args)


def _verb_module(verb: str) -> ModuleType:
    """The module of ``verb`` (one of :data:`VERBS`), imported now."""
    if verb == "viz":
        from snnrun.cli import viz as module
    elif verb == "eval":
        from snnrun.cli import evaluate as module
    elif verb == "export":
        from snnrun.cli import export as module
    else:
        from snnrun.cli import runs as module
    return module


def main() -> None:
    """Console entry point."""
    from snnrun.core.stop import stop_on_sigterm

    spell_out_init_from(sys.argv)
    spell_out_targets(sys.argv)
    args = sys.argv[1:]
    try:
        try:
            with stop_on_sigterm():
                _dispatch(args)
            distributed.shutdown()
        except BrokenPipeError:  # the reader went away (snnrun --help | head): not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no 2nd at exit
            sys.exit(141)  # 128 + SIGPIPE, as a shell reports a command whose reader left
        except OSError as e:
            raise os_error(e) from None
        except RuntimeError as e:  # a resume under torchrun: another rank ended
            from snnrun.core.stop import peer_lost

            lost = peer_lost(e, None)
            if lost is None:
                raise
            raise lost from None
    except USER_ERRORS as e:
        _fail(e)
    except Stopped as e:
        from snnrun.core.distributed import world
        from snnrun.run.sweep import stop_hint

        if world().is_main:  # under torchrun every rank stops; rank 0 says so
            print(f"snnrun: {e}{'' if e.run_dir else stop_hint(args)}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        from snnrun.run.sweep import stop_hint

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
    if any(a in HELP_FLAGS for a in args):
        with _one_repository_copy():
            _hydra_main()
        return
    if not any(a.split("=")[0] in HYDRA_FLAGS_WITHOUT_RUN for a in args):
        _share_run_dir(args)
        check_overrides(sys.argv[1:])
    _hydra_main()
    _exit_if_sweep_failed(args)


@contextmanager
def _one_repository_copy() -> Iterator[None]:
    """Hydra's help lists the config groups with a deep copy of its whole config repository per
    group (about 140 copies: 80% of ``snnrun --help``'s time); within the block, a config loader
    copies it once per set of overrides and keeps that copy."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    make = getattr(ConfigLoaderImpl, "_parse_overrides_and_create_caching_repo", None)
    if make is None:  # another Hydra: its help as it is, only slower
        yield
        return

    def once(self: ConfigLoaderImpl, config_name: str | None, overrides: list[str]) -> Any:
        repos = self.__dict__.setdefault("_snnrun_repos", {})
        key = (config_name, tuple(overrides))
        if key not in repos:
            parsed, repos[key] = make(self, config_name, overrides)
            return parsed, repos[key]
        return OverridesParser.create().parse_overrides(overrides=overrides), repos[key]

    ConfigLoaderImpl._parse_overrides_and_create_caching_repo = once  # type: ignore[method-assign]
    try:
        yield
    finally:
        ConfigLoaderImpl._parse_overrides_and_create_caching_repo = make  # type: ignore[method-assign]


def _share_run_dir(args: list[str]) -> None:
    """Under torchrun, every rank trains in rank 0's run dir (Hydra's timestamp could differ
    between ranks); the other ranks leave Hydra's ``.hydra/`` record to rank 0."""
    world = distributed.init()
    if world.size == 1:
        return
    if "-m" in args or "--multirun" in args:
        raise SnnrunError("torchrun runs one job; sweep with -m outside torchrun")
    if not any(a.startswith("hydra.run.dir=") for a in args):
        from snnrun.run.rundir import default_run_dir

        sys.argv.append(f"hydra.run.dir={distributed.broadcast(str(default_run_dir()))}")
    if not world.is_main:
        sys.argv.append("hydra.output_subdir=null")


def _exit_if_sweep_failed(args: list[str]) -> None:
    sweep = sys.modules.get("snnrun.run.sweep")  # never imported: no job ran, none failed
    if sweep is None:
        return
    if sweep.FAILED:
        why = f"why: {sweep.SWEEP_DIR[-1] / sweep.SUMMARY_TXT} and each job's failed.txt"
        failed = sweep.FAILED
        print(f"snnrun: error: {len(failed)} sweep job(s) failed: {', '.join(failed)}; {why}",
              file=sys.stderr)  # fmt: skip
        sys.exit(1)


if __name__ == "__main__":
    main()
