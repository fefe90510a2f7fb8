"""Rendering a run's figures into files: the cheap ones from ``metrics.jsonl`` alone (curves,
firing rates per epoch; also during training, ``viz.every_n_epochs``) and the full set from a
probe of one test sample (:class:`Renderer`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snnrun.report.probe import Probe

if TYPE_CHECKING:  # torch and matplotlib load inside the functions: a typo fails at once
    import numpy as np
    import torch

    from snnrun.run.rundir import RunDir


# --- the figures ------------------------------------------------------------------------------
def run_label(path: Path) -> str:
    """The run's name in titles: its dir name, with the date for Hydra's ``<date>/<time>``."""
    if re.fullmatch(r"[\d-]+", path.name) and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name


def counted_from_one(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with ``epoch`` counted from 1, as a user reads it (the file keeps 0-based)."""
    return [{**record, "epoch": record["epoch"] + 1} for record in metrics]


def _epoch_rates(metrics: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """``{label: [(epoch, rate), ...]}`` from the ``firing_rate/<label>`` keys of the records
    (counted from 1 already), in network order (``L2``, ``L4.body.2``, ``L10``)."""
    rates: dict[str, list[tuple[int, float]]] = {}
    for record in metrics:
        for key, value in record.items():
            if key.startswith("firing_rate/"):
                rates.setdefault(key.split("/", 1)[1], []).append((record["epoch"], value))
    return dict(sorted(rates.items(), key=lambda kv: layer_order(kv[0])))


def layer_order(label: str) -> tuple[Any, ...]:
    """A sort key putting labels in network order: numbers compare as numbers (``L2`` before
    ``L10``) and a block before its contents (``L4`` before ``L4.body.2``)."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", label)))


def render_cheap(rundir: RunDir, metrics: list[dict[str, Any]], fmt: str) -> dict[str, Path]:
    """The figures that need only ``metrics.jsonl`` records: curves and firing rates per epoch
    (the latter only when the run counts them). Returns ``{name: file}``."""
    from snnrun.report import figures as F

    if not metrics:
        return {}
    metrics = counted_from_one(metrics)
    title = f"{run_label(rundir.path)} · after epoch {metrics[-1]['epoch']}"
    out = {"curves": F.save(F.plot_curves(metrics, title), rundir.figures / f"curves.{fmt}")}
    rates = _epoch_rates(metrics)
    if rates:
        fig = F.plot_firing_rates(None, rates, f"firing rates · {title}")
        out["firing_rates"] = F.save(fig, rundir.figures / f"firing_rates.{fmt}")
    return out


class Renderer:
    """Draws every ``snnrun viz`` figure of one probed run into its ``figures/`` folder."""

    def __init__(self, run: Any, probe: Probe, sample: int, fmt: str, folder: Path) -> None:
        self.run, self.probe, self.fmt, self.folder = run, probe, fmt, folder
        self.metrics = counted_from_one(run.metrics)
        p = probe
        self.head = f"{run_label(run.path)} · {run.which} weights (epoch {run.epoch})"
        predicted = prediction_text(p.output[:, 0].mean(0), p.predicted)
        self.about = f"test sample {sample}: true {p.target}, {predicted}"
        self.title = f"{self.head} · {self.about}"

    def jobs(self) -> dict[str, Callable[[], Path]]:
        return {
            "curves": self.curves,
            "output_layer": self.output_layer,
            "first_layer_spikes": lambda: self.first_layer(cumulative=False),
            "first_layer_cumsum": lambda: self.first_layer(cumulative=True),
            "firing_rates": self.firing_rates,
            "spike_counts": self.spike_counts,
        }

    def _save(self, fig: Any, name: str) -> Path:
        from snnrun.report import figures as F

        return F.save(fig, self.folder / f"{name}.{self.fmt}")

    def curves(self) -> Path:
        from snnrun.report import figures as F

        n = len(self.metrics)
        title = f"{run_label(self.run.path)} · {n} epoch{'s' * (n != 1)}"
        return self._save(F.plot_curves(self.metrics, title), "curves")

    def output_layer(self) -> Path:
        """The last neuron layer's spikes and charge ``H`` for the sample, ``[T, K]`` each."""
        from snnrun.report import figures as F

        p, label = self.probe, self.probe.last
        spikes, h = p.spikes[label][:, 0].flatten(1).numpy(), p.charge[:, 0].flatten(1).numpy()
        target = p.target if spikes.shape[1] == p.output.shape[-1] else None
        title = f"{self.title}\noutput layer ({label})"
        fig = F.plot_output_layer(spikes, h, p.threshold, target, title)
        return self._save(fig, "output_layer")

    def first_layer(self, cumulative: bool) -> Path:
        """The first neuron layer's spikes ``[T, C, H, W]`` for the sample (``[T, K]`` when it is
        not a channel image)."""
        from snnrun.report import figures as F

        p, label = self.probe, self.probe.first
        maps = p.spikes[label][:, 0]
        maps = maps.cumsum(0) if cumulative else maps
        what = "cumulative spike count" if cumulative else "spikes"
        name = "first_layer_cumsum" if cumulative else "first_layer_spikes"
        title = f"{self.head}\n{self.about}\nfirst neuron layer ({label}): {what}"
        vmax = float(maps.shape[0]) if cumulative else 1.0
        cmap = "magma" if cumulative else F.SPIKE_CMAP
        if maps.dim() != 4:
            return self._save(F.plot_neuron_time(maps.flatten(1).numpy(), title, what, cmap), name)
        inputs = _input_views(p.inputs[:, 0])
        fig = F.plot_channel_grid(maps.numpy(), inputs, title, what, vmax, cmap)
        return self._save(fig, name)

    def firing_rates(self) -> Path:
        from snnrun.report import figures as F

        batch = {label: s.transpose(0, 1).flatten(1).mean(1).numpy() for label, s in
                 self.probe.spikes.items()}  # fmt: skip
        title = f"firing rates · {self.head}"
        fig = F.plot_firing_rates(batch, _epoch_rates(self.metrics), title)
        return self._save(fig, "firing_rates")

    def spike_counts(self) -> Path:
        from snnrun.report import figures as F

        output = self.probe.output[:, 0].numpy()
        return F.animate_counts(output, self.probe.target, f"{self.head}\n{self.about}",
                                self.folder / "spike_counts.gif")  # fmt: skip


def prediction_text(rates: torch.Tensor, predicted: int) -> str:
    """``predicted 3``, or with the classes that tie for the highest output
    (``predicted 3 (tie: 3, 5)``); ``rates`` is the sample's ``[classes]`` mean output."""
    tied = (rates == rates.max()).nonzero().flatten().tolist()
    if len(tied) == 1:
        return f"predicted {predicted}"
    if len(tied) == len(rates):
        silent = ", no output spikes" if not rates.any() else ""
        return f"predicted {predicted} (tie: all {len(tied)} classes{silent})"
    return f"predicted {predicted} (tie: {', '.join(map(str, tied))})"


def _input_views(x: torch.Tensor) -> np.ndarray | None:
    """The encoded input per step ``[T, C, H, W]`` as images ``[T, H, W]`` (RGB: ``[T, H, W, 3]``);
    None for inputs that are not images."""
    if x.dim() != 4:
        return None
    if x.shape[1] == 3:
        return x.permute(0, 2, 3, 1).clamp(0, 1).numpy()
    return x.mean(1).numpy()


def render_all(run: Any, probe: Probe, sample: int, fmt: str, folder: Path) -> dict[str, Path]:
    """Every figure into ``folder``, with a progress bar over them; ``{name: file}``."""
    from snnrun.core.progress import progress_bar

    jobs = Renderer(run, probe, sample, fmt, folder).jobs()
    written: dict[str, Path] = {}
    with progress_bar() as bar:
        task = bar.add_task("figures", total=len(jobs), loss="")
        for name, draw in jobs.items():
            bar.update(task, description=f"figure {name}")
            written[name] = draw()
            bar.advance(task)
    return written
