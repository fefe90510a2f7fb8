"""``snnrun eval <run dir> [key=value ...]``: test a trained network, into ``<run dir>/eval/``.

Keys: ``which=best|latest`` (the checkpoint; best by default), ``device=auto|cpu|cuda``,
``split=test|train``, ``dataset=<name>`` (another dataset group of the same input shape and
class count), ``dataset.<key>=<value>`` (``dataset.root``, ``dataset.test_limit``, ...),
``T=<steps>``, ``neuron.backend=torch|triton|autograd``, ``neuron.step_mode=m|s``,
``batch_size=<n>``,
``precision=fp32|amp_bf16|amp_fp16``, ``format=png|svg|pdf`` (the figure), ``out=<dir>``
(another folder for the results, e.g. when the run dir is read-only).

The network is rebuilt from the checkpoint's config with the overrides (they may change how it runs,
never its shape: that is one line naming the difference), given the checkpoint's weights and tested
with the training loop's own test pass (:func:`~snnrun.engine.testing.test_pass`), so the
run's own data gives the accuracy and loss the run recorded. An encoder that draws its input at
random (``poisson``) draws anew, seeded by the run's seed (the same each eval, not the training
run's draw): its accuracy differs from the record by sampling noise, and the output says so.
Printed: accuracy, loss, per-class correct/total (with the class names of
:data:`snnrun.data.dataset.CLASS_NAMES`) and the monitors' firing rates (and SynOps when the run
counted them). Written: ``eval/<timestamp>.json`` and ``eval/<timestamp>_confusion.<format>``.
Epochs count from 1: ``epoch`` is the number of epochs the weights trained, as ``load_run`` has it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from snnrun.cli.options import Option, choice, folder, positive_int, text, verb_options
from snnrun.core.errors import SnnrunError, one_line

if TYPE_CHECKING:  # torch loads inside the functions: a typo in the arguments fails at once
    import torch

USAGE = (
    "snnrun eval <run dir> [which=best|latest] [device=auto] [split=test|train] "
    "[dataset=<name>] [dataset.<key>=<value>] [T=<steps>] [neuron.backend=torch|triton|autograd] "
    "[batch_size=<n>] [precision=fp32] [format=png|svg|pdf] [out=<dir>]"
)
NEURON_KEYS = ("backend", "step_mode")  # how the neurons run, not what they compute
FORMATS = ("png", "svg", "pdf")


@dataclass
class EvalOptions:
    path: Path
    which: str = "best"
    device: str = "auto"
    split: str = "test"
    fmt: str = "png"
    dataset: str | None = None  # another dataset group
    out: Path | None = None  # None: <run dir>/eval
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value


OPTIONS = {
    "which": choice("which", "best", "latest"),
    "split": choice("split", "test", "train"),
    "format": choice("fmt", *FORMATS),
    "device": Option("device", text),
    "dataset": Option("dataset", text, "a dataset name"),
    "out": Option("out", folder, "a folder"),
    "T": Option("overrides.T", positive_int, "a positive integer"),
    "batch_size": Option("overrides.batch_size", positive_int, "a positive integer"),
    "precision": Option("overrides.precision", lambda v: {"name": text(v)}, "a precision name"),
}


def parse_args(args: list[str]) -> EvalOptions:
    """``<run dir> [key=value ...]`` → options; anything else is a one-line error."""
    return verb_options("eval", args, USAGE, EvalOptions, OPTIONS, _prefixed)


def _prefixed(opts: EvalOptions, key: str, value: str) -> bool:
    """``dataset.<key>=`` (any key of the dataset group) and ``neuron.backend`` /
    ``neuron.step_mode`` (how the neurons run, never what they compute)."""
    if key.startswith("dataset.") and len(key) > len("dataset."):
        opts.overrides[key] = yaml.safe_load(value) if value else None
        return True
    if not key.startswith("neuron."):
        return False
    if key.split(".", 1)[1] not in NEURON_KEYS:
        raise SnnrunError(
            f"eval takes neuron.{' and neuron.'.join(NEURON_KEYS)} only; the other "
            f"neuron keys ({key}) are the trained network, fixed by the checkpoint"
        )
    opts.overrides[key] = value
    return True


def eval_config(config: dict[str, Any], opts: EvalOptions) -> dict[str, Any]:
    """The run's saved config with the eval overrides applied."""
    config = copy.deepcopy(config)
    if opts.dataset is not None and opts.dataset != config["dataset"]["name"]:
        from omegaconf import OmegaConf

        from snnrun.core.compose import compose_config

        composed = compose_config([f"dataset={opts.dataset}"])
        config["dataset"] = OmegaConf.to_container(composed.dataset, resolve=True)
    for key, value in opts.overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def _same_shape(saved: dict[str, Any], shape: tuple[int, ...], classes: int, config: dict) -> None:
    """The data must fit the trained network: same sample shape and class count."""
    want, want_classes = tuple(saved["sample_shape"]), saved["num_classes"]
    if shape != want or classes != want_classes:
        name = config["dataset"]["name"]
        raise SnnrunError(
            f"dataset {name} gives samples {list(shape)} in {classes} classes but the run's "
            f"network takes {list(want)} in {want_classes} classes: these overrides change the "
            "network's shape; evaluate on data of the run's shape"
        )


def _sample_shape(dataset: Any, splits: Any) -> tuple[int, ...]:
    """One stored sample's shape (without T for sequences): what the files really hold."""
    if not len(dataset):
        raise SnnrunError(
            "the split to evaluate holds no samples; check dataset.test_limit and root"
        )
    x = dataset[0][0]
    return tuple(x.shape[1:] if splits.sequence else x.shape)


@dataclass
class Evaluation:
    """What one eval measured (the ``eval/<timestamp>.json`` content)."""

    record: dict[str, Any]
    confusion: Any  # [classes, classes] counts, rows true, columns predicted


def evaluate(opts: EvalOptions) -> Evaluation:
    """Rebuild the run's network with the overrides and run the trainer's test pass."""
    import torch

    from snnrun.api import build_network
    from snnrun.data.dataset import build_splits, make_loader
    from snnrun.data.encoder import build_encoder
    from snnrun.engine.ema import evaluated_weights
    from snnrun.engine.loss import build_loss
    from snnrun.engine.monitor import build_monitors
    from snnrun.engine.precision import build_precision
    from snnrun.engine.testing import LossStep, test_pass
    from snnrun.run.build import check_values, place, resolve_device
    from snnrun.run.rundir import find_run_dir

    rundir, named = find_run_dir(opts.path)
    which = named if opts.path.is_file() else opts.which
    payload = rundir.load_checkpoint(which)
    config = eval_config(payload["config"], opts)
    check_values(config)
    device = resolve_device(opts.device)
    splits = build_splits({**config["dataset"], "augment": None})  # measured as it is
    dataset = splits.test if opts.split == "test" else splits.train
    _same_shape(payload["data"], _sample_shape(dataset, splits), splits.num_classes, config)
    model = build_network(config, payload["data"])
    try:
        model.load_state_dict(evaluated_weights(payload))
    except RuntimeError as e:
        raise SnnrunError(
            f"the checkpoint's weights do not fit the network these overrides build: "
            f"{one_line(e, 300)}"
        ) from None
    place(model, device).eval()
    monitor = dict(config.get("monitor") or {"name": "none"})
    monitor["counters"] = list(dict.fromkeys([*monitor.get("counters", []), "firing_rate"]))
    loss = _Counting(build_loss(config["loss"]), splits.num_classes)
    loader = make_loader(
        dataset, config["batch_size"], False, config["seed"], config["num_workers"]
    )
    encoder = build_encoder(config["encoder"], splits.sequence)
    step = LossStep(
        device, encoder, loss, build_precision(config["precision"], device), config["T"]
    )
    random_input = _draws_at_random(encoder, dataset, config["T"])
    torch.manual_seed(config["seed"])  # a poisson encoder draws the same spikes each time
    monitors = build_monitors(monitor, model)
    result = test_pass(model, loader, step, monitors, f"eval {opts.split}")
    confusion = loss.confusion.cpu()
    recorded = payload["state"]["history"][-1] if payload["state"]["history"] else {}
    record = {
        "run": str(rundir.path),
        "which": which,
        "epoch": payload["state"]["epoch"],  # epochs trained: 1 after the first
        "split": opts.split,
        "dataset": config["dataset"],
        "T": config["T"],
        "encoder": config["encoder"].get("_target_") or config["encoder"]["name"],
        "device": str(device),
        "overrides": {**({"dataset": opts.dataset} if opts.dataset else {}), **opts.overrides},
        "samples": len(dataset),
        "acc": result["acc"],
        "loss": result["loss"],
        "per_class": _per_class(confusion, splits.class_names),
        "confusion": confusion.tolist(),
        "recorded_test_acc": recorded.get("test_acc"),
        "recorded_test_loss": recorded.get("test_loss"),
        "random_input": random_input,
        "samples_per_s": result["samples_per_s"],
        **result["monitors"],
    }
    return Evaluation(record, confusion)


class _Counting:
    """The run's loss, also counting (true, predicted) pairs into a confusion matrix."""

    def __init__(self, loss: Any, classes: int) -> None:
        self.loss, self.classes = loss, classes
        self.confusion: torch.Tensor | None = None

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torch

        pairs = y * self.classes + self.loss.predict(out)
        counts = torch.bincount(pairs, minlength=self.classes**2).view(self.classes, -1)
        self.confusion = counts if self.confusion is None else self.confusion + counts
        return self.loss(out, y)

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return self.loss.predict(out)


def _draws_at_random(encoder: Any, dataset: Any, T: int) -> bool:
    """Whether ``encoder`` gives the first samples different inputs on two calls (a poisson
    draw); the global RNG is left as it was."""
    import torch

    x = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(min(8, len(dataset)))])
    with torch.random.fork_rng(devices=[]):
        return not torch.equal(encoder(x, T), encoder(x, T))


def _per_class(confusion: torch.Tensor, names: list[str] | None) -> dict[str, dict[str, Any]]:
    """``{class: {name, correct, total, acc}}`` (acc None for a class without samples)."""
    totals, hits = confusion.sum(1).tolist(), confusion.diagonal().tolist()
    if names is not None and len(names) != len(totals):
        names = None  # a dataset of another class count
    return {
        str(c): {"name": names[c] if names else None, "correct": h, "total": n,
                 "acc": h / n if n else None}
        for c, (h, n) in enumerate(zip(hits, totals))
    }  # fmt: skip


def write(evaluation: Evaluation, fmt: str, folder: Path) -> tuple[Path, Path]:
    """``<timestamp>.json`` and the confusion-matrix figure beside it, in ``folder``."""
    from snnrun.report.render import run_label

    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    n = 0
    while (folder / f"{stamp}{(n and f'_{n}') or ''}.json").exists():
        n += 1
    stem = f"{stamp}{(n and f'_{n}') or ''}"
    rec = evaluation.record
    title = (
        f"{run_label(Path(rec['run']))} · {rec['which']} weights (epoch {rec['epoch']}) · "
        f"{rec['dataset']['name']} {rec['split']} · acc {rec['acc']:.4f}"
    )
    names = [row["name"] for row in rec["per_class"].values()]
    figure = plot_confusion(evaluation.confusion, title, folder / f"{stem}_confusion.{fmt}", names)
    path = folder / f"{stem}.json"
    path.write_text(json.dumps({**rec, "figure": figure.name}, indent=2) + "\n")
    return path, figure


def plot_confusion(
    confusion: torch.Tensor, title: str, path: Path, names: list[str | None]
) -> Path:
    """Counts per (true, predicted) class, each row's share as the colour; axes labelled (with
    the class ``names`` when they are known)."""
    from snnrun.report import figures as F

    plt = F.plt
    counts = confusion.numpy()
    shares = counts / counts.sum(1, keepdims=True).clip(min=1)
    k = counts.shape[0]
    side = min(3.0 + 0.45 * k, 12.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    labels = [f"{c} {name}" if name else str(c) for c, name in enumerate(names)]
    ax.set_xticks(range(k), labels, rotation=90 if any(names) else 0)
    ax.set_yticks(range(k), labels)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    colour = "white" if shares[i, j] > 0.5 else "black"
                    ax.text(
                        j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, color=colour
                    )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return F.save(fig, path)


def report(evaluation: Evaluation, written: tuple[Path, Path]) -> None:
    from snnrun.core.progress import console

    rec = evaluation.record
    lines = [
        f"{rec['dataset']['name']} {rec['split']} ({rec['samples']} samples, T={rec['T']}, "
        f"{rec['which']} weights of epoch {rec['epoch']}, {rec['device']}): "
        f"acc={rec['acc']:.4f} loss={rec['loss']:.4f}"
    ]
    if rec["recorded_test_acc"] is not None and not rec["overrides"] and rec["split"] == "test":
        lines.append(
            f"  the run recorded test_acc={rec['recorded_test_acc']:.4f} "
            f"test_loss={rec['recorded_test_loss']:.4f}"
        )
    if rec["random_input"]:
        lines.append(
            f"  encoder={rec['encoder']} draws the input at random: this eval's draw (seeded by "
            "the run's seed) is not the one the run was tested with, so its accuracy differs "
            "from the record by sampling noise"
        )
    lines += ["  per class (correct/total, accuracy):", *_class_lines(rec["per_class"])]
    rates = {k.split("/", 1)[1]: v for k, v in rec.items() if k.startswith("firing_rate/")}
    if rates:
        lines.append("  firing rates: " + "  ".join(f"{k}:{v:.4f}" for k, v in rates.items()))
    if "synops/ac" in rec:
        lines.append(
            f"  synops/sample: {rec['synops/ac']:.3g} AC + {rec['synops/mac']:.3g} MAC; "
            f"energy {rec['energy/snn_uj']:.3g} uJ (ANN {rec['energy/ann_uj']:.3g} uJ)"
        )
    lines += [f"  {path}" for path in written]
    for line in lines:
        console.print(line, highlight=False)


def _class_lines(per_class: dict[str, dict[str, Any]]) -> list[str]:
    """One aligned line per class: index, name (when known), correct/total, accuracy."""
    counts = {c: f"{row['correct']}/{row['total']}" for c, row in per_class.items()}
    wide = {
        "class": max(map(len, per_class)),
        "name": max((len(row["name"] or "") for row in per_class.values()), default=0),
        "count": max(map(len, counts.values())),
    }
    lines = []
    for c, row in per_class.items():
        name = f" {row['name'] or '':<{wide['name']}}" if wide["name"] else ""
        acc = "-" if row["acc"] is None else f"{row['acc']:.3f}"
        lines.append(f"    {c:>{wide['class']}}{name}  {counts[c]:>{wide['count']}}  {acc}")
    return lines


def main(args: list[str]) -> None:
    """``snnrun eval <run dir> [key=value ...]``."""
    from snnrun.cli.options import cannot_write
    from snnrun.run.rundir import RunDir

    opts = parse_args(args)
    evaluation = evaluate(opts)
    folder = opts.out or RunDir(evaluation.record["run"]).evals
    try:
        written = write(evaluation, opts.fmt, folder)
    except OSError as e:
        raise cannot_write(e, folder, "the results") from None
    report(evaluation, written)
