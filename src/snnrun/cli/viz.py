"""``snnrun viz <run dir> [key=value ...]``: figures of a trained run, into ``<run dir>/figures/``.

Keys: ``which=best|latest`` (the checkpoint), ``format=png|svg|pdf``, ``sample=<test index>``,
``device=cpu|cuda|auto``, ``dataset.root=<dir>`` (where the run's data lives now), ``out=<dir>``
(another folder for the figures, e.g. when the run dir is read-only).

One test batch (the chosen sample first) goes through the network with the spikes of every
neuron layer at any depth recorded, by label (``L3``, ``L4.body.2``, ``L7.neuron``: the
network's ``neurons()``), and the last neuron layer's membrane; from it and ``metrics.jsonl``
come:

- ``curves``: loss and accuracy per epoch (train, test), best epoch marked;
- ``output_layer``: the last neuron layer's spike raster for the sample and the charge ``H``
  before each step's reset (neuron x time step), the threshold in the middle of the colour
  scale (a neuron stepped inside a ``recurrent`` entry too);
- ``first_layer_spikes`` / ``first_layer_cumsum``: the first neuron layer's spikes per time step
  (channel x time step grid beside the encoded input) and their running sum;
- ``firing_rates``: per neuron layer, a box over the batch's samples, and the rates per epoch
  (``firing_rate/<label>`` records; a note when the run counted none);
- ``spike_counts.gif``: the output neurons' spike counts growing over the time steps.

Epochs count from 1 (the checkpoint after the first epoch is epoch 1), as ``load_run`` counts
them; ``metrics.jsonl`` keeps its 0-based ``epoch``. A run trained with ``logger=wandb`` gets
the raster figures (PNG, GIF) logged to its W&B run (a new offline segment each time).
:func:`render_cheap` draws the figures that need no network (curves, rates per epoch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snnrun.cli.options import Option, cannot_write, choice, folder, index, text, verb_options
from snnrun.core.errors import SnnrunError
from snnrun.report.probe import probe
from snnrun.report.render import render_all

USAGE = ("snnrun viz <run dir> [which=best|latest] [format=png|svg|pdf] [sample=<test index>] "
         "[device=cpu] [dataset.root=<dir>] [out=<dir>]")  # fmt: skip


FORMATS = ("png", "svg", "pdf")


@dataclass
class VizOptions:
    path: Path
    which: str = "best"
    fmt: str | None = None  # None: the run's viz.format (png by default)
    sample: int = 0
    device: str = "cpu"
    root: str | None = None
    out: Path | None = None  # None: <run dir>/figures


OPTIONS = {
    "which": choice("which", "best", "latest"),
    "format": choice("fmt", *FORMATS),
    "sample": Option("sample", index, "a test index (0, 1, ...)"),
    "device": Option("device", text),
    "dataset.root": Option("root", text),
    "out": Option("out", folder),
}


def parse_args(args: list[str]) -> VizOptions:
    """``<run dir> [key=value ...]`` → options; anything else is a one-line error."""
    return verb_options("viz", args, USAGE, VizOptions, OPTIONS)


# --- W&B and the command ------------------------------------------------------------------------
def log_to_wandb(run: Any, written: dict[str, Path]) -> bool:
    """Log the PNG/GIF figures to the run's W&B run, when it was trained with ``logger=wandb``
    (W&B images take no SVG/PDF: with those formats only the GIF goes)."""
    from snnrun.run.logger import build_logger, logger_names

    options, wandb_id = run.config.get("logger", {}), run.rundir.read_wandb_id()
    images = {k: v for k, v in written.items() if v.suffix in (".png", ".gif")}
    if "wandb" not in logger_names(options) or not wandb_id or not images:
        return False
    logger = build_logger(options, names=["wandb"])
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
    from snnrun.run.build import resolve_device

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


def _format(opts: VizOptions, config: dict[str, Any]) -> str:
    """``format=`` when given, else the run's ``viz.format``, else png."""
    fmt = opts.fmt or config.get("viz", {}).get("format") or "png"
    if fmt not in FORMATS:
        raise SnnrunError(f"the run's viz.format is {fmt!r}; pass format=png, svg or pdf")
    return fmt


def _log_or_warn(run: Any, written: dict[str, Path]) -> bool:
    """The figures are written whatever W&B does: a failure to log them is a warning."""
    from snnrun.core.progress import console

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
    from snnrun.core.progress import console

    console.print(f"wrote {len(written)} figures" + (" (and logged them to W&B)" if logged else ""))
    for path in written.values():
        console.print(f"  {path}", highlight=False)
