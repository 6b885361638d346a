"""``arch sweep SWEEP.json`` (Optuna over spec variants), ``arch sweep show`` and ``arch runs
pareto``: each one call into ``archlab.runners.sweep``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from archlab.cli.formatting import dumps, new_console, new_table, num, si
from archlab.cli.options import open_registry, registry_option
from archlab.textsafe import printable


class _SweepGroup(click.Group):
    """``arch sweep FILE ...`` runs a sweep; ``arch sweep show ...`` is a subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_SweepGroup)
def sweep() -> None:
    """Search over spec variants with Optuna: each trial a CV group in the registry.

    \b
    arch sweep SWEEP.json [--trials N] [--study NAME] [--registry URL]
    arch sweep show SWEEP            the trials: parameters, state, objectives, reasons
    arch runs pareto SWEEP           the Pareto front of the sweep's CV groups
    """


@sweep.command(name="run")
@click.argument("sweep_file", metavar="SWEEP.json", type=click.Path(path_type=Path))
@click.option("--trials", type=click.IntRange(min=1), help="Finished trials the study ends with.")
@click.option("--study", "study_name", help="The study to run or join [default: the file's].")
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="Seconds between a trial's heartbeats; a trial silent for 3 of them is retried.",
)
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads of the training.")
@click.option("--json", "as_json", is_flag=True, help="Print the study's trials as JSON.")
@registry_option
def run_command(
    sweep_file: Path,
    trials: int | None,
    study_name: str | None,
    heartbeat: float,
    threads: int | None,
    as_json: bool,
    registry_url: str | None,
) -> None:
    """Run SWEEP.json's trials (or join another process running the same study) until the
    study holds --trials finished ones. Variants that are invalid or over budget are rejected
    with their reason, never trained. Several processes (any machines) given the same --study
    and a PostgreSQL --registry share the trials."""
    from archlab.registry import Registry
    from archlab.runners.sweep import run_sweep
    from archlab.runners.sweep_file import load_sweep
    from archlab.runners.threads import configure_threads

    loaded = load_sweep(sweep_file)
    configure_threads(threads)
    with Registry(registry_url) as registry:
        report = run_sweep(
            loaded,
            registry,
            trials=trials,
            study_name=study_name,
            heartbeat=heartbeat,
            on_trial=None if as_json else lambda row: click.echo(_trial_line(row)),
        )
    if as_json:
        click.echo(dumps({"study": report.study, "trials": [t.to_dict() for t in report.trials]}))
        return
    counts: dict[str, int] = {}
    for row in report.trials:
        counts[row.state] = counts.get(row.state, 0) + 1
    summary = ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))
    click.echo(printable(f"study {report.study}: {summary}; this process ran {len(report.ran)}"))


def _trial_line(row: Any) -> str:
    values = ", ".join(num(v) for v in row.values) if row.values else "-"
    params = ", ".join(f"{k}={_short(v)}" for k, v in row.params.items())
    why = f" ({row.reason})" if row.reason else ""
    return printable(f"trial {row.number}: {row.state.lower()} {values}{why}  {params}")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _study_of(ident: str) -> tuple[str, dict[str, str] | None]:
    """A sweep file (its study and objectives) or a study's name (objectives unknown here)."""
    path = Path(ident)
    if ident.endswith(".json") and path.is_file():
        from archlab.runners.sweep_file import load_sweep

        loaded = load_sweep(path)
        return loaded.name, dict(loaded.model.objectives)
    return ident, None


@sweep.command(name="show")
@click.argument("ident", metavar="SWEEP")
@click.option("--json", "as_json", is_flag=True, help="Print the trials as JSON.")
@registry_option
def show_command(ident: str, as_json: bool, registry_url: str | None) -> None:
    """The trials of SWEEP (a sweep file or a study's name): parameters, state, objective
    values, why a trial was rejected or pruned, and its CV group."""
    from archlab.runners.sweep import sweep_trials

    study, _ = _study_of(ident)
    with open_registry(registry_url) as registry:
        objectives, rows = sweep_trials(registry, study)
    if as_json:
        click.echo(
            dumps({"study": study, "objectives": objectives, "trials": [r.to_dict() for r in rows]})
        )
        return
    names = sorted({k for r in rows for k in r.params})
    table = new_table("#", "state", *names, *objectives, "params", "group", "reason", title=study)
    for r in rows:
        values = [num(v) for v in r.values] if r.values else ["-"] * len(objectives)
        table.add_row(
            str(r.number),
            r.state.lower(),
            *[_short(r.params[n]) if n in r.params else "-" for n in names],
            *values,
            si(r.attrs["params"]) if "params" in r.attrs else "-",
            r.group or "-",
            printable(r.reason or ""),
        )
    new_console().print(table)


@click.command(name="pareto")
@click.argument("ident", metavar="SWEEP")
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON.")
@registry_option
def pareto_command(ident: str, as_json: bool, registry_url: str | None) -> None:
    """The Pareto front of SWEEP (a sweep file or a study's name) from the registry: every
    complete CV group tagged with the sweep, its objectives' means over folds, the front first."""
    from archlab.runners.sweep import pareto_front, sweep_trials

    study, objectives = _study_of(ident)
    with open_registry(registry_url) as registry:
        if objectives is None:
            objectives, _ = sweep_trials(registry, study)
        points = pareto_front(registry, study, objectives)
    if as_json:
        click.echo(dumps([p.__dict__ for p in points]))
        return
    table = new_table("front", "trial", "group", *objectives, title=f"{study}: Pareto front")
    for p in points:
        table.add_row(
            "*" if p.front else "", p.trial, p.group, *[num(p.values[n]) for n in objectives]
        )
    new_console().print(table)


COMMANDS = [sweep]
