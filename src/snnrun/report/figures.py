"""The plotting functions behind ``snnrun viz``: numbers in, matplotlib figures out.

Every function takes plain arrays (no model, no run dir) and returns a :class:`Figure` of a fixed
size (:data:`SIZES`, or :func:`channel_grid_size` for the channel grids) so files come out the
same size each time. Titles come from the caller (run, epoch, sample); axes say their units.
Headless: the ``Agg`` backend, chosen on import.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.colors import Colormap, ListedColormap, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100
SIZES = {  # inches; pixels = inches x DPI
    "curves": (10.0, 4.0),
    "output_layer": (10.0, 4.2),
    "firing_rates": (10.0, 4.0),
    "firing_rates_epochs": (6.0, 4.0),
    "spike_counts": (6.0, 4.0),
}
MAX_CHANNELS = 16  # channel columns in the first-layer grid (the first ones of a wider layer)
MAX_LAYER_TICKS = 20  # layer labels on the per-layer axis; a deeper net's are thinned
MAX_LEGEND = 10  # layers named in the per-epoch legend; a deeper net's are coloured in order
PANEL = 1.0  # inches per channel image in the grid
SPIKE_COLOR, TARGET_COLOR = "tab:blue", "tab:orange"
SPIKE_CMAP = ListedColormap(["white", "black"])  # 0 / 1


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` at its own size (no tight bbox, so the pixel size is predictable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _integer_ticks(ax: Any, axis: str = "x") -> None:
    getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))


def _epoch_axis(ax: Any, epochs: Sequence[int]) -> None:
    """An "epoch" x axis with whole-epoch ticks, readable for one epoch as for hundreds."""
    ax.set_xlabel("epoch")
    ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    if len(set(epochs)) <= 12:
        ax.set_xticks(sorted(set(epochs)))
    else:
        _integer_ticks(ax)


# --- training curves ----------------------------------------------------------------------------
def plot_curves(metrics: Sequence[dict[str, Any]], title: str) -> Figure:
    """Loss and accuracy per epoch (train and test) from ``metrics.jsonl`` records, best test
    accuracy marked."""
    epochs = [r["epoch"] for r in metrics]
    best = max(metrics, key=lambda r: r["test_acc"])
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=SIZES["curves"], layout="constrained")
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        for split, style in (("train", "o-"), ("test", "s-")):
            ax.plot(epochs, [r[f"{split}_{key}"] for r in metrics], style, label=split, ms=4)
        ax.axvline(best["epoch"], color="grey", ls="--", lw=1, label=f"best: epoch {best['epoch']}")
        _epoch_axis(ax, epochs)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_acc.plot(best["epoch"], best["test_acc"], "*", color="red", ms=14, zorder=3,
                label=f"best test acc {100 * best['test_acc']:.2f}%")  # fmt: skip
    lowest = min(min(r["train_acc"], r["test_acc"]) for r in metrics)
    ax_acc.set_ylim(max(0.0, lowest - 0.05), 1.02)
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    ax_loss.legend(fontsize=8)
    ax_acc.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    return fig


# --- one sample's output layer ------------------------------------------------------------------
def plot_output_layer(
    spikes: np.ndarray, charge: np.ndarray, threshold: float, target: int | None, title: str
) -> Figure:
    """Spike raster and membrane heatmap of the output neurons for one sample.

    ``spikes`` and ``charge`` are ``[T, K]`` (time step x neuron); ``charge`` is ``H``, the
    membrane before each step's reset (a spiking neuron's ``H`` is at or above ``threshold``,
    which sits in the middle of the colour scale: red above, blue below). ``target`` is the true
    class's neuron (None when the neurons are not one per class, e.g. before a voting layer).
    """
    T, K = spikes.shape
    fig, (ax_r, ax_v) = plt.subplots(1, 2, figsize=SIZES["output_layer"], layout="constrained")
    t_idx, n_idx = np.nonzero(spikes)
    colors = [TARGET_COLOR if n == target else SPIKE_COLOR for n in n_idx]
    ax_r.scatter(t_idx, n_idx, marker="|", s=200, c=colors, linewidths=2)
    ax_r.set_xlim(-0.5, T - 0.5)
    ax_r.set_ylim(-0.5, K - 0.5)
    marked = "; true class in orange" if target is not None else ""
    ax_r.set_title(f"spikes ({int(spikes.sum())} in all{marked})", fontsize=10)
    image = ax_v.imshow(charge.T, aspect="auto", origin="lower", cmap="RdBu_r",
                        norm=_centred(charge, threshold), interpolation="nearest")  # fmt: skip
    ax_v.scatter(t_idx, n_idx, marker="o", s=18, facecolors="none", edgecolors="black", lw=1.2)
    bar = fig.colorbar(image, ax=ax_v)
    bar.ax.axhline(threshold, color="black", lw=1.5)
    bar.set_label(f"H, before the step's reset (threshold {threshold:g}: line)")
    ax_v.set_title("membrane charge H (circle: spike)", fontsize=10)
    for ax in (ax_r, ax_v):
        ax.set_xlabel("time step")
        ax.set_ylabel("output neuron")
        _integer_ticks(ax, "x")
        _integer_ticks(ax, "y")
        if K <= 20:
            ax.set_yticks(range(K))
    fig.suptitle(title)
    return fig


def _centred(values: np.ndarray, centre: float) -> TwoSlopeNorm:
    """A colour scale with ``centre`` in its middle, whatever side the values lie on."""
    spread = max(float(np.abs(values - centre).max()), 1e-6)
    return TwoSlopeNorm(centre, centre - spread, centre + spread)


# --- the first neuron layer as channel images -----------------------------------------------------
def channel_grid_size(T: int, channels: int, with_input: bool = True) -> tuple[float, float]:
    """Figure size (inches) of a grid of ``T`` rows by ``min(channels, MAX_CHANNELS)`` columns."""
    cols = min(channels, MAX_CHANNELS) + int(with_input)
    return (max(7.5, PANEL * cols + 1.6), PANEL * T + 1.8)


def plot_channel_grid(
    maps: np.ndarray,
    inputs: np.ndarray | None,
    title: str,
    value_label: str,
    vmax: float,
    cmap: str | Colormap,
) -> Figure:
    """A grid of channel images: one row per time step, one column per channel.

    ``maps`` is ``[T, C, H, W]`` (spikes, or their cumulative sum); ``inputs`` the encoded input
    the network saw at each step, ``[T, h, w]`` (or ``[T, h, w, 3]``), drawn in column 0.
    """
    T, C = maps.shape[:2]
    shown = min(C, MAX_CHANNELS)
    offset = int(inputs is not None)
    fig = plt.figure(figsize=channel_grid_size(T, C, inputs is not None), layout="constrained")
    axes = fig.subplots(T, shown + offset, squeeze=False, gridspec_kw={"wspace": 0.02})
    image = None
    for t in range(T):
        if inputs is not None:
            axes[t, 0].imshow(inputs[t], cmap="gray", vmin=0, vmax=max(1.0, float(inputs.max())))
        for c in range(shown):
            image = axes[t, c + offset].imshow(maps[t, c], cmap=cmap, vmin=0, vmax=vmax,
                                               interpolation="nearest")  # fmt: skip
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for t in range(T):
        axes[t, 0].set_ylabel(f"t = {t}", rotation=0, ha="right", va="center")
    for c in range(shown):
        axes[0, c + offset].set_title(f"ch {c}", fontsize=8)
    if inputs is not None:
        axes[0, 0].set_title("input", fontsize=8)
    more = f" (channels 0-{shown - 1} of {C})" if shown < C else ""
    fig.supxlabel(f"channel{more}", fontsize=9)
    fig.supylabel("time step", fontsize=9)
    bar = fig.colorbar(image, ax=axes[:, offset:], shrink=0.8, pad=0.01)
    bar.set_label(value_label)
    if cmap is SPIKE_CMAP:
        bar.set_ticks([0.25, 0.75], labels=["0", "1"])
    else:
        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=11)
    return fig


def plot_neuron_time(
    values: np.ndarray, title: str, value_label: str, cmap: str | Colormap
) -> Figure:
    """A ``[T, K]`` layer without channel images (a fully connected layer): neuron x time step."""
    fig, ax = plt.subplots(figsize=SIZES["firing_rates_epochs"], layout="constrained")
    image = ax.imshow(values.T, aspect="auto", origin="lower", cmap=cmap, interpolation="nearest")
    fig.colorbar(image, ax=ax).set_label(value_label)
    ax.set_xlabel("time step")
    ax.set_ylabel("neuron")
    _integer_ticks(ax)
    fig.suptitle(title)
    return fig


# --- firing rates ---------------------------------------------------------------------------------
def plot_firing_rates(
    batch_rates: dict[str, np.ndarray] | None,
    epoch_rates: dict[str, list[tuple[int, float]]],
    title: str,
) -> Figure:
    """Per-layer firing rates: a box per layer over a batch (``{layer: [N] rates}``, one rate per
    sample), beside the rates per epoch (``{layer: [(epoch, rate)]}``, the test pass means).
    Layers are labels (``L3``, ``L4.body.2``) in network order; a deep net's axis names some
    (:data:`MAX_LAYER_TICKS`, first and last among them) and its legend the first and last
    (:data:`MAX_LEGEND`).

    Without ``batch_rates`` only the per-epoch panel is drawn; without ``epoch_rates`` that
    panel holds a note instead.
    """
    if batch_rates is None:
        fig, ax_e = plt.subplots(figsize=SIZES["firing_rates_epochs"], layout="constrained")
    else:
        fig, (ax_b, ax_e) = plt.subplots(1, 2, figsize=SIZES["firing_rates"], layout="constrained")
        _batch_boxes(ax_b, batch_rates)
    _epoch_lines(ax_e, epoch_rates)
    fig.suptitle(title)
    return fig


def _epoch_lines(ax: Any, rates: dict[str, list[tuple[int, float]]]) -> None:
    ax.set_title("per epoch (test pass)", fontsize=10)
    if not rates:
        ax.text(0.5, 0.5, "no firing_rate/<layer> in metrics.jsonl\n(trained with monitor=none)",
                ha="center", va="center", transform=ax.transAxes, color="grey")  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
        return
    n, many = len(rates), len(rates) > MAX_LEGEND  # many: colours in order, first and last named
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, n)) if many else [None] * n
    for i, (name, points) in enumerate(rates.items()):
        named = not many or i in (0, n - 1)
        ax.plot(*zip(*points), "o-", ms=4, color=colors[i], label=name if named else "_")
    _epoch_axis(ax, [e for points in rates.values() for e, _ in points])
    ax.set_ylabel("firing rate (spikes / neuron / step)")
    title = f"neuron layer ({n}, first to last)" if many else "neuron layer"
    ax.legend(fontsize=8, title=title, title_fontsize=8)
    ax.grid(alpha=0.3)


def _batch_boxes(ax: Any, rates: dict[str, np.ndarray]) -> None:
    names = list(rates)
    ax.boxplot([rates[n] for n in names], showmeans=True)
    named = _layer_ticks(ax, names)
    more = f"; {named} of {len(names)} named" if named < len(names) else ""
    ax.set_xlabel(f"neuron layer (L<i> = model.layers[i]{more})")
    ax.set_ylabel("firing rate (spikes / neuron / step)")
    n = len(next(iter(rates.values())))
    ax.set_title(f"over one test batch ({n} samples; triangle = mean)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")


def _layer_ticks(ax: Any, names: list[str]) -> int:
    """Layer labels under boxes 1..n: every k-th counted back from the last (the first always
    named), at most :data:`MAX_LAYER_TICKS`, turned 45 degrees when many or long. Returns how
    many are named."""
    step = -(-len(names) // MAX_LAYER_TICKS)
    ticks = list(range(len(names) - 1, -1, -step))[::-1]
    ticks[0] = 0  # it was below step: the gap to the next stays at least step
    ax.set_xticks([i + 1 for i in ticks], [names[i] for i in ticks])
    if len(ticks) > 8 or max(map(len, names)) * len(ticks) > 60:
        ax.tick_params(axis="x", labelsize=7)
        for label in ax.get_xticklabels():
            label.set(rotation=45, ha="right", rotation_mode="anchor")
    return len(ticks)


# --- the spike-count animation -------------------------------------------------------------------
def animate_counts(output: np.ndarray, target: int, title: str, path: Path, fps: int = 4) -> Path:
    """A GIF with one frame per time step: each output neuron's count up to that step.

    ``output`` is ``[T, K]``: spikes (counts are spike counts) or any other output (its running
    sum is shown).
    """
    T, K = output.shape
    counts = np.cumsum(output, axis=0)
    binary = bool(np.isin(output, (0, 1)).all())
    fig, ax = plt.subplots(figsize=SIZES["spike_counts"], layout="constrained")
    colors = [TARGET_COLOR if k == target else SPIKE_COLOR for k in range(K)]
    bars = ax.bar(range(K), counts[0], color=colors)
    ax.set_ylim(0, max(1.0, float(counts.max())) * 1.1)
    ax.set_xlabel("output neuron (orange: true class)")
    ax.set_ylabel("spike count" if binary else "summed output")
    if K <= 20:
        ax.set_xticks(range(K))
    _integer_ticks(ax, "y")
    step = ax.set_title("")
    fig.suptitle(title)

    def frame(t: int) -> list[Any]:
        for bar, h in zip(bars, counts[t]):
            bar.set_height(h)
        step.set_text(f"counts after time step t = {t} (of 0-{T - 1})")
        return [*bars, step]

    anim = FuncAnimation(fig, frame, frames=T, blit=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(path, writer=PillowWriter(fps=fps), dpi=DPI)
    plt.close(fig)
    return path
