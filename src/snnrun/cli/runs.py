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
  killed process), ``debug`` (every epoch done in a debug mode such as ``debug=fast_dev_run``:
  no result), ``damaged`` (its ``run.json`` cannot be read);
- ``best`` / ``last``: the best and the last epoch's ``test_acc`` (``?``: the last one is not a
  number; the note says so);
- ``metrics`` (only when a listed run has them): the last epoch's values of the keys the run's
  callbacks declare (``run.json``'s ``callback_metrics``), ``key=value``;
- ``overrides``: what the run was started with (``hydra.*`` left out); those every listed run
  shares go in the title, once;
- ``note``: why it stopped, diverged, failed or is damaged (the reason, without the advice
  after it), or the pid of a running one; a ``test_acc`` in ``metrics.jsonl`` that is not a
  number.

Keys: ``status=<s>[,<s>...]`` (only runs in those states), ``model=<name>``,
``dataset=<name>``, ``sort=date|best|last`` (``date``: oldest first, the newest next to the
prompt; ``best`` / ``last``: highest test accuracy first). Off a terminal (a pipe, a file) each
run is one line however wide. A missing folder, one holding no runs, an unknown key or a bad
value is one line, exit 2; filters that match no run print one line, exit 0. A run dir whose
files hold a value of the wrong kind is left out with a note; the others are listed.

With two run dirs, the differences of their ``config.yaml``: the differing keys (flattened, a
list of plain values as one value) as a table: key, first run's value, second run's value
(``(absent)`` for a key one of them lacks); then each differing list of entries (``model.layers``)
as one unified-style diff, an entry a line with its index in its run's list.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from snnrun.cli.options import Option, choice, text, verb_options
from snnrun.core.errors import SnnrunError, one_line
from snnrun.core.progress import console
from snnrun.run.resume import ABSENT as NO_VALUE
from snnrun.run.resume import config_diff
from snnrun.run.rundir import INFO, STATUSES, RunDir, RunDirError

USAGE = (
    "snnrun runs [<folder or run dir>=outputs] [status=<s>[,<s>...]] [sort=date|best|last] "
    f"[model=<name>] [dataset=<name>] (statuses: {', '.join(STATUSES)}); "
    "snnrun runs <run dir> <run dir>: their config differences"
)
ARGS_OPTIONAL = True  # bare ``snnrun runs`` lists outputs/ (the command prints no usage)
DEFAULT_ROOT = Path("outputs")
SORTS = ("date", "best", "last")
STYLES = {"running": "cyan", "finished": "green", "stopped": "yellow", "failed": "red",
          "diverged": "magenta", "debug": "blue", "damaged": "red"}  # fmt: skip
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
    odd: str = ""  # a test_acc that is not a number (the last such), for the note
    last_odd: bool = False  # the last epoch's test_acc is such a one (shown as ``?``)
    metrics: str = ""  # the callbacks' keys in the last record: ``key=value ...``


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
    planned = config.get("epochs") if isinstance(config.get("epochs"), int) else None
    debug = _name(config, "debug", "none")
    status, note = rundir.status(planned, history, debug)
    accs = [r.get("test_acc") for r in history]
    odd = [(e, a) for e, a in enumerate(accs, 1) if a is not None and not _number(a)]
    numbers = [a for a in accs if _number(a)]
    return Row(
        path=rundir.path,
        started=rundir.started(),
        model=_name(config, "model", "-"),
        dataset=_name(config, "dataset", "-"),
        status=status,
        note=note,
        done=len(history),
        planned=planned,
        best=max(numbers) if numbers else None,
        last=accs[-1] if accs and _number(accs[-1]) else None,
        overrides=rundir.overrides(),
        odd=f"test_acc {odd[-1][1]!r} in epoch {odd[-1][0]} is not a number" if odd else "",
        last_odd=bool(odd) and odd[-1][0] == len(accs),
        metrics=_callback_metrics(rundir, history[-1] if history else {}),
    )


def _callback_metrics(rundir: RunDir, last: dict[str, Any]) -> str:
    """``key=value`` for each key the run's callbacks declare (``run.json``), as the last
    record holds it; "" when there are none (or ``run.json`` cannot be read: its note is the
    status's)."""
    try:
        info = json.loads((rundir.path / INFO).read_bytes())
    except (OSError, ValueError):
        return ""
    keys = info.get("callback_metrics") if isinstance(info, dict) else None
    if not isinstance(keys, list):
        return ""
    return " ".join(f"{k}={_metric(last[k])}" for k in keys if isinstance(k, str) and k in last)


def _metric(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _name(config: dict[str, Any], group: str, default: str) -> str:
    """The ``name`` the config's ``group`` picks (``default`` when it has none)."""
    options = config.get(group)
    return str(options.get("name", default)) if isinstance(options, dict) else default


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def collect(opts: RunsOptions) -> list[Row]:
    """Every run under ``opts.path`` that passes the filters, in ``opts.sort`` order; a run
    dir that cannot be read (or holds a value of another kind than snnrun writes) is left out
    with a note."""
    rows = []
    for rundir in find_runs(opts.path):
        try:
            rows.append(read_row(rundir))
        except (RunDirError, AttributeError, KeyError, IndexError, TypeError, ValueError) as e:
            why = one_line(e) if isinstance(e, RunDirError) else f"a value it cannot read ({e!r})"
            console.print(f"[yellow]note:[/] skipped {escape(str(rundir.path))}: "
                          f"{escape(why)}", highlight=False)  # fmt: skip
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
    metrics = any(r.metrics for r in rows)  # a column only when a run's callbacks add keys
    names = ("run", "started", "model / dataset", "status", "epochs", "best", "last",
             *(("metrics",) if metrics else ()), "overrides", "note")  # fmt: skip
    for name in names:
        table.add_column(name, justify="right" if name in kept and name != "status" else "left",
                         overflow="fold", min_width=kept.get(name),
                         ratio=1 if name in ("overrides", "note") else None)  # fmt: skip
    for r, run in zip(rows, runs):
        planned = "?" if r.planned is None else str(r.planned)
        note = ", ".join(n for n in (r.note.split("; ")[0], r.odd) if n)  # reason, no advice
        table.add_row(
            escape(run),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)),
            escape(f"{r.model} / {r.dataset}"),
            f"[{STYLES[r.status]}]{r.status}[/]",
            f"{r.done}/{planned}",
            _acc(r.best),
            "?" if r.last_odd else _acc(r.last),
            *((escape(r.metrics),) if metrics else ()),
            escape(" ".join(o for o in r.overrides if o not in shared)),
            escape(note),
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


def run_diff(a: RunDir, b: RunDir) -> tuple[list[tuple[str, str, str]], dict[str, list[str]]]:
    """The two configs' differences, in the order of ``a``'s config, then ``b``'s own keys:
    (key, value in ``a``, value in ``b``) for each flattened key whose values differ (a list of
    plain values is one value), and each differing list of entries (``model.layers``) as its
    :func:`entry_diff` lines."""
    keys, lists = [], {}
    for key, was, now in config_diff(a.read_config(), b.read_config()):
        if _holds_entries(was) or _holds_entries(now):
            lists[key] = entry_diff(_as_list(was), _as_list(now))
        else:
            keys.append((key, _shown(was), _shown(now)))
    return keys, lists


def _holds_entries(value: Any) -> bool:
    return isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)


def _as_list(value: Any) -> list[Any]:
    if value is NO_VALUE:
        return []
    return value if isinstance(value, list) else [value]


def _shown(value: Any) -> str:
    if value is NO_VALUE:
        return ABSENT
    return "null" if value is None else str(value)


def entry_diff(was: list[Any], now: list[Any], context: int = 1) -> list[str]:
    """A unified-style diff of two entry lists, an entry a line (flow YAML) after its index in
    its own list: ``-[i]`` only in the first, ``+[j]`` only in the second, `` [i]`` (or
    `` [i→j]``, moved) in both, ``context`` of those around each change, ``...`` for the
    entries left out."""
    a, b = [_flow(v) for v in was], [_flow(v) for v in now]
    groups = list(SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(context))
    lines: list[str] = []
    for group in groups:
        _, i1, _, j1, _ = group[0]
        lines += ["..."] if i1 > 0 or j1 > 0 else []
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines += [f" [{_moved(i, j1 - i1 + i)}] {a[i]}" for i in range(i1, i2)]
                continue
            lines += [f"-[{i}] {a[i]}" for i in range(i1, i2)]
            lines += [f"+[{j}] {b[j]}" for j in range(j1, j2)]
    _, _, i2, _, j2 = groups[-1][-1]
    return lines + (["..."] if i2 < len(a) or j2 < len(b) else [])


def _moved(i: int, j: int) -> str:
    return str(i) if i == j else f"{i}→{j}"


def _flow(value: Any) -> str:
    """One entry as one line of YAML (``{type: conv2d, out_channels: 4}``)."""
    return yaml.safe_dump([value], default_flow_style=True, sort_keys=False, width=10**9
                          ).strip()[1:-1]  # fmt: skip


def print_diff(paths: list[str]) -> None:
    """``snnrun runs <run dir> <run dir>``: the differing config keys as a table."""
    a, b = (RunDir(Path(p).expanduser()) for p in paths)
    for rundir in (a, b):
        if not rundir.path.is_dir():
            raise SnnrunError(f"{rundir.path} is no run dir (it does not exist or is a file); "
                              "compare two run dirs: snnrun runs <run dir> <run dir>")  # fmt: skip
    keys, lists = run_diff(a, b)
    if not keys and not lists:
        console.print(f"the configs of {escape(str(a.path))} and {escape(str(b.path))} are "
                      "the same", highlight=False)  # fmt: skip
        return
    if keys:
        table = Table(title=f"{len(keys)} config key(s) differ", title_justify="left")
        for name in ("key", str(a.path), str(b.path)):
            table.add_column(escape(name), overflow="fold")
        for row in keys:
            table.add_row(*(escape(cell) for cell in row))
        _print(table)
    for key, lines in lists.items():
        title = (f"{key}: the entries that differ (-: {a.path}, +: {b.path}; [i]: the entry's "
                 "index in its run's list)")  # fmt: skip
        console.print(title, markup=False, highlight=False)
        console.print("\n".join(lines), markup=False, highlight=False)


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
