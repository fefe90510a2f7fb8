"""A small public API for tools and notebooks: open a run dir, get its network back.

>>> run = snnrun.load_run("outputs/2026-11-24/10-04-12")      # best checkpoint, on the CPU
>>> run.config["T"], run.metrics[-1]["test_acc"], run.model   # no dataset is loaded
>>> run.epoch, run.record   # the weights' epoch (counted from 1) and its metrics record

The network is rebuilt from the run's saved config and the input shape and class count kept in
the checkpoint, then given the checkpoint's weights; :meth:`LoadedRun.splits` loads the data
only when asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from snnrun.engine.ema import evaluated_weights
from snnrun.net.model import SpikingNetwork, build_model
from snnrun.run.rundir import RunDir, find_run_dir


@dataclass
class LoadedRun:
    """A run dir read back: its config, per-epoch metrics and network with weights."""

    rundir: RunDir
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    model: SpikingNetwork
    which: str  # "best" or "latest"
    epoch: int  # the weights' epoch, counted from 1 (= epochs trained), as every tool says it
    data: dict[str, Any]  # sample_shape, num_classes, dataset sizes

    @property
    def path(self) -> Path:
        return self.rundir.path

    @property
    def record(self) -> dict[str, Any] | None:
        """The weights' ``metrics.jsonl`` record (the file numbers epochs from 0: ``epoch - 1``)."""
        return next((r for r in self.metrics if r.get("epoch") == self.epoch - 1), None)

    def splits(self, **dataset_overrides: Any):
        """The run's dataset splits (``dataset_overrides`` e.g. ``root=...``)."""
        from snnrun.data.dataset import build_splits

        return build_splits({**self.config["dataset"], **dataset_overrides})


def build_network(config: dict[str, Any], data: dict[str, Any]) -> SpikingNetwork:
    """The run's network, untrained, from its config and data shape (no dataset needed)."""
    from snnrun.run.build import neuron_groups

    return build_model(
        config["model"], neuron_groups(config), tuple(data["sample_shape"]), data["num_classes"]
    )


def load_run(
    path: str | Path, which: str = "best", device: str | torch.device = "cpu"
) -> LoadedRun:
    """Open a run dir (or a checkpoint file inside one) and rebuild its network on ``device``.

    ``which`` is ``best`` or ``latest`` (a checkpoint path picks its own). The model is
    returned in eval mode.
    """
    rundir, named = find_run_dir(path)
    which = named if Path(path).is_file() else which
    payload = rundir.load_checkpoint(which)
    config = payload["config"]
    model = build_network(config, payload["data"])
    model.load_state_dict(evaluated_weights(payload))
    model.to(device).eval()
    return LoadedRun(
        rundir=rundir,
        config=config,
        metrics=rundir.read_metrics(),
        model=model,
        which=which,
        epoch=payload["state"]["epoch"],  # epochs done
        data=payload["data"],
    )
