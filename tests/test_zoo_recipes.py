"""The zoo recipes (conf/experiment/): each composes with its paper's settings, and a reduced
form of each trains one epoch through the command on files written in the dataset's own format."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_events import random_events, write_aedat2, write_aedat3
from test_images import write_cifar

from snnrun.net.model import build_model
from snnrun.run.build import neuron_groups

from conftest import compose, read_metrics, train_in_process

# The settings each recipe cites (see the recipe's header for the source of each).
PAPER = {
    "cifar10_spikformer": {
        "T": 4, "epochs": 310, "batch_size": 128, "model.name": "spikformer",
        "model.embed_dim": 384, "model.depths": 4, "model.heads": 12, "dataset.name": "cifar10",
        "neuron.name": "lif", "neuron.tau": 2.0, "neuron.detach_reset": True,
        "optimizer.name": "adamw", "optimizer.lr": 5e-4, "optimizer.weight_decay": 0.06,
        "optimizer.decay_bias_and_norm": False,
        "scheduler.name": "cosine", "scheduler.eta_min": 1e-5, "scheduler.warmup_epochs": 20,
        "scheduler.warmup_lr": 1e-5, "scheduler.cooldown_epochs": 10, "loss.name": "ce_rate",
        "loss.label_smoothing": 0.1, "augment.flip": True, "augment.crop_padding": 0,
        "augment.randaugment": 1, "augment.randaugment_magnitude": 27,
        "augment.random_erasing": 0.25, "augment.random_erasing_mode": "const",
        "mixup.alpha": 0.5, "mixup.cutmix_alpha": 0.0, "mixup.prob": 1.0, "mixup.off_epoch": 200,
    },
    "cifar10dvs_tet": {
        "T": 10, "epochs": 100, "batch_size": 128, "model.name": "vggsnn", "model.resize": 48,
        "dataset.name": "cifar10dvs", "dataset.split_by": "number", "dataset.augment.flip": True,
        "dataset.augment.nda": True, "neuron.name": "lif", "neuron.tau": 2.0,
        "neuron.decay_input": False, "surrogate.name": "triangle", "optimizer.name": "adam",
        "optimizer.lr": 1e-3, "scheduler.name": "cosine", "loss.name": "tet",
        "loss.lambda": 1e-4, "loss.phi": 1.0, "precision.name": "fp32",
    },
    "cifar10_sew_resnet18": {
        "T": 4, "epochs": 320, "batch_size": 256, "model.name": "sew_resnet18",
        "model.stem": "cifar", "model.connect": "add", "dataset.name": "cifar10",
        "neuron.name": "if", "neuron.detach_reset": True, "optimizer.name": "sgd",
        "optimizer.lr": 0.1, "optimizer.momentum": 0.9, "scheduler.name": "cosine",
        "loss.name": "ce_rate",
    },
    "cifar10dvs_sew_resnet": {
        "T": 16, "epochs": 64, "batch_size": 16, "model.name": "sew_resnet_dvs",
        "model.connect": "add", "dataset.name": "cifar10dvs",
        "dataset.train_ratio": 0.9, "dataset.split_by": "number", "neuron.name": "plif",
        "neuron.init_tau": 2.0, "neuron.detach_reset": True, "optimizer.name": "sgd",
        "optimizer.lr": 0.01, "scheduler.name": "cosine", "scheduler.T_max": 64,
        "loss.name": "ce_rate",
    },
    "dvsgesture_sew_resnet": {
        "T": 16, "epochs": 192, "batch_size": 16, "model.name": "sew_resnet_dvs",
        "model.channels": 32, "model.blocks": 7, "model.connect": "add",
        "dataset.name": "dvsgesture", "dataset.split_by": "number", "neuron.name": "plif",
        "neuron.init_tau": 2.0, "neuron.detach_reset": True, "optimizer.name": "sgd",
        "optimizer.lr": 0.001, "optimizer.momentum": 0.9, "scheduler.name": "step",
        "scheduler.step_size": 64, "scheduler.gamma": 0.1, "loss.name": "ce_rate",
    },
    "cifar10_sdt": {
        "T": 4, "epochs": 310, "batch_size": 64, "model.name": "spike_driven_transformer",
        "model.embed_dim": 512, "model.depths": 2, "model.heads": 8, "model.mlp_ratio": 4,
        "dataset.name": "cifar10", "neuron.name": "lif", "neuron.tau": 2.0,
        "neuron.detach_reset": True, "surrogate.name": "sigmoid", "surrogate.alpha": 4.0,
        "optimizer.name": "adamw", "optimizer.lr": 3e-4, "optimizer.weight_decay": 0.06,
        "optimizer.decay_bias_and_norm": False,
        "scheduler.name": "cosine", "scheduler.eta_min": 1e-5, "scheduler.warmup_epochs": 20,
        "scheduler.warmup_lr": 1e-6, "scheduler.cooldown_epochs": 10, "loss.name": "ce_rate",
        "loss.label_smoothing": 0.1, "augment.flip": True, "augment.crop_padding": 0,
        "augment.randaugment": 1, "augment.randaugment_magnitude": 27,
        "augment.random_erasing": 0.0, "mixup.alpha": 0.5, "mixup.cutmix_alpha": 0.0,
        "mixup.prob": 1.0, "mixup.off_epoch": 200, "precision.name": "fp32",
    },
    "cifar10_qkformer": {
        "T": 4, "epochs": 410, "batch_size": 64, "model.name": "qkformer", "model.stem": "cifar",
        "model.embed_dim": 384, "model.mlp_ratio": 4, "model.attention": "token",
        "dataset.name": "cifar10", "neuron.name": "lif", "neuron.tau": 2.0,
        "neuron.detach_reset": True, "surrogate.name": "sigmoid", "surrogate.alpha": 4.0,
        "optimizer.name": "adamw", "optimizer.lr": 1e-3, "optimizer.weight_decay": 0.06,
        "optimizer.decay_bias_and_norm": False,
        "scheduler.name": "cosine", "scheduler.eta_min": 1e-5, "scheduler.warmup_epochs": 20,
        "scheduler.warmup_lr": 1e-5, "scheduler.cooldown_epochs": 10, "loss.name": "ce_rate",
        "loss.label_smoothing": 0.1, "augment.flip": True, "augment.crop_padding": 0,
        "augment.randaugment": 1, "augment.randaugment_magnitude": 27,
        "augment.random_erasing": 0.25, "augment.random_erasing_mode": "const",
        "mixup.alpha": 0.5, "mixup.cutmix_alpha": 0.0, "mixup.prob": 1.0, "mixup.off_epoch": 200,
        "precision.name": "amp_fp16",
    },
    "cifar10_ms_resnet": {
        "T": 6, "epochs": 125, "batch_size": 256, "model.name": "ms_resnet18",
        "model.stem": "cifar", "dataset.name": "cifar10", "neuron.name": "lif",
        "neuron.tau": 4 / 3, "neuron.decay_input": False, "neuron.v_threshold": 0.5,
        "neuron.v_reset": 0.0, "neuron.detach_reset": True, "surrogate.name": "rectangle",
        "surrogate.width": 1.0, "optimizer.name": "sgd", "optimizer.lr": 0.1,
        "optimizer.momentum": 0.9, "optimizer.weight_decay": 1e-5, "scheduler.name": "cosine",
        "scheduler.eta_min": 0.0, "loss.name": "ce_rate", "loss.label_smoothing": 0.1,
        "augment.crop_padding": 4, "augment.flip": True, "augment.autoaugment": True,
        "precision.name": "amp_fp16",
    },
}  # fmt: skip


def resolved(*overrides: str) -> dict:
    return OmegaConf.to_container(compose(list(overrides)), resolve=True)


def lookup(conf: dict, key: str) -> object:
    for part in key.split("."):
        conf = conf[part]
    return conf


@pytest.mark.parametrize("name", list(PAPER))
def test_recipe_composes_with_its_papers_settings(name: str) -> None:
    conf = resolved(f"experiment={name}")
    got = {key: lookup(conf, key) for key in PAPER[name]}
    assert got == pytest.approx(PAPER[name])
    assert conf["optimizer"]["weight_decay"] == PAPER[name].get("optimizer.weight_decay", 0.0)
    assert conf["precision"]["name"] == PAPER[name].get("precision.name", "amp_fp16")


@pytest.mark.parametrize("name", [n for n in PAPER if PAPER[n]["scheduler.name"] == "cosine"])
def test_cosine_recipes_anneal_over_the_run_they_are_given(name: str) -> None:
    assert resolved(f"experiment={name}", "epochs=30")["scheduler"]["T_max"] == 30


def test_spikformer_recipe_is_the_papers_4_384() -> None:
    """9,310,906 parameters for 10 classes: SpikingJelly 2.0's spikformer_cifar10 (the paper's
    9.32M); the augmentation keeps the authors' whole image (no padded crop)."""
    conf = resolved("experiment=cifar10_spikformer")
    model = build_model(conf["model"], neuron_groups(conf), (3, 32, 32), 10)
    assert sum(p.numel() for p in model.parameters()) == 9_310_906
    assert conf["augment"]["crop_padding"] == 0 and conf["augment"]["flip"]


# --- reduced runs through the command ------------------------------------------------------
def cifar10_files(root: Path) -> None:
    write_cifar(root)  # 5 x 16 train, 16 test images


def cifar10dvs_files(root: Path) -> None:
    """Two recordings per class in the original release's layout (AEDAT 2)."""
    classes = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")  # fmt: skip
    for c in classes:
        for i in range(2):
            ev = random_events(200, 128, seed=i)
            write_aedat2(root / "CIFAR10DVS" / c / f"cifar10_{c}_{i}.aedat", ev)


def dvsgesture_files(root: Path) -> None:
    """Two IBM recordings (AEDAT 3.1) cut by their label files: user01 trains, user24 tests."""
    folder = root / "DvsGesture"
    for seed, name in enumerate(("user01_fluorescent", "user24_led")):
        write_aedat3(folder / f"{name}.aedat", random_events(600, 128, seed, duration=6_000_000))
        (folder / f"{name}_labels.csv").write_text(
            "class,startTime_usec,endTime_usec\n3,1000000,2000000\n11,2500000,4000000\n"
        )


REDUCED: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "cifar10_spikformer": (cifar10_files, [
        "model.embed_dim=16", "model.heads=2", "model.depths=1", "dataset.train_limit=32",
        "dataset.test_limit=16", "batch_size=16", "scheduler.warmup_epochs=0.5",
        "scheduler.cooldown_epochs=0.5"]),
    "cifar10_sew_resnet18": (cifar10_files, [
        "model.width=4", "model.blocks=[1,1,1,1]", "dataset.train_limit=32",
        "dataset.test_limit=16", "batch_size=16"]),
    "cifar10dvs_sew_resnet": (cifar10dvs_files, [
        "model.channels=4", "model.blocks=2", "dataset.train_ratio=0.5", "batch_size=5"]),
    "dvsgesture_sew_resnet": (dvsgesture_files, [
        "model.channels=4", "model.blocks=2", "batch_size=2"]),
    "cifar10_sdt": (cifar10_files, [
        "model.embed_dim=16", "model.heads=2", "model.depths=1", "dataset.train_limit=32",
        "dataset.test_limit=16", "batch_size=16", "scheduler.warmup_epochs=0.5",
        "scheduler.cooldown_epochs=0.5"]),
    "cifar10_qkformer": (cifar10_files, [
        "model.embed_dim=32", "model.heads=[2,2,2]", "model.depths=[1,1,1]",
        "dataset.train_limit=32", "dataset.test_limit=16", "batch_size=16",
        "scheduler.warmup_epochs=0.5", "scheduler.cooldown_epochs=0.5"]),
    "cifar10_ms_resnet": (cifar10_files, [
        "model.width=4", "model.blocks=[1,1,1,1]", "dataset.train_limit=32",
        "dataset.test_limit=16", "batch_size=16"]),
}  # fmt: skip


@pytest.mark.parametrize("name", list(REDUCED))
def test_reduced_recipe_trains_an_epoch_through_the_command(
    name: str, tmp_path: Path, monkeypatch
) -> None:
    """``experiment=<name>`` shrunk (model, data, T=2, one epoch, fp32 on the CPU) trains and
    tests; the run's saved config keeps the recipe's optimizer, schedule, neuron and loss."""
    write_files, shrink = REDUCED[name]
    write_files(tmp_path / "data")
    run_dir = tmp_path / "run"
    train_in_process(monkeypatch, f"experiment={name}", *shrink, "T=2", "epochs=1",
                     "precision=fp32", "logger=none", "device=cpu", "dataset.download=false",
                     f"dataset.root={tmp_path / 'data'}", f"hydra.run.dir={run_dir}")  # fmt: skip
    (record,) = read_metrics(run_dir)
    assert math.isfinite(record["train_loss"]) and 0.0 <= record["test_acc"] <= 1.0
    saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    groups = ("optimizer", "scheduler", "neuron", "loss")
    shrunk = {"scheduler.T_max", *(a.split("=")[0] for a in shrink)}
    kept = [k for k in PAPER[name] if k.split(".")[0] in groups and k not in shrunk]
    assert {k: lookup(saved, k) for k in kept} == {k: PAPER[name][k] for k in kept}
    assert (saved["T"], saved["epochs"]) == (2, 1)
