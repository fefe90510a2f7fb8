"""``snnrun eval <run dir> [key=value ...]``: test a trained network, into ``<run dir>/eval/``.

Keys: ``which=best|latest`` (the checkpoint; best by default), ``device=auto|cpu|cuda``,
``split=test|train``, ``dataset=<name>`` (another dataset group of the same input shape and
class count), ``dataset.<key>=<value>`` (``dataset.root``, ``dataset.test_limit``, ...),
``T=<steps>``, ``neuron.backend=torch|triton|autograd``, ``neuron.step_mode=m|s``,
``batch_size=<n>``,
``precision=fp32|amp_bf16|amp_fp16``, ``format=png|svg|pdf`` (the figure).

The network is rebuilt from the checkpoint's config with the overrides (they may change how it
runs, never its shape: that is one line naming the difference), given the checkpoint's weights
and tested with the training loop's own test pass (:meth:`~snnrun.trainer.Trainer.evaluate`), so
the run's own data gives the accuracy and loss the run recorded (a ``poisson`` encoder draws
other spikes: seeded by the run's seed, not the same draws). Printed: accuracy, loss,
per-class accuracy and the monitors' firing rates (and SynOps when the run counted them).
Written: ``eval/<timestamp>.json`` and ``eval/<timestamp>_confusion.<format>``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from snnrun.cli import verb_options
from snnrun.errors import SnnrunError

if TYPE_CHECKING:  # torch loads inside the functions: a typo in the arguments fails at once
    import torch

USAGE = (
    "snnrun eval <run dir> [which=best|latest] [device=auto] [split=test|train] "
    "[dataset=<name>] [dataset.<key>=<value>] [T=<steps>] [neuron.backend=torch|triton|autograd] "
    "[batch_size=<n>] [precision=fp32] [format=png|svg|pdf]"
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
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value


def parse_args(args: list[str]) -> EvalOptions:
    """``<run dir> [key=value ...]`` → options; anything else is a one-line error."""
    return verb_options("eval", args, USAGE, EvalOptions, _set_option)


def _set_option(opts: EvalOptions, key: str, value: str) -> None:
    choices = {"which": ("best", "latest"), "split": ("test", "train"), "format": FORMATS}
    if key in choices:
        if value not in choices[key]:
            raise SnnrunError(f"eval {key}={value!r}; use {' or '.join(choices[key])}")
        setattr(opts, {"format": "fmt"}.get(key, key), value)
    elif key == "device" and value:
        opts.device = value
    elif key == "dataset" and value:
        opts.dataset = value
    elif key in ("T", "batch_size"):
        if not value.isdigit() or int(value) < 1:
            raise SnnrunError(f"eval {key}={value!r}; use a positive integer")
        opts.overrides[key] = int(value)
    elif key == "precision" and value:
        opts.overrides[key] = {"name": value}
    elif key.startswith("dataset.") and len(key) > len("dataset."):
        opts.overrides[key] = yaml.safe_load(value) if value else None
    elif key.startswith("neuron.") and key.split(".", 1)[1] in NEURON_KEYS:
        opts.overrides[key] = value
    elif key.startswith("neuron."):
        raise SnnrunError(
            f"eval takes neuron.{' and neuron.'.join(NEURON_KEYS)} only; the other "
            f"neuron keys ({key}) are the trained network, fixed by the checkpoint"
        )
    else:
        raise SnnrunError(f"eval has no key {key!r}; usage: {USAGE}")


def eval_config(config: dict[str, Any], opts: EvalOptions) -> dict[str, Any]:
    """The run's saved config with the eval overrides applied."""
    conf = copy.deepcopy(config)
    if opts.dataset is not None and opts.dataset != conf["dataset"]["name"]:
        from omegaconf import OmegaConf

        from snnrun.compose import compose_config

        composed = compose_config([f"dataset={opts.dataset}"])
        conf["dataset"] = OmegaConf.to_container(composed.dataset, resolve=True)
    for key, value in opts.overrides.items():
        *parents, leaf = key.split(".")
        node = conf
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return conf


def _same_shape(saved: dict[str, Any], shape: tuple[int, ...], classes: int, conf: dict) -> None:
    """The data must fit the trained network: same sample shape and class count."""
    want, want_classes = tuple(saved["sample_shape"]), saved["num_classes"]
    if shape != want or classes != want_classes:
        name = conf["dataset"]["name"]
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
    from snnrun.api import build_network
    from snnrun.data import build_splits, make_loader
    from snnrun.encoders import build_encoder
    from snnrun.loggers import RunLogger
    from snnrun.losses import build_loss
    from snnrun.monitors import build_monitors
    from snnrun.precision import build_precision
    from snnrun.run import Run, check_values, place, resolve_device
    from snnrun.rundir import find_run_dir
    from snnrun.trainer import Trainer

    rundir, named = find_run_dir(opts.path)
    which = named if opts.path.is_file() else opts.which
    payload = rundir.load_checkpoint(which)
    conf = eval_config(payload["config"], opts)
    check_values(conf)
    device = resolve_device(opts.device)
    splits = build_splits(conf["dataset"])
    dataset = splits.test if opts.split == "test" else splits.train
    _same_shape(payload["data"], _sample_shape(dataset, splits), splits.num_classes, conf)
    model = build_network(conf, payload["data"])
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as e:
        raise SnnrunError(
            f"the checkpoint's weights do not fit the network these overrides build: "
            f"{' '.join(str(e).split())[:300]}"
        ) from None
    place(model, device).eval()
    monitor = dict(conf.get("monitor") or {"name": "none"})
    monitor["counters"] = list(dict.fromkeys([*monitor.get("counters", []), "firing_rate"]))
    loss = _Counting(build_loss(conf["loss"]), splits.num_classes)
    loader = make_loader(dataset, conf["batch_size"], False, conf["seed"], conf["num_workers"])
    run = Run(
        conf=conf,
        device=device,
        splits=splits,
        model=model,
        optimizer=None,
        scheduler=None,
        precision=build_precision(conf["precision"], device),
        logger=RunLogger(),
        encoder=build_encoder(conf["encoder"], splits.sequence),
        loss=loss,
        monitors=build_monitors(monitor, model),
        train_loader=None,
        test_loader=loader,
    )  # type: ignore[arg-type]
    import torch

    torch.manual_seed(conf["seed"])  # a poisson encoder draws the same spikes each time
    result = Trainer(run, model).evaluate(loader, f"eval {opts.split}")
    confusion = loss.confusion.cpu()
    recorded = payload["state"]["history"][-1] if payload["state"]["history"] else {}
    record = {
        "run": str(rundir.path),
        "which": which,
        "epoch": payload["state"]["epoch"] - 1,
        "split": opts.split,
        "dataset": conf["dataset"],
        "T": conf["T"],
        "device": str(device),
        "overrides": {**({"dataset": opts.dataset} if opts.dataset else {}), **opts.overrides},
        "samples": len(dataset),
        "acc": result["acc"],
        "loss": result["loss"],
        "per_class_acc": _per_class(confusion),
        "confusion": confusion.tolist(),
        "recorded_test_acc": recorded.get("test_acc"),
        "recorded_test_loss": recorded.get("test_loss"),
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


def _per_class(confusion: torch.Tensor) -> dict[str, float | None]:
    totals = confusion.sum(1).tolist()
    hits = confusion.diagonal().tolist()
    return {str(c): (h / n if n else None) for c, (h, n) in enumerate(zip(hits, totals))}


def write(rundir_path: Path, evaluation: Evaluation, fmt: str) -> tuple[Path, Path]:
    """``eval/<timestamp>.json`` and the confusion-matrix figure beside it."""
    from snnrun.rundir import RunDir
    from snnrun.viz import run_label

    folder = RunDir(rundir_path).evals
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    n = 0
    while (folder / f"{stamp}{(n and f'_{n}') or ''}.json").exists():
        n += 1
    stem = f"{stamp}{(n and f'_{n}') or ''}"
    rec = evaluation.record
    title = (
        f"{run_label(rundir_path)} · {rec['which']} weights (epoch {rec['epoch']}) · "
        f"{rec['dataset']['name']} {rec['split']} · acc {rec['acc']:.4f}"
    )
    figure = plot_confusion(evaluation.confusion, title, folder / f"{stem}_confusion.{fmt}")
    path = folder / f"{stem}.json"
    path.write_text(json.dumps({**rec, "figure": figure.name}, indent=2) + "\n")
    return path, figure


def plot_confusion(confusion: torch.Tensor, title: str, path: Path) -> Path:
    """Counts per (true, predicted) class, each row's share as the colour; axes labelled."""
    from snnrun import figures as F

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
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
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
    from snnrun.progress import console

    rec = evaluation.record
    console.print(
        f"{rec['dataset']['name']} {rec['split']} ({rec['samples']} samples, T={rec['T']}, "
        f"{rec['which']} weights of epoch {rec['epoch']}, {rec['device']}): "
        f"acc={rec['acc']:.4f} loss={rec['loss']:.4f}",
        highlight=False,
    )
    if rec["recorded_test_acc"] is not None and not rec["overrides"] and rec["split"] == "test":
        console.print(
            f"  the run recorded test_acc={rec['recorded_test_acc']:.4f} "
            f"test_loss={rec['recorded_test_loss']:.4f}",
            highlight=False,
        )
    per_class = "  ".join(
        f"{c}:{a:.3f}" if a is not None else f"{c}:-" for c, a in rec["per_class_acc"].items()
    )
    console.print(f"  per class: {per_class}", highlight=False)
    rates = {k.split("/", 1)[1]: v for k, v in rec.items() if k.startswith("firing_rate/")}
    if rates:
        shown = "  ".join(f"{k}:{v:.4f}" for k, v in rates.items())
        console.print(f"  firing rates: {shown}", highlight=False)
    if "synops/ac" in rec:
        console.print(
            f"  synops/sample: {rec['synops/ac']:.3g} AC + {rec['synops/mac']:.3g} MAC; "
            f"energy {rec['energy/snn_uj']:.3g} uJ (ANN {rec['energy/ann_uj']:.3g} uJ)",
            highlight=False,
        )
    for path in written:
        console.print(f"  {path}", highlight=False)


def main(args: list[str]) -> None:
    """``snnrun eval <run dir> [key=value ...]``."""
    opts = parse_args(args)
    evaluation = evaluate(opts)
    path = Path(evaluation.record["run"])
    report(evaluation, write(path, evaluation, opts.fmt))
