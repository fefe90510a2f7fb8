"""Before Hydra writes anything: the overrides compose (of a sweep, its first job), added keys
are read by something, every ``_target_`` in the groups imports, values have the right types and
ranges, logger keys exist, early stopping's keys are not tuned while it is off, and the run or
sweep dir does not hold runs already. Every refusal is one line."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from snnrun.cli.options import os_error
from snnrun.core.compose import compose_config, config_dir_overrides
from snnrun.core.errors import SnnrunError, one_line
from snnrun.core.plugin import TARGET, import_target

# sections whose builders take their keys as keyword arguments and refuse unknown ones
OPEN_SECTIONS = ("model", "neuron", "surrogate", "dataset", "encoder", "loss", "optimizer",
                 "scheduler", "logger")  # fmt: skip
# groups that may name the user's code by _target_ (and each callbacks.<name>)
TARGET_GROUPS = ("loss", "dataset", "encoder", "optimizer", "scheduler", "surrogate", "augment",
                 "monitor")  # fmt: skip


def spell_out_init_from(argv: list[str]) -> None:
    """``init_from=<run dir>`` is short for ``init_from.path=<run dir>`` (``init_from`` is a
    section: ``init_from.strict``, ``init_from.which``); rewritten in place, before Hydra."""
    for i, arg in enumerate(argv):
        if arg.startswith("init_from="):
            argv[i] = "init_from.path=" + arg.split("=", 1)[1]


def spell_out_targets(argv: list[str]) -> None:
    """``loss._target_=my_pkg.TET`` sets the key whether or not the group has it (as
    ``++loss._target_=...``: a built-in group has none, a user's YAML may); rewritten in place,
    before Hydra."""
    for i, arg in enumerate(argv):
        key = arg.split("=", 1)[0]
        if "=" in arg and key.endswith("." + TARGET) and not key.startswith(("+", "~")):
            argv[i] = "++" + arg


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


def check_overrides(args: list[str]) -> None:
    """Before Hydra writes anything: the overrides (of the first job) compose, added keys are
    used, and the run or sweep dir does not hold runs already."""
    overrides = _value_args(args) + config_dir_overrides(args)
    sweep = "-m" in args or "--multirun" in args
    auto = "resume=auto" in overrides  # a relaunched job continues its dir's run
    job = _first_job(overrides) if sweep else overrides
    try:
        cfg = compose_config(job)
    except Exception as e:
        raise SnnrunError(_without_append_hint(one_line(e)) + _known_keys_hint(str(e), overrides)
                          ) from None  # fmt: skip
    _refuse_unused_keys(overrides, cfg)
    import_targets(cfg)
    _check_value_types(job, cfg)
    refuse_idle_early_stopping(overrides, cfg.get("early_stopping") or {})
    _check_values(cfg)
    for a in overrides:
        key, _, value = a.partition("=")
        if key == "hydra.run.dir" and not sweep:
            if not auto:
                from snnrun.run.build import refuse_existing_run  # torch: only for a run dir

                refuse_existing_run(Path(value).expanduser())
            _make_dir(Path(value).expanduser())
        if key == "hydra.sweep.dir" and sweep and not auto:
            _refuse_existing_sweep(Path(value).expanduser())


def import_targets(cfg: DictConfig) -> None:
    """Every ``_target_`` of the groups (and of ``callbacks.<name>``) imports: a missing module
    or class is one line naming it (and ``PYTHONPATH``) before anything is written."""
    for label in [*TARGET_GROUPS, *_callback_labels(cfg)]:
        try:
            target = OmegaConf.select(cfg, f"{label}.{TARGET}", default=None)
        except OmegaConfBaseException:
            continue  # an interpolation only a run resolves: the run imports it
        if target is not None:
            import_target(target, label)


def _callback_labels(cfg: DictConfig) -> list[str]:
    callbacks = cfg.get("callbacks")
    return [f"callbacks.{name}" for name in callbacks] if isinstance(callbacks, DictConfig) else []


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
    try:
        defaults = compose_config([o for o in overrides if o not in value_lines])
    except Exception:  # the rest composes only with the values: no defaults to judge them by
        return
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


def refuse_idle_early_stopping(overrides: list[str], options: Mapping[str, Any]) -> None:
    """``early_stopping.patience`` (or ``min_delta``, ``mode``) given while early stopping is
    off (``early_stopping.monitor: null``, the default) would change nothing: one line naming
    the switch. A sweep over the monitor itself (``monitor=null,val_acc``) is left alone."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    swept = any(o.key_or_group == "early_stopping.monitor" and o.is_sweep_override()
                for o in parsed)  # fmt: skip
    if options.get("monitor") or swept:
        return
    for o in parsed:
        if o.key_or_group in ("early_stopping.patience", "early_stopping.min_delta",
                              "early_stopping.mode"):  # fmt: skip
            raise SnnrunError(
                f"{o.input_line}: early stopping is off (early_stopping.monitor=null) and would "
                "ignore it; turn it on with early_stopping.monitor=auto (val_acc with "
                "dataset.val_fraction > 0, else test_acc) or early_stopping.monitor=<record key> "
                "(val_loss, train_loss, ...)"
            )


def _check_values(cfg: DictConfig) -> None:
    """The run-level checks of :func:`run.check_values` (``T=0``, ``batch_size=0``...) and the
    logger's keys (``+logger.notes=x``) and ``init_from``'s source before Hydra creates the run
    dir."""
    from snnrun.engine.callback import check_early_stopping
    from snnrun.run.build import check_values
    from snnrun.run.init_from import check_init_from
    from snnrun.run.logger import check_logger_conf

    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        return  # an interpolation only a run resolves: the run checks it
    check_values(config)  # type: ignore[arg-type]
    check_early_stopping(config.get("early_stopping") or {})  # type: ignore[union-attr]
    check_logger_conf(config["logger"])  # type: ignore[index]
    if config.get("resume") != "auto":  # a resume never re-applies it: its source may be gone
        check_init_from(config)  # type: ignore[arg-type]


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error(e) from None


def _refuse_existing_sweep(sweep_dir: Path) -> None:
    from snnrun.run.rundir import RunDir

    if sweep_dir.is_dir() and any(RunDir(p).has_files() for p in sweep_dir.iterdir()):
        raise SnnrunError(
            f"{sweep_dir} already holds a sweep's runs; pick another hydra.sweep.dir (or resume "
            "a job with resume=<job dir>)"
        )
    _make_dir(sweep_dir)


def _without_append_hint(message: str) -> str:
    return re.sub(r"\s*To append to your config use \+\S+", "", message)


def _refuse_unused_keys(overrides: list[str], cfg: DictConfig) -> None:
    """``+key=value`` adds a key; outside the open sections (and the groups naming the user's
    code by ``_target_``, whose keys are its arguments) nothing would read it."""
    for a in overrides:
        if a.startswith("+"):
            key = a.lstrip("+").split("=", 1)[0]
            if (
                key.startswith("hydra.")
                or key.split(".")[0] in OPEN_SECTIONS
                or _has_target(cfg, key.rsplit(".", 1)[0])
            ):
                continue
            raise SnnrunError(
                f"{a}: snnrun has no key {key!r} and would ignore it; see snnrun --cfg job "
                "for the keys there are"
            )


def _has_target(cfg: DictConfig, key: str) -> bool:
    """Whether the mapping at ``key`` (``monitor``, ``callbacks.mine``) names a ``_target_``."""
    try:
        node = OmegaConf.select(cfg, key, default=None)
    except OmegaConfBaseException:
        return False
    return isinstance(node, DictConfig) and node.get(TARGET) is not None


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
