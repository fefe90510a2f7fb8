"""Every neuron x surrogate x backend combination trains through ``snnrun neuron=<name>`` on
digits (one batch each: 168 short runs in this process); ``triton`` runs the kernels under the
interpreter (``TRITON_INTERPRET=1``, set by conftest), the others on the CPU."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from snnrun.neuron.surrogate import SURROGATES

from conftest import TINY, read_metrics, train_in_process

NEURONS = ("if", "lif", "plif", "leaky", "alif", "synaptic", "psn")
BACKENDS = ("autograd", "torch", "triton")
ROWS = list(itertools.product(NEURONS, SURROGATES.names(), BACKENDS))
FC = [o for o in TINY if not o.startswith(("model.", "dataset."))] + ["model=fc"]
SMALL = [*FC, "dataset.train_limit=16", "dataset.test_limit=16", "batch_size=16", "T=3"]


def test_the_matrix_is_every_combination() -> None:
    assert len(ROWS) == len(NEURONS) * len(SURROGATES.names()) * len(BACKENDS) == 168


@pytest.mark.parametrize(("neuron", "surrogate", "backend"), ROWS, ids=["-".join(r) for r in ROWS])
def test_trains_through_the_command(
    neuron: str, surrogate: str, backend: str, tmp_path: Path, monkeypatch
) -> None:
    run_dir = tmp_path / "run"
    train_in_process(monkeypatch, *SMALL, f"neuron={neuron}", f"neuron.backend={backend}",
                     f"surrogate={surrogate}", f"hydra.run.dir={run_dir}")  # fmt: skip
    (record,) = read_metrics(run_dir)
    assert math.isfinite(record["train_loss"]) and "firing_rate/L2" in record
