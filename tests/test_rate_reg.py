"""``loss.rate_reg``: Zenke & Vogels's activity regulariser, its formula and through the command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from snnrun.engine.loss import build_loss
from snnrun.engine.rate_reg import RateRegularizer
from snnrun.neuron.neurons import LIFNeuron

from conftest import TINY, assert_one_line_error, cli, read_metrics, train_in_process


class TwoLayers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = LIFNeuron(tau=2.0, v_threshold=0.5), LIFNeuron(tau=2.0, v_threshold=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x) + x)


def test_the_penalty_is_the_papers_formula_on_the_layers_spike_counts() -> None:
    """``s_l mean relu(l - z)^2 + s_u mean_n relu(mean_i z - u)^2`` per layer, summed, on the
    counts the layers fired in the last training forward; nothing in eval or without grad."""
    model = TwoLayers().train()
    reg = RateRegularizer(lower=2.0, lower_strength=3.0, upper=1.0, upper_strength=5.0)
    reg.attach(model)
    x = torch.rand(6, 4, 5, generator=torch.Generator().manual_seed(0)) * 1.5
    spikes_a = model.a(x).detach()
    model.a.reset(), model.b.reset()
    spikes_b = model.b(spikes_a + x).detach()
    model.a.reset(), model.b.reset()
    model(x)
    expected = 0.0
    for spikes in (spikes_a, spikes_b):
        z = spikes.sum(0)
        expected += 3.0 * torch.relu(2.0 - z).square().mean()
        expected += 5.0 * torch.relu(z.mean(1) - 1.0).square().mean()
    torch.testing.assert_close(reg.penalty(), expected)
    assert reg.penalty() != 0.0
    model.eval()
    model(x)
    assert reg.penalty() == 0.0


def test_a_loss_gets_the_penalty_only_with_a_model() -> None:
    options = {"name": "ce_rate", "rate_reg": {"upper": 0.0, "upper_strength": 1.0}}
    model = TwoLayers().train()
    loss = build_loss(options, model)
    out = model(torch.ones(3, 2, 5))
    y = torch.tensor([0, 4])
    plain = build_loss(options)(out, y)
    assert loss(out, y) > plain
    assert loss.predict(out).tolist() == build_loss(options).predict(out).tolist()


def test_an_upper_bound_quiets_the_network_through_the_command(monkeypatch, tmp_path) -> None:
    """csnn with L2 and L6 held to 0 spikes fires less there than without."""
    strong = ["loss/rate_reg=zenke", "loss.rate_reg.upper=0", "loss.rate_reg.upper_strength=1",
              "loss.rate_reg.lower_strength=0", "loss.rate_reg.layers=[L2,L6]"]  # fmt: skip
    for name, extra in (("plain", []), ("quiet", strong)):
        train_in_process(monkeypatch, *TINY, "neuron=lif", "neuron.v_threshold=0.3",
                         "batch_size=16", *extra, f"hydra.run.dir={tmp_path / name}")  # fmt: skip
    plain, quiet = read_metrics(tmp_path / "plain")[-1], read_metrics(tmp_path / "quiet")[-1]
    for layer in ("L2", "L6"):
        assert quiet[f"firing_rate/{layer}"] < 0.5 * plain[f"firing_rate/{layer}"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["loss/rate_reg=zenke", "loss.rate_reg.layers=[L99]"],
      "loss.rate_reg.layers names no neuron layer ['L99']; this network's are L2"),
     (["loss/rate_reg=zenke", "loss.rate_reg.upper=-1"], "loss.rate_reg.upper must be a number")],
)  # fmt: skip
def test_a_bad_setting_is_one_line(monkeypatch, capsys, tmp_path: Path, args, needle) -> None:
    code, err = cli(monkeypatch, capsys, *TINY, *args, f"hydra.run.dir={tmp_path / 'bad'}")
    assert_one_line_error(code, err, needle)
