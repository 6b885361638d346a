"""``arch runs ...``: query and maintain the experiment registry.

Every command takes ``--registry URL`` (default: ``$ARCHLAB_REGISTRY``, else the nearest
``.archlab/registry.db`` from the current folder upwards, else the user-level registry; see
``archlab.registry.locate``) and is a thin layer over ``archlab.Registry``,
``archlab.registry.views`` (CV groups, shown runs, the compare table, export rows),
``archlab.registry.ranking`` (best by a metric) and ``archlab.registry.maintenance`` (rm, tag,
orphans): parse, call, print. These commands never create a registry: a missing one exits 2
naming the registry looked for. rich loads inside the command bodies, so ``arch --help`` stays
fast. Registry and query errors are ``UserInputError``s: exit code 2, one paragraph, no
traceback (``cli/main.py``).

This module holds the group with list, show, export, plot and tag; compare, diff and best are
in ``runs_compare.py``, gc and rm in ``runs_maintenance.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from archlab.cli.formatting import (
    count,
    cv_cell,
    dumps,
    escape,
    mean_std,
    new_console,
    new_table,
    num,
    status_markup,
    value_text,
    when_long,
    write_atomic,
)
from archlab.cli.options import (
    format_option,
    open_registry,
    parse_tags,
    registry_option,
    registry_source,
    where_option,
)
from archlab.cli.runs_compare import best, compare, diff
from archlab.cli.runs_maintenance import gc, rm
from archlab.cli.runs_verify import verify
from archlab.cli.sweep_commands import pareto_command
from archlab.registry import maintenance, views

if TYPE_CHECKING:
    from rich.console import Console

    from archlab.registry import CVGroup, Run
    from archlab.registry.views import GroupView

METRIC_COLUMNS = 6  # at most this many metric columns in show's group table; json has them all
# the columns of ``runs list`` (metric columns go between mixup and started)
LIST_COLUMNS = ("id", "kind", "status", "spec", "cv", "mixup", "started", "duration")
SPEC_WIDTH = 24  # the width a spec column is counted at when fitting columns (it wraps)

# ---------------------------------------------------------------------------------- the listing


def _capped(names: list[str]) -> tuple[list[str], int]:
    return names[:METRIC_COLUMNS], max(0, len(names) - METRIC_COLUMNS)


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
    main = [f"metrics.{n}" for n in views.main_metrics(metric_names)]
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
    table = new_table(*shown, title=title)
    for row in cells:
        table.add_row(*(row.get(c, "-") for c in shown))
    console.print(table)
    if left:
        console.print(
            f"(not shown at {console.width} columns: {', '.join(_header(c) for c in left)}; "
            "--columns picks them, --json has everything)"
        )


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
        with open_registry(registry_url) as registry:
            matching = registry.runs(where=where, order_by=list(sort))
            entries = views.grouped(registry, matching)[: limit or None]
            source = registry_source(registry)
        _print_grouped(entries, fmt, columns, source)
        return
    with open_registry(registry_url) as registry:
        found = registry.runs(where=where, order_by=list(sort), limit=limit or None)
        source = registry_source(registry)
    if fmt == "json":
        click.echo(views.export_json(found), nl=False)
    elif fmt == "csv":
        click.echo(views.export_csv(found), nl=False)
    else:
        _print_runs(found, where, columns, source=source)
        if limit and len(found) == limit:
            new_console().print(f"(the first {limit}; --limit 0 lists all)")


def _print_runs(
    found: list[Run],
    where: str | None,
    columns: str | None,
    title: str | None = None,
    source: str = "this registry",
) -> None:
    console = new_console()
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
        "status": status_markup(run.status),
        "spec": escape(run.spec_name or run.spec_hash[:12]),
        "cv": cv_cell(run),
        "mixup": views.mixup_label(run),
        **{f"metrics.{n}": num(run.metrics.get(n)) for n in metric_names},
        "started": views.when(run.started),
        "duration": views.duration(run),
    }


def _group_cells(line: views.GroupLine, metric_names: list[str]) -> dict[str, str]:
    """One CV group's cells in ``runs list --group``, by column: each metric's mean ± std over
    its completed folds, with their number where not every fold counts."""
    values = {}
    for name in metric_names:
        agg = line.aggregates.get(name)
        if agg is None:
            values[f"metrics.{name}"] = "-"
        else:
            note = f" (n={agg.n})" if agg.n != line.expected else ""
            values[f"metrics.{name}"] = f"{mean_std(agg.mean, agg.std)}{note}"
    return {
        "id": line.id,
        "kind": line.kind,
        "status": ", ".join(f"{n} {status_markup(s)}" for s, n in line.statuses),
        "spec": escape(line.spec),
        "cv": f"{line.folds} of {line.expected} folds",
        "mixup": line.mixup,
        **values,
        "started": line.started,
        "duration": line.duration,
    }


def _print_grouped(
    entries: list[Run | GroupView], fmt: str, columns: str | None, source: str = "this registry"
) -> None:
    if fmt == "json":
        click.echo(dumps(views.grouped_json(entries)))
        return
    if fmt == "csv":
        click.echo(views.csv_text(views.grouped_rows(entries)), nl=False)
        return
    console = new_console()
    if not entries:
        console.print(f"no runs in {source}")
        return
    names = views.listing_metric_names(entries)
    cells = [
        _group_cells(views.group_line(e), names)
        if isinstance(e, views.GroupView)
        else {**_run_cells(e, names), "cv": "-"}
        for e in entries
    ]
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
    with open_registry(registry_url) as registry:
        shown = views.show(registry, run_id)
    if fmt == "json":
        click.echo(dumps(shown.to_dict()))
        return
    if shown.run is None:
        assert shown.group is not None
        _print_group(new_console(), None, shown.group, shown.folds)
        return
    _print_show(shown.run, shown.group, shown.folds)


def _print_show(run: Run, group: CVGroup | None, folds: list[Run]) -> None:
    from rich.table import Table

    console = new_console()
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("run", f"{run.id}  ({run.kind})")
    facts.add_row("status", status_markup(run.status))
    facts.add_row("started", when_long(run.started))
    facts.add_row("ended", when_long(run.ended))
    facts.add_row("duration", views.duration(run))
    if run.status == "running":
        facts.add_row("heartbeat", when_long(run.heartbeat))
    if run.error:
        facts.add_row("error", f"[red]{escape(run.error)}[/]")
    facts.add_row("spec", f"{escape(run.spec_name or '-')}  {run.spec_hash}")
    for name, value in run.config.items():
        facts.add_row(escape(f"config.{name}"), escape(value_text(value)))
    if run.mixup is not None:
        for name, value in run.mixup.to_dict().items():
            facts.add_row(f"mixup.{name}", value_text(value))
    else:
        facts.add_row("mixup", "-")
    for name, value in run.tags.items():
        facts.add_row(escape(f"tags.{name}"), escape(value))
    for name, value in views.provenance_rows(run.provenance):
        facts.add_row(name, escape(value))
    console.print(facts)

    if run.summaries:
        metrics = new_table(
            "metric", "final", "step", "best", "best step", "count", title="metrics"
        )
        for s in run.summaries.values():
            metrics.add_row(
                escape(s.name),
                num(s.final),
                str(s.final_step),
                num(s.best),
                count(s.best_step),
                str(s.count),
            )
        console.print(metrics)
    else:
        console.print("no metrics recorded")
    if run.artifacts:
        artifacts = new_table("path", "kind", "size", "sha256", title="artifacts")
        for a in run.artifacts:
            artifacts.add_row(escape(a.path), a.kind, f"{a.size:,}", a.sha256[:12])
        console.print(artifacts)
    if group is not None and run.cv is not None:
        _print_group(console, run, group, folds)


def _print_group(console: Console, run: Run | None, group: CVGroup, folds: list[Run]) -> None:
    """A CV group's folds and aggregates; ``run`` (one of its folds) is marked with a *."""
    names, hidden = _capped(views.metric_names(folds, [group.aggregates]))
    title = (
        f"CV group {group.id}: {group.splitter}, k={group.k}"
        + (f" x {group.repeats} repeats" if group.repeats > 1 else "")
        + (f", seed {group.seed}" if group.seed is not None else "")
        + (f"; this run is fold {run.cv.fold}" if run is not None and run.cv is not None else "")
    )
    table = new_table(
        "fold", "id", "status", "n_train", "n_val", *(f"metrics.{n}" for n in names), title=title
    )
    for fold in folds:
        mark = " *" if run is not None and fold.id == run.id else ""
        cv = fold.cv
        table.add_row(
            f"{cv.fold if cv else '-'}{mark}",
            fold.id,
            status_markup(fold.status),
            str(cv.n_train) if cv and cv.n_train is not None else "-",
            str(cv.n_val) if cv and cv.n_val is not None else "-",
            *(num(fold.metrics.get(n)) for n in names),
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
            mean_std(a.mean, a.std, a.n) if (a := group.aggregates.get(name)) else "-"
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
    with open_registry(registry_url) as registry:
        found = views.select(registry, where, idents)
    text = views.export_json(found) if fmt == "json" else views.export_csv(found)
    if stdout:
        click.echo(text, nl=False)
        return
    write_atomic(output, text)
    click.echo(f"exported {len(found)} run(s) to {output} ({fmt})")


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
    with open_registry(registry_url) as registry:
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
            f"final {num(curve.final)}"
        )
        return
    if drawn.run_id is not None:
        click.echo(f"run {drawn.run_id} is a fold of CV group {drawn.group_id}: plotting the group")
    band = (
        f"; final {mean_std(drawn.final_mean, drawn.final_std)} "
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
@click.argument("run_id", metavar="ID")
@click.argument("pairs", metavar="KEY=VALUE...", nargs=-1, required=True)
def tag(registry_url: str | None, run_id: str, pairs: tuple[str, ...]) -> None:
    """Set tags on run ID, or on every fold of CV group ID (an existing key is overwritten)."""
    tags = parse_tags(pairs)
    with open_registry(registry_url) as registry:
        ids = maintenance.tag(registry, run_id, **tags)
    what = run_id if ids == [run_id] else f"{', '.join(ids)} (the folds of CV group {run_id})"
    click.echo(f"tagged {what}: " + ", ".join(f"{k}={v}" for k, v in tags.items()))


for command in (compare, diff, best, gc, rm, verify, pareto_command):
    runs.add_command(command)

COMMANDS = [runs]
