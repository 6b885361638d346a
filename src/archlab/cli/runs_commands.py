"""``arch runs ...``: query and maintain the experiment registry.

Every command takes ``--registry URL`` (default: ``$ARCHLAB_REGISTRY``, else the nearest
``.archlab/registry.db`` from the current folder upwards, else the user-level registry; see
``archlab.registry.locate``) and is a thin layer over ``archlab.Registry`` and
``archlab.registry.views`` (CV groups, the compare table, export rows): parse, call, print.
These commands never create a registry: a missing one exits 2 naming the registry looked for.
rich loads inside the command bodies, so ``arch --help`` stays fast. Registry and query errors are ``UserInputError``s: exit code 2, one
paragraph, no traceback (``cli/main.py``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click
from click.core import ParameterSource

from archlab.registry import views
from archlab.textsafe import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from archlab.registry import CVGroup, Registry, Run
    from archlab.registry.views import GroupView

F = TypeVar("F", bound=Callable[..., Any])

METRIC_COLUMNS = 6  # at most this many metric columns in show's group table; json has them all
# the columns of ``runs list`` (metric columns go between mixup and started)
LIST_COLUMNS = ("id", "kind", "status", "spec", "cv", "mixup", "started", "duration")
# headline metrics, shown before any other: accuracy-like, perplexity, loss; by split
MAIN_METRICS = tuple(
    f"{split}{name}"
    for split in ("val_", "eval_", "test_", "")
    for name in ("acc", "token_acc", "seq_acc", "ppl", "loss")
)
SPEC_WIDTH = 24  # the width a spec column is counted at when fitting columns (it wraps)
STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "interrupted": "yellow",
    "running": "cyan",
}
# ------------------------------------------------------------------------------------- options


def registry_option(f: F) -> F:
    return click.option(
        "--registry",
        "registry_url",
        metavar="URL",
        default=None,
        help="Registry database: sqlite:///PATH, postgresql://USER@HOST/DB or a SQLite file path "
        "[default: $ARCHLAB_REGISTRY, else .archlab/registry.db in the nearest folder upwards "
        "with an .archlab/ folder, else ~/.local/share/archlab/registry.db].",
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
    """``--format CHOICE`` and ``--json``, its short form (every command spells machine-readable
    output ``--json``); the command receives ``fmt``."""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def command(*args: Any, as_json: bool, **kwargs: Any) -> Any:
            if as_json:
                ctx = click.get_current_context()
                given = ctx.get_parameter_source("fmt") is not ParameterSource.DEFAULT
                if given and kwargs["fmt"] != "json":
                    raise click.UsageError(f"--json and --format {kwargs['fmt']}: give one of them")
                kwargs["fmt"] = "json"
            return f(*args, **kwargs)

        command = click.option(
            "--json", "as_json", is_flag=True, help="Print JSON (the same as --format json)."
        )(command)
        return click.option(  # type: ignore[return-value]
            "--format",
            "fmt",
            type=click.Choice(list(choices)),
            default=default,
            show_default=default is not None,
            help="Output format.",
        )(command)

    return decorate


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
    """The registry at ``url`` (as ``archlab.registry.locate`` finds it), closed afterwards; never
    created here. A missing registry, a bad URL or an unreachable database raises RegistryError
    (exit code 2)."""
    from archlab.registry import Registry

    with Registry(url, create=False, **kwargs) as registry:
        yield registry


def _nothing_in(registry: Registry) -> str:
    """``registry URL (how it was found)``: what a command that found nothing says it read."""
    return f"registry {registry.location.describe()}"


# ---------------------------------------------------------------------------------- formatting


def _console() -> Console:
    from rich.console import Console

    # A terminal's own width (or $COLUMNS); piped output is not cut to 80 columns: tables keep
    # their natural width up to 200.
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200
    return Console(width=width, highlight=False)


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


def _when_long(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).astimezone().isoformat(" ", "seconds")


def _status(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def _cv_cell(run: Run) -> str:
    return "-" if run.cv is None else f"{run.cv.group}/{run.cv.fold}"


def _value(value: Any) -> str:
    """A config, tag or mixup value as text: JSON, except plain strings."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return _num(value) if not value.is_integer() else f"{value:g}"
    return json.dumps(views.jsonable(value))


def _capped(names: list[str]) -> tuple[list[str], int]:
    return names[:METRIC_COLUMNS], max(0, len(names) - METRIC_COLUMNS)


def _main_metrics(names: Iterable[str]) -> list[str]:
    """The headline metrics among ``names``: each task's validation (else eval, test, bare)
    accuracy-like metric, perplexity and loss, in MAIN_METRICS order."""
    present = set(names)
    return [n for n in MAIN_METRICS if n in present]


def _fit(
    cells: list[dict[str, str]], priority: list[str], width: int
) -> tuple[list[str], list[str]]:
    """The columns of ``priority`` (most wanted first) that fit ``width`` characters of table,
    and those left out. A column takes its widest cell (the spec column at most SPEC_WIDTH, as
    it wraps) plus its padding and border."""
    from rich.cells import cell_len
    from rich.text import Text

    used, shown, left = 1, list[str](), list[str]()
    for name in priority:
        texts = [Text.from_markup(row.get(name, "")).plain for row in cells]
        need = max([cell_len(_header(name)), *(cell_len(t) for t in texts)])
        if name == "spec":
            need = min(need, SPEC_WIDTH)
        if used + need + 3 <= width or not shown:
            used += need + 3
            shown.append(name)
        else:
            left.append(name)
    return shown, left


def _header(column: str) -> str:
    return column.removeprefix("metrics.")


def _pick_columns(
    cells: list[dict[str, str]], metric_names: list[str], chosen: list[str] | None, width: int
) -> tuple[list[str], list[str]]:
    """The listing's columns in display order, and those left out for want of width.

    ``chosen`` (``--columns``) is taken as given; otherwise id, spec, status and the main
    metrics come first, then kind, the other metrics, cv, mixup, duration and started, as many
    as the width holds."""
    metrics = [f"metrics.{n}" for n in metric_names]
    if chosen is not None:
        return chosen, []
    main = [f"metrics.{n}" for n in _main_metrics(metric_names)]
    others = [m for m in metrics if m not in main]
    priority = ["id", "spec", "status", *main, "kind", *others, "cv", "mixup"]
    priority += ["duration", "started"]
    shown, left = _fit(cells, priority, width)
    order = [*LIST_COLUMNS[:6], *main, *others, *LIST_COLUMNS[6:]]
    return [c for c in order if c in shown], left


def _columns_option(value: str | None, metric_names: list[str]) -> list[str] | None:
    """``--columns id,spec,val_acc``: the named columns, metric names with or without their
    ``metrics.`` prefix; an unknown name exits 2 naming the known ones."""
    if value is None:
        return None
    out: list[str] = []
    for raw in value.split(","):
        name = raw.strip()
        if not name:
            continue
        if name in LIST_COLUMNS:
            out.append(name)
        elif name.removeprefix("metrics.") in metric_names:
            out.append("metrics." + name.removeprefix("metrics."))
        else:
            known = ", ".join([*LIST_COLUMNS, *metric_names])
            raise click.BadParameter(
                f"no column {name!r}; the columns are {known}", param_hint="'--columns'"
            )
    if not out:
        raise click.BadParameter("name at least one column", param_hint="'--columns'")
    return out


def _print_listing(
    console: Console,
    cells: list[dict[str, str]],
    metric_names: list[str],
    columns: str | None,
    title: str | None = None,
) -> None:
    """The table of ``runs list``, plain or grouped: the columns that fit the console (or
    ``--columns``), then a line naming those left out."""
    shown, left = _pick_columns(
        cells, metric_names, _columns_option(columns, metric_names), console.width
    )
    table = _table(*shown, title=title)
    for row in cells:
        table.add_row(*(row.get(c, "-") for c in shown))
    console.print(table)
    if left:
        console.print(
            f"(not shown at {console.width} columns: {', '.join(_header(c) for c in left)}; "
            "--columns picks them, --json has everything)"
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
            overflow="fold" if name == "spec" else "ellipsis",  # a long name folds, never cut
        )
    return table


def _dumps(value: Any) -> str:
    return views.dumps(value)


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
    arch runs gc --artifacts          delete artifact folders of removed runs
    arch runs rm ID / tag ID k=v      remove (with artifact files) or tag runs

    \b
    ID may be a CV group's id wherever a run id is taken (show, compare, export, rm, tag).
    The registry: --registry, else $ARCHLAB_REGISTRY, else the nearest .archlab/registry.db
    upwards, else ~/.local/share/archlab/registry.db; these commands never create one.
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
@click.option(
    "--columns",
    metavar="A,B,...",
    default=None,
    help="The table's columns, in order: id, kind, status, spec, cv, mixup, started, duration "
    "and metric names (e.g. --columns id,spec,val_acc,val_loss) "
    "[default: as many as the terminal's width holds, id, spec, status and each task's main "
    "metrics first].",
)
def list_command(
    registry_url: str | None,
    where: str | None,
    sort: tuple[str, ...],
    limit: int,
    fmt: str,
    grouped: bool,
    columns: str | None,
) -> None:
    """List runs, newest first: id, kind, status, spec, CV fold, mixup, final metrics, times.

    The cv column reads GROUP/FOLD, the mixup column ALPHA/CUTMIX_ALPHA. The table shows the
    columns the terminal's width holds (id, spec, status and the main metrics, such as val_acc,
    val_token_acc or val_ppl, first) and names those left out; --columns chooses them, --json or
    --format csv has everything.
    """
    if grouped:
        with _open(registry_url) as registry:
            matching = registry.runs(where=where, order_by=list(sort))
            entries = views.grouped(registry, matching)[: limit or None]
            source = _nothing_in(registry)
        _print_grouped(entries, fmt, columns, source)
        return
    with _open(registry_url) as registry:
        found = registry.runs(where=where, order_by=list(sort), limit=limit or None)
        source = _nothing_in(registry)
    if fmt == "json":
        click.echo(views.export_json(found), nl=False)
    elif fmt == "csv":
        click.echo(views.export_csv(found), nl=False)
    else:
        _print_runs(found, where, columns, source=source)
        if limit and len(found) == limit:
            _console().print(f"(the first {limit}; --limit 0 lists all)")


def _print_runs(
    found: list[Run],
    where: str | None,
    columns: str | None,
    title: str | None = None,
    source: str = "this registry",
) -> None:
    console = _console()
    if not found:
        console.print("no runs" + (f" match {where!r}" if where else "") + f" in {source}")
        return
    names = views.metric_names(found)
    _print_listing(console, [_run_cells(r, names) for r in found], names, columns, title)


def _run_cells(run: Run, metric_names: list[str]) -> dict[str, str]:
    """One run's cells in ``runs list``, by column."""
    return {
        "id": run.id,
        "kind": run.kind,
        "status": _status(run.status),
        "spec": _escape(run.spec_name or run.spec_hash[:12]),
        "cv": _cv_cell(run),
        "mixup": views.mixup_label(run),
        **{f"metrics.{n}": _num(run.metrics.get(n)) for n in metric_names},
        "started": views.when(run.started),
        "duration": views.duration(run),
    }


def _print_grouped(
    entries: list[Run | GroupView], fmt: str, columns: str | None, source: str = "this registry"
) -> None:
    if fmt == "json":
        click.echo(_dumps(views.grouped_json(entries)))
        return
    if fmt == "csv":
        click.echo(views.csv_text(views.grouped_rows(entries)), nl=False)
        return
    console = _console()
    if not entries:
        console.print(f"no runs in {source}")
        return
    runs_only = [e for e in entries if not isinstance(e, views.GroupView)]
    names = views.metric_names(
        runs_only, [e.group.aggregates for e in entries if isinstance(e, views.GroupView)]
    )
    cells: list[dict[str, str]] = []
    for e in entries:
        if not isinstance(e, views.GroupView):
            cells.append({**_run_cells(e, names), "cv": "-"})
            continue
        group, folds = e.group, e.folds
        doc = views.group_summary(group, folds)
        mixups = {views.mixup_label(r) for r in folds}
        values = {}
        for name in names:
            agg = group.aggregates.get(name)
            if agg is None:
                values[f"metrics.{name}"] = "-"
            else:
                note = f" (n={agg.n})" if agg.n != group.k * group.repeats else ""
                values[f"metrics.{name}"] = f"{_mean_std(agg.mean, agg.std)}{note}"
        end = doc["ended"] if doc["ended"] is not None else time.time()
        cells.append(
            {
                "id": group.id,
                "kind": ",".join(sorted({r.kind for r in folds})),
                "status": ", ".join(f"{n} {_status(s)}" for s, n in sorted(doc["status"].items())),
                "spec": _escape(doc["spec_name"] or group.spec_hash[:12]),
                "cv": f"{len({r.cv.fold for r in folds if r.cv})} of {group.k * group.repeats} folds",
                "mixup": mixups.pop() if len(mixups) == 1 else "varies",
                **values,
                "started": views.when(doc["started"]),
                "duration": views.span(end - doc["started"])
                + ("" if doc["ended"] is not None else "+"),
            }
        )
    _print_listing(console, cells, names, columns)
    console.print("CV groups: mean ± sample std of each metric's final value over completed folds")


@runs.command()
@registry_option
@click.argument("run_id", metavar="ID")
@format_option(["table", "json"], "table")
def show(registry_url: str | None, run_id: str, fmt: str) -> None:
    """Everything about run ID: status, times, error, spec, config, mixup, tags, provenance,
    metrics (final, best and at which step, count) and artifacts.

    For a CV fold, also its group: every fold's final metrics and their mean ± sample std. ID may
    be a CV group's id: the group with its folds.
    """
    run: Run | None = None
    with _open(registry_url) as registry:
        if registry.kind_of(run_id) == "group":
            group: CVGroup | None = registry.group(run_id)
        else:
            run = registry.get(run_id)
            group = registry.group(run.cv.group) if run.cv is not None else None
        folds = registry.compare(group.runs) if group is not None else []
    if fmt == "json":
        group_doc = (
            {**group.to_dict(), "folds": [views.fold_dict(f) for f in folds]}
            if group is not None
            else None
        )
        if run is None:
            click.echo(_dumps({"type": "cv_group", **(group_doc or {})}))
            return
        doc = views.run_dict(run)
        if group_doc is not None:
            doc["cv_group"] = group_doc
        click.echo(_dumps(doc))
        return
    if run is None:
        assert group is not None
        _print_group(_console(), None, group, folds)
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
    facts.add_row("duration", views.duration(run))
    if run.status == "running":
        facts.add_row("heartbeat", _when_long(run.heartbeat))
    if run.error:
        facts.add_row("error", f"[red]{_escape(run.error)}[/]")
    facts.add_row("spec", f"{_escape(run.spec_name or '-')}  {run.spec_hash}")
    for name, value in run.config.items():
        facts.add_row(_escape(f"config.{name}"), _escape(_value(value)))
    if run.mixup is not None:
        for name, value in run.mixup.to_dict().items():
            facts.add_row(f"mixup.{name}", _value(value))
    else:
        facts.add_row("mixup", "-")
    for name, value in run.tags.items():
        facts.add_row(_escape(f"tags.{name}"), _escape(value))
    for name, value in _provenance_rows(run.provenance):
        facts.add_row(name, _escape(value))
    console.print(facts)

    if run.summaries:
        metrics = _table("metric", "final", "step", "best", "best step", "count", title="metrics")
        for s in run.summaries.values():
            metrics.add_row(
                _escape(s.name),
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
    """User text (spec names, tags, config values) as inert rich markup: control characters shown
    as escapes, brackets not read as styles."""
    from rich.markup import escape

    return escape(printable(text))


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


def _print_group(console: Console, run: Run | None, group: CVGroup, folds: list[Run]) -> None:
    """A CV group's folds and aggregates; ``run`` (one of its folds) is marked with a *."""
    names, hidden = _capped(views.metric_names(folds, [group.aggregates]))
    title = (
        f"CV group {group.id}: {group.splitter}, k={group.k}"
        + (f" x {group.repeats} repeats" if group.repeats > 1 else "")
        + (f", seed {group.seed}" if group.seed is not None else "")
        + (f"; this run is fold {run.cv.fold}" if run is not None and run.cv is not None else "")
    )
    table = _table(
        "fold", "id", "status", "n_train", "n_val", *(f"metrics.{n}" for n in names), title=title
    )
    for fold in folds:
        mark = " *" if run is not None and fold.id == run.id else ""
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
    marks = "; * marks this run" if run is not None else ""
    console.print(f"std is the sample std (n - 1) over completed folds{marks}")
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
    differ (all with --all), tags and final metrics. A CV group's id stands for its folds."""
    with _open(registry_url) as registry:
        ids = registry.expand(list(run_ids))
        if len(ids) < 2:
            raise click.UsageError("compare takes at least two run ids (or a CV group's id)")
        found = registry.compare(ids)
    rows = views.compare_rows(found, show_all)
    if fmt == "json":
        click.echo(
            _dumps(
                {
                    "runs": [r.id for r in found],
                    "rows": [
                        {"field": f, "values": v, "differs": views.differs(v)} for f, v in rows
                    ],
                }
            )
        )
        return
    console = _console()
    for part, chunk in enumerate(_compare_chunks(found, rows, console.width)):
        table = _compare_table(found, rows, chunk)
        if part:
            console.print()
        console.print(table)
    if not show_all:
        console.print("config, mixup and tags: only fields that differ (--all shows every one)")


COMPARE_VALUE_WIDTH = 24  # a run's column is counted at most this wide (longer values wrap)


def _compare_cells(values: list[Any], field: str) -> list[str]:
    return [
        _status(v) if field == "status" and isinstance(v, str) else _escape(_cell(v))
        for v in values
    ]


def _compare_chunks(
    found: list[Run], rows: list[tuple[str, list[Any]]], width: int
) -> list[list[int]]:
    """The runs (by index) of each table ``compare`` prints: as many side by side as ``width``
    holds beside the field column, which every table keeps."""
    from rich.cells import cell_len
    from rich.text import Text

    field_width = max([5, *(cell_len(_escape(f)) for f, _ in rows)])
    needs = []
    for i, run in enumerate(found):
        texts = [Text.from_markup(_compare_cells([v[i]], f)[0]).plain for f, v in rows]
        widest = max([cell_len(t) for t in texts] or [0])
        needs.append(max(cell_len(run.id), min(widest, COMPARE_VALUE_WIDTH)) + 3)
    chunks: list[list[int]] = [[]]
    used = 1 + field_width + 3
    for i, need in enumerate(needs):
        if chunks[-1] and used + need > width:
            chunks.append([])
            used = 1 + field_width + 3
        chunks[-1].append(i)
        used += need
    return chunks


def _compare_table(found: list[Run], rows: list[tuple[str, list[Any]]], chunk: list[int]) -> Table:
    from rich.table import Table

    title = (
        "compare"
        if len(chunk) == len(found)
        else f"compare (runs {chunk[0] + 1}-{chunk[-1] + 1} of {len(found)})"
    )
    table = Table(title=title, title_justify="left")
    # the field names never shrink: values wrap instead
    table.add_column("field", style="bold", no_wrap=True)
    for i in chunk:
        table.add_column(found[i].id, overflow="fold", min_width=len(found[i].id))
    for field, values in rows:
        differs = views.differs(values)
        name = _escape(field)
        label = f"[yellow]{name}[/]" if differs and len(found) > 1 else name
        cells = _compare_cells(values, field)
        table.add_row(label, *(cells[i] for i in chunk))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return _num(value)
    return _value(value)


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
        a = json.dumps(views.jsonable(change.a))
        b = json.dumps(views.jsonable(change.b))
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
@click.option("--min", "lowest", is_flag=True, help="Lowest is better, whatever NAME declares.")
@click.option("--max", "highest", is_flag=True, help="Highest is better, whatever NAME declares.")
@where_option
@format_option(["table", "json", "csv"], "table")
def best(
    registry_url: str | None,
    metric: str,
    group_by: str | None,
    ranking: str | None,
    lowest: bool,
    highest: bool,
    where: str | None,
    fmt: str,
) -> None:
    """The best by NAME, in the direction the metric was recorded with: declared by what logged
    it (arch bench: latencies lowest, throughput highest), else lowest for names of losses,
    errors, perplexities, latencies, times, memory, FLOPs and parameter counts, highest
    otherwise. --min or --max overrides it.

    By default CV groups and the runs outside groups compete: a run by its best value, a CV
    group by the mean of its folds' final values (a fold is never picked for its luck).
    --group ranks groups only, --runs every run alone; --group-by spec, the best run per spec."""
    from archlab.registry import Ranked

    if lowest and highest:
        raise click.UsageError("--min and --max: give one of them (or neither)")
    override = "min" if lowest else "max" if highest else None
    with _open(registry_url) as registry:
        source = _nothing_in(registry)
        if group_by is not None:
            found = registry.best(metric, group_by=group_by, where=where, direction=override)
            ranked = [Ranked(metric, r.summaries[metric].best, run=r) for r in found]
        else:
            ranked = registry.rank(metric, by=ranking or "auto", where=where, direction=override)
        own = registry.metric_direction(metric)
        low = (override or own) == "min"
        # ranked against the metric's own direction: each run by its lowest or highest point
        # (its summary's best value is the other extreme)
        extremes = {
            e.run.id: views.extreme(registry.metric_history(e.run.id, metric), low)
            for e in ranked
            if override not in (None, own) and e.run is not None
        }
        known: list[str] = []
        if not ranked:
            recorded = views.metric_names(registry.runs(limit=2000))
            if recorded:  # an empty registry is said to be empty below, not an unknown metric
                _known_metric(metric, recorded, source)
            known = views.metric_names(registry.runs(where=where, limit=500))
        spec_names = {
            e.group.id: registry.get(e.group.runs[0]).spec_name
            for e in ranked
            if e.group is not None and e.group.runs
        }
    if fmt == "json":
        click.echo(_dumps([views.ranked_dict(r) for r in ranked]))
        return
    if fmt == "csv":
        click.echo(views.csv_text([views.ranked_row(r) for r in ranked]), nl=False)
        return
    console = _console()
    if not ranked:
        what = "CV group" if ranking == "group" else "run"
        hint = f"; metrics recorded: {', '.join(known)}" if known else ""
        console.print(
            f"no {what}{' matching ' + repr(where) if where else ''} has metric {metric!r} "
            f"in {source}{hint}"
        )
        return
    direction = "lowest" if low else "highest"
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
            value, step = extremes.get(run.id, (s.best, s.best_step))
            table.add_row(
                f"{_escape(run.spec_name or '-')} ({run.spec_hash[:8]})",
                run.id,
                _status(run.status),
                _num(value),
                f"{'best' if run.id not in extremes else direction}, step {_int(step)}",
                _num(s.final),
                _cv_cell(run),
                views.mixup_label(run),
                views.when(run.started),
            )
            continue
        group, agg = entry.group, entry.aggregate
        assert group is not None and agg is not None
        table.add_row(
            f"{_escape(spec_names.get(group.id) or '-')} ({group.spec_hash[:8]})",
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


def _known_metric(metric: str, recorded: list[str], source: str) -> None:
    """Exit 2 when no run in the registry records ``metric``, naming those that are recorded."""
    if metric in recorded:
        return
    import difflib

    from archlab.errors import UserInputError

    close = difflib.get_close_matches(metric, recorded, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    names = ", ".join(sorted(recorded)) or "none yet"
    raise UserInputError(
        f"no run in {source} records a metric {metric!r}; {hint}the metrics recorded: {names}"
    )


@runs.command()
@registry_option
@click.argument("idents", metavar="[ID...]", nargs=-1)
@where_option
@format_option(["csv", "json"])
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
    help="The file to write ('-' for stdout).",
)
def export(
    registry_url: str | None,
    idents: tuple[str, ...],
    where: str | None,
    fmt: str | None,
    output: Path,
) -> None:
    """Write every matching run (or only the runs ID..., a CV group's id standing for its folds)
    to FILE as CSV (one row per run; cv.*, mixup.*, metrics.*, best.*, config.*, tags.* columns)
    or JSON (a list of runs). Times are ISO 8601 in UTC. The format defaults from the file's
    suffix."""
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
        if idents:
            order = {run_id: i for i, run_id in enumerate(registry.expand(list(idents)))}
            found = sorted((r for r in found if r.id in order), key=lambda r: order[r.id])
    text = views.export_json(found) if fmt == "json" else views.export_csv(found)
    if stdout:
        click.echo(text, nl=False)
        return
    _write_atomic(output, text)
    click.echo(f"exported {len(found)} run(s) to {output} ({fmt})")


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, so a failure leaves the old file."""
    from archlab.files import replace_atomically

    def write(temporary: str) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as f:  # (a FIFO: written into)
            f.write(text)

    replace_atomically(path, write)


@runs.command()
@registry_option
@click.argument("ident", metavar="ID")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME",
    help="The metric to plot [default: val_acc]. Repeat it for several: one image each, named "
    "FILE-NAME.png after -o FILE.png.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The image to write: .png, .svg or .pdf (by the suffix).",
)
def plot(registry_url: str | None, ident: str, metrics: tuple[str, ...], output: Path) -> None:
    """Plot METRIC of run or CV group ID over its steps.

    For a CV group (or a run that is one of its folds): one thin line per fold, the mean over
    the folds at each step as a thick line with a ±1 std band, and beside it each fold's final
    value as a bar with the group's mean ± std. std is the sample std (n - 1).
    """
    from archlab.runners.curves import plot_metric
    from archlab.viz.save import PlotError, output_format

    try:
        output_format(output)
    except PlotError as exc:
        raise click.BadParameter(str(exc), param_hint="'-o' / '--output'") from None
    if not output.parent.is_dir():
        raise click.BadParameter(
            f"the folder {output.parent} does not exist", param_hint="'-o' / '--output'"
        )
    names = list(dict.fromkeys(metrics)) or ["val_acc"]
    with _open(registry_url) as registry:
        for name in names:
            path = output if len(names) == 1 else _metric_path(output, name)
            drawn = plot_metric(registry, ident, name, path)
            _report_plot(drawn, name, path)


def _metric_path(output: Path, metric: str) -> Path:
    """``runs.png`` -> ``runs-val_loss.png``: one image per metric (unsafe characters as _)."""
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", metric)
    return output.with_name(f"{output.stem}-{safe}{output.suffix}")


def _report_plot(drawn: Any, metric: str, output: Path) -> None:
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
    help="Mark interrupted the running runs whose heartbeat is older than --grace, or whose "
    "process is gone on this host.",
)
@click.option(
    "--grace",
    type=Duration(),
    default="5m",
    show_default=True,
    help="How long a running run may stay silent: 30s, 5m, 2h, 1d or plain seconds.",
)
@click.option(
    "--artifacts",
    "orphans",
    is_flag=True,
    help="Delete the artifact folders of runs no longer in the registry (asks first unless --yes).",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def gc(registry_url: str | None, stale: bool, grace: float, orphans: bool, yes: bool) -> None:
    """Clean up the registry: with --stale, mark interrupted the running runs that stopped
    sending heartbeats (their process died without ending them; a run that is in fact alive
    becomes running again at its next heartbeat and ends as it really ends); with --artifacts,
    delete the artifact folders that removed runs left behind (folders named like a run id that
    no run of this registry has). No run is deleted."""
    if not stale and not orphans:
        raise click.UsageError(
            "say what to collect: arch runs gc --stale [--grace 5m] and/or --artifacts"
        )
    # grace=None: opening sweeps nothing, so what --stale marks is all reported below
    with _open(registry_url, grace=None) as registry:
        if stale:
            marked = registry.mark_stale(grace)
            if marked:
                click.echo(
                    f"marked {len(marked)} run(s) interrupted (silent for over {views.span(grace)}, or "
                    f"their process is gone on this host): {', '.join(marked)}"
                )
            else:
                click.echo(
                    f"no running run has been silent for {views.span(grace)} or lost its process"
                )
        if orphans:
            _collect_orphans(registry, yes)


def _collect_orphans(registry: Registry, yes: bool) -> None:
    found = registry.orphan_artifacts()
    if not found:
        click.echo(f"no orphan artifact folders under {registry.artifacts}")
        return
    sizes = {path: _tree_size(path) for path in found}
    for path in found:
        click.echo(f"{path}  {_bytes(sizes[path])}")
    click.echo(
        f"no run of {_nothing_in(registry)} has these folders; if another registry keeps its "
        f"artifacts in {registry.artifacts} too, they may be its runs'"
    )
    if not yes:
        click.confirm(f"delete these {len(found)} folder(s)?", abort=True)
    removed = registry.remove_orphans(found)
    freed = sum(sizes.get(p, 0) for p in removed)
    click.echo(f"deleted {len(removed)} orphan artifact folder(s), {_bytes(freed)} freed")


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@runs.command()
@registry_option
@click.argument("run_ids", metavar="ID...", nargs=-1, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--force",
    is_flag=True,
    help="Also remove runs still running (their process's next writes will fail) and runs other "
    "runs point to (a student's teacher, an evaluated run).",
)
def rm(registry_url: str | None, run_ids: tuple[str, ...], yes: bool, force: bool) -> None:
    """Remove runs with their metrics, tags, mixup settings, artifact records and artifact files
    (the run's folder under the artifact root). A CV group's id removes every fold and the group.
    Asks first unless --yes; refuses running runs, and runs that other runs point to (a DynamicViT
    student's teacher, a run an eval run evaluates), unless --force."""
    from archlab.registry import RegistryError

    with _open(registry_url) as registry:
        unique = list(dict.fromkeys(run_ids))
        groups = [i for i in unique if registry.kind_of(i) == "group"]  # every id must exist first
        found = registry.compare(registry.expand(unique))
        running = [r.id for r in found if r.status == "running"]
        if running and not force:
            raise RegistryError(
                f"run(s) {', '.join(running)} still running: stop them first, mark them with "
                "`arch runs gc --stale` if their process is gone, or pass --force"
            )
        pointing = registry.dependents([*(r.id for r in found), *groups])
        dangling = [f"run {run} ({how} {target})" for run, how, target in pointing]
        if dangling and not force:
            raise RegistryError(
                f"other runs point to what would be removed: {'; '.join(dangling)}. Their "
                "pointers would dangle (a student's teacher could no longer be checked or "
                "reused): remove those runs too, or pass --force"
            )
        for run in found:
            where = f", fold {run.cv.fold} of CV group {run.cv.group}" if run.cv else ""
            warn = "  (still running)" if run.status == "running" else ""
            click.echo(
                f"{run.id}  {run.kind} {run.status}  {printable(run.spec_name or run.spec_hash[:12])}"
                f"  {sum(s.count for s in run.summaries.values())} metric points{where}{warn}"
            )
        if dangling:
            click.echo(f"will dangle: {'; '.join(dangling)}")
        if not yes:
            click.confirm(f"remove {len(found)} run(s) and their artifact files?", abort=True)
        deleted = []
        for run in found:
            deleted += registry.remove(run.id)
        for group_id in groups:
            deleted += registry.remove_group(group_id)
    click.echo(
        f"removed {len(found)} run(s)"
        + (f" and CV group(s) {', '.join(groups)}" if groups else "")
        + f"; deleted {len(deleted)} artifact folder(s) or file(s)"
    )


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
    """Set tags on run ID, or on every fold of CV group ID (an existing key is overwritten)."""
    tags = _parse_tags(pairs)
    with _open(registry_url) as registry:
        ids = registry.expand([run_id])
        for each in ids:
            registry.tag(each, **tags)
    what = run_id if ids == [run_id] else f"{', '.join(ids)} (the folds of CV group {run_id})"
    click.echo(f"tagged {what}: " + ", ".join(f"{k}={v}" for k, v in tags.items()))


COMMANDS = [runs]
