"""Every neuron x backend trains through ``snnrun neuron=<name>`` on digits, the surrogates
rotating over the rows so that each one is used; ``triton`` runs the kernels under the
interpreter (``TRITON_INTERPRET=1``, set by conftest), the others on the CPU."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from snnrun.net.surrogate import SURROGATES

from conftest import TINY, read_metrics, train_in_process

NEURONS = ("if", "lif", "plif", "leaky", "alif", "synaptic", "psn")
BACKENDS = ("autograd", "torch", "triton")
ROWS = [
    (neuron, backend, surrogate)
    for (neuron, backend), surrogate in zip(
        itertools.product(NEURONS, BACKENDS), itertools.cycle(SURROGATES.names())
    )
]
FC = [o for o in TINY if not o.startswith(("model.", "dataset."))] + ["model=fc"]
SMALL = [*FC, "dataset.train_limit=32", "dataset.test_limit=16", "batch_size=16", "T=3"]


def test_every_surrogate_is_in_the_matrix() -> None:
    assert {s for _, _, s in ROWS} == set(SURROGATES.names())


@pytest.mark.parametrize(("neuron", "backend", "surrogate"), ROWS, ids=["-".join(r) for r in ROWS])
def test_trains_through_the_command(
    neuron: str, backend: str, surrogate: str, tmp_path: Path, monkeypatch
) -> None:
    run_dir = tmp_path / "run"
    train_in_process(monkeypatch, *SMALL, f"neuron={neuron}", f"neuron.backend={backend}",
                     f"surrogate={surrogate}", f"hydra.run.dir={run_dir}")  # fmt: skip
    (record,) = read_metrics(run_dir)
    assert math.isfinite(record["train_loss"]) and "firing_rate/L2" in record
