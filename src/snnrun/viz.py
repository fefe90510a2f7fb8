"""``snnrun viz <run dir> [key=value ...]``: figures of a trained run, into ``<run dir>/figures/``.

Keys: ``which=best|latest`` (the checkpoint), ``format=png|svg|pdf``, ``sample=<test index>``,
``device=cpu|cuda|auto``, ``dataset.root=<dir>`` (where the run's data lives now), ``out=<dir>``
(another folder for the figures, e.g. when the run dir is read-only).

One test batch (the chosen sample first) goes through the network with every neuron layer's
spikes recorded (and the output layer's membrane); from it and ``metrics.jsonl`` come:

- ``curves``: loss and accuracy per epoch (train, test), best epoch marked;
- ``output_layer``: the sample's output spike raster and the charge ``H`` before each step's
  reset (neuron x time step), the threshold in the middle of the colour scale;
- ``first_layer_spikes`` / ``first_layer_cumsum``: the first neuron layer's spikes per time step
  (channel x time step grid beside the encoded input) and their running sum;
- ``firing_rates``: per neuron layer, a box over the batch's samples, and the rates per epoch
  (``firing_rate/L<i>`` records; a note when the run counted none);
- ``spike_counts.gif``: the output neurons' spike counts growing over the time steps.

Epochs count from 1 (the checkpoint after the first epoch is epoch 1), as ``load_run`` counts
them; ``metrics.jsonl`` keeps its 0-based ``epoch``. A run trained with ``logger=wandb`` gets
the raster figures (PNG, GIF) logged to its W&B run (a new offline segment each time).
:func:`render_cheap` draws the figures that need no network (curves, rates per epoch).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snnrun.cli import verb_options
from snnrun.errors import SnnrunError

if TYPE_CHECKING:  # torch and matplotlib load inside the functions: a typo fails at once
    import numpy as np
    import torch

    from snnrun.rundir import RunDir

USAGE = ("snnrun viz <run dir> [which=best|latest] [format=png|svg|pdf] [sample=<test index>] "
         "[device=cpu] [dataset.root=<dir>] [out=<dir>]")  # fmt: skip
FORMATS = ("png", "svg", "pdf")
MAX_BATCH = 64


@dataclass
class VizOptions:
    path: Path
    which: str = "best"
    fmt: str | None = None  # None: the run's viz.format (png by default)
    sample: int = 0
    device: str = "cpu"
    root: str | None = None
    out: Path | None = None  # None: <run dir>/figures


def parse_args(args: list[str]) -> VizOptions:
    """``<run dir> [key=value ...]`` → options; anything else is a one-line error."""
    return verb_options("viz", args, USAGE, VizOptions, _set_option)


def _set_option(opts: VizOptions, key: str, value: str) -> None:
    if key == "which" and value in ("best", "latest"):
        opts.which = value
    elif key == "format" and value in FORMATS:
        opts.fmt = value
    elif key == "sample" and value.isdigit():
        opts.sample = int(value)
    elif key == "device" and value:
        opts.device = value
    elif key == "dataset.root" and value:
        opts.root = value
    elif key == "out" and value:
        opts.out = Path(value).expanduser()
    elif key in ("which", "format", "sample", "device", "dataset.root", "out"):
        allowed = {"which": "best or latest", "format": " or ".join(FORMATS),
                   "sample": "a test index (0, 1, ...)"}  # fmt: skip
        raise SnnrunError(f"viz {key}={value!r}; use {allowed.get(key, 'a value')}")
    else:
        raise SnnrunError(f"viz has no key {key!r}; usage: {USAGE}")


# --- one batch through the network --------------------------------------------------------------
@dataclass
class Probe:
    """One test batch through the network; the chosen sample is row 0 of the batch.

    ``inputs`` is the encoded batch ``[T, N, ...]``, ``output`` the network's ``[T, N, classes]``;
    ``spikes`` maps each neuron layer's index in ``model.layers`` to its ``[T, N, ...]`` spikes;
    ``charge`` is the last neuron layer's ``H`` (the membrane before each step's reset) and
    ``threshold`` its ``v_threshold``.
    """

    inputs: torch.Tensor
    target: int
    predicted: int
    output: torch.Tensor
    spikes: dict[int, torch.Tensor]
    charge: torch.Tensor
    threshold: float


def encode_batch(config: dict[str, Any], dataset: Any, indices: list[int]) -> tuple[Any, Any]:
    """The samples at ``indices`` as the network's input ``[T, N, ...]`` and labels ``[N]``.

    The data/encoder contract lives here only: ``dataset[i] -> (x, y)`` and
    ``build_encoder(config["encoder"])(x [N, ...], T) -> [T, N, ...]``.
    """
    import torch

    from snnrun.encoders import build_encoder

    items = [dataset[i] for i in indices]
    x = torch.stack([torch.as_tensor(s) for s, _ in items])
    y = torch.stack([torch.as_tensor(label) for _, label in items])
    return build_encoder(config["encoder"])(x, config["T"]), y


def probe(run: Any, dataset: Any, sample: int, device: torch.device) -> Probe:
    """Run ``sample`` and the next test samples (one batch) with every neuron layer recording."""
    import torch

    from snnrun.losses import build_loss

    n = len(dataset)
    if not 0 <= sample < n:
        raise SnnrunError(f"viz sample={sample} but the test split has {n} samples (0-{n - 1})")
    size = min(run.config["batch_size"], MAX_BATCH, n)
    indices = [sample, *[i for i in range(n) if i != sample][: size - 1]]
    torch.manual_seed(run.config.get("seed", 0))  # a Poisson encoder draws the same each time
    x_seq, y = encode_batch(run.config, dataset, indices)
    out, spikes, charge, threshold = _recording(run.model, x_seq.to(device))
    predicted = build_loss(run.config["loss"]).predict(out[:, :1])
    return Probe(
        inputs=x_seq.float().cpu(),
        target=int(y[0]),
        predicted=int(predicted[0]),
        output=out,
        spikes=spikes,
        charge=charge,
        threshold=threshold,
    )


def _recording(model: torch.nn.Module, x_seq: torch.Tensor) -> tuple[Any, dict, Any, float]:
    """``model(x_seq)`` with every neuron layer's spikes kept, ``[T, N, ...]`` each by layer
    index, and the last neuron layer's charge ``H`` and threshold (on the CPU, float32)."""
    import torch

    from snnrun.neuron import SpikingNeuron, reset_states

    neurons = {i: m for i, m in enumerate(model.layers) if isinstance(m, SpikingNeuron)}
    last = neurons[max(neurons)]
    stored = last.store_v_seq
    recorded: dict[int, list[torch.Tensor]] = {i: [] for i in neurons}
    last_inputs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(_recorder(recorded[i], last_inputs if m is last else None))
             for i, m in neurons.items()]  # fmt: skip
    try:
        last.store_v_seq = True
        with torch.no_grad():
            out = model(x_seq).float().cpu()
            spikes = {i: torch.cat(recorded[i]).float().cpu() for i in neurons}
            charge = _charge(last, torch.cat(last_inputs), last.v_seq)
    finally:
        for h in hooks:
            h.remove()
        last.store_v_seq = stored
        reset_states(model)
    return out, spikes, charge.float().cpu(), last.dynamics.v_threshold


def _recorder(spikes: list[torch.Tensor], inputs: list[torch.Tensor] | None) -> Callable[..., None]:
    """A forward hook keeping a neuron layer's spikes, and its inputs when ``inputs`` is a list
    (one call per step in step mode 's', ``[1, N, ...]`` each)."""

    def hook(module: torch.nn.Module, args: Any, out: torch.Tensor) -> None:
        spikes.append(out.detach())
        if inputs is not None:
            inputs.append(args[0].detach())

    return hook


def _charge(neuron: Any, x: torch.Tensor, v_after: torch.Tensor) -> torch.Tensor:
    """``H[t]``, the membrane before step t's reset, ``[T, N, ...]``: the layer's own charge
    equation (:func:`snnrun.dynamics.charge`) on its inputs ``x`` and ``V[t-1]``, the potential
    after the previous step's reset (``V[-1] = V_rest``). A spiking neuron's ``H`` is at or
    above the threshold, where ``V`` after a hard reset reads ``V_reset``."""
    import torch

    from snnrun.dynamics import charge

    v_after = v_after.reshape(x.shape)
    v_before = torch.cat([torch.full_like(v_after[:1], neuron.dynamics.v_rest), v_after[:-1]])
    return charge(neuron.dynamics, v_before, x, neuron.decay())


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
    """``{"L<i>": [(epoch, rate), ...]}`` from the ``firing_rate/L<i>`` keys of the records
    (counted from 1 already)."""
    rates: dict[str, list[tuple[int, float]]] = {}
    for record in metrics:
        for key, value in record.items():
            if key.startswith("firing_rate/"):
                rates.setdefault(key.split("/", 1)[1], []).append((record["epoch"], value))
    return dict(sorted(rates.items(), key=lambda kv: (len(kv[0]), kv[0])))  # L2 before L10


def render_cheap(rundir: RunDir, metrics: list[dict[str, Any]], fmt: str) -> dict[str, Path]:
    """The figures that need only ``metrics.jsonl`` records: curves and firing rates per epoch
    (the latter only when the run counts them). Returns ``{name: file}``."""
    from snnrun import figures as F

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
        self.first, self.last = min(p.spikes), max(p.spikes)

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
        from snnrun import figures as F

        return F.save(fig, self.folder / f"{name}.{self.fmt}")

    def curves(self) -> Path:
        from snnrun import figures as F

        n = len(self.metrics)
        title = f"{run_label(self.run.path)} · {n} epoch{'s' * (n != 1)}"
        return self._save(F.plot_curves(self.metrics, title), "curves")

    def output_layer(self) -> Path:
        """Layer ``last``'s spikes and charge ``H`` for the sample, ``[T, K]`` each."""
        from snnrun import figures as F

        p, i = self.probe, self.last
        spikes, h = p.spikes[i][:, 0].flatten(1).numpy(), p.charge[:, 0].flatten(1).numpy()
        target = p.target if spikes.shape[1] == p.output.shape[-1] else None
        fig = F.plot_output_layer(
            spikes, h, p.threshold, target, f"{self.title}\noutput layer (L{i})"
        )
        return self._save(fig, "output_layer")

    def first_layer(self, cumulative: bool) -> Path:
        """Layer ``first``'s spikes ``[T, C, H, W]`` for the sample (or ``[T, K]`` when flat)."""
        from snnrun import figures as F

        p, i = self.probe, self.first
        maps = p.spikes[i][:, 0]
        maps = maps.cumsum(0) if cumulative else maps
        what = "cumulative spike count" if cumulative else "spikes"
        name = "first_layer_cumsum" if cumulative else "first_layer_spikes"
        title = f"{self.head}\n{self.about}\nfirst neuron layer (L{i}): {what}"
        vmax = float(maps.shape[0]) if cumulative else 1.0
        cmap = "magma" if cumulative else F.SPIKE_CMAP
        if maps.dim() != 4:
            return self._save(F.plot_neuron_time(maps.flatten(1).numpy(), title, what, cmap), name)
        inputs = _input_views(p.inputs[:, 0])
        fig = F.plot_channel_grid(maps.numpy(), inputs, title, what, vmax, cmap)
        return self._save(fig, name)

    def firing_rates(self) -> Path:
        from snnrun import figures as F

        batch = {f"L{i}": s.transpose(0, 1).flatten(1).mean(1).numpy() for i, s in
                 self.probe.spikes.items()}  # fmt: skip
        title = f"firing rates · {self.head}"
        fig = F.plot_firing_rates(batch, _epoch_rates(self.metrics), title)
        return self._save(fig, "firing_rates")

    def spike_counts(self) -> Path:
        from snnrun import figures as F

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
    from snnrun.progress import progress_bar

    jobs = Renderer(run, probe, sample, fmt, folder).jobs()
    written: dict[str, Path] = {}
    with progress_bar() as bar:
        task = bar.add_task("figures", total=len(jobs), loss="")
        for name, draw in jobs.items():
            bar.update(task, description=f"figure {name}")
            written[name] = draw()
            bar.advance(task)
    return written


# --- W&B and the command ------------------------------------------------------------------------
def log_to_wandb(run: Any, written: dict[str, Path]) -> bool:
    """Log the PNG/GIF figures to the run's W&B run, when it was trained with ``logger=wandb``
    (W&B images take no SVG/PDF: with those formats only the GIF goes)."""
    from snnrun.loggers import build_logger

    cfg, wandb_id = run.config.get("logger", {}), run.rundir.read_wandb_id()
    images = {k: v for k, v in written.items() if v.suffix in (".png", ".gif")}
    if cfg.get("name") != "wandb" or not wandb_id or not images:
        return False
    logger = build_logger(cfg)
    run.rundir.claim()  # refused while the run trains: one writer per W&B run
    try:
        run_id = run.rundir.read_info()["run_id"]
        logger.start(run.rundir, run_id, run.config, {"run_id": wandb_id}, [])
        logger.log_figures(images)
    finally:
        logger.finish()
        run.rundir.release()
    return True


def main(args: list[str]) -> None:
    """``snnrun viz <run dir> [key=value ...]``."""
    opts = parse_args(args)
    from snnrun.api import load_run
    from snnrun.run import resolve_device

    device = resolve_device(opts.device)
    run = load_run(opts.path, opts.which, device)
    splits = run.splits(**({"root": opts.root} if opts.root else {}))
    probed = probe(run, splits.test, opts.sample, device)
    folder = opts.out or run.rundir.figures
    try:
        written = render_all(run, probed, opts.sample, _format(opts, run.config), folder)
    except OSError as e:
        raise cannot_write(e, folder, "the figures") from None
    _report(written, _log_or_warn(run, written))


def cannot_write(e: OSError, folder: Path, what: str) -> SnnrunError:
    """A tool's failed write into its output ``folder`` as one line: the fix is that folder
    (or another one, ``out=<dir>``), not the run's ``hydra.run.dir``."""
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {folder} writable"
    else:
        fix = "free disk space" if e.errno == errno.ENOSPC else f"check {folder}"
    return SnnrunError(
        f"cannot write {e.filename or folder}: {e.strerror or e}; {fix}, or pass out=<dir> to "
        f"write {what} elsewhere (the run's own files are untouched)"
    )


def _format(opts: VizOptions, config: dict[str, Any]) -> str:
    """``format=`` when given, else the run's ``viz.format``, else png."""
    fmt = opts.fmt or config.get("viz", {}).get("format") or "png"
    if fmt not in FORMATS:
        raise SnnrunError(f"the run's viz.format is {fmt!r}; pass format=png, svg or pdf")
    return fmt


def _log_or_warn(run: Any, written: dict[str, Path]) -> bool:
    """The figures are written whatever W&B does: a failure to log them is a warning."""
    from snnrun.progress import console

    try:
        return log_to_wandb(run, written)
    except SnnrunError as e:
        console.print(f"[yellow]warning:[/] figures not logged to W&B: {e}", highlight=False)
    except OSError as e:  # a read-only run dir: no run.lock, no W&B files
        where = f" {e.filename}" if e.filename else ""
        console.print(f"[yellow]warning:[/] figures not logged to W&B: cannot write{where}: "
                      f"{e.strerror or e}", highlight=False)  # fmt: skip
    return False


def _report(written: dict[str, Path], logged: bool) -> None:
    from snnrun.progress import console

    console.print(f"wrote {len(written)} figures" + (" (and logged them to W&B)" if logged else ""))
    for path in written.values():
        console.print(f"  {path}", highlight=False)
