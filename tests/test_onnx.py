"""ONNX export (``snnrun export <run> format=onnx``, :mod:`snnrun.run.onnx`).

Through the command, on runs trained in this process: the CSNN on digits, a SEW ResNet
(residual blocks inside a repeat) and a recurrent SNN (its Python time loop unrolled). The
command's own check (onnxruntime against PyTorch on a test batch) must pass; the test then runs
the file itself with onnxruntime on a fresh, stronger input of another batch size (the batch is
dynamic) against the loaded network, spike for spike (weights made lively so that the
outputs spike). A Triton run is exported through the
reference loop with a note; a neuron that cannot trace, a mismatch and the missing extra are one
line each, and nothing is written.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from snnrun.api import load_run
from snnrun.neuron.state_loop import BACKENDS, autograd_states
from snnrun.run import onnx as onnx_export
from snnrun.run.checkpoint import load_checkpoint
from snnrun.run.rundir import CHECKPOINTS

from conftest import TINY, assert_one_line_error, cli, train_in_process

LIMITS = ("dataset.train_limit=64", "dataset.test_limit=32")
RUNS = {
    "csnn": (),
    "sew_cnn": ("model=sew_cnn", "model.channels=4"),
    "rsnn": ("model=rsnn", "model.classes=10", "model.hidden=8"),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``trained(name)``: the run dir of ``RUNS[name]`` (TINY, one epoch), trained once."""
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            run_dir = tmp_path_factory.mktemp(name) / "run"
            tiny = [a for a in TINY if name != "rsnn" or not a.startswith("model.")]
            with pytest.MonkeyPatch.context() as mp:
                train_in_process(mp, *tiny, *LIMITS, *RUNS[name], f"hydra.run.dir={run_dir}")
            done[name] = _lively(run_dir)
        return done[name]

    return get


def _lively(run_dir: Path) -> Path:
    """Every weight matrix and kernel times 3 in the run's checkpoints: one TINY epoch leaves
    the CSNN's output silent, and equal silences would prove nothing."""
    for name in CHECKPOINTS.values():
        payload = load_checkpoint(run_dir / name)
        payload["model"] = {k: v * 3 if v.ndim >= 2 else v for k, v in payload["model"].items()}
        torch.save(payload, run_dir / name)
    return run_dir


def _export(monkeypatch: pytest.MonkeyPatch, run_dir: Path) -> None:
    train_in_process(monkeypatch, "export", str(run_dir), "format=onnx")


def _with_config(run_dir: Path, dst: Path, **neuron: object) -> Path:
    """A copy of the run dir (same weights) whose config sets ``neuron.<key>``."""
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("export"))
    for name in CHECKPOINTS.values():
        payload = load_checkpoint(dst / name)
        payload["config"]["neuron"].update(neuron)
        torch.save(payload, dst / name)
    return dst


@pytest.mark.parametrize("name", list(RUNS))
def test_export_matches_pytorch(
    name: str, trained: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The command writes export/model.onnx with input ``[T, batch, ...]`` and says onnxruntime
    matches PyTorch; the file run here on 5 fresh inputs driven hard (spikes at the output)
    gives the loaded network's spikes exactly."""
    run_dir = trained(name)
    _export(monkeypatch, run_dir)
    out = capsys.readouterr().out
    path = run_dir / "export" / "model.onnx"
    assert path.is_file() and f"wrote {path}" in out
    assert "onnxruntime matches PyTorch on 32 test samples: spikes equal" in out, out
    assert "input x_seq [4, batch, 1, 28, 28] -> output [4, batch, 10]" in out, out
    run = load_run(run_dir)
    torch.manual_seed(1)
    x = torch.rand(4, 5, 1, 28, 28) * 4.0
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x_seq": x.numpy()})[0]
    with torch.no_grad():
        want = run.model(x).numpy()
    assert want.sum() > 0 and want.sum() < want.size  # spikes and silences to compare
    np.testing.assert_array_equal(got, want)


def test_triton_run_exports_through_the_reference_loop(
    trained: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A run on the triton backend (a torch.library op ONNX lacks) gets a working file: its
    neurons are exported with the reference loop, named in a note, and the check holds the
    graph to the triton network (the kernels under the interpreter here)."""
    run_dir = _with_config(trained("csnn"), tmp_path / "triton", backend="triton")
    assert {n.backend for _, n in load_run(run_dir).model.neurons()} == {"triton"}
    _export(monkeypatch, run_dir)
    out = capsys.readouterr().out
    assert "note: L2, L6, L10, L12 run the triton backend" in out, out
    assert "spikes equal" in out and (run_dir / "export" / "model.onnx").is_file()


def _branchy(owner, x_seq, state, params, step, store_v_seq):
    """The reference loop behind a Python branch on a tensor's value: trains, cannot trace."""
    if x_seq.sum() > -1e30:
        return autograd_states(owner, x_seq, state, params, step, store_v_seq)
    raise AssertionError("unreachable")


def test_a_neuron_that_cannot_trace_is_named(
    trained: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A neuron on a backend of one's own that branches on tensor values: one line naming the
    first such neuron by label, config path and backend; nothing written."""
    monkeypatch.setitem(BACKENDS._entries, "branchy", _branchy)
    run_dir = _with_config(trained("csnn"), tmp_path / "branchy", backend="branchy")
    code, err = cli(monkeypatch, capsys, "export", str(run_dir), "format=onnx")
    assert_one_line_error(code, err, "does not trace for ONNX at L2 (model.layers[2], neuron, "
                          "backend=branchy)", "no Python branch on tensor values")  # fmt: skip
    assert not any((run_dir / "export").iterdir())  # no model.onnx, no temporary file


def test_a_mismatch_is_an_error_and_keeps_the_earlier_file(
    trained: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """onnxruntime giving one spike more than PyTorch: one line counting the differing spikes;
    the model.onnx of an earlier export stays as it was, no temporary file left."""
    run_dir = trained("rsnn")
    target = run_dir / "export" / "model.onnx"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(b"an earlier export")
    real = onnx_export.run_onnx

    def one_flip(path: Path, x_seq: torch.Tensor) -> np.ndarray:
        got = real(path, x_seq)
        got.flat[0] = 1.0 - got.flat[0]
        return got

    monkeypatch.setattr(onnx_export, "run_onnx", one_flip)
    code, err = cli(monkeypatch, capsys, "export", str(run_dir), "format=onnx")
    assert_one_line_error(code, err, "does not match PyTorch on 32 test samples",
                          "1 of 1280 spike values differ", "nothing written")  # fmt: skip
    assert target.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx"]


def test_real_valued_outputs_compare_within_a_tolerance() -> None:
    """Membrane-level outputs may differ by float rounding, not more; spikes not at all."""
    want = torch.tensor([[[0.5, -2.0]]])
    assert onnx_export.compare(want.numpy() + 1e-6, want) == (False, pytest.approx(1e-6, rel=0.05))
    with pytest.raises(onnx_export.SnnrunError, match="1 of 2 values beyond"):
        onnx_export.compare(want.numpy() + np.array([[[1e-2, 0.0]]], np.float32), want)
    spikes = torch.tensor([[[1.0, 0.0]]])
    assert onnx_export.compare(spikes.numpy(), spikes) == (True, 0.0)


def test_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Without onnxruntime: one line naming the extra, before the run is even loaded."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxruntime" else real(name, *a),
    )
    code, err = cli(monkeypatch, capsys, "export", "/nonexistent/run", "format=onnx")
    assert_one_line_error(code, err, "format=onnx needs onnxruntime", "pip install 'snnrun[onnx]'")
