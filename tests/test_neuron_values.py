"""Neuron values a layer would clamp or cannot use are refused as one line, and the neuron
refusals read well (issue 31: Neuron values, Messages).

- ``synaptic``'s ``alpha`` / ``beta`` and ``leaky``'s ``beta`` are decays in [0, 1]; outside it
  they were clamped silently (the summary printing the value given): one line naming the key,
  the value, the range and the fix, from the group or from an entry.
- A refused neuron value read ``model.layers[2] (neuron): bad options {}: alif needs ...``;
  an unknown key in the neuron group was dropped silently (``neuron=alif +neuron.tau_adpt=50``).
- psn's message for another T printed ``T: ${{T}}``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from snnrun.core.errors import SnnrunError
from snnrun.neuron.state_neurons import PSNNeuron

from conftest import TINY, assert_one_line_error, cli

RUN = [a for a in TINY if not a.startswith("neuron=")] + ["dataset.train_limit=64"]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["neuron=synaptic", "neuron.alpha=1.5"], ["alpha", "1.5", "[0, 1]", "neuron.alpha"]),
        (["neuron=synaptic", "neuron.beta=-0.3"], ["beta", "-0.3", "[0, 1]", "neuron.beta"]),
        (
            ["neuron=synaptic", "neuron.learn_alpha=true", "neuron.alpha=1.2"],
            ["alpha", "1.2", "[0, 1]"],
        ),
        (["neuron=leaky", "neuron.beta=2"], ["beta", "2", "[0, 1]", "neuron.beta"]),
        (
            ["model=snntorch_csnn", "model.beta=1.5", "neuron=if"],
            ["model.layers[2] (neuron)", "beta", "1.5", "[0, 1]"],
        ),
    ],
    ids=["synaptic_alpha", "synaptic_beta", "learned_alpha", "leaky_beta", "entry_beta"],
)
def test_a_decay_outside_0_1_is_refused(
    monkeypatch, capsys, tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    run = [a for a in RUN if not (a.startswith("model.") and "model=" in args[0])]
    code, err = cli(monkeypatch, capsys, *run, *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(code, err, *needles)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["neuron=alif", "neuron.tau=0.5"],
            ["model.layers[2] (neuron): ", "alif needs tau > 1, got 0.5", "set neuron.tau"],
        ),
        (
            ["neuron=alif", "neuron.tau_adapt=-1"],
            ["alif needs tau_adapt > 0, got -1", "set neuron.tau_adapt"],
        ),
        (["neuron=lif", "neuron.tau=1"], ["lif needs tau > 1, got 1", "set neuron.tau"]),
        (["neuron=alif", "+neuron.tau_adpt=50"], ["neuron.tau_adpt", "alif's keys", "tau_adapt"]),
        (["neuron=alif", "+neuron.foo=1"], ["no neuron reads neuron.foo", "alif's keys"]),
        (["neuron=alif", "+model.layers.2.foo=1"], ["model.layers[2] (neuron)", "alif has no"]),
    ],
    ids=["alif_tau", "alif_tau_adapt", "lif_tau", "alif_typo", "alif_unknown", "entry_unknown"],
)
def test_neuron_refusals_read_well(
    monkeypatch, capsys, tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    """Each bad value on its own, with its fix; an unknown group key is refused with the
    neuron's keys, not dropped; an entry's unknown key names its neuron (alif, not lif)."""
    code, err = cli(monkeypatch, capsys, *RUN, *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(code, err, *needles)


def test_neuron_refusals_print_no_empty_mapping(monkeypatch, capsys, tmp_path: Path) -> None:
    """``model.layers[2] (neuron): bad options {}: alif needs ...``: the neuron entry has no
    options of its own (the value is the group's), so the mapping said nothing."""
    args = ["neuron=alif", "neuron.tau=0.5", f"hydra.run.dir={tmp_path / 'run'}"]
    code, err = cli(monkeypatch, capsys, *RUN, *args)
    assert_one_line_error(code, err, "model.layers[2] (neuron): alif needs tau > 1")
    assert "{}" not in err and "bad options" not in err


def test_psn_t_message_names_the_interpolation() -> None:
    """A psn built for T=4 run at T=6: the message shows ``T: ${T}``, not ``${{T}}``."""
    psn = PSNNeuron(T=4)
    with pytest.raises(SnnrunError) as e:
        psn(torch.zeros(6, 2, 3))
    assert "T: ${T}" in str(e.value) and "${{" not in str(e.value)


def test_psn_built_for_another_t_through_the_command(monkeypatch, capsys, tmp_path: Path) -> None:
    code, err = cli(
        monkeypatch, capsys, *RUN, "neuron=psn", "neuron.T=6", f"hydra.run.dir={tmp_path / 'r'}"
    )
    assert_one_line_error(code, err, "psn was built for T=6", "T: ${T}")
    assert "${{" not in err
