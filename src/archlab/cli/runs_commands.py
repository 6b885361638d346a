"""``arch runs ...``: query and maintain the experiment registry.

Every command takes ``--registry URL`` (default: ``$ARCHLAB_REGISTRY``, else
``sqlite:///.archlab/registry.db`` under the current folder) and is a thin layer over
``archlab.Registry``: parse, call, print. sqlalchemy and rich load inside the command bodies, so
``arch --help`` stays fast. Registry and query errors are ``UserInputError``s: exit code 2, one
paragraph, no traceback (``cli/main.py``).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from archlab.registry import CVGroup, Ranked, Registry, Run

F = TypeVar("F", bound=Callable[..., Any])

METRIC_COLUMNS = 6  # at most this many metric columns in a table; json and csv have them all
STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "interrupted": "yellow",
    "running": "cyan",
}
_CV_FIELDS = ("group", "k", "fold", "n_train", "n_val", "train_sha256", "val_sha256")
_MIXUP_FIELDS = (
    "alpha",
    "cutmix_alpha",
    "cutmix_minmax",
    "prob",
    "switch_prob",
    "mode",
    "label_smoothing",
    "off_epoch",
)


# ------------------------------------------------------------------------------------- options


def registry_option(f: F) -> F:
    return click.option(
        "--registry",
        "registry_url",
        metavar="URL",
        default=None,
        help="Registry database: sqlite:///PATH, postgresql://USER@HOST/DB or a SQLite file path "
        "[default: $ARCHLAB_REGISTRY, else sqlite:///.archlab/registry.db].",
    )(f)


def where_option(f: F) -> F:
    return click.option(
        "--where",
        metavar="EXPR",
        default=None,
        help="Only the runs matching EXPR, e.g. \"status == 'completed' and metrics.acc > 0.9\". "
        "Fields: status, kind, id, started, ended, metrics.NAME (final), best.NAME, "
        "mean.NAME / std.NAME (the CV group's), config.KEY[.KEY], tags.KEY, mixup.FIELD, "
        "cv.k / cv.fold / cv.group, spec.name / spec.hash; and, or, not, in, like.",
    )(f)


def format_option(choices: Sequence[str], default: str | None = None) -> Callable[[F], F]:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=default,
        show_default=default is not None,
        help="Output format.",
    )


class Duration(click.ParamType):
    """``30s``, ``5m``, ``2h``, ``1d`` or plain seconds, as a float of seconds."""

    name = "duration"
    _UNITS: ClassVar[dict[str, float]] = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    _PATTERN = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*", re.IGNORECASE)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float):
            return float(value)
        match = self._PATTERN.fullmatch(str(value))
        if match is None:
            self.fail(
                f"{value!r} is not a duration; write 30s, 5m, 2h, 1d or plain seconds",
                param,
                ctx,
            )
        return float(match.group(1)) * self._UNITS[match.group(2).lower()]


# ------------------------------------------------------------------------------- the registry


@contextlib.contextmanager
def _open(url: str | None, **kwargs: Any) -> Iterator[Registry]:
    """The registry at ``url``, closed afterwards. A bad URL or an unreachable database raises
    RegistryError (exit code 2)."""
    from archlab.registry import Registry

    with Registry(url, **kwargs) as registry:
        yield registry


# ---------------------------------------------------------------------------------- formatting


def _console() -> Console:
    from rich.console import Console

    # Piped output is not cut to 80 columns: tables keep their natural width up to 200.
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.4g}"


def _mean_std(mean: float | None, std: float | None, n: int | None = None) -> str:
    """A mean over folds with its sample std, or the mean alone where the std is undefined
    (one fold): never a "± 0" that looks like agreement."""
    if std is None:
        return f"{_num(mean)} ({n} fold)" if n == 1 else _num(mean)
    return f"{_num(mean)} ± {_num(std)}"


def _int(value: int | None) -> str:
    return "-" if value is None else str(value)


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _when_long(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).astimezone().isoformat(" ", "seconds")


def _seconds(run: Run) -> float:
    end = run.ended if run.ended is not None else (time.time() if run.status == "running" else None)
    return max(0.0, (end if end is not None else run.heartbeat) - run.started)


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _duration(run: Run) -> str:
    text = _span(_seconds(run))
    return f"{text}+" if run.status == "running" else text


def _status(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def _cv_cell(run: Run) -> str:
    return "-" if run.cv is None else f"{run.cv.group}/{run.cv.fold}"


def _mixup_cell(run: Run) -> str:
    m = run.mixup
    if m is None:
        return "-"
    cutmix = (
        f"{m.cutmix_minmax[0]:g}-{m.cutmix_minmax[1]:g}"
        if m.cutmix_minmax
        else f"{m.cutmix_alpha:g}"
    )
    return f"{m.alpha:g}/{cutmix}"


def _value(value: Any) -> str:
    """A config, tag or mixup value as text: JSON, except plain strings."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return _num(value) if not value.is_integer() else f"{value:g}"
    return json.dumps(_jsonable(value))


def _metric_names(runs: Iterable[Run], extra: Iterable[Iterable[str]] = ()) -> list[str]:
    """Metric names by how many runs have them, then by name."""
    counts: dict[str, int] = {}
    for names in [*(r.metrics for r in runs), *extra]:
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return sorted(counts, key=lambda n: (-counts[n], n))


def _capped(names: list[str]) -> tuple[list[str], int]:
    return names[:METRIC_COLUMNS], max(0, len(names) - METRIC_COLUMNS)


def _listing_table(metric_names: list[str], title: str | None = None) -> Table:
    """The table of ``runs list``, plain or grouped: one column per shown metric."""
    columns = ("id", "kind", "status", "spec", "cv", "mixup")
    return _table(
        *columns, *(f"metrics.{n}" for n in metric_names), "started", "duration", title=title
    )


def _table(*columns: str, title: str | None = None) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in columns:
        right = name.startswith("metrics.") or name in ("duration",)
        table.add_column(
            name.removeprefix("metrics."),
            justify="right" if right else "left",
            no_wrap=name in ("id", "started", "cv"),
        )
    return table


def _jsonable(value: Any) -> Any:
    """Plain JSON: tuples become lists, non-finite floats null (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    return json.dumps(_jsonable(value), indent=2, allow_nan=False)


def _run_dict(run: Run) -> dict[str, Any]:
    out = run.to_dict()
    out["duration"] = _seconds(run)
    return out


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flat(f"{prefix}.{key}", item, out)
    elif isinstance(value, list | tuple):
        out[prefix] = json.dumps(_jsonable(value))
    else:
        out[prefix] = _jsonable(value)


def _csv_row(run: Run) -> dict[str, Any]:
    """One run as flat columns: cv.<field>, mixup.<field>, metrics.<name>, best.<name>,
    config.<key> (nested keys dotted), tags.<key>."""
    row: dict[str, Any] = {
        "id": run.id,
        "kind": run.kind,
        "status": run.status,
        "spec_name": run.spec_name,
        "spec_hash": run.spec_hash,
        "started": run.started,
        "ended": run.ended,
        "duration": round(_seconds(run), 3),
        "error": run.error,
    }
    cv = dataclasses.asdict(run.cv) if run.cv else {}
    mixup = run.mixup.to_dict() if run.mixup else {}
    for name in _CV_FIELDS:
        _flat(f"cv.{name}", cv.get(name), row)
    for name in _MIXUP_FIELDS:
        _flat(f"mixup.{name}", mixup.get(name), row)
    for name, value in run.metrics.items():
        row[f"metrics.{name}"] = _jsonable(value)
    for name, summary in run.summaries.items():
        row[f"best.{name}"] = _jsonable(summary.best)
    _flat("config", run.config, row)
    _flat("tags", run.tags, row)
    return row


_BASE_COLUMNS = ("id", "kind", "status", "spec_name", "spec_hash", "started", "ended", "duration")


def _write_csv(rows: list[dict[str, Any]], out: Any) -> None:
    """CSV with the union of the rows' columns: the first row's fixed ones, then metrics.*,
    best.*, config.*, tags.* and the rest, each sorted. No rows: just the base header."""
    fields: list[str] = [] if rows else list(_BASE_COLUMNS)
    seen: set[str] = set()
    fixed = (
        [k for k in rows[0] if not k.startswith(("metrics.", "best.", "config.", "tags."))]
        if rows
        else []
    )
    for key in fixed:
        seen.add(key)
        fields.append(key)
    for prefix in ("metrics.", "best.", "config.", "tags.", ""):
        extra = sorted({k for r in rows for k in r if k not in seen and k.startswith(prefix)})
        seen.update(extra)
        fields.extend(extra)
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    _write_csv(rows, buffer)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------- commands


@click.group()
def runs() -> None:
    """Query and maintain the experiment registry (SQLite by default, PostgreSQL by URL).

    \b
    arch runs list [--where EXPR] [--sort [-]FIELD] [--group]   runs, newest first
    arch runs show ID                 everything about a run (and its CV group)
    arch runs compare ID ID...        runs side by side
    arch runs diff A B                what changed: spec paths, config, mixup, CV
    arch runs best --metric NAME      the best run, or one per spec
    arch runs export -o FILE          matching runs as CSV or JSON
    arch runs plot ID -o FILE.png     a metric's curves: a run, or a CV group's folds
    arch runs gc --stale              mark silent running runs interrupted
    arch runs rm ID / tag ID k=v      remove or tag runs
    """


@runs.command(name="list")
@registry_option
@where_option
@click.option(
    "--sort",
    "sort",
    multiple=True,
    metavar="[-]FIELD",
    help="Sort by FIELD, descending with a leading '-' (e.g. --sort=-metrics.acc); repeatable. "
    "Default: newest first.",
)
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(min=0),
    help="At most N rows; 0 for all.",
)
@format_option(["table", "json", "csv"], "table")
@click.option(
    "--group",
    "grouped",
    is_flag=True,
    help="One row per CV group with each metric's mean ± std over its completed folds, "
    "then the runs outside groups.",
)
def list_command(
    registry_url: str | None,
    where: str | None,
    sort: tuple[str, ...],
    limit: int,
    fmt: str,
    grouped: bool,
) -> None:
    """List runs, newest first: id, kind, status, spec, CV fold, mixup, final metrics, times.

    The cv column reads GROUP/FOLD, the mixup column ALPHA/CUTMIX_ALPHA. Tables show the most
    common metrics; --format json or csv has them all.
    """
    if grouped:
        with _open(registry_url) as registry:
            matching = registry.runs(where=where, order_by=list(sort))
            entries = _group_entries(registry, matching)[: limit or None]
        _print_grouped(entries, fmt)
        return
    with _open(registry_url) as registry:
        found = registry.runs(where=where, order_by=list(sort), limit=limit or None)
    if fmt == "json":
        click.echo(_dumps([_run_dict(r) for r in found]))
    elif fmt == "csv":
        click.echo(_csv_text([_csv_row(r) for r in found]), nl=False)
    else:
        _print_runs(found, where)
        if limit and len(found) == limit:
            _console().print(f"(the first {limit}; --limit 0 lists all)")


def _print_runs(found: list[Run], where: str | None, title: str | None = None) -> None:
    console = _console()
    if not found:
        console.print("no runs" + (f" match {where!r}" if where else " in this registry"))
        return
    names, hidden = _capped(_metric_names(found))
    table = _listing_table(names, title=title)
    for run in found:
        table.add_row(
            run.id,
            run.kind,
            _status(run.status),
            run.spec_name or run.spec_hash[:12],
            _cv_cell(run),
            _mixup_cell(run),
            *(_num(run.metrics.get(n)) for n in names),
            _when(run.started),
            _duration(run),
        )
    console.print(table)
    if hidden:
        console.print(f"({hidden} more metric(s) not shown; --format json or csv has them all)")


def _ranked_dict(entry: Ranked) -> dict[str, Any]:
    """One entry of ``runs best`` as JSON: a run, or a CV group with its aggregate."""
    if entry.run is not None:
        return _run_dict(entry.run)
    group, agg = entry.group, entry.aggregate
    assert group is not None and agg is not None
    return {
        "type": "cv_group",
        "id": group.id,
        "spec_hash": group.spec_hash,
        "k": group.k,
        "repeats": group.repeats,
        "metric": entry.metric,
        "value": "mean of final values over completed folds",
        "aggregate": {"mean": agg.mean, "std": agg.std, "n": agg.n, "min": agg.min,
                      "max": agg.max},
        "runs": group.runs,
    }  # fmt: skip


def _ranked_csv(entry: Ranked) -> dict[str, Any]:
    if entry.run is not None:
        return _csv_row(entry.run)
    doc = _ranked_dict(entry)
    return {
        "type": "cv_group",
        "id": doc["id"],
        "spec_hash": doc["spec_hash"],
        f"mean.{entry.metric}": doc["aggregate"]["mean"],
        f"std.{entry.metric}": doc["aggregate"]["std"],
        f"n.{entry.metric}": doc["aggregate"]["n"],
        "runs": " ".join(doc["runs"]),
    }


def _group_entries(registry: Registry, found: list[Run]) -> list[Any]:
    """Runs folded into their CV groups, in the order the first fold of each appears."""
    entries: list[Any] = []
    folds: dict[str, list[Run]] = {}
    for run in found:
        if run.cv is None:
            entries.append(run)
        elif run.cv.group in folds:
            folds[run.cv.group].append(run)
        else:
            folds[run.cv.group] = [run]
            entries.append(run.cv.group)
    return [
        (registry.group(e), sorted(folds[e], key=lambda r: (r.cv.fold if r.cv else 0, r.started)))
        if isinstance(e, str)
        else e
        for e in entries
    ]


def _group_dict(group: CVGroup, folds: list[Run]) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for run in folds:
        statuses[run.status] = statuses.get(run.status, 0) + 1
    ends = [r.ended for r in folds if r.ended is not None]
    return {
        "type": "cv_group",
        "id": group.id,
        "spec_name": folds[0].spec_name if folds else None,
        "spec_hash": group.spec_hash,
        "k": group.k,
        "splitter": group.splitter,
        "seed": group.seed,
        "repeats": group.repeats,
        "config": group.config,
        "status": statuses,
        "runs": [r.id for r in folds],
        "aggregates": {
            name: {"mean": a.mean, "std": a.std, "n": a.n, "min": a.min, "max": a.max}
            for name, a in group.aggregates.items()
        },
        "started": min(r.started for r in folds) if folds else None,
        "ended": max(ends) if len(ends) == len(folds) and ends else None,
    }


def _print_grouped(entries: list[Any], fmt: str) -> None:
    if fmt == "json":
        click.echo(
            _dumps(
                [
                    _group_dict(*e) if isinstance(e, tuple) else {"type": "run", **_run_dict(e)}
                    for e in entries
                ]
            )
        )
        return
    if fmt == "csv":
        rows = []
        for e in entries:
            if isinstance(e, tuple):
                doc = _group_dict(*e)
                row: dict[str, Any] = {}
                for key in ("type", "id", "spec_name", "spec_hash", "k", "started", "ended"):
                    row[key] = doc[key]
                row["status"] = json.dumps(doc["status"])
                row["runs"] = " ".join(doc["runs"])
                for name, agg in doc["aggregates"].items():
                    row[f"metrics.{name}"] = agg["mean"]
                    row[f"metrics.{name}.std"] = agg["std"]
                    row[f"metrics.{name}.n"] = agg["n"]
                rows.append(row)
            else:
                rows.append({"type": "run", **_csv_row(e)})
        click.echo(_csv_text(rows), nl=False)
        return
    console = _console()
    if not entries:
        console.print("no runs")
        return
    runs_only = [e for e in entries if not isinstance(e, tuple)]
    names, hidden = _capped(
        _metric_names(runs_only, [e[0].aggregates for e in entries if isinstance(e, tuple)])
    )
    table = _listing_table(names)
    for e in entries:
        if not isinstance(e, tuple):
            table.add_row(
                e.id,
                e.kind,
                _status(e.status),
                e.spec_name or e.spec_hash[:12],
                "-",
                _mixup_cell(e),
                *(_num(e.metrics.get(n)) for n in names),
                _when(e.started),
                _duration(e),
            )
            continue
        group, folds = e
        doc = _group_dict(group, folds)
        mixups = {_mixup_cell(r) for r in folds}
        cells = []
        for name in names:
            agg = group.aggregates.get(name)
            if agg is None:
                cells.append("-")
            else:
                note = f" (n={agg.n})" if agg.n != group.k * group.repeats else ""
                cells.append(f"{_mean_std(agg.mean, agg.std)}{note}")
        end = doc["ended"] if doc["ended"] is not None else time.time()
        table.add_row(
            group.id,
            ",".join(sorted({r.kind for r in folds})),
            ", ".join(f"{n} {_status(s)}" for s, n in sorted(doc["status"].items())),
            doc["spec_name"] or group.spec_hash[:12],
            f"{len({r.cv.fold for r in folds if r.cv})} of {group.k * group.repeats} folds",
            mixups.pop() if len(mixups) == 1 else "varies",
            *cells,
            _when(doc["started"]),
            _span(end - doc["started"]) + ("" if doc["ended"] is not None else "+"),
        )
    console.print(table)
    console.print("CV groups: mean ± sample std of each metric's final value over completed folds")
    if hidden:
        console.print(f"({hidden} more metric(s) not shown; --format json or csv has them all)")


@runs.command()
@registry_option
@click.argument("run_id", metavar="ID")
@format_option(["table", "json"], "table")
def show(registry_url: str | None, run_id: str, fmt: str) -> None:
    """Everything about run ID: status, times, error, spec, config, mixup, tags, provenance,
    metrics (final, best and at which step, count) and artifacts.

    For a CV fold, also its group: every fold's final metrics and their mean ± sample std.
    """
    with _open(registry_url) as registry:
        run = registry.get(run_id)
        group = registry.group(run.cv.group) if run.cv is not None else None
        folds = registry.compare(group.runs) if group is not None else []
    if fmt == "json":
        doc = _run_dict(run)
        if group is not None:
            doc["cv_group"] = {
                **group.to_dict(),
                "folds": [
                    {
                        "fold": f.cv.fold if f.cv else None,
                        "id": f.id,
                        "status": f.status,
                        "n_train": f.cv.n_train if f.cv else None,
                        "n_val": f.cv.n_val if f.cv else None,
                        "metrics": f.metrics,
                    }
                    for f in folds
                ],
            }
        click.echo(_dumps(doc))
        return
    _print_show(run, group, folds)


def _print_show(run: Run, group: CVGroup | None, folds: list[Run]) -> None:
    from rich.table import Table

    console = _console()
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("run", f"{run.id}  ({run.kind})")
    facts.add_row("status", _status(run.status))
    facts.add_row("started", _when_long(run.started))
    facts.add_row("ended", _when_long(run.ended))
    facts.add_row("duration", _duration(run))
    if run.status == "running":
        facts.add_row("heartbeat", _when_long(run.heartbeat))
    if run.error:
        facts.add_row("error", f"[red]{_escape(run.error)}[/]")
    facts.add_row("spec", f"{run.spec_name or '-'}  {run.spec_hash}")
    for name, value in run.config.items():
        facts.add_row(f"config.{name}", _escape(_value(value)))
    if run.mixup is not None:
        for name, value in run.mixup.to_dict().items():
            facts.add_row(f"mixup.{name}", _value(value))
    else:
        facts.add_row("mixup", "-")
    for name, value in run.tags.items():
        facts.add_row(f"tags.{name}", _escape(value))
    for name, value in _provenance_rows(run.provenance):
        facts.add_row(name, _escape(value))
    console.print(facts)

    if run.summaries:
        metrics = _table("metric", "final", "step", "best", "best step", "count", title="metrics")
        for s in run.summaries.values():
            metrics.add_row(
                s.name,
                _num(s.final),
                str(s.final_step),
                _num(s.best),
                _int(s.best_step),
                str(s.count),
            )
        console.print(metrics)
    else:
        console.print("no metrics recorded")
    if run.artifacts:
        artifacts = _table("path", "kind", "size", "sha256", title="artifacts")
        for a in run.artifacts:
            artifacts.add_row(_escape(a.path), a.kind, f"{a.size:,}", a.sha256[:12])
        console.print(artifacts)
    if group is not None and run.cv is not None:
        _print_group(console, run, group, folds)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _provenance_rows(prov: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    git = prov.get("git")
    if git:
        rows.append(("git", f"{git.get('commit')}" + (" (dirty)" if git.get("dirty") else "")))
    elif "git" in prov:
        rows.append(("git", "-"))
    for key in ("host", "user", "pid", "cwd"):
        if prov.get(key) is not None:
            rows.append((key, str(prov[key])))
    if prov.get("argv"):
        rows.append(("command", " ".join(map(str, prov["argv"]))))
    versions = prov.get("versions") or {}
    if versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v)))
    return rows


def _print_group(console: Console, run: Run, group: CVGroup, folds: list[Run]) -> None:
    assert run.cv is not None
    names, hidden = _capped(_metric_names(folds, [group.aggregates]))
    title = (
        f"CV group {group.id}: {group.splitter}, k={group.k}"
        + (f" x {group.repeats} repeats" if group.repeats > 1 else "")
        + (f", seed {group.seed}" if group.seed is not None else "")
        + f"; this run is fold {run.cv.fold}"
    )
    table = _table(
        "fold", "id", "status", "n_train", "n_val", *(f"metrics.{n}" for n in names), title=title
    )
    for fold in folds:
        mark = " *" if fold.id == run.id else ""
        cv = fold.cv
        table.add_row(
            f"{cv.fold if cv else '-'}{mark}",
            fold.id,
            _status(fold.status),
            str(cv.n_train) if cv and cv.n_train is not None else "-",
            str(cv.n_val) if cv and cv.n_val is not None else "-",
            *(_num(fold.metrics.get(n)) for n in names),
        )
    table.add_section()
    counts = {a.n for a in group.aggregates.values()}
    n = f" (n={counts.pop()})" if len(counts) == 1 else ""
    table.add_row(
        "mean ± std" + n,
        "",
        "",
        "",
        "",
        *(
            _mean_std(a.mean, a.std, a.n) if (a := group.aggregates.get(name)) else "-"
            for name in names
        ),
    )
    console.print(table)
    console.print("std is the sample std (n - 1) over completed folds; * marks this run")
    if hidden:
        console.print(f"({hidden} more metric(s) not shown; --format json has them all)")


@runs.command()
@registry_option
@click.argument("run_ids", metavar="ID ID...", nargs=-1, required=True)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Show every config, mixup and tag field, not only those that differ.",
)
@format_option(["table", "json"], "table")
def compare(registry_url: str | None, run_ids: tuple[str, ...], show_all: bool, fmt: str) -> None:
    """Runs side by side: one column per run; status, spec, CV, config and mixup fields that
    differ (all with --all), tags and final metrics."""
    if len(run_ids) < 2:
        raise click.UsageError("compare takes at least two run ids")
    with _open(registry_url) as registry:
        found = registry.compare(list(run_ids))
    rows = _compare_rows(found, show_all)
    if fmt == "json":
        click.echo(
            _dumps(
                {
                    "runs": [r.id for r in found],
                    "rows": [{"field": f, "values": v, "differs": _differs(v)} for f, v in rows],
                }
            )
        )
        return
    from rich.table import Table

    table = Table(title="compare", title_justify="left")
    table.add_column("field", style="bold")
    for run in found:
        table.add_column(run.id, no_wrap=True)
    for field, values in rows:
        differs = _differs(values)
        label = f"[yellow]{field}[/]" if differs and len(found) > 1 else field
        cells = [
            _status(v) if field == "status" and isinstance(v, str) else _escape(_cell(v))
            for v in values
        ]
        table.add_row(label, *cells)
    console = _console()
    console.print(table)
    if not show_all:
        console.print("config, mixup and tags: only fields that differ (--all shows every one)")


def _differs(values: list[Any]) -> bool:
    return any(v != values[0] for v in values[1:])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return _num(value)
    return _value(value)


def _compare_rows(found: list[Run], show_all: bool) -> list[tuple[str, list[Any]]]:
    rows: list[tuple[str, list[Any]]] = [
        ("kind", [r.kind for r in found]),
        ("status", [r.status for r in found]),
        ("spec", [r.spec_name for r in found]),
        ("spec_hash", [r.spec_hash[:12] for r in found]),
        ("started", [_when(r.started) for r in found]),
        ("duration", [_duration(r) for r in found]),
        ("cv", [f"{r.cv.group}/{r.cv.fold}" if r.cv else None for r in found]),
        ("cv.n_train", [r.cv.n_train if r.cv else None for r in found]),
        ("cv.n_val", [r.cv.n_val if r.cv else None for r in found]),
    ]
    if any(r.error for r in found):
        rows.append(("error", [r.error for r in found]))

    def section(prefix: str, dicts: list[dict[str, Any] | None]) -> None:
        flat: list[dict[str, Any]] = []
        for d in dicts:
            out: dict[str, Any] = {}
            if d is not None:
                for key, value in d.items():
                    _flat_keep(f"{prefix}.{key}", value, out)
            flat.append(out)
        keys = sorted({k for d in flat for k in d})
        for key in keys:
            values = [d.get(key) for d in flat]
            if show_all or _differs(values):
                rows.append((key, values))

    section("config", [r.config for r in found])
    if show_all or _differs([r.mixup for r in found]):
        rows.append(("mixup", [_mixup_cell(r) if r.mixup else None for r in found]))
    section("mixup", [r.mixup.to_dict() if r.mixup else None for r in found])
    section("tags", [dict(r.tags) for r in found])
    for name in _metric_names(found):
        rows.append((f"metrics.{name}", [r.metrics.get(name) for r in found]))
    return rows


def _flat_keep(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Like _flat, but keeps lists as values (they compare and print as JSON)."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flat_keep(f"{prefix}.{key}", item, out)
    else:
        out[prefix] = value


@runs.command()
@registry_option
@click.argument("run_a", metavar="A")
@click.argument("run_b", metavar="B")
@format_option(["text", "json"], "text")
def diff(registry_url: str | None, run_a: str, run_b: str, fmt: str) -> None:
    """What changed from run A to run B: the spec (as JSON paths such as
    spec.nodes.encoder.depth), then config, mixup and CV fields, each as `path: a -> b`."""
    with _open(registry_url) as registry:
        changes = registry.diff(run_a, run_b)
    if fmt == "json":
        click.echo(_dumps([c.to_dict() for c in changes]))
        return
    if not changes:
        click.echo("no differences")
        return
    for change in changes:
        a = json.dumps(_jsonable(change.a))
        b = json.dumps(_jsonable(change.b))
        click.echo(f"{change.path}: {a} -> {b}")


@runs.command()
@registry_option
@click.option("--metric", required=True, metavar="NAME", help="The metric to rank by.")
@click.option(
    "--group-by",
    type=click.Choice(["spec"]),
    default=None,
    help="One best run per spec, best first (every run on its own, as --runs).",
)
@click.option(
    "--group",
    "ranking",
    flag_value="group",
    help="Rank CV groups only, each by the mean of its folds' final values.",
)
@click.option(
    "--runs",
    "ranking",
    flag_value="run",
    help="Rank every run on its own by its best value, CV folds included.",
)
@where_option
@format_option(["table", "json", "csv"], "table")
def best(
    registry_url: str | None,
    metric: str,
    group_by: str | None,
    ranking: str | None,
    where: str | None,
    fmt: str,
) -> None:
    """The best by NAME: lowest for names with loss, err or perplexity, highest otherwise.

    By default CV groups and the runs outside groups compete: a run by its best value, a CV
    group by the mean of its folds' final values (a fold is never picked for its luck).
    --group ranks groups only, --runs every run alone; --group-by spec, the best run per spec."""
    from archlab.registry import Ranked
    from archlab.registry.store import minimize

    with _open(registry_url) as registry:
        if group_by is not None:
            found = registry.best(metric, group_by=group_by, where=where)
            ranked = [Ranked(metric, r.summaries[metric].best, run=r) for r in found]
        else:
            ranked = registry.rank(metric, by=ranking or "auto", where=where)
        known = _metric_names(registry.runs(where=where, limit=500)) if not ranked else []
        spec_names = {
            e.group.id: registry.get(e.group.runs[0]).spec_name
            for e in ranked
            if e.group is not None and e.group.runs
        }
    if fmt == "json":
        click.echo(_dumps([_ranked_dict(r) for r in ranked]))
        return
    if fmt == "csv":
        click.echo(_csv_text([_ranked_csv(r) for r in ranked]), nl=False)
        return
    console = _console()
    if not ranked:
        what = "CV group" if ranking == "group" else "run"
        hint = f"; metrics recorded: {', '.join(known)}" if known else ""
        console.print(
            f"no {what}{' matching ' + repr(where) if where else ''} has metric {metric!r}{hint}"
        )
        return
    direction = "lowest" if minimize(metric) else "highest"
    table = _table(
        "spec",
        "id",
        "status",
        metric,
        "which value",
        f"final {metric}",
        "cv",
        "mixup",
        "started",
        title=f"best by {metric} ({direction} is better)",
    )
    for entry in ranked:
        if entry.run is not None:
            run, s = entry.run, entry.run.summaries[metric]
            table.add_row(
                f"{run.spec_name or '-'} ({run.spec_hash[:8]})",
                run.id,
                _status(run.status),
                _num(s.best),
                f"best, step {_int(s.best_step)}",
                _num(s.final),
                _cv_cell(run),
                _mixup_cell(run),
                _when(run.started),
            )
            continue
        group, agg = entry.group, entry.aggregate
        assert group is not None and agg is not None
        table.add_row(
            f"{spec_names.get(group.id) or '-'} ({group.spec_hash[:8]})",
            group.id,
            f"{agg.n} of {group.k * group.repeats} folds",
            _mean_std(agg.mean, agg.std, agg.n),
            f"mean of final values over {agg.n} fold{'s' if agg.n != 1 else ''}",
            "-",
            f"CV group, k={group.k}",
            "-",
            "-",
        )
    console.print(table)


@runs.command()
@registry_option
@where_option
@format_option(["csv", "json"])
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
    help="The file to write ('-' for stdout).",
)
def export(registry_url: str | None, where: str | None, fmt: str | None, output: Path) -> None:
    """Write every matching run to FILE as CSV (one row per run; cv.*, mixup.*, metrics.*,
    best.*, config.*, tags.* columns) or JSON (a list of runs). The format defaults from the
    file's suffix."""
    if fmt is None:
        suffix = output.suffix.lower().lstrip(".")
        if suffix not in ("csv", "json"):
            raise click.UsageError("give --format csv or json (or a .csv or .json file name)")
        fmt = suffix
    stdout = str(output) == "-"
    if not stdout and not output.parent.is_dir():
        raise click.BadParameter(
            f"the folder {output.parent} does not exist", param_hint="'-o' / '--output'"
        )
    with _open(registry_url) as registry:
        found = registry.runs(where=where)
    if fmt == "json":
        text = _dumps([_run_dict(r) for r in found]) + "\n"
    else:
        text = _csv_text([_csv_row(r) for r in found])
    if stdout:
        click.echo(text, nl=False)
        return
    _write_atomic(output, text)
    click.echo(f"exported {len(found)} run(s) to {output} ({fmt})")


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, so a failure leaves the old file."""
    from archlab.files import replace_atomically

    def write(temporary: str) -> None:
        with open(temporary, "x", newline="", encoding="utf-8") as f:
            f.write(text)

    replace_atomically(path, write)


@runs.command()
@registry_option
@click.argument("ident", metavar="ID")
@click.option(
    "--metric",
    default="val_acc",
    show_default=True,
    metavar="NAME",
    help="The metric to plot.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The image to write: .png, .svg or .pdf (by the suffix).",
)
def plot(registry_url: str | None, ident: str, metric: str, output: Path) -> None:
    """Plot METRIC of run or CV group ID over its steps.

    For a CV group (or a run that is one of its folds): one thin line per fold, the mean over
    the folds at each step as a thick line with a ±1 std band, and beside it each fold's final
    value as a bar with the group's mean ± std. std is the sample std (n - 1).
    """
    from archlab.registry import plots

    try:
        plots.output_format(output)
    except plots.PlotError as exc:
        raise click.BadParameter(str(exc), param_hint="'-o' / '--output'") from None
    if not output.parent.is_dir():
        raise click.BadParameter(
            f"the folder {output.parent} does not exist", param_hint="'-o' / '--output'"
        )
    with _open(registry_url) as registry:
        drawn = plots.plot(registry, ident, metric, output)
    if drawn.group_id is None:
        [curve] = drawn.curves
        click.echo(
            f"wrote {output}: {metric} of run {curve.run_id}, {len(curve.steps)} point(s), "
            f"final {_num(curve.final)}"
        )
        return
    if drawn.run_id is not None:
        click.echo(f"run {drawn.run_id} is a fold of CV group {drawn.group_id}: plotting the group")
    band = (
        f"; final {_mean_std(drawn.final_mean, drawn.final_std)} "
        f"(n={drawn.final_n}, {drawn.final_source})"
        if drawn.final_n
        else ""
    )
    click.echo(
        f"wrote {output}: {metric} of CV group {drawn.group_id} (k={drawn.k}), "
        f"{drawn.folds} fold(s){band}"
    )
    if drawn.skipped:
        click.echo(f"fold run(s) without {metric}, not drawn: {', '.join(drawn.skipped)}")


@runs.command()
@registry_option
@click.option(
    "--stale",
    is_flag=True,
    help="Mark interrupted the running runs whose heartbeat is older than --grace.",
)
@click.option(
    "--grace",
    type=Duration(),
    default="5m",
    show_default=True,
    help="How long a running run may stay silent: 30s, 5m, 2h, 1d or plain seconds.",
)
def gc(registry_url: str | None, stale: bool, grace: float) -> None:
    """Clean up the registry: with --stale, mark interrupted the running runs that stopped
    sending heartbeats (their process died without ending them). Nothing is deleted."""
    if not stale:
        raise click.UsageError("say what to collect: arch runs gc --stale [--grace 5m]")
    # Opening marks stale runs with its own grace; an infinite one leaves --grace to decide.
    with _open(registry_url, grace=math.inf) as registry:
        marked = registry.mark_stale(grace)
    if marked:
        click.echo(f"marked {len(marked)} stale run(s) interrupted: {', '.join(marked)}")
    else:
        click.echo(f"no running run has been silent for {_span(grace)}")


@runs.command()
@registry_option
@click.argument("run_ids", metavar="ID...", nargs=-1, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--force",
    is_flag=True,
    help="Also remove runs still running (their process's next writes will fail).",
)
def rm(registry_url: str | None, run_ids: tuple[str, ...], yes: bool, force: bool) -> None:
    """Remove runs with their metrics, tags, mixup settings and artifact records (artifact
    files stay on disk). Asks first unless --yes; refuses running runs unless --force."""
    from archlab.registry import RegistryError

    with _open(registry_url) as registry:
        found = registry.compare(list(dict.fromkeys(run_ids)))  # every id must exist first
        running = [r.id for r in found if r.status == "running"]
        if running and not force:
            raise RegistryError(
                f"run(s) {', '.join(running)} still running: stop them first, mark them with "
                "`arch runs gc --stale` if their process is gone, or pass --force"
            )
        for run in found:
            where = f", fold {run.cv.fold} of CV group {run.cv.group}" if run.cv else ""
            warn = "  (still running)" if run.status == "running" else ""
            click.echo(
                f"{run.id}  {run.kind} {run.status}  {run.spec_name or run.spec_hash[:12]}"
                f"  {sum(s.count for s in run.summaries.values())} metric points{where}{warn}"
            )
        if not yes:
            click.confirm(f"remove {len(found)} run(s)?", abort=True)
        for run in found:
            registry.remove(run.id)
    click.echo(f"removed {len(found)} run(s)")


def _parse_tags(pairs: Sequence[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"{pair!r} is not KEY=VALUE (e.g. note=baseline)", param_hint="KEY=VALUE"
            )
        tags[key.strip()] = value
    return tags


@runs.command()
@registry_option
@click.argument("run_id", metavar="ID")
@click.argument("pairs", metavar="KEY=VALUE...", nargs=-1, required=True)
def tag(registry_url: str | None, run_id: str, pairs: tuple[str, ...]) -> None:
    """Set tags on run ID (an existing key is overwritten)."""
    tags = _parse_tags(pairs)
    with _open(registry_url) as registry:
        registry.tag(run_id, **tags)
    click.echo(f"tagged {run_id}: " + ", ".join(f"{k}={v}" for k, v in tags.items()))


COMMANDS = [runs]
