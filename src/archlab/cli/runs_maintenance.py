"""``arch runs gc / rm``: mark silent runs interrupted, delete orphan artifact folders, remove
runs and CV groups. The deciding (what a removal takes, what refuses it, the orphans and their
sizes) is ``archlab.registry.maintenance``; ``runs_commands.py`` adds these to ``arch runs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from archlab.cli.formatting import size
from archlab.cli.options import Duration, open_registry, registry_option, registry_source
from archlab.registry import maintenance, views
from archlab.textsafe import printable

if TYPE_CHECKING:
    from archlab.registry import Registry


@click.command()
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
    with open_registry(registry_url, grace=None) as registry:
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
    sizes = maintenance.orphans(registry)
    if not sizes:
        click.echo(f"no orphan artifact folders under {registry.artifacts}")
        return
    for path, n_bytes in sizes.items():
        click.echo(f"{path}  {size(n_bytes)}")
    click.echo(
        f"no run of {registry_source(registry)} has these folders; if another registry keeps its "
        f"artifacts in {registry.artifacts} too, they may be its runs'"
    )
    if not yes:
        click.confirm(f"delete these {len(sizes)} folder(s)?", abort=True)
    removed = registry.remove_orphans(list(sizes))
    freed = sum(sizes.get(p, 0) for p in removed)
    click.echo(f"deleted {len(removed)} orphan artifact folder(s), {size(freed)} freed")


@click.command()
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
    with open_registry(registry_url) as registry:
        removal = maintenance.plan_removal(registry, run_ids)
        removal.refuse(force)
        for run in removal.runs:
            where = f", fold {run.cv.fold} of CV group {run.cv.group}" if run.cv else ""
            warn = "  (still running)" if run.status == "running" else ""
            click.echo(
                f"{run.id}  {run.kind} {run.status}  {printable(run.spec_name or run.spec_hash[:12])}"
                f"  {sum(s.count for s in run.summaries.values())} metric points{where}{warn}"
            )
        if removal.dangling:
            click.echo(f"will dangle: {'; '.join(removal.dangling)}")
        if not yes:
            click.confirm(
                f"remove {len(removal.runs)} run(s) and their artifact files?", abort=True
            )
        deleted = maintenance.remove(registry, removal)
    groups = removal.groups
    click.echo(
        f"removed {len(removal.runs)} run(s)"
        + (f" and CV group(s) {', '.join(groups)}" if groups else "")
        + f"; deleted {len(deleted)} artifact folder(s) or file(s)"
    )
