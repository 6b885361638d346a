"""The SQL of the registry's writes, one function per step of a write transaction.

``Registry`` opens the transaction (``Database.transaction`` through ``Registry._transaction``,
retried when the database is momentarily locked) and calls these with its connection or session;
the rules they apply to values (summaries, aggregates) are the pure functions of ``summaries``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from archlab.registry.engine import Database, RegistryError, Tx
from archlab.registry.models import (
    AggregateRow,
    ArtifactRow,
    CVGroupRow,
    MetricKeyRow,
    MetricRow,
    MixupRow,
    RunRow,
    SpecRow,
    SummaryRow,
    TagRow,
)
from archlab.registry.prepared import Statements, upsert
from archlab.registry.provenance import pid_alive
from archlab.registry.reads import run_row
from archlab.registry.records import Artifact, MixupSetting
from archlab.registry.summaries import FoldFinal, SeriesSummary, aggregate_finals


def store_spec(conn: Connection, loaded: Any, digest: str) -> None:
    """Store the loaded spec under ``digest`` unless a spec with that hash is stored."""
    from archlab.specs import canonical_form, canonical_json

    if conn.scalar(select(SpecRow.hash).where(SpecRow.hash == digest)) is None:
        # ON CONFLICT DO NOTHING: two PostgreSQL writers may insert the same new spec at once
        # (SQLite's IMMEDIATE transactions serialise them anyway)
        conn.execute(
            upsert(conn.dialect, SpecRow)
            .values(
                hash=digest,
                name=loaded.name,
                version=loaded.version,
                canonical=canonical_json(canonical_form(loaded)),
                created=time.time(),
            )
            .on_conflict_do_nothing()
        )


def check_fold_free(conn: Connection, group_pk: int, group_id: str, fold: int) -> None:
    """Refuse a fold index that already has a completed run: a fold joins its group once."""
    done = conn.scalar(
        select(RunRow.id).where(
            RunRow.cv_group_pk == group_pk,
            RunRow.fold == fold,
            RunRow.status == "completed",
        )
    )
    if done is not None:
        raise RegistryError(
            f"fold {fold} of CV group {group_id} is already completed (run {done}): "
            "a fold joins its group once"
        )


def insert_mixup(sql: Statements, conn: Connection, run_pk: int, setting: MixupSetting) -> None:
    """Record an active mixup setting of a run."""
    lo, hi = setting.cutmix_minmax or (None, None)
    sql.insert_mixup.rowcount(
        conn,
        (run_pk, setting.alpha, setting.cutmix_alpha, lo, hi, setting.prob, setting.switch_prob,
         setting.mode, setting.label_smoothing, setting.off_epoch),
    )  # fmt: skip


def reopen_run(
    conn: Connection, run_id: str, prov: Mapping[str, Any]
) -> tuple[int, int | None, dict[str, SeriesSummary]]:
    """Make an interrupted or failed run running again, owned by the host and pid of ``prov``;
    return its pk, its CV group's pk and its metrics' summaries."""
    found = conn.execute(
        select(RunRow.pk, RunRow.status, RunRow.cv_group_pk).where(RunRow.id == run_id)
    ).first()
    if found is None:
        raise RegistryError(f"no run {run_id!r} in this registry")
    pk, status, group_pk = found
    if status not in ("interrupted", "failed"):
        raise RegistryError(
            f"run {run_id} is {status}: only an interrupted or failed run can be resumed"
        )
    conn.execute(
        update(RunRow)
        .where(RunRow.pk == pk)
        .values(
            status="running",
            ended=None,
            error=None,
            heartbeat=time.time(),
            host=prov["host"],
            pid=prov["pid"],
        )
    )
    summaries = conn.execute(
        select(
            MetricKeyRow.name,
            SummaryRow.last_step,
            SummaryRow.last_value,
            SummaryRow.best_value,
            SummaryRow.best_step,
            SummaryRow.count,
        )
        .join(MetricKeyRow, MetricKeyRow.id == SummaryRow.key_id)
        .where(SummaryRow.run_pk == pk)
    ).all()
    return (
        pk,
        group_pk,
        {
            name: SeriesSummary(last_step, last_value, best, best_step, count)
            for name, last_step, last_value, best, best_step, count in summaries
        },
    )


def recompute_summary(conn: Connection, run_pk: int, key: int, low: bool) -> SeriesSummary:
    """A metric's summary in a run, read from its stored series (``low``: lower is better)."""
    mine = (MetricRow.run_pk == run_pk, MetricRow.key_id == key)
    count, last_step = conn.execute(
        select(func.count(), func.max(MetricRow.step)).where(*mine)
    ).one()
    last_value = conn.scalar(select(MetricRow.value).where(*mine, MetricRow.step == last_step))
    best = conn.execute(
        select(MetricRow.value, MetricRow.step)
        .where(*mine, MetricRow.value.is_not(None))
        .order_by(MetricRow.value.asc() if low else MetricRow.value.desc(), MetricRow.step)
        .limit(1)
    ).first()
    best_value, best_step = (best[0], best[1]) if best is not None else (None, None)
    return SeriesSummary(last_step, last_value, best_value, best_step, count)


def aggregate_group(sql: Statements, conn: Connection, group_pk: int) -> None:
    """Recompute a CV group's per-metric aggregates over its completed folds
    (``summaries.aggregate_finals`` says how)."""
    if sql.lock_group is not None:
        # One recomputation per group at a time: on PostgreSQL two folds ending at once would
        # each read the other's fold as still running and insert the same aggregate rows. The
        # row lock serialises them, and READ COMMITTED lets the second see the first's commit.
        # (SQLite's IMMEDIATE write transactions are serial already.)
        sql.lock_group.all(conn, (group_pk,))
    finals = [FoldFinal(*row) for row in sql.fold_finals.all(conn, (group_pk,))]
    sql.delete_aggregates.rowcount(conn, (group_pk,))
    sql.insert_aggregate.many(conn, [(group_pk, *stats) for stats in aggregate_finals(finals)])


def finish_run(
    sql: Statements, conn: Connection, run_pk: int, row: tuple[Any, ...], completed: bool
) -> bool:
    """End a running run (``row``: the prepared ``finish`` statement's values); a completed
    fold brings its group's aggregates up to date. Whether the run was running here."""
    changed = sql.finish.rowcount(conn, row)
    if changed and completed:
        group_pk = conn.scalar(select(RunRow.cv_group_pk).where(RunRow.pk == run_pk))
        if group_pk is not None:
            aggregate_group(sql, conn, group_pk)
    return bool(changed)


def stale_runs(db: Database, grace: float) -> list[tuple[int, str]]:
    """The running runs silent for ``grace`` seconds, or whose process is known dead on this
    host: (pk, id) each."""
    now = time.time()
    host = socket.gethostname()
    with db.transaction() as tx:
        candidates = tx.session.execute(
            select(RunRow.pk, RunRow.id, RunRow.heartbeat, RunRow.host, RunRow.pid).where(
                RunRow.status == "running"
            )
        ).all()
    return [
        (pk, run_id)
        for pk, run_id, beat, run_host, pid in candidates
        if beat < now - grace
        or (run_host == host and pid is not None and pid != os.getpid() and not pid_alive(pid))
    ]


def add_artifact(session: Session, run_pk: int, record: Artifact) -> None:
    """Record an artifact file of a run."""
    session.add(
        ArtifactRow(
            run_pk=run_pk,
            path=record.path,
            kind=record.kind,
            size=record.size,
            sha256=record.sha256,
            created=time.time(),
        )
    )


def set_tags(session: Session, run_id: str, tags: Mapping[str, Any]) -> None:
    """Add or replace tags of run ``run_id``."""
    row = run_row(session, run_id)
    for key, value in tags.items():
        existing = session.get(TagRow, (row.pk, key))
        if existing is None:
            session.add(TagRow(run_pk=row.pk, key=key, value=str(value)))
        else:
            existing.value = str(value)


def delete_run(sql: Statements, tx: Tx, run_id: str) -> list[str]:
    """Delete a run with its metrics, tags, mixup and artifact records, and bring its CV
    group's aggregates up to date; return the artifact paths it recorded that no other run
    records."""
    session = tx.session
    row = run_row(session, run_id)
    group_pk = row.cv_group_pk
    recorded = list(session.scalars(select(ArtifactRow.path).where(ArtifactRow.run_pk == row.pk)))
    for table in (MetricRow, SummaryRow, TagRow, MixupRow, ArtifactRow):
        session.execute(delete(table).where(table.run_pk == row.pk))
    session.delete(row)
    session.flush()
    if group_pk is not None:
        aggregate_group(sql, session.connection(), group_pk)
    shared = set(session.scalars(select(ArtifactRow.path).where(ArtifactRow.path.in_(recorded))))
    return [path for path in recorded if path not in shared]


def delete_group(session: Session, group_id: str) -> None:
    """Delete a CV group's row and its aggregates (its runs are deleted first)."""
    found = session.scalars(select(CVGroupRow).where(CVGroupRow.id == group_id)).first()
    if found is not None:
        session.execute(delete(AggregateRow).where(AggregateRow.group_pk == found.pk))
        session.delete(found)


def unclaimed(db: Database, folders: Mapping[str, Path]) -> list[Path]:
    """Of these run folders (by name), those no run of the registry has and no recorded
    artifact lies in."""
    if not folders:
        return []
    with db.transaction() as tx:
        session = tx.session
        known = set(session.scalars(select(RunRow.id).where(RunRow.id.in_(folders))))
        used = {
            path.split("/", 1)[0]
            for path in session.scalars(select(ArtifactRow.path))
            if "/" in path
        }
    return sorted(p for name, p in folders.items() if name not in known | used)
