"""``snnrun export <run dir> format=nir [which=best] [dt=1e-4] [strict=false] [out=<dir>]``:
the trained network as a NIR graph, ``<run dir>/export/model.nir`` (``<out>/model.nir``; read
it with ``nir.read``).

The mapping and what it cannot carry are in :mod:`snnrun.nir.graph` and ``docs/nir.md``; a layer
NIR cannot express ends as one line naming it. Lossy mappings (a subtractive reset) are written
with a warning each, or refused with ``strict=true``. The file is written whole or not at all
(a temporary file renamed), so a failed export leaves an earlier ``model.nir`` as it was.
``snnrun ... model=nir model.path=<run dir>/export/model.nir`` builds the network from the file
again. The epoch shown is the number of epochs the weights trained (1 after the first).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from snnrun.cli.options import Option, boolean, choice, folder, positive_float, verb_options
from snnrun.core.errors import SnnrunError

USAGE = (
    "snnrun export <run dir> format=nir [which=best|latest] [dt=<seconds per step>] "
    "[strict=false|true] [out=<dir>]"
)
FORMATS = ("nir",)


@dataclass
class ExportOptions:
    path: Path
    fmt: str | None = None
    which: str = "best"
    dt: float = 1e-4
    strict: bool = False
    out: Path | None = None  # None: <run dir>/export


OPTIONS = {
    "format": choice("fmt", *FORMATS),
    "which": choice("which", "best", "latest"),
    "dt": Option("dt", positive_float, "a positive number of seconds (1e-4)"),
    "strict": Option("strict", boolean, "true or false"),
    "out": Option("out", folder, "a folder"),
}


def parse_args(args: list[str]) -> ExportOptions:
    """``<run dir> format=nir [key=value ...]`` → options; anything else is one line."""
    opts = verb_options("export", args, USAGE, ExportOptions, OPTIONS)
    if opts.fmt is None:
        raise SnnrunError(f"export needs format=nir (the one format today); usage: {USAGE}")
    return opts


def main(args: list[str]) -> None:
    """``snnrun export <run dir> format=nir [key=value ...]``."""
    opts = parse_args(args)
    import nir

    from snnrun.api import load_run
    from snnrun.cli.options import cannot_write
    from snnrun.core.progress import console
    from snnrun.core.version import __version__
    from snnrun.nir.graph import to_nir

    run = load_run(opts.path, opts.which, "cpu")
    info = {
        "snnrun_version": __version__,
        "run_id": run.rundir.read_info()["run_id"],
        "which": run.which,
        "epoch": run.epoch,
        "T": run.config["T"],
    }
    exported = to_nir(run.model, tuple(run.data["sample_shape"]), opts.dt, opts.strict, info)
    folder = opts.out or run.rundir.exports
    target = folder / "model.nir"
    try:
        _write_whole(target, lambda path: nir.write(path, exported.graph))
    except OSError as e:
        raise cannot_write(e, folder, "the NIR file") from None
    for line in exported.layers:
        console.print(f"  {line}", highlight=False)
    for warning in exported.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(
        f"wrote {target} ({run.which} weights, epoch {run.epoch}, dt={opts.dt:g} s)",
        highlight=False,
    )


def _write_whole(target: Path, write: Callable[[Path], None]) -> None:
    """``write`` into a temporary file beside ``target``, then rename it over ``target``: a
    failure leaves ``target`` as it was (and no temporary file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.tmp")
    try:
        write(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
