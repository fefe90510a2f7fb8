"""The floor plan holds: storeys import only downward (import-linter's contract in
pyproject.toml, with the kernels between the network and the neurons), and run dirs made before
the re-layout work."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from snnrun.api import load_run
from snnrun.cli.command import main
from snnrun.core.migrate import renamed_neuron_keys

from conftest import REPO, TINY, assert_one_line_error, cli, read_metrics

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
FIXTURE = REPO / "tests" / "fixtures" / "run_3fa185d"  # 2 epochs of model=fc, made by 3fa185d


def lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", **({"PYTHONPATH": str(pythonpath)} if pythonpath else {})}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_the_storeys_contract_holds() -> None:
    proc = lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    """The same contract on a copy of the package where core imports the command line."""
    shutil.copytree(REPO / "src" / "snnrun", tmp_path / "snnrun")
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "snnrun" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom snnrun.cli import command  # noqa: E402\n")
    proc = lint_imports(tmp_path, pythonpath=tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "snnrun.core is not allowed to import snnrun.cli" in proc.stdout


def test_the_contract_sees_the_kernels(tmp_path: Path) -> None:
    """``kernels/`` (top level) is ``snnrun.kernels``; import-linter reads it through the link
    ``src/snnrun/kernels``: on a copy where the kernels import the network (one storey up),
    the contract breaks."""
    link = REPO / "src" / "snnrun" / "kernels"
    assert link.is_symlink() and link.resolve() == (REPO / "kernels").resolve()
    shutil.copytree(REPO / "src" / "snnrun", tmp_path / "snnrun", symlinks=False)
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    dialect = tmp_path / "snnrun" / "kernels" / "dialect.py"
    dialect.write_text(dialect.read_text() + "\nfrom snnrun.net import model  # noqa: E402\n")
    proc = lint_imports(tmp_path, pythonpath=tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "snnrun.kernels is not allowed to import snnrun.net" in proc.stdout


def test_no_module_imports_by_importlib() -> None:
    """Every import is plain, where import-linter and the import graph see it."""
    for path in [*(REPO / "src" / "snnrun").rglob("*.py"), *(REPO / "kernels").glob("*.py")]:
        text = path.read_text()
        assert "import_module(" not in text or path.name == "plugin.py", path  # users' targets


def test_a_run_dir_made_before_the_relayout_still_works(monkeypatch, tmp_path: Path) -> None:
    """A run dir written by 3fa185d (the flat layout): load_run, eval, viz and a resume."""
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    run = load_run(run_dir, which="latest")
    assert run.epoch == 2 and run.config["model"]["name"] == "fc"
    for args in (["eval", str(run_dir)], ["viz", str(run_dir)], [f"resume={run_dir}", "epochs=3"]):
        monkeypatch.setattr(sys, "argv", ["snnrun", *args])
        main()
    assert list((run_dir / "eval").glob("*.json")) and (run_dir / "figures").is_dir()
    assert [r["epoch"] for r in read_metrics(run_dir)] == [0, 1, 2]
    assert "kind" in yaml.safe_load((FIXTURE / "config.yaml").read_text())["neuron"]
    resumed = yaml.safe_load((run_dir / "config.yaml").read_text())  # rewritten by the resume
    assert resumed["neuron"]["name"] == "lif" and "kind" not in resumed["neuron"]


def test_configs_saved_with_the_neuron_kind_key_read_with_name() -> None:
    """Checkpoints up to version 2 named the neuron with ``kind``: the key is renamed in the
    group and in neuron-holding entries at any depth; a user module's arguments are its own."""
    old = {
        "neuron": {"kind": "plif", "init_tau": 2.0},
        "model": {"layers": [
            {"type": "neuron", "kind": "lif"},
            {"type": "residual", "body": [{"type": "recurrent", "kind": "alif", "layers": []}]},
            {"type": "spiking_self_attention", "neuron": {"kind": "if"}},
            {"type": "module", "_target_": "my.Layer", "kind": "gabor"},
        ]},
        "dataset": {"name": "digits"},
    }  # fmt: skip
    new = renamed_neuron_keys(old)
    layers = new["model"]["layers"]
    assert new["neuron"] == {"name": "plif", "init_tau": 2.0}
    assert layers[0] == {"type": "neuron", "name": "lif"}
    assert layers[1]["body"][0]["name"] == "alif" and layers[2]["neuron"] == {"name": "if"}
    assert layers[3]["kind"] == "gabor" and new["dataset"] == old["dataset"]
    assert renamed_neuron_keys(new) == new


def test_the_old_neuron_key_in_a_users_config_is_one_line(monkeypatch, capsys, tmp_path) -> None:
    code, err = cli(
        monkeypatch, capsys, *TINY, f"hydra.run.dir={tmp_path / 'r'}",
        "+model.layers.2.kind=lif",  # as a YAML of before the rename would say
    )  # fmt: skip
    assert_one_line_error(code, err, "model.layers[2] (neuron)", "{type: neuron, name: lif}")
