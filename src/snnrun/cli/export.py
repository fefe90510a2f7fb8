"""``snnrun export <run dir> format=nir|onnx [which=best] [dt=1e-4] [strict=false] [out=<dir>]``:
the trained network as a NIR graph, ``<run dir>/export/model.nir`` (``<out>/model.nir``; read
it with ``nir.read``), or as ONNX, ``<run dir>/export/model.onnx``.

``format=onnx`` (the ``onnx`` extra: ``pip install 'snnrun[onnx]'``) traces the network at the
run's ``T`` with ``torch.export`` and the dynamo exporter, input ``x_seq [T, batch, ...]`` (the
batch dynamic where the network allows), and checks the file with onnxruntime against PyTorch
on one test batch before it is kept: see :mod:`snnrun.run.onnx`. ``dt`` and ``strict`` are
NIR's.

The mapping and what it cannot carry are in :mod:`snnrun.nir.graph` and ``docs/nir.md``; the
layers NIR cannot express end as one line naming every one (the entries that share a reason
together: ``cannot write 3 entries as NIR: (1) ...; (2) ...``). Lossy mappings (a subtractive
reset) are written with a warning each, or refused with ``strict=true``. The file is written
whole or not at all (a temporary file renamed), so a failed export leaves an earlier
``model.nir`` as it was. ``snnrun ... model=nir model.path=<run dir>/export/model.nir`` builds
the network from the file again. The epoch shown is the number of epochs the weights trained
(1 after the first).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from snnrun.cli.options import Option, boolean, choice, folder, positive_float, verb_options
from snnrun.core.errors import SnnrunError

USAGE = (
    "snnrun export <run dir> format=nir|onnx [which=best|latest] [dt=<seconds per step>] "
    "[strict=false|true] [out=<dir>]"
)
FORMATS = ("nir", "onnx")


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
    """``<run dir> format=nir|onnx [key=value ...]`` → options; anything else is one line."""
    opts = verb_options("export", args, USAGE, ExportOptions, OPTIONS)
    if opts.fmt is None:
        raise SnnrunError(f"export needs format=nir or format=onnx; usage: {USAGE}")
    return opts


def main(args: list[str]) -> None:
    """``snnrun export <run dir> format=nir|onnx [key=value ...]``."""
    opts = parse_args(args)
    if opts.fmt == "onnx":
        _onnx(opts)
        return
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


def _onnx(opts: ExportOptions) -> None:
    """``format=onnx``: ``model.onnx``, kept only when onnxruntime matches PyTorch."""
    from snnrun.run.onnx import require_onnx

    require_onnx()  # before the run loads: the missing extra is the first thing to hear
    from snnrun.api import load_run
    from snnrun.cli.options import cannot_write
    from snnrun.core.progress import console
    from snnrun.run.onnx import OnnxExport, export_onnx

    run = load_run(opts.path, opts.which, "cpu")
    folder = opts.out or run.rundir.exports
    target = folder / "model.onnx"
    done: list[OnnxExport] = []
    try:
        _write_whole(target, lambda path: done.append(export_onnx(run, path)))
    except OSError as e:
        raise cannot_write(e, folder, "the ONNX file") from None
    (result,) = done
    if result.switched:
        console.print(
            f"note: {', '.join(result.switched)} run the triton backend, which ONNX cannot "
            "express: exported with the reference loop (the same equations), checked below",
            highlight=False,
        )
    same = "spikes equal" if result.spikes else "outputs agree"
    console.print(
        f"onnxruntime matches PyTorch on {result.samples} test samples: {same} "
        f"(max difference {result.max_diff:.3g})",
        highlight=False,
    )
    console.print(
        f"wrote {target} ({run.which} weights, epoch {run.epoch}; input x_seq "
        f"{_dims(result.inputs)} -> output {_dims(result.outputs)})",
        highlight=False,
    )


def _dims(shape: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


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
