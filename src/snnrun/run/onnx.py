"""A trained run as an ONNX graph, checked with onnxruntime (``snnrun export format=onnx``).

The network is traced by ``torch.export`` (non-strict: its Python runs once, every time loop
unrolled) at the run's ``T`` on one test batch ``x_seq [T, N, ...]``, encoded as in training;
the batch ``N`` stays a dynamic dimension where the network allows it (the ONNX input is then
``[T, batch, ...]``; ``T`` is fixed). ``torch.onnx`` (the dynamo exporter, onnxscript) turns
the program into ONNX, and onnxruntime runs the file on that batch against PyTorch (the
network as loaded): spikes must be equal; a real-valued output may differ by ``1e-4`` of its
largest magnitude. A mismatch is an error. An output that never spikes on the batch compares
nothing: the check is run again on the batch scaled up (x2, x4, ... x256) until the output fires,
with a note; a warning says so when no scale makes it fire.

Neurons on the built-in backends are exported through the reference loop (the ``autograd``
backend: the same equations in plain ops, one ``Concat`` of the T steps; the ``torch`` loop's
in-place writes would become ``ScatterElements``, and the ``triton`` backend is a
``torch.library`` op ONNX cannot express); the check compares that graph with the network as
loaded, on its own backends. A neuron on a backend of one's own is exported as it is.

A network that does not trace, or holds an op ONNX lacks, ends as one line naming the innermost
neuron or config entry in the failing frames (a module's ``forward``, or the graph node the
exporter was translating).
"""

from __future__ import annotations

import copy
import importlib.util
import io
import logging
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from snnrun.core.errors import SnnrunError, one_line
from snnrun.core.progress import console
from snnrun.net.model import SpikingNetwork, label
from snnrun.neuron.neurons import SpikingNeuron
from snnrun.report.probe import MAX_BATCH, encode_batch

if TYPE_CHECKING:
    import numpy as np

    from snnrun.api import LoadedRun

NEEDS = ("onnx", "onnxscript", "onnxruntime")  # the `onnx` extra
REFERENCE = "autograd"  # the backend every neuron on a built-in one is exported with
BUILT_IN = ("torch", "triton")
QUIET_LOGGERS = ("torch", "onnxscript", "onnx_ir")
REL_TOL = 1e-4  # a real-valued output: |onnx - torch| <= REL_TOL * max(1, max |torch|)
GAINS = (2, 4, 8, 16, 32, 64, 128, 256)  # the scales a silent output's check tries, in turn


@dataclass
class OnnxExport:
    """What was written and how the check went."""

    inputs: list[int | str]  # the ONNX input's shape, ``[T, batch, ...]`` ("batch": dynamic)
    outputs: list[int | str]  # ``[T, batch, classes]``
    switched: list[str]  # labels of the triton neurons (exported with the reference loop)
    samples: int  # the test batch checked
    spikes: bool  # the output is spikes (0/1), compared exactly
    max_diff: float  # max |onnxruntime - PyTorch| over the output


def require_onnx() -> None:
    """One line naming the extra when the exporter or onnxruntime is missing."""
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise SnnrunError(f"format=onnx needs {', '.join(missing)}: pip install 'snnrun[onnx]'")


def export_onnx(run: LoadedRun, path: Path) -> OnnxExport:
    """Write ``run.model`` to ``path`` as ONNX and check it on one test batch."""
    require_onnx()
    x_seq = check_batch(run)
    net, switched = exportable(run.model)
    program = _trace(net, x_seq.contiguous())
    _translate(program, net, path)
    spikes, diff, silent = check(path, run.model, x_seq)
    if silent:
        diff = max(diff, check_firing(path, run.model, x_seq))
    return OnnxExport(
        inputs=_shape(path, "input"),
        outputs=_shape(path, "output"),
        switched=switched,
        samples=x_seq.shape[1],
        spikes=spikes,
        max_diff=diff,
    )


def check_batch(run: LoadedRun) -> torch.Tensor:
    """The first test samples (one batch, at most 64) encoded as in training: ``[T, N, ...]``."""
    test = run.splits().test
    size = min(run.config["batch_size"], MAX_BATCH, len(test))
    torch.manual_seed(run.config.get("seed", 0))  # a Poisson encoder draws the same each time
    x_seq, _ = encode_batch(run.config, test, list(range(size)))
    return x_seq


def exportable(model: SpikingNetwork) -> tuple[SpikingNetwork, list[str]]:
    """A copy of ``model`` whose neurons on a built-in backend run the reference loop; the
    labels of those that were on ``triton``."""
    net = copy.deepcopy(model).eval()
    switched = []
    for name, neuron in net.neurons():
        if neuron.backend in BUILT_IN:
            switched += [name] if neuron.backend == "triton" else []
            neuron.backend = REFERENCE
    return net, switched


def run_onnx(path: Path, x_seq: torch.Tensor) -> np.ndarray:
    """The ONNX file at ``path`` on ``x_seq`` through onnxruntime (CPU): ``[T, N, classes]``."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (name,) = [i.name for i in session.get_inputs()]
        return session.run(None, {name: x_seq.contiguous().cpu().numpy()})[0]
    except Exception as e:  # onnxruntime raises its own kinds (an op or opset it lacks)
        raise SnnrunError(
            f"onnxruntime cannot run the exported graph ({one_line(e, 300)}); the file was not "
            "kept: export format=nir, or report the op"
        ) from None


def check(path: Path, model: SpikingNetwork, x_seq: torch.Tensor) -> tuple[bool, float, bool]:
    """The ONNX file against ``model`` on ``x_seq``: ``(spikes, max difference, silent)``,
    ``silent``: the output is spikes and none fired (the comparison saw only zeros)."""
    got = run_onnx(path, x_seq)
    with torch.no_grad():
        want = model(x_seq)
    spikes, diff = compare(got, want)
    return spikes, diff, spikes and not bool(want.any())


def check_firing(path: Path, model: SpikingNetwork, x_seq: torch.Tensor) -> float:
    """After a silent check: the check again on ``x_seq`` times the first of :data:`GAINS`
    that makes the output fire (a note), or a warning that none does; the max difference."""
    samples = x_seq.shape[1]
    for gain in GAINS:
        _, diff, silent = check(path, model, x_seq * gain)
        if not silent:
            console.print(
                f"[yellow]note:[/] the output never fires on the {samples} test samples; also "
                f"checked on them scaled x{gain}, where it fires: spikes equal",
                highlight=False,
            )
            return diff
    console.print(
        f"[yellow]warning:[/] the output never fires on the {samples} test samples, nor on "
        f"them scaled up to x{GAINS[-1]}: the check compared silences only (a network that "
        "never fires: train it longer, or look at its thresholds and last layer)",
        highlight=False,
    )
    return 0.0


def compare(got: np.ndarray, want: torch.Tensor) -> tuple[bool, float]:
    """``(spikes, max |got - want|)``; an error when they differ: spikes (0/1 outputs) must be
    equal, real values within ``REL_TOL`` of the largest."""
    reference = want.detach().float().cpu()
    ours = torch.from_numpy(got).float()
    if ours.shape != reference.shape:
        raise SnnrunError(
            f"the ONNX graph gives {list(ours.shape)} where PyTorch gives "
            f"{list(reference.shape)}; nothing written (a bug: please report it)"
        )
    diff = (ours - reference).abs()
    spikes = bool(((reference == 0) | (reference == 1)).all())
    tol = 0.0 if spikes else REL_TOL * max(1.0, reference.abs().max().item())
    worst = diff.max().item() if diff.numel() else 0.0
    if worst > tol:
        what = "spike values" if spikes else f"values beyond {tol:.2g}"
        raise SnnrunError(
            f"the ONNX graph does not match PyTorch on {reference.shape[1]} test samples: "
            f"{int((diff > tol).sum())} of {diff.numel()} {what} differ (max difference "
            f"{worst:.3g}); nothing written (a bug: please report it with the run's config.yaml)"
        )
    return spikes, worst


# --- the exporter ----------------------------------------------------------------------------
def _trace(net: SpikingNetwork, x_seq: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of ``net`` on ``x_seq``, the batch dimension dynamic where it can be."""
    batch = {1: torch.export.Dim.AUTO}
    try:
        with torch.no_grad(), _quiet():
            return torch.export.export(net, (x_seq,), dynamic_shapes=(batch,), strict=False)
    except Exception as e:
        raise SnnrunError(
            f"the network does not trace for ONNX{_where(e, net)}: {one_line(_root(e), 200)}; its "
            f"forward must run under torch.export (no Python branch on tensor values, no .item())"
        ) from None


def _translate(program: torch.export.ExportedProgram, net: SpikingNetwork, path: Path) -> None:
    """The traced program as an ONNX file at ``path``."""
    try:
        with _quiet():
            onnx_program = torch.onnx.export(
                program, dynamo=True, verbose=False, input_names=["x_seq"], output_names=["output"]
            )
    except Exception as e:
        raise SnnrunError(
            f"ONNX cannot express the network{_where(e, net)}: {one_line(_root(e), 200)}; "
            "every op needs an ONNX equivalent (a neuron: neuron.backend=torch)"
        ) from None
    batch = onnx_program.model.graph.inputs[0].shape[1]
    if not isinstance(batch, int):  # torch.export's symbol (s25): name it
        onnx_program.rename_axes({batch: "batch"})
    onnx_program.save(str(path))


@contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' warnings, log lines and prints off (neurons keep their state in plain
    attributes, set during the forward; a failed trace prints its partial graph to stderr): a
    failure is one line."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _shape(path: Path, which: str) -> list[int | str]:
    """The ONNX graph's ``input`` or ``output`` shape (a dynamic dimension by its name)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    value = getattr(graph, which)[0]
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


# --- naming what failed ----------------------------------------------------------------------
def _where(error: BaseException, net: SpikingNetwork) -> str:
    """`` at <label> (<what>)``: the innermost neuron or config entry in the frames of
    ``error`` and its causes (a module's ``forward``, or the exporter's graph node); ``''``
    when none is found."""
    named = dict(net.layers.named_modules())
    names = {id(m): name for name, m in named.items() if name and _names_itself(m)}
    found = None
    for frame in _frames(error):
        for m in _modules_of(frame.f_locals, named):
            found = names.get(id(m), found)
    return "" if found is None else f" at {label(found)} ({_describe(found, named)})"


def _root(error: BaseException) -> BaseException:
    """The exception at the bottom of ``error``'s causes (what went wrong, not the wrapper)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _frames(error: BaseException | None) -> Iterator[Any]:
    """Every frame of ``error``'s traceback and its causes', outermost first."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        for frame, _ in traceback.walk_tb(error.__traceback__):
            yield frame
        error = error.__cause__ or error.__context__


def _modules_of(local: dict[str, Any], named: dict[str, nn.Module]) -> list[nn.Module]:
    """The modules a frame runs: its ``self``, or the module stack of an FX ``node`` (the
    exporter translating one op; paths like ``L['self'].layers.3.body.1``)."""
    found = [local["self"]] if isinstance(local.get("self"), nn.Module) else []
    node = local.get("node")
    if isinstance(node, torch.fx.Node):
        for path, _ in (node.meta.get("nn_module_stack") or {}).values():
            name = path.removeprefix("L['self'].").removeprefix("layers.")
            found += [named[name]] if name in named else []
    return found


def _names_itself(m: nn.Module) -> bool:
    return isinstance(m, SpikingNeuron) or hasattr(m, "snnrun_entry")


def _describe(name: str, named: dict[str, nn.Module]) -> str:
    """The module's config path (or ``in`` its nearest entry's) and what it is."""
    m = named[name]
    entry = getattr(m, "snnrun_entry", None)
    if entry is not None:
        where = entry.path
    else:
        parents = [name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)]
        held = [named[p].snnrun_entry for p in parents if hasattr(named[p], "snnrun_entry")]
        where = f"in {held[0].path}" if held else ""
    what = f"neuron, backend={m.backend}" if isinstance(m, SpikingNeuron) else entry.type
    return ", ".join(part for part in (where, what) if part)
