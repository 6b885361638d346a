"""``arch runs compare / diff / best``: runs side by side, what changed between two, and the
best by a metric. Each makes one library call (``views.comparison``, ``Registry.diff``,
``ranking.best``) and prints its answer; ``runs_commands.py`` adds them to ``arch runs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from archlab.cli.formatting import (
    cell,
    dumps,
    escape,
    mean_std,
    new_console,
    new_table,
    num,
    status_markup,
)
from archlab.cli.options import (
    format_option,
    open_registry,
    registry_option,
    registry_source,
    where_option,
)
from archlab.registry import ranking, views

if TYPE_CHECKING:
    from rich.table import Table

    from archlab.registry import Run


@click.command()
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
    with open_registry(registry_url) as registry:
        found = views.comparison(registry, run_ids, show_all)
    if len(found.runs) < 2:
        raise click.UsageError("compare takes at least two run ids (or a CV group's id)")
    if fmt == "json":
        click.echo(dumps(found.to_dict()))
        return
    console = new_console()
    for part, chunk in enumerate(_compare_chunks(found.runs, found.rows, console.width)):
        table = _compare_table(found.runs, found.rows, chunk)
        if part:
            console.print()
        console.print(table)
    if not show_all:
        console.print("config, mixup and tags: only fields that differ (--all shows every one)")


COMPARE_VALUE_WIDTH = 24  # a run's column is counted at most this wide (longer values wrap)


def _compare_cells(values: list[Any], field: str) -> list[str]:
    return [
        status_markup(v) if field == "status" and isinstance(v, str) else escape(cell(v))
        for v in values
    ]


def _compare_chunks(
    found: list[Run], rows: list[tuple[str, list[Any]]], width: int
) -> list[list[int]]:
    """The runs (by index) of each table ``compare`` prints: as many side by side as ``width``
    holds beside the field column, which every table keeps."""
    from rich.cells import cell_len
    from rich.text import Text

    field_width = max([5, *(cell_len(escape(f)) for f, _ in rows)])
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
        name = escape(field)
        label = f"[yellow]{name}[/]" if differs and len(found) > 1 else name
        cells = _compare_cells(values, field)
        table.add_row(label, *(cells[i] for i in chunk))
    return table


@click.command()
@registry_option
@click.argument("run_a", metavar="A")
@click.argument("run_b", metavar="B")
@format_option(["text", "json"], "text")
def diff(registry_url: str | None, run_a: str, run_b: str, fmt: str) -> None:
    """What changed from run A to run B: the spec (as JSON paths such as
    spec.nodes.encoder.depth), then config, mixup and CV fields, each as `path: a -> b`."""
    with open_registry(registry_url) as registry:
        changes = registry.diff(run_a, run_b)
    if fmt == "json":
        click.echo(dumps([c.to_dict() for c in changes]))
        return
    if not changes:
        click.echo("no differences")
        return
    for change in changes:
        click.echo(views.change_line(change))


@click.command()
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
    "ranking_by",
    flag_value="group",
    help="Rank CV groups only, each by the mean of its folds' final values.",
)
@click.option(
    "--runs",
    "ranking_by",
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
    ranking_by: str | None,
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
    if lowest and highest:
        raise click.UsageError("--min and --max: give one of them (or neither)")
    override = "min" if lowest else "max" if highest else None
    with open_registry(registry_url) as registry:
        source = registry_source(registry)
        answer = ranking.best(
            registry, metric, group_by=group_by, by=ranking_by or "auto", where=where,
            direction=override,
        )  # fmt: skip
    if fmt == "json":
        click.echo(dumps([views.ranked_dict(r) for r in answer.ranked]))
        return
    if fmt == "csv":
        click.echo(views.csv_text([views.ranked_row(r) for r in answer.ranked]), nl=False)
        return
    console = new_console()
    if not answer.ranked:
        what = "CV group" if ranking_by == "group" else "run"
        hint = f"; metrics recorded: {', '.join(answer.known)}" if answer.known else ""
        console.print(
            f"no {what}{' matching ' + repr(where) if where else ''} has metric {metric!r} "
            f"in {source}{hint}"
        )
        return
    console.print(_best_table(answer))


def _best_table(answer: ranking.Best) -> Table:
    """The ranked runs and CV groups, best first: a run's value where it was best, a group's
    mean ± std over its folds."""
    metric = answer.metric
    table = new_table(
        "spec",
        "id",
        "status",
        metric,
        "which value",
        f"final {metric}",
        "cv",
        "mixup",
        "started",
        title=f"best by {metric} ({answer.direction} is better)",
    )
    for row in answer.rows():
        table.add_row(
            f"{escape(row.spec_name or '-')} ({row.spec_hash[:8]})",
            row.id,
            row.status if row.group else status_markup(row.status),
            mean_std(row.value, row.std, row.n) if row.group else num(row.value),
            row.which,
            "-" if row.group else num(row.final),
            row.cv,
            row.mixup,
            row.started,
        )
    return table
