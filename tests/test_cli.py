"""The command's own behaviour: keys the README documents work through it, configs refused up
front leave nothing behind, and a run that ends before its first checkpoint frees its dir."""

from __future__ import annotations

import subprocess
from pathlib import Path

from snnrun.api import load_run

from conftest import SNNRUN, TINY, assert_one_line_error, cli, run_snnrun

TINY_FC = [o for o in TINY if not o.startswith("model.")] + ["model=fc"]


# fc, then a SEW IAND block whose neuron asks for Triton, then a recurrent neuron as the output
NESTED_FC = (
    "model.layers=[{type:flatten},{type:linear,out_features:10,bias:false},{type:neuron},"
    "{type:residual,connect:iand,body:[{type:neuron,backend:triton}]},"
    "{type:recurrent,layers:[{type:linear,bias:false}]}]"
)


def test_compile_true_trains_end_to_end(tmp_path: Path) -> None:
    """``compile=true`` (documented in the README) trains a nested network through the real
    command, and the checkpoint holds the plain network's weights (no ``_orig_mod.`` prefix).
    In the same run: ``neuron.backend=triton`` on a CPU records the torch backend that runs, in
    the group and in nested entries, the network given as model.layers is labelled custom, and
    the start prints the run dir and a compact layer
    summary instead of the module repr."""
    args = [*TINY_FC, NESTED_FC, "compile=true", "T=2", "dataset.train_limit=64",
            "dataset.test_limit=32", "neuron.backend=triton", "hydra.run.dir=run"]  # fmt: skip
    proc = run_snnrun(args, cwd=tmp_path, env={"TRITON_INTERPRET": None})
    run = load_run(tmp_path / "run")
    assert len(run.metrics) == 1 and run.metrics[0]["train_loss"] > 0
    assert not any("_orig_mod" in k for k in run.model.state_dict())
    assert run.config["neuron"]["backend"] == "torch"
    assert run.config["model"]["layers"][3]["body"][0]["backend"] == "torch"
    assert run.config["model"]["name"] == "custom" and "model=custom (" in proc.stdout
    assert {m.backend for _, m in run.model.neurons()} == {"torch"}
    assert "falling back to the torch backend on cpu; config.yaml records" in proc.stdout
    assert f"run dir: {tmp_path / 'run'}" in proc.stdout.replace("\n", "")
    assert "SpikingNetwork(" not in proc.stdout
    summary = (tmp_path / "run" / "summary.md").read_text()  # saved too, with totals
    assert "| L1 linear | [2, N, 10] | 7,840 |" in summary and "parameters: 7,940" in summary
    assert "| L3.body.0 neuron | [2, N, 10] | 0 |" in summary
    assert "| L4.projection.0 linear | [2, N, 10] | 100 |" in summary
    # (784 + 10 + 10 + 10 + 10 + 10) x 2 steps x 4 B: the residual's own row is not counted again
    assert "activations per sample at T=2: 0.01 MiB" in summary
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("L")]
    assert rows[1][:4] == ["L1", "linear", "[2,", "N,"] and rows[1][5] == "7,840"
    assert rows[2][6:] == ["if", "v_th=1", "hard", "atan,", "torch"]


def test_values_refused_up_front_leave_no_run_dir(monkeypatch, capsys, tmp_path: Path) -> None:
    """``T=0`` / ``batch_size=0`` / a word for a number: one line, and no outputs/ folder."""
    monkeypatch.chdir(tmp_path)
    for bad, needle in [
        (["T=0"], "T must be a positive integer"),
        (["batch_size=0"], "batch_size must be a positive integer"),
        (["neuron=lif", "neuron.tau=abc"], "neuron.tau takes a number (its default is 2.0)"),
        (["compile=maybe"], "compile takes true or false"),
    ]:
        code, err = cli(monkeypatch, capsys, *TINY, *bad)
        assert_one_line_error(code, err, needle)
        code, err = cli(monkeypatch, capsys, *TINY, *bad, "hydra.run.dir=given")
        assert_one_line_error(code, err, needle)
    assert list(tmp_path.iterdir()) == []


def test_a_run_failing_before_its_first_checkpoint_frees_its_dir(
    monkeypatch, capsys, tmp_path: Path
) -> None:
    """A failure after Hydra made the run dir (here: the data is missing) removes what the run
    wrote (config.yaml, run.json, run.lock, .hydra/): there is nothing to resume, and the same
    command starts again in the same dir."""
    monkeypatch.chdir(tmp_path)
    args = [*TINY, "dataset=mnist", f"dataset.root={tmp_path / 'none'}", "hydra.run.dir=run"]
    code, err = cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "MNIST not found")
    assert not (tmp_path / "run").exists()
    keep = tmp_path / "mine"
    (keep / "notes.txt").parent.mkdir()
    (keep / "notes.txt").write_text("the user's own file")
    code, err = cli(monkeypatch, capsys, *args[:-1], f"hydra.run.dir={keep}")
    assert sorted(p.name for p in keep.iterdir()) == ["notes.txt"]


def test_help_into_a_closed_pipe_is_quiet() -> None:
    """``snnrun --help | head``: the reader leaving early is no error (it said "cannot write:
    Broken pipe"); the command ends quietly with 128 + SIGPIPE."""
    script = f"'{SNNRUN}' --help | true; exit ${{PIPESTATUS[0]}}"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.stderr == "" and proc.returncode in (0, 141)
