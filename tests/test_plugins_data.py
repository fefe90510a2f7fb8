"""The ``dataset``, ``augment`` and ``surrogate`` doors: your own code by ``_target_``, through the
command from a user's ``--config-dir`` (``examples/conf``, ``examples/plugins`` on the path) and
inline, checked before the run starts; a run that used it resumes and evaluates."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from snnrun.core.distributed import World
from snnrun.core.errors import SnnrunError
from snnrun.data.dataset import build_splits, make_loader
from snnrun.kernels import triton_membrane
from snnrun.neuron.dynamics import Dynamics
from snnrun.neuron.neuron_loop import handwritten_loop
from snnrun.neuron.neurons import build_neuron
from snnrun.neuron.surrogate import build_surrogate

from conftest import (
    REPO,
    TINY,
    assert_one_line_error,
    cli,
    make_user_package,
    read_metrics,
    train_in_process,
    without_timing,
)

EXAMPLES = REPO / "examples"
CONF = ["--config-dir", str(EXAMPLES / "conf")]
FC = [*[o for o in TINY if not o.startswith("model.")], "model=fc", "dataset.train_limit=64",
      "dataset.test_limit=32", "batch_size=32"]  # fmt: skip


@pytest.fixture
def examples(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def _config(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


# --------------------------------------------------------------------------- dataset


def test_user_dataset_yaml_trains_and_evaluates(monkeypatch, tmp_path, examples) -> None:
    """``dataset=digits8`` from the user's config dir: 8x8 samples, its class names in eval."""
    run_dir = tmp_path / "run"
    train_in_process(monkeypatch, *CONF, *FC, "dataset=digits8", f"hydra.run.dir={run_dir}")
    run = json.loads((run_dir / "run.json").read_text())
    assert run["data"]["sample_shape"] == [1, 8, 8] and run["data"]["train_size"] == 64
    train_in_process(monkeypatch, "eval", str(run_dir))
    (record,) = [json.loads(p.read_text()) for p in (run_dir / "eval").glob("*.json")]
    assert record["samples"] == 32 and record["acc"] == read_metrics(run_dir)[0]["test_acc"]
    assert [c["name"] for c in record["per_class"].values()][:2] == ["zero", "one"]


def test_user_dataset_inline_with_validation_resumes(monkeypatch, tmp_path, examples) -> None:
    """``dataset._target_=...`` over the default group, ``val_fraction`` held out of it
    (labels read from its ``targets``); the run resumes."""
    run_dir = tmp_path / "run"
    args = [*FC, "dataset._target_=plugins.data.Digits8", "dataset.val_fraction=0.25"]
    train_in_process(monkeypatch, *args, f"hydra.run.dir={run_dir}")
    assert json.loads((run_dir / "run.json").read_text())["data"]["sample_shape"] == [1, 8, 8]
    assert "val_acc" in read_metrics(run_dir)[0]
    train_in_process(monkeypatch, f"resume={run_dir}", "epochs=2")
    assert len(read_metrics(run_dir)) == 2


PAIRS = """
import torch

class Pairs(torch.utils.data.Dataset):
    reads = 0
    def __len__(self):
        return 40
    def __getitem__(self, i):
        Pairs.reads += 1
        return torch.full((2, 3), float(i)), i % 4

class Data:
    def __init__(self, size):
        self.train, self.test = Pairs(), Pairs()
        self.sample_shape, self.num_classes = (2, 3), size

class WithVal(Data):
    def __init__(self):
        super().__init__(4)
        self.val = [(torch.zeros(2, 3), 1)] * 3
        self.class_names = ["a", "b", "c", "d"]
"""


@pytest.fixture
def pairs(tmp_path, monkeypatch):
    yield from make_user_package(tmp_path, monkeypatch, "snnrun_pairs", PAIRS)


def test_user_dataset_without_targets_is_held_out_by_one_pass(pairs: str) -> None:
    """A dataset without ``targets``/``labels``: its labels come from one pass over it, only when
    a validation split needs them; ``train_limit`` cuts it; the seeded loader batches it."""
    import snnrun_pairs

    plain = build_splits({"_target_": f"{pairs}.Data", "size": 4, "name": "pairs"})
    assert snnrun_pairs.Pairs.reads == 2  # the shape check reads one sample of each split
    x, y = next(iter(make_loader(plain.train, 8, False, 0)))
    assert x.shape == (8, 2, 3) and y.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    x1, y1 = next(iter(make_loader(plain.train, 8, False, 0, world=World(1, 1, 2))))
    assert torch.equal(x1, x[1::2]) and torch.equal(y1, y[1::2])  # rank 1's share
    spawned = pickle.loads(pickle.dumps(plain.train))  # what a worker started by spawn gets
    assert torch.equal(spawned.__getitems__([3, 5])[0], plain.train.__getitems__([3, 5])[0])
    snnrun_pairs.Pairs.reads = 0
    splits = build_splits({"_target_": f"{pairs}.Data", "size": 4, "train_limit": 20,
                           "val_fraction": 0.25})  # fmt: skip
    assert len(splits.train) == 16 and len(splits.val) == 4  # round(0.25 * 5) per class
    assert sorted(splits.val.labels.tolist()) == [0, 1, 2, 3]
    assert snnrun_pairs.Pairs.reads == 2 + 20  # the shape check + one pass over the 20 kept
    assert splits.train[0][0].shape == (2, 3)
    own = build_splits({"_target_": f"{pairs}.WithVal", "train_limit": 8})  # its own val split
    assert (len(own.train), len(own.val), own.class_names) == (8, 3, ["a", "b", "c", "d"])
    with pytest.raises(SnnrunError, match="validation split of its own; drop dataset"):
        build_splits({"_target_": f"{pairs}.WithVal", "val_fraction": 0.2})


# --------------------------------------------------------------------------- augment


AUGMENT = """
    import torch

    class Noise:
        def __init__(self, std, log):
            self.std, self.log = std, log
        def __call__(self, x, seeds):
            with open(self.log, "a") as f:
                f.write(f"{len(seeds)}\\n")
            noise = [torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(s))
                     for s in seeds]
            return x + self.std * torch.stack(noise)
"""


@pytest.fixture
def noise(tmp_path, monkeypatch):
    yield from make_user_package(tmp_path, monkeypatch, "snnrun_noise", AUGMENT)


def test_user_augment_changes_training_and_resumes_exactly(monkeypatch, tmp_path, noise) -> None:
    """``augment._target_=...``: called on every training batch with per-sample seeds (the
    input changes: another loss); 2 epochs equal 1 epoch + a resume of 1."""
    log = tmp_path / "calls.txt"
    args = [*FC, f"augment._target_={noise}.Noise", "+augment.std=0.5", f"+augment.log={log}"]
    train_in_process(monkeypatch, *args, "epochs=2", f"hydra.run.dir={tmp_path / 'whole'}")
    assert log.read_text().split() == ["32", "32"] * 2  # 64 samples, 2 batches, 2 epochs
    train_in_process(monkeypatch, *args, "epochs=1", f"hydra.run.dir={tmp_path / 'part'}")
    train_in_process(monkeypatch, f"resume={tmp_path / 'part'}", "epochs=2")
    whole, part = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "part")
    assert without_timing(whole) == without_timing(part)
    train_in_process(monkeypatch, *FC, f"hydra.run.dir={tmp_path / 'plain'}")
    assert read_metrics(tmp_path / "plain")[0]["train_loss"] != whole[0]["train_loss"]


def test_example_augment_yaml_shifts_images(monkeypatch, tmp_path, examples) -> None:
    """``augment=jitter`` from the user's config dir on the user's dataset."""
    run_dir = tmp_path / "run"
    train_in_process(monkeypatch, *CONF, *FC, "dataset=digits8", "augment=jitter",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    assert _config(run_dir)["dataset"]["augment"]["_target_"] == "plugins.data.Jitter"
    splits = build_splits(_config(run_dir)["dataset"])
    x = splits.train.__getitems__(list(range(16)))[0]
    assert not torch.equal(x, torch.stack([splits.train[i][0] for i in range(16)]))


# --------------------------------------------------------------------------- surrogate


def test_user_surrogate_trains_with_triton_kernels(monkeypatch, tmp_path, examples) -> None:
    """``surrogate=exponential`` (user YAML) with ``neuron.backend=triton``: the kernels run it
    (interpreted here: config.yaml keeps triton) and train as the torch backend does."""
    losses = []
    for backend in ("torch", "triton"):
        run_dir = tmp_path / backend
        train_in_process(monkeypatch, *CONF, *FC, "surrogate=exponential", "surrogate.alpha=3.0",
                         f"neuron.backend={backend}", f"hydra.run.dir={run_dir}")  # fmt: skip
        assert _config(run_dir)["neuron"]["backend"] == backend
        losses.append(read_metrics(run_dir)[0]["train_loss"])
    assert abs(losses[0] - losses[1]) < 1e-4
    train_in_process(monkeypatch, f"resume={tmp_path / 'torch'}", "epochs=2")  # rebuilt from
    assert len(read_metrics(tmp_path / "torch")) == 2  # config.yaml's _target_
    train_in_process(monkeypatch, "eval", str(tmp_path / "torch"))
    assert len(list((tmp_path / "torch" / "eval").glob("*.json"))) == 1


@pytest.mark.parametrize("kind", ["if", "lif"])
def test_user_surrogate_kernels_equal_torch_backend(kind: str, examples) -> None:
    """The Triton kernels' values and gradients with the user's formula equal the torch
    backend's (odd sizes: T=5, N=37)."""
    sg = build_surrogate({"_target_": "plugins.surrogate.exponential", "alpha": 3.0})
    assert sg.name == "exponential" and repr(sg) == "exponential(alpha=3)"
    dyn = Dynamics(kind=kind, v_threshold=0.8, v_reset=None, surrogate=sg)
    g = torch.Generator().manual_seed(0)
    x0, v0, gs = torch.randn(5, 37, generator=g) + 0.5, torch.zeros(37), torch.randn(5, 37)
    results = []
    for loop in (handwritten_loop, triton_membrane):
        x = x0.clone().requires_grad_()
        s, v_last, _ = loop(x, v0, 0.5 if kind == "lif" else None, dyn, False)
        ((s * gs).sum() + v_last.sum()).backward()
        results.append((s, v_last, x.grad))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-5, atol=1e-6)
    assert results[0][2].abs().sum() > 0


BOX = """
from snnrun.neuron.dialect import tl

def box(x, width=1.0):
    return tl.where(tl.abs(x) < 0.5 * width, 1.0 / width + 0.0 * x, 0.0 * x)
"""


@pytest.fixture
def boxes(tmp_path, monkeypatch):
    yield from make_user_package(tmp_path, monkeypatch, "snnrun_boxes", BOX)


@pytest.mark.parametrize("kind", ["alif", "synaptic"])
def test_user_surrogate_state_kernels_equal_torch_backend(kind: str, examples) -> None:
    """The two-state neurons' kernels with the user's formula: the torch backend's spikes and
    gradients."""
    surrogate = {"_target_": "plugins.surrogate.exponential", "alpha": 3.0}
    options = {"tau": 2.5, "tau_adapt": 4.0} if kind == "alif" else {"alpha": 0.6, "beta": 0.7}
    x = 1.0 + torch.randn(7, 3, 5, generator=torch.Generator().manual_seed(1))
    results = []
    for backend in ("torch", "triton"):
        layer = build_neuron({"name": kind, "backend": backend, "v_threshold": 0.8, **options},
                             surrogate)  # fmt: skip
        xs = x.clone().requires_grad_()
        out = layer(xs)
        (out * torch.arange(out.numel()).view(out.shape).sin()).sum().backward()
        results.append((out, xs.grad))
    assert 0 < results[0][0].mean() < 1
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_user_surrogate_inline_over_the_default_group(monkeypatch, capsys, tmp_path, boxes) -> None:
    """Inline over the default ``atan`` group: its ``alpha`` is not the function's parameter
    (``width``) and is left out; ``width`` sets it; a misspelt key is one line naming both."""
    run_dir = tmp_path / "run"
    inline = f"surrogate._target_={boxes}.box"
    code, err = cli(monkeypatch, capsys, *FC, inline, "+surrogate.widht=0.5",
                    f"hydra.run.dir={run_dir}")  # fmt: skip
    assert_one_line_error(code, err, f"surrogate: {boxes}.box", "width", "widht")
    assert not run_dir.exists()
    train_in_process(monkeypatch, *FC, inline, "+surrogate.width=0.5", f"hydra.run.dir={run_dir}")
    assert repr(build_surrogate(_config(run_dir)["surrogate"])) == "box(width=0.5)"
    assert len(read_metrics(run_dir)) == 1


# --------------------------------------------------------------------------- bad plug-ins


BAD = """
    import torch

    class NoClasses:
        def __init__(self):
            data = torch.utils.data.TensorDataset(torch.zeros(4, 1, 2, 2), torch.zeros(4).long())
            self.train = self.test = data
            self.sample_shape = (1, 2, 2)

    class WrongShape(NoClasses):
        def __init__(self):
            super().__init__()
            self.num_classes, self.sample_shape = 2, (1, 8, 8)

    class OneArg:
        def __call__(self, x):
            return x

    def one_arg(x):
        return x

    def not_a_tensor(x, alpha=1.0):
        return 1.0
"""


@pytest.fixture
def bad(tmp_path, monkeypatch):
    yield from make_user_package(tmp_path, monkeypatch, "bad", BAD)


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("dataset._target_=nosuch_pkg.Data", ["dataset", "nosuch_pkg", "PYTHONPATH"]),
        ("dataset._target_=bad.NoClasses", ["dataset: bad.NoClasses", "num_classes"]),
        ("dataset._target_=bad.WrongShape", ["dataset: bad.WrongShape", "[1, 2, 2]", "[1, 8, 8]"]),
        ("augment._target_=bad.OneArg", ["augment: bad.OneArg", "augment(x, seeds)"]),
        ("surrogate._target_=bad.one_arg", ["surrogate: bad.one_arg", "(x, param)"]),
        ("surrogate._target_=bad.not_a_tensor", ["surrogate: bad.not_a_tensor", "tensor"]),
        ("surrogate._target_=bad.missing", ["surrogate", "bad", "missing"]),
    ],
)
def test_bad_plugins_are_one_line_and_leave_no_run_dir(
    monkeypatch, capsys, tmp_path, bad, override: str, needles: list[str]
) -> None:
    run_dir = tmp_path / "run"
    code, err = cli(monkeypatch, capsys, *FC, override, f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, *needles)
    assert not run_dir.exists()
