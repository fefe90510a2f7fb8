"""A network the builder cannot make ends as one line through the command: nesting too deep,
a YAML alias that holds itself, a user module's missing class or one that drops T."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from snnrun.core.compose import MAX_NESTING
from snnrun.net.model import ModelBuildError, build_model

from conftest import TINY, assert_one_line_error, cli, make_user_package

SMALL = [o for o in TINY if not o.startswith("model.")]
IF = {"neuron": {"name": "if", "v_threshold": 1.0, "v_reset": 0.0, "detach_reset": False,
                 "step_mode": "m", "backend": "torch"},
      "surrogate": {"name": "atan", "alpha": 2.0}}  # fmt: skip


def nested(depth: int, block: str) -> str:
    """``model.layers`` holding ``depth`` more lists, one block inside the other (flow YAML:
    PyYAML's own writer cannot write 500 levels)."""
    key = "layers" if block == "sequential" else "body"
    inner = "[{type: linear, out_features: 10}]"
    for _ in range(depth - 1):
        inner = f"[{{type: {block}, {key}: {inner}}}]"
    return f"[{{type: flatten}}, {{type: linear, out_features: 10}}, {{type: sequential, layers: {inner}}}, {{type: neuron}}]"  # noqa: E501


def user_model(tmp_path: Path, name: str, text: str) -> list[str]:
    """``model=<name>`` from a user's ``--config-dir`` holding ``model/<name>.yaml``."""
    folder = tmp_path / "conf" / "model"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(text)
    return ["--config-dir", str(tmp_path / "conf"), f"model={name}", *SMALL,
            f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip


@pytest.mark.parametrize(
    ("depth", "block"),
    [(40, "sequential"), (50, "sequential"), (50, "residual"), (500, "residual")],
)
def test_nesting_too_deep_is_one_line_naming_the_limit(
    monkeypatch, capsys, tmp_path, depth: int, block: str
) -> None:
    """40 composes and the builder refuses it; 50 breaks OmegaConf and 500 PyYAML (each a 31 KB
    RecursionError line before)."""
    args = user_model(tmp_path, "deep", f"name: deep\nlayers: {nested(depth, block)}\n")
    code, err = cli(monkeypatch, capsys, *args)
    path = (
        "layers[2](.layers[0])×32" if block == "sequential" else "layers[2].layers[0](.body[0])×31"
    )
    assert_one_line_error(code, err, f"nests {depth + 1} lists deep", f"more than {MAX_NESTING}",
                          f"{path} is in list {MAX_NESTING + 1}", "type: repeat")  # fmt: skip
    assert "recursion" not in err and len(err) < 400, err
    assert not (tmp_path / "run").exists()


def test_a_yaml_alias_cycle_is_named(monkeypatch, capsys, tmp_path) -> None:
    args = user_model(tmp_path, "cycle", "name: cycle\nlayers: &a [{type: residual, body: *a}]\n")
    code, err = cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "cycle.yaml", "*a", "&a", "layers[0].body")
    assert "recursion" not in err and len(err) < 400, err


def test_nesting_at_the_limit_builds() -> None:
    inner: list = [{"type": "linear", "out_features": 3}]
    for _ in range(MAX_NESTING - 1):
        inner = [{"type": "sequential", "layers": inner}]
    assert build_model({"layers": inner}, IF, (4,), 3)(torch.zeros(2, 1, 4)).shape == (2, 1, 3)
    with pytest.raises(ModelBuildError, match=f"nests {MAX_NESTING + 1} lists deep"):
        build_model({"layers": [{"type": "sequential", "layers": inner}]}, IF, (4,), 3)


MY_LAYERS = '''
import torch
from torch import nn


class DenseLayer(nn.Module):
    def __init__(self, in_shape):
        super().__init__()
        self.fc = nn.Linear(in_shape[-1], 16)

    def forward(self, x):
        return self.fc(x)


class DropsT(nn.Module):
    """Averages over time: [T, N, F] -> [N, F]."""

    def forward(self, x):
        return x.mean(0)
'''


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch) -> Iterator[str]:
    yield from make_user_package(tmp_path, monkeypatch, "netfault_pkg", MY_LAYERS)


def layers_with(entry: str) -> str:
    return ("name: mine\nlayers:\n  - {type: flatten}\n  - {type: linear, out_features: 16}\n"
            f"  - {{type: neuron}}\n  - {entry}\n  - {{type: linear, out_features: 10}}\n"
            "  - {type: neuron}\n")  # fmt: skip


@pytest.mark.parametrize(
    ("target", "needles"),
    [
        ("torch.nn.NoSuchLayer", ("torch.nn was found", "no attribute NoSuchLayer")),
        ("netfault_pkg.DenseLayr", ("netfault_pkg was found", "DenseLayer")),
    ],
)
def test_a_missing_class_of_an_importable_module_is_named(
    monkeypatch, capsys, tmp_path, user_package: str, target: str, needles: tuple[str, ...]
) -> None:
    args = user_model(tmp_path, "mine", layers_with(f"{{type: module, _target_: {target}}}"))
    code, err = cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "model.layers[3] (module)", *needles)
    assert "PYTHONPATH" not in err


def test_an_unimportable_module_still_says_pythonpath(monkeypatch, capsys, tmp_path) -> None:
    args = user_model(tmp_path, "mine", layers_with("{type: module, _target_: nope_pkg.Layer}"))
    code, err = cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "model.layers[3] (module)", "nope_pkg", "PYTHONPATH")


def test_a_user_module_that_drops_t_is_named(
    monkeypatch, capsys, tmp_path, user_package: str
) -> None:
    args = user_model(
        tmp_path, "mine", layers_with(f"{{type: module, _target_: {user_package}.DropsT}}")
    )
    code, err = cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, "model.layers[3] (module)", "[2, 16]", "[T=1, N=2, 16]",
                          "[T, N, ...]")  # fmt: skip
