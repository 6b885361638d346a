"""``arch runs verify RUN``: train a recorded run again and say whether it gave the same numbers,
and, when not, which recorded setting differs from now."""

from __future__ import annotations

from typing import Any

import click

from archlab.cli.formatting import dumps, escape, new_console, new_table, num
from archlab.cli.options import open_registry, registry_option


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
              help="CPU threads for torch [default: the count the run recorded].")  # fmt: skip
@click.option("--all-settings", is_flag=True,
              help="List every recorded setting, not only those that differ.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: the re-run, every compared series, the settings.")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No training display.")
@registry_option
def verify(
    run_id: str,
    threads: int | None,
    all_settings: bool,
    as_json: bool,
    quiet: bool,
    registry_url: str | None,
) -> None:
    """Train RUN again (as arch train --rerun RUN, recorded as a new run tagged reruns=RUN) and
    compare every metric series with the original's, step by step, bit for bit.

    Metrics that measure time (samples_per_s, *_s, *_ms) change from one run to the next and are
    not compared. Then the recorded settings beside the re-run's: versions, installed packages,
    CPU threads (the re-run uses the recorded count unless --threads says), torch determinism
    settings, git commit and uncommitted changes, device, host.

    Exit status: 0 when every compared series is equal, 1 when any differs, 2 for bad input
    (an unknown run, an eval run, a run recorded without what a re-run needs, data that
    changed since).
    """
    from archlab.runners.progress import make_progress
    from archlab.runners.rerun import verify as verify_run

    with open_registry(registry_url) as registry, make_progress(quiet or as_json) as progress:
        report = verify_run(run_id, registry, progress=progress, threads=threads)
    if as_json:
        click.echo(dumps(_verify_json(report)))
    else:
        _print_verify(report, all_settings)
    if not report.equal:
        raise SystemExit(1)


def _verify_json(report: Any) -> dict[str, Any]:
    return {
        "run": report.run,
        "rerun": report.rerun,
        "equal": report.equal,
        "series": [
            {
                "metric": s.metric,
                "equal": s.equal,
                "points": s.points,
                "rerun_points": s.rerun_points,
                "differing": s.differing,
                "first_step": s.first_step,
                "max_abs_diff": s.max_abs,
            }
            for s in report.series
        ],
        "not_compared": report.skipped,
        "settings": [
            {"setting": name, "recorded": then, "rerun": now, "same": then == now}
            for name, then, now in report.settings
        ],
    }


def _print_verify(report: Any, all_settings: bool) -> None:
    console = new_console()
    differing = sum(not s.equal for s in report.series)
    verdict = (
        "equal, bit for bit"
        if report.equal
        else f"{differing} series differ{'s' if differing == 1 else ''}"
    )
    console.print(
        f"run {report.rerun} re-runs run {report.run}: "
        f"{len(report.series)} metric series compared, {verdict}"
    )
    if report.skipped:
        console.print(f"not compared (they measure time): {escape(', '.join(report.skipped))}")
    series = new_table("metric", "points", "differing steps", "first at step", "max |diff|")
    for s in report.series:
        first = "-" if s.first_step is None else str(s.first_step)
        points = str(s.points) if s.points == s.rerun_points else f"{s.points} / {s.rerun_points}"
        series.add_row(escape(s.metric), points, str(s.differing), first, num(s.max_abs))
    console.print(series)
    rows = report.settings if all_settings else report.differing_settings()
    if not rows:
        console.print("every recorded setting is the same now (--all-settings lists them)")
        return
    title = "settings" if all_settings else "settings that differ (--all-settings: every one)"
    table = new_table("setting", "recorded", "re-run", "same", title=title)
    for name, then, now in rows:
        table.add_row(escape(name), escape(then), escape(now), "yes" if then == now else "NO")
    console.print(table)
