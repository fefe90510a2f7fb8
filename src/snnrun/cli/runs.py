"""``snnrun runs [folder] [key=value ...]``: the past runs under a folder, as a table;
``snnrun runs <run dir> <run dir>``: where two runs' configs differ.

The table reads the run dirs alone (no W&B): every run dir at or under the folder (default
``outputs/``: its ``<date>/<time>/`` runs and ``multirun/<date>/<time>/<job>/`` sweep jobs; a run
dir's own sub-folders and hidden folders are not searched). One row per run:

- ``run``: its dir, under the folder; ``started``: when it started;
- ``model / dataset``: the config's names; ``epochs``: done / planned;
- ``status`` (:meth:`~snnrun.run.rundir.RunDir.status`): ``running`` (a live process holds
  ``run.lock``), ``finished`` (every planned epoch done), ``stopped`` (early stopping, which
  cannot be continued, or SIGTERM / Ctrl-C, which ``resume=<run dir>`` continues: the note
  says which), ``diverged`` (NaN/inf loss or parameters), ``failed`` (anything else: a crash, a
  killed process);
- ``best`` / ``last``: the best and the last epoch's ``test_acc``;
- ``overrides``: what the run was started with (``hydra.*`` left out); those every listed run
  shares go in the title, once;
- ``note``: why it stopped, diverged or failed (the reason, without the advice after it), or
  the pid of a running one.

Keys: ``status=<s>[,<s>...]`` (only runs in those states), ``model=<name>``,
``dataset=<name>``, ``sort=date|best|last`` (``date``: oldest first, the newest next to the
prompt; ``best`` / ``last``: highest test accuracy first). Off a terminal (a pipe, a file) each
run is one line however wide. A missing folder, one holding no runs, an unknown key or a bad
value is one line, exit 2; filters that match no run print one line, exit 0.

With two run dirs, the differences of their ``config.yaml`` (flattened keys, list items too:
``model.layers.3.type``) as a table: key, first run's value, second run's value (``(absent)``
for a key one of them lacks).
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from snnrun.cli.options import Option, choice, text, verb_options
from snnrun.core.errors import SnnrunError, one_line
from snnrun.core.progress import console
from snnrun.run.resume import ABSENT as NO_VALUE
from snnrun.run.resume import config_diff
from snnrun.run.rundir import STATUSES, RunDir, RunDirError

USAGE = (
    "snnrun runs [<folder or run dir>=outputs] [status=<s>[,<s>...]] [sort=date|best|last] "
    f"[model=<name>] [dataset=<name>] (statuses: {', '.join(STATUSES)}); "
    "snnrun runs <run dir> <run dir>: their config differences"
)
ARGS_OPTIONAL = True  # bare ``snnrun runs`` lists outputs/ (the command prints no usage)
DEFAULT_ROOT = Path("outputs")
SORTS = ("date", "best", "last")
STYLES = {"running": "cyan", "finished": "green", "stopped": "yellow", "failed": "red",
          "diverged": "magenta"}  # fmt: skip
ABSENT = "(absent)"


@dataclass
class RunsOptions:
    path: Path
    statuses: tuple[str, ...] = ()  # () = every status
    sort: str = "date"
    model: str | None = None
    dataset: str | None = None


def statuses(value: str) -> tuple[str, ...]:
    """``running,failed`` → the statuses named (each one of :data:`STATUSES`)."""
    names = tuple(v.strip() for v in value.split(","))
    if not all(n in STATUSES for n in names):
        raise ValueError(value)
    return names


OPTIONS = {
    "status": Option("statuses", statuses, f"one or more of {','.join(STATUSES)}"),
    "sort": choice("sort", *SORTS),
    "model": Option("model", text, "a model name"),
    "dataset": Option("dataset", text, "a dataset name"),
}


@dataclass
class Row:
    """One run as the table shows it (accuracies are ``test_acc``; None: no epoch yet)."""

    path: Path
    started: float
    model: str
    dataset: str
    status: str
    note: str
    done: int
    planned: int | None
    best: float | None
    last: float | None
    overrides: list[str]


def parse_args(args: list[str]) -> RunsOptions:
    """``[folder] [key=value ...]`` → options (the folder defaults to ``outputs``)."""
    paths = [a for a in args if "=" not in a]
    if len(paths) > 1:
        raise SnnrunError(f"runs takes one folder, or two run dirs to compare; usage: {USAGE}")
    pairs = [a for a in args if "=" in a]
    return verb_options("runs", [*(paths or [str(DEFAULT_ROOT)]), *pairs], USAGE, RunsOptions,
                        OPTIONS)  # fmt: skip


def find_runs(root: Path) -> list[RunDir]:
    """The run dirs at or under ``root`` (not inside one: its ``wandb/``, ``figures/`` ...,
    and no hidden folder); a missing folder or one holding none is one line."""
    if not root.exists():
        raise SnnrunError(f"{root} does not exist; pass a folder of runs (default outputs/, "
                          "where hydra.run.dir and hydra.sweep.dir go) or a run dir")  # fmt: skip
    if not root.is_dir():
        raise SnnrunError(f"{root} is not a folder; pass a folder of runs or a run dir")
    found = []
    for folder, subdirs, _ in os.walk(root):
        rundir = RunDir(folder)
        if rundir.is_run():
            found.append(rundir)
            subdirs.clear()
        else:
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
    if not found:
        raise SnnrunError(f"{root} holds no snnrun run (no run dir at any depth); pass the "
                          "folder your runs went to (hydra.run.dir, hydra.sweep.dir)")  # fmt: skip
    return found


def read_row(rundir: RunDir) -> Row:
    """The run's row, read from its dir (a corrupt ``metrics.jsonl`` raises
    :class:`~snnrun.run.rundir.RunDirError`)."""
    config, history = rundir.known_config(), rundir.read_metrics()
    planned = config.get("epochs")
    status, note = rundir.status(planned if isinstance(planned, int) else None, history)
    accs = [r["test_acc"] for r in history if isinstance(r.get("test_acc"), (int, float))]
    return Row(
        path=rundir.path,
        started=rundir.started(),
        model=str((config.get("model") or {}).get("name", "-")),
        dataset=str((config.get("dataset") or {}).get("name", "-")),
        status=status,
        note=note,
        done=len(history),
        planned=planned if isinstance(planned, int) else None,
        best=max(accs) if accs else None,
        last=history[-1].get("test_acc") if history else None,
        overrides=rundir.overrides(),
    )


def collect(opts: RunsOptions) -> list[Row]:
    """Every run under ``opts.path`` that passes the filters, in ``opts.sort`` order; a run
    dir that cannot be read is left out with a note."""
    rows = []
    for rundir in find_runs(opts.path):
        try:
            rows.append(read_row(rundir))
        except RunDirError as e:
            console.print(f"[yellow]note:[/] skipped {escape(str(rundir.path))}: "
                          f"{escape(one_line(e))}", highlight=False)  # fmt: skip
    kept = [r for r in rows if _passes(r, opts)]
    return sorted(kept, key=_sort_key(opts.sort))


def _passes(row: Row, opts: RunsOptions) -> bool:
    return (
        (not opts.statuses or row.status in opts.statuses)
        and opts.model in (None, row.model)
        and opts.dataset in (None, row.dataset)
    )


def _sort_key(sort: str) -> Any:
    if sort == "date":
        return lambda r: (r.started, str(r.path))
    field = "best" if sort == "best" else "last"
    return lambda r: (getattr(r, field) is None, -(getattr(r, field) or 0.0), r.started)


def shared_overrides(rows: list[Row]) -> list[str]:
    """The overrides every row has (shown once, in the title), when there are two rows or more."""
    if len(rows) < 2:
        return []
    return [o for o in rows[0].overrides if all(o in r.overrides for r in rows[1:])]


def runs_table(rows: list[Row], root: Path) -> Table:
    """The rows as a rich table; run dirs relative to ``root``."""
    shared = shared_overrides(rows)
    title = f"runs in {root}" + (f" (every run: {' '.join(shared)})" if shared else "")
    table = Table(title=escape(title), title_justify="left")
    # overrides and notes fold into the width the other columns leave; on a narrow terminal
    # the others fold too, except the status and the numbers
    runs = [_relative(r.path, root) for r in rows]
    kept = {"status": 8, "epochs": 7, "best": 6, "last": 6}
    for name in ("run", "started", "model / dataset", "status", "epochs", "best", "last",
                 "overrides", "note"):  # fmt: skip
        table.add_column(name, justify="right" if name in kept and name != "status" else "left",
                         overflow="fold", min_width=kept.get(name),
                         ratio=1 if name in ("overrides", "note") else None)  # fmt: skip
    for r, run in zip(rows, runs):
        planned = "?" if r.planned is None else str(r.planned)
        table.add_row(
            escape(run),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)),
            escape(f"{r.model} / {r.dataset}"),
            f"[{STYLES[r.status]}]{r.status}[/]",
            f"{r.done}/{planned}",
            _acc(r.best),
            _acc(r.last),
            escape(" ".join(o for o in r.overrides if o not in shared)),
            escape(r.note.split("; ")[0]),  # the reason, without the advice after it
        )
    return table


def _relative(path: Path, root: Path) -> str:
    if path == root:
        return str(path)
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def run_diff(a: RunDir, b: RunDir) -> list[tuple[str, str, str]]:
    """(key, value in ``a``, value in ``b``) for each flattened config key (list items too)
    whose values differ, in the order of ``a``'s config, then ``b``'s own keys."""
    diff = config_diff(a.read_config(), b.read_config(), lists=True)
    return [(k, _shown(was), _shown(now)) for k, was, now in diff]


def _shown(value: Any) -> str:
    if value is NO_VALUE:
        return ABSENT
    return "null" if value is None else str(value)


def print_diff(paths: list[str]) -> None:
    """``snnrun runs <run dir> <run dir>``: the differing config keys as a table."""
    a, b = (RunDir(Path(p).expanduser()) for p in paths)
    for rundir in (a, b):
        if not rundir.path.is_dir():
            raise SnnrunError(f"{rundir.path} is no run dir (it does not exist or is a file); "
                              "compare two run dirs: snnrun runs <run dir> <run dir>")  # fmt: skip
    diff = run_diff(a, b)
    if not diff:
        console.print(f"the configs of {escape(str(a.path))} and {escape(str(b.path))} are "
                      "the same", highlight=False)  # fmt: skip
        return
    table = Table(title=f"{len(diff)} config key(s) differ", title_justify="left")
    for name in ("key", str(a.path), str(b.path)):
        table.add_column(escape(name), overflow="fold")
    for row in diff:
        table.add_row(*(escape(cell) for cell in row))
    _print(table)


def _print(table: Table) -> None:
    """On a terminal at its width; elsewhere each row on one line (for grep and scripts)."""
    if console.is_terminal:
        console.print(table, highlight=False)
        return
    buffer = io.StringIO()
    Console(file=buffer, width=10_000, no_color=True, highlight=False).print(table)
    plain = "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())
    console.print(plain, markup=False, highlight=False)


def main(args: list[str]) -> None:
    """``snnrun runs [folder] [key=value ...]`` or ``snnrun runs <run dir> <run dir>``."""
    paths = [a for a in args if "=" not in a]
    if len(paths) == 2:
        if len(args) != 2:
            raise SnnrunError("runs <run dir> <run dir> compares two configs and takes no "
                              f"key=value; usage: {USAGE}")  # fmt: skip
        print_diff(paths)
        return
    opts = parse_args(args)
    rows = collect(opts)
    if not rows:
        given = " ".join(a for a in args if "=" in a)
        console.print(f"no run under {escape(str(opts.path))} matches {escape(given)}",
                      highlight=False)  # fmt: skip
        return
    _print(runs_table(rows, opts.path))
