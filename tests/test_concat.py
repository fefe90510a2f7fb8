"""``residual`` with ``connect: concat``: DenseNet- and Inception-style blocks in YAML, their
values, SynOps, errors, and a user's network through the command (train, resume, viz)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_blocks import BN, HEAD, NEURON, conv, folded, if_neuron, net

from snnrun.engine.monitor import spike_fed
from snnrun.net.blocks import Residual
from snnrun.net.layers import ModelBuildError
from snnrun.nir.graph import NirError, to_nir

from conftest import (
    assert_one_line_error,
    cli,
    read_metrics,
    resumed_equals_unbroken,
    train_in_process,
    user_model_args,
)


def dense(times: int, growth: int) -> dict:
    """A DenseNet block: each layer's spikes joined to its input along the channels."""
    body = [conv(growth), BN, NEURON]
    return {"type": "repeat", "times": times,
            "layers": [{"type": "residual", "connect": "concat", "body": body}]}  # fmt: skip


def test_concat_joins_body_and_shortcut_along_the_channels() -> None:
    model = net([conv(2), NEURON, {"type": "residual", "connect": "concat",
                                   "body": [conv(3), BN, NEURON]}, *HEAD])  # fmt: skip
    block = model.layers[2]
    assert isinstance(block, Residual) and block.out_shape == (5, 6, 6)
    x = torch.rand(4, 2, 2, 6, 6, dtype=torch.float64) * 2
    stem = if_neuron(folded(model.layers[0].module, x))
    c, bn = block.body[0].module, block.body[1].module
    body = if_neuron(folded(bn, folded(c, stem)))
    with torch.no_grad():
        out = block(stem)
    assert torch.equal(out, torch.cat((body, stem), 2))
    assert "connect=concat, dim=0" in repr(block)


def test_concat_along_the_last_dim_and_an_inception_block_of_three_branches() -> None:
    """``dim: -1`` on features; three branches as a concat whose shortcut is another concat."""
    lin = lambda n: {"type": "linear", "out_features": n}  # noqa: E731
    model = net([NEURON, {"type": "residual", "connect": "concat", "dim": -1,
                          "body": [lin(3), NEURON]}, lin(2)], shape=(4,), classes=2)  # fmt: skip
    assert model.layers[1].out_shape == (7,) and model.layers[1].dim == 0
    inception = {"type": "residual", "connect": "concat", "body": [conv(2, kernel_size=1,
                 padding=0), BN, NEURON], "shortcut": [{"type": "residual", "connect": "concat",
                 "body": [conv(3), BN, NEURON], "shortcut": [conv(4, kernel_size=5, padding=2),
                 BN, NEURON]}]}  # fmt: skip
    model = net([conv(2), NEURON, inception, *HEAD])
    assert model.layers[2].out_shape == (9, 6, 6)
    with torch.no_grad():
        out = model.layers[2](torch.ones(2, 1, 2, 6, 6, dtype=torch.float64))
    assert out.shape == (2, 1, 9, 6, 6) and set(out.unique().tolist()) <= {0.0, 1.0}


def test_synops_see_spikes_through_every_concat_of_a_dense_block() -> None:
    """Concatenated spikes are spikes: each dense layer's conv and the head get them."""
    model = net([conv(2), NEURON, dense(3, 2), *HEAD])
    convs = [copy[0].body[0].module for copy in model.layers[2]]
    assert all(c in spike_fed(model) for c in convs)
    assert [c.in_channels for c in convs] == [2, 4, 6]
    assert model.layers[4].module in spike_fed(model)


@pytest.mark.parametrize(
    ("entry", "needle"),
    [({"body": [conv(2, stride=2)]}, r"connect=concat joins along dim 0, so body \[T, N, 2, 3, 3\] "
      r"and shortcut \[T, N, 2, 6, 6\] must agree on every other dimension"),
     ({"body": [conv(2)], "dim": 3}, r"dim must be a per-sample dimension of \[T, N, 2, 6, 6\], "
      r"-3\.\.2"),
     ({"body": [conv(2)], "dim": 1, "connect": "add"}, r"dim is the dimension connect=concat "
      r"joins along; connect=add takes none")],
)  # fmt: skip
def test_a_bad_concat_names_the_entry(entry: dict, needle: str) -> None:
    with pytest.raises(ModelBuildError, match=r"model\.layers\[1\] \(residual\): " + needle):
        net([conv(2), {"type": "residual", "connect": "concat", **entry}, *HEAD])


def test_nir_export_refuses_a_concat_in_one_line() -> None:
    model = net([conv(2), NEURON, dense(1, 2), *HEAD])
    with pytest.raises(NirError, match=r"connect=concat joins the branches and NIR has no node"):
        to_nir(model.float(), (2, 6, 6), 1e-3)


DENSE_NET = """\
name: densenet_tiny
classes: auto
growth: 4
layers:
  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1, bias: false}
  - {type: batchnorm2d}
  - {type: neuron}
  - type: repeat
    times: 3
    layers:
      - type: residual
        connect: concat
        body:
          - {type: conv2d, out_channels: "${model.growth}", kernel_size: 3, padding: 1, bias: false}
          - {type: batchnorm2d}
          - {type: neuron}
  - {type: maxpool2d, kernel_size: 4, stride: 4}
  - {type: flatten}
  - {type: linear, out_features: "${model.classes}", bias: false}
  - {type: neuron}
"""


@pytest.fixture
def dense_args(tmp_path: Path) -> list[str]:
    return user_model_args(tmp_path, "densenet_tiny", DENSE_NET)


def test_a_users_dense_net_trains_resumes_exactly_and_renders(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dense_args: list[str]
) -> None:
    """From a user's --config-dir: 2 epochs unbroken equal 1 epoch resumed to 2, every nested
    neuron has its firing rate in metrics.jsonl, and viz renders the run."""
    whole = resumed_equals_unbroken(monkeypatch, tmp_path, dense_args)
    records = read_metrics(whole)
    rates = sorted(k for k in records[-1] if k.startswith("firing_rate/"))
    assert rates == ["firing_rate/L2", "firing_rate/L3.0.0.body.2", "firing_rate/L3.1.0.body.2",
                     "firing_rate/L3.2.0.body.2", "firing_rate/L7"]  # fmt: skip
    train_in_process(monkeypatch, "viz", str(whole))
    assert list((whole / "figures").glob("*.png"))


def test_a_bad_concat_through_the_command_is_one_line(
    monkeypatch, capsys, tmp_path: Path, dense_args: list[str]
) -> None:
    code, err = cli(monkeypatch, capsys, *dense_args, "+model.layers.3.layers.0.dim=7",
                    f"hydra.run.dir={tmp_path / 'bad'}")  # fmt: skip
    assert_one_line_error(code, err, "model.layers[3].layers[0] (residual): dim must be a "
                          "per-sample dimension of [T, N, 4, 28, 28]")  # fmt: skip
    assert not (tmp_path / "bad").exists()
