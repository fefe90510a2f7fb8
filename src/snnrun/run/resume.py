"""``snnrun resume=<run dir | checkpoint>``: validate everything before touching the run dir.

The resumed run uses the run's saved config. Only keys that do not contradict the
checkpoint's state may change on the command line (:data:`RESUMABLE`: ``epochs``, ``device``,
``dataset.root``, ``logger.*`` ...). ``epochs`` is the run's total: one that would train nothing
(not more than the epochs done) is refused, as it would only make ``config.yaml`` contradict
the checkpoint; a new ``epochs`` also moves a cosine schedule whose ``T_max`` followed it (the
change is printed and recorded, see ``optim.follow_horizon``). The run's original overrides
must still compose with the current ``conf/``; keys whose current default differs from the
saved value are reported (the saved value is kept). Only ``checkpoint_latest.pt`` can be
resumed (continuing an older checkpoint would overwrite the epochs after it), and only in the
dir whose ``run.json`` names its run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from snnrun.core.compose import compose_config, flatten
from snnrun.core.errors import SnnrunError, one_line
from snnrun.run.checkpoint import Checkpoint
from snnrun.run.logger import logger_names
from snnrun.run.rundir import RunDir, find_run_dir

GROUPS = (
    "model",
    "neuron",
    "surrogate",
    "dataset",
    "augment",
    "encoder",
    "loss",
    "optimizer",
    "scheduler",
    "precision",
    "logger",
    "monitor",
    "viz",
    "experiment",
    "hparams_search",
)


# Keys a resume may change (a trailing dot: the whole section).
RESUMABLE = (
    "epochs",
    "device",
    "num_workers",
    "log_every",
    "compile",
    "allow_new_data",
    "dataset.root",
    "dataset.cache_dir",
    "scheduler.T_max",
    "logger.",
    "monitor.",
    "viz.",
    "early_stopping.",
    "memory.",  # every plan trains the same numbers: a resume may pick another
)


class ResumeError(SnnrunError):
    """A resume request that cannot be honoured; the run dir is left as it was."""


def resume_config(
    target: str, new_overrides: list[str]
) -> tuple[DictConfig, Path, list[str], Checkpoint]:
    """(config to run, run dir, overrides to record, checkpoint) for resuming ``target``."""
    rundir, which = find_run_dir(target)
    if which != "latest":
        raise ResumeError(
            f"resume continues a run from its checkpoint_latest.pt; checkpoint_{which}.pt would "
            "overwrite the epochs after it (start a new run to branch from it)"
        )
    payload = rundir.load_checkpoint("latest")
    saved_overrides = [o for o in payload.get("overrides", []) if not o.startswith("resume=")]
    parsed = _parse(new_overrides)
    cfg = OmegaConf.create(payload["config"])
    OmegaConf.set_struct(cfg, True)
    keys = {k for k, _ in parsed}
    if "epochs" in keys:
        _check_epochs(dict(parsed)["epochs"], payload["state"]["epoch"], cfg.epochs)
    if "epochs" in keys and "scheduler.T_max" not in keys and _follows_epochs(cfg):
        parsed.append(("scheduler.T_max", dict(parsed)["epochs"]))
    for key, value in parsed:
        _apply(cfg, key, value)
    try:
        current = compose_config(saved_overrides + new_overrides)
    except Exception as e:
        raise ResumeError(
            f"the run's config no longer composes with conf/ ({one_line(e)}); "
            "restore the missing config or start a new run"
        ) from None
    cfg.resume = str(rundir.checkpoint("latest"))
    _add_new_keys(cfg, current)
    _report_drift(cfg, current, {k for k, _ in parsed})
    return cfg, rundir.path, saved_overrides + new_overrides, payload


def _check_epochs(epochs: Any, done: int, saved: int) -> None:
    """``epochs`` (the run's total) must leave epochs to train, or be the run's own value."""
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs == saved:
        return  # a non-integer is refused with the config's other values
    if epochs <= done:
        more = epochs if epochs > 0 else 1
        raise ResumeError(
            f"this run has done {done} epochs, so epochs={epochs} would train nothing (epochs "
            f"is the run's total, not the epochs to add); pass epochs={done + more} to train "
            f"{more} more"
        )


def _apply(cfg: DictConfig, key: str, value: Any) -> None:
    section = key.rsplit(".", 1)[0] if "." in key else None
    if section and OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
        node = OmegaConf.select(cfg, section)
        keys = ", ".join(map(str, node.keys())) if isinstance(node, DictConfig) else "none"
        name = OmegaConf.select(cfg, f"{section}.name", default=None)
        if section == "logger" and isinstance(node, DictConfig):  # names in use: {wandb: true}
            name = "+".join(logger_names(OmegaConf.to_container(node))) or "none"
        which = f"{section}={name}" if name else section
        raise ResumeError(
            f"cannot set {key} on resume: this run's {which} has no {key.rsplit('.', 1)[1]!r} "
            f"(its keys: {keys}); the {section} group cannot change when resuming"
        )
    try:
        OmegaConf.update(cfg, key, value, merge=False)
    except OmegaConfBaseException as e:
        raise ResumeError(f"cannot apply {key}={value} on resume: {one_line(e)}") from None


def _add_new_keys(saved: DictConfig, current: DictConfig) -> None:
    """Keys added to conf/ since the run started take today's default (said once each)."""
    from snnrun.core.progress import console

    known = flatten(OmegaConf.to_container(saved, resolve=True))
    for key, value in flatten(OmegaConf.to_container(current, resolve=True)).items():
        if key not in known:
            OmegaConf.update(saved, key, value, force_add=True)
            console.print(f"[yellow]note:[/] {key} is new in conf/ since this run started; "
                          f"using its default {value!r}")  # fmt: skip


def _follows_epochs(cfg: DictConfig) -> bool:
    """Whether the run's schedule horizon was its epoch count (cosine's default)."""
    return OmegaConf.select(cfg, "scheduler.T_max") == cfg.epochs


def _parse(overrides: list[str]) -> list[tuple[str, Any]]:
    """Value overrides as (key, value); group changes and sweeps are refused."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:
        raise ResumeError(f"bad override: {one_line(e)}") from None
    result = []
    for o in parsed:
        key = o.key_or_group
        if key in GROUPS or key.startswith("hydra"):
            raise ResumeError(f"cannot change {key} when resuming; start a new run instead")
        if not _resumable(key):
            raise ResumeError(
                f"cannot change {key} when resuming (the checkpoint holds the "
                f"state it set up); resume may change: {', '.join(RESUMABLE)}"
            )
        if o.is_sweep_override():
            raise ResumeError(f"cannot sweep {key} when resuming; resume one run at a time")
        result.append((key, o.value()))
    return result


def auto_resume(rundir: RunDir, config: dict[str, Any]) -> Checkpoint | None:
    """``resume=auto``: the dir's latest checkpoint when it holds a run of this config (keys a
    resume may change aside, and keys added to conf/ since the run started); None when it holds
    no run."""
    from snnrun.core.progress import console

    if not rundir.holds_run():
        return None
    payload = rundir.load_checkpoint("latest")
    saved = payload["config"]
    differs = config_diff(saved, _counts_as_saved(config, saved), skip=_resumable)
    differs = [(k, was, now) for k, was, now in differs if was is not ABSENT]
    if differs:
        k, was, now = differs[0]
        raise ResumeError(
            f"resume=auto: {rundir.path} holds a run of another config ({k}={was!r} "
            f"there, {now!r} here); pick another hydra.run.dir"
        )
    console.print(f"resume=auto: continuing the run in {rundir.path}")
    return payload


def _counts_as_saved(now: Any, saved: Any) -> Any:
    """``now`` with each ``auto`` class count (``model.classes``, a layer's ``out_features``)
    read as the number ``saved`` holds in its place: a run made when the counts were written
    out is the same run (its data, and so its count, is checked apart)."""
    if now == "auto" and isinstance(saved, int):  # net.layers.AUTO (net imports torch)
        return saved
    if isinstance(now, dict) and isinstance(saved, dict):
        return {k: _counts_as_saved(v, saved.get(k)) for k, v in now.items()}
    if isinstance(now, list) and isinstance(saved, list) and len(now) == len(saved):
        return [_counts_as_saved(v, w) for v, w in zip(now, saved, strict=True)]
    return now


def _report_drift(saved: DictConfig, current: DictConfig, overridden: set[str]) -> None:
    """Warn about keys whose value in today's conf/ differs from the saved run's."""
    from snnrun.core.progress import console
    from snnrun.run.build import resolve_paths

    now = resolve_paths(current)  # paths absolute, NIR files pinned, as a run's
    skip = {*overridden, "dataset.root", "dataset.cache_dir"}
    for key, was, today in config_diff(OmegaConf.to_container(saved, resolve=True), now,
                                       skip=skip.__contains__):  # fmt: skip
        console.print(
            f"[yellow]note:[/] {key} is {_shown(today)} in conf/ today but {_shown(was)} in "
            "this run; keeping the run's value"
        )


ABSENT = object()  # a key one side of a diff does not have


def _shown(value: Any) -> str:
    return "None" if value is ABSENT else repr(value)


def config_diff(
    saved: dict[str, Any],
    now: dict[str, Any],
    skip: Callable[[str], bool] = lambda k: False,
) -> list[tuple[str, Any, Any]]:
    """The one config diff: ``(dotted key, saved value, value now)`` for every leaf that
    differs (``ABSENT`` where a side lacks it; a list is one leaf), ``resume`` and keys ``skip``
    names aside, in the order of ``saved``'s keys, then ``now``'s own."""
    flat_saved, flat_now = flatten(saved), flatten(now)
    return [
        (k, flat_saved.get(k, ABSENT), flat_now.get(k, ABSENT))
        for k in dict.fromkeys([*flat_saved, *flat_now])
        if k != "resume" and not skip(k) and flat_saved.get(k, ABSENT) != flat_now.get(k, ABSENT)
    ]


def _resumable(key: str) -> bool:
    return any(key == r or (r.endswith(".") and key.startswith(r)) for r in RESUMABLE)
