"""A short run whose layers are all silent says what usually causes it and what to try, once
per run (issue 31: Short runs look dead). Before, it printed one "silent" warning per layer,
each epoch, with no hint."""

from __future__ import annotations

from pathlib import Path

from conftest import TINY, train_in_process

SILENT = "warning: neuron layer {} is silent (firing rate 0.0000; warned below 0.001 / above 0.9)"


def test_silent_layers_get_one_hint_per_run(monkeypatch, capsys, tmp_path: Path) -> None:
    """lif with tau=20 at T=4 and a threshold of 5, one training batch an epoch: every layer
    silent. The warnings keep their format, one per layer and epoch; one note names the
    threshold, BatchNorm's statistics (two batches seen) and T against tau, with what to try."""
    tiny = [a for a in TINY if not a.startswith(("neuron=", "epochs="))]
    args = ["neuron=lif", "neuron.tau=20.0", "neuron.v_threshold=5.0", "epochs=2"]
    limits = ["dataset.train_limit=64", "dataset.test_limit=32"]
    train_in_process(monkeypatch, *tiny, *args, *limits, f"hydra.run.dir={tmp_path / 'run'}")
    out = capsys.readouterr().out
    lines = out.splitlines()
    for label in ("L2", "L6", "L10", "L12"):
        assert lines.count(SILENT.format(label)) == 2, out  # one per layer and epoch, as before
    hints = [line for line in lines if line.startswith("note: ") and "silent" in line]
    assert len(hints) == 1, out
    for needle in (
        "v_threshold=5",
        "lower neuron.v_threshold",
        "BatchNorm",
        "1 training batch",
        "T=4",
        "tau=20",
        "19%",
        "raise T or lower neuron.tau",
    ):
        assert needle in hints[0], (needle, hints[0])
