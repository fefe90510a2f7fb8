"""Config composition: every group choice composes and resolves; combinations do too."""

from __future__ import annotations

import random

import pytest
from omegaconf import OmegaConf

from snnrun.run.resume import GROUPS

from conftest import REPO, compose

CONF = REPO / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


GROUP_CHOICES = [(g, o) for g in GROUPS for o in options(g)]


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert options(group), f"conf/{group} is empty"


@pytest.mark.parametrize(
    ("group", "option"), GROUP_CHOICES, ids=[f"{g}={o}" for g, o in GROUP_CHOICES]
)
def test_each_choice_composes_and_resolves(group: str, option: str) -> None:
    cfg = compose([f"{group}={option}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key in ("T", "epochs", "batch_size", "seed", "device", "resume"):
        assert key in resolved
    if group == "logger":  # several loggers merge: each says which it is in use
        assert resolved[group]["use"] == ({} if option == "none" else {option: True})
    elif group not in ("experiment", "hparams_search"):  # global overlays
        assert resolved[group]["name"] is not None  # the "which one" key of every group


def test_random_combinations_compose() -> None:
    """One choice per group, 40 random combinations: all compose and resolve."""
    groups = {g: options(g) for g in GROUPS if g != "experiment"}
    rng = random.Random(0)
    for _ in range(40):  # drawn per group (listing the whole product took a minute and GBs)
        cfg = compose([f"{g}={rng.choice(choices)}" for g, choices in groups.items()])
        OmegaConf.to_container(cfg, resolve=True)


def test_required_override_keys_exist() -> None:
    cfg = compose(
        [
            "T=3",
            "epochs=2",
            "batch_size=8",
            "seed=1",
            "device=cpu",
            "dataset.root=/x",
            "dataset=mnist",
            "dataset.train_limit=10",
            "dataset.test_limit=5",
            "neuron=lif",
            "neuron.backend=torch",
            "neuron.tau=3.0",
            "neuron.v_threshold=0.5",
            "neuron.v_reset=null",
            "neuron.detach_reset=true",
            "surrogate.alpha=3.0",
            "optimizer.lr=0.5",
            "model.channels=8",
        ]
    )
    assert (cfg.T, cfg.epochs, cfg.neuron.tau, cfg.neuron.v_reset) == (3, 2, 3.0, None)
    assert OmegaConf.to_container(cfg.model, resolve=True)["layers"][9]["out_features"] == 8 * 16


def test_cosine_t_max_follows_epochs() -> None:
    assert compose(["epochs=7"]).scheduler.T_max == 7


def test_the_plain_command_is_a_small_run_that_learns_quickly() -> None:
    """``snnrun`` with no arguments: the digits with a 16-channel csnn for 8 epochs (~1.5 s an
    epoch on 2 cores, 0.92 after epoch 2; it was 128 channels, 13M parameters, ~100 s an epoch),
    and the recipes still set the papers' 128 channels."""
    from snnrun.net.model import build_model
    from snnrun.run.build import neuron_groups

    conf = OmegaConf.to_container(compose([]), resolve=True)
    assert conf["dataset"]["name"] == "digits" and conf["epochs"] <= 10
    model = build_model(conf["model"], neuron_groups(conf), (1, 28, 28), 10)
    assert sum(p.numel() for p in model.parameters()) < 300_000
    recipe = OmegaConf.to_container(compose(["experiment=fmnist_csnn"]), resolve=True)
    assert recipe["model"]["channels"] == 128


def test_deleting_a_key_a_recipe_sets_passes_the_precheck() -> None:
    """``~optimizer.momentum`` after a recipe's sgd section, beside a value override: the
    pre-check composes it as Hydra does (it was a traceback from the value-type check)."""
    from snnrun.cli.precheck import check_overrides

    args = ["experiment=fmnist_csnn", "optimizer=adam", "~optimizer.momentum", "epochs=0"]
    check_overrides(args)
    assert "momentum" not in compose(args).optimizer and compose(args).optimizer.name == "adam"
