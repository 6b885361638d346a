"""``arch runs compare / diff / best``: runs side by side (or two CV groups tested fold for
fold), what changed between two, and the best by a metric. Each makes one library call
(``views.comparison`` or ``Registry.compare_groups``, ``Registry.diff``, ``ranking.best``) and
prints its answer; ``runs_commands.py`` adds them to ``arch runs``.
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
from archlab.registry.comparison import AT, RATIOS, verdict

if TYPE_CHECKING:
    from rich.table import Table

    from archlab.registry import Run
    from archlab.registry.comparison import GroupComparison


@click.command()
@registry_option
@click.argument("run_ids", metavar="ID ID...", nargs=-1)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Show every config, mixup and tag field, not only those that differ.",
)
@click.option(
    "--metric",
    default=None,
    metavar="NAME",
    help="Two CV groups: the metric compared fold by fold (default val_acc).",
)
@click.option(
    "--at",
    type=click.Choice(AT),
    default=None,
    help="Two CV groups: each fold's final value of the metric (default) or its best.",
)
@click.option(
    "--rope",
    type=float,
    default=None,
    metavar="R",
    help="Two CV groups: differences within ±R count as practically equivalent (default 0.01, "
    "in the metric's units).",
)
@click.option(
    "--ratio",
    type=click.Choice(RATIOS),
    default=None,
    help="Two CV groups: n2/n1 of the corrected t-test is 1/(k-1) (folds, default) or the "
    "recorded mean validation / training sizes (sizes).",
)
@click.option(
    "--runs",
    "as_runs",
    is_flag=True,
    help="Two CV groups: their fold runs side by side rather than the statistics.",
)
@click.option(
    "--sweep",
    metavar="STUDY",
    default=None,
    help="Instead of ids: every complete trial of sweep STUDY against --against, the "
    "p-values Holm-corrected over the trials.",
)
@click.option(
    "--against",
    type=click.Choice(["best"]),
    default=None,
    help="--sweep: compare each trial with the best trial by --metric (the only choice).",
)
@format_option(["table", "json"], "table")
def compare(
    registry_url: str | None,
    run_ids: tuple[str, ...],
    show_all: bool,
    metric: str | None,
    at: str | None,
    rope: float | None,
    ratio: str | None,
    as_runs: bool,
    sweep: str | None,
    against: str | None,
    fmt: str,
) -> None:
    """Runs side by side: one column per run; status, spec, CV, config and mixup fields that
    differ (all with --all), tags and final metrics. A CV group's id stands for its folds.

    Two CV groups (GROUP_A GROUP_B) are compared fold for fold instead: is B better than A?
    They must be the same splits of the same data. Per fold d = B - A of --metric; the
    corrected resampled t-test (p and 95% interval), the naive t-test beside it, the Bayesian
    correlated t-test (P(A better), P(within ±R), P(B better)) and, for 5x2 CV, Dietterich's t
    and Alpaydin's F. --runs shows the two groups' fold runs side by side instead.

    --sweep STUDY --against best: every complete trial of an arch sweep against the best one
    by --metric, the corrected t-test's p-values adjusted by Holm's method over the trials."""
    if sweep is not None or against is not None:
        _compare_sweep(registry_url, run_ids, sweep, metric, at, rope, ratio, fmt)
        return
    if not run_ids:
        raise click.UsageError("compare takes two or more ids (runs or CV groups), or --sweep")
    statistics = {"--metric": metric, "--at": at, "--rope": rope, "--ratio": ratio}
    asked = [name for name, value in statistics.items() if value is not None]
    with open_registry(registry_url) as registry:
        two_groups = (
            len(run_ids) == 2
            and not (as_runs or show_all)
            and (asked or all(registry.kind_of(i) == "group" for i in run_ids))
        )
        if asked and not two_groups:
            raise click.UsageError(
                f"{', '.join(asked)}: options of comparing two CV groups (GROUP_A GROUP_B), "
                "not of the runs' table (--runs, --all, other than two ids)"
            )
        if two_groups:
            result = registry.compare_groups(
                run_ids[0], run_ids[1], metric or "val_acc", at=at or "final",
                rope=0.01 if rope is None else rope, ratio=ratio or "folds",
            )  # fmt: skip
        else:
            found = views.comparison(registry, run_ids, show_all)
    if two_groups:
        _print_groups(result, fmt)
        return
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


def _compare_sweep(
    registry_url: str | None,
    run_ids: tuple[str, ...],
    sweep: str | None,
    metric: str | None,
    at: str | None,
    rope: float | None,
    ratio: str | None,
    fmt: str,
) -> None:
    """``--sweep S --against best``: one library call, its table or JSON."""
    if sweep is None or run_ids:
        raise click.UsageError(
            "--sweep STUDY [--against best] compares a sweep's trials and takes no ids"
        )
    with open_registry(registry_url) as registry:
        result = registry.compare_sweep(
            sweep, metric or "val_acc", at=at or "final",
            rope=0.01 if rope is None else rope, ratio=ratio or "folds",
        )  # fmt: skip
    if fmt == "json":
        click.echo(dumps(result.to_dict()))
        return
    table = new_table(
        "trial", "group", f"mean {result.metric}", "− best", "p", "p (Holm)",
        "P(trial better)",
        title=f"sweep {result.study}: every trial against the best, trial {result.best_trial} "
        f"({result.best_group}, mean {result.best_mean:.4g})",
    )  # fmt: skip
    for t in result.trials:
        c = t.comparison
        table.add_row(
            t.trial, t.group, f"{t.mean:.4g}", f"{c.mean_diff:+.4g}", f"{c.corrected.p:.3g}",
            f"{t.p_holm:.3g}", f"{c.p_b_better:.3f}",
        )  # fmt: skip
    console = new_console()
    console.print(table)
    worse = result.worse()
    console.print(
        f"worse than the best at 0.05 for the whole family (Holm): {', '.join(worse) or 'none'}; "
        "the others cannot be told apart from it with these folds"
    )


def _print_groups(result: GroupComparison, fmt: str) -> None:
    """Two CV groups' comparison: its JSON, or a table of the numbers and what they say."""
    if fmt == "json":
        click.echo(dumps(result.to_dict()))
        return
    import statistics

    r = result
    j = len(r.diffs)
    table = new_table(
        "",
        "value",
        title=f"B {r.b} vs A {r.a}: {r.at} {r.metric}, {r.k}-fold CV x {r.repeats}",
    )
    higher = "higher" if r.direction == "max" else "lower"
    table.add_row("paired folds", f"{j} ({higher} {r.metric} is better)")
    for name, values, group in (("A", r.values_a, r.a), ("B", r.values_b, r.b)):
        table.add_row(
            f"{name} {group}", mean_std(statistics.fmean(values), statistics.stdev(values), j)
        )
    t = r.corrected
    table.add_row("mean B − A", f"{r.mean_diff:+.4g}")
    table.add_row(
        f"{round(t.level * 100)}% interval (corrected)", f"{t.ci_low:+.4g} to {t.ci_high:+.4g}"
    )
    table.add_row("corrected t-test", f"t = {t.t:.3f}, df {t.df}, p = {t.p:.3g}")
    table.add_row("naive t-test (overconfident)", f"t = {r.naive.t:.3f}, p = {r.naive.p:.3g}")
    table.add_row("P(A better)", f"{r.p_a_better:.3f}")
    table.add_row(f"P(|B − A| <= {r.rope:g})", f"{r.p_rope:.3f}")
    table.add_row("P(B better)", f"{r.p_b_better:.3f}")
    if r.five_by_two is not None:
        f = r.five_by_two
        table.add_row("5x2cv t (Dietterich)", f"t = {f.t:.3f}, p = {f.p:.3g}")
        table.add_row("5x2cv F (Alpaydin)", f"F = {f.f:.3f}, p = {f.p_f:.3g}")
    console = new_console()
    console.print(table)
    for line in verdict(r):
        console.print(escape(line))
    ratio = "1/(k-1)" if r.ratio == "folds" else "mean validation / training size"
    console.print(f"n2/n1 = {r.size_ratio:.4g} ({ratio}); per-fold differences: --json")


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
