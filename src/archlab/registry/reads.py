"""The registry's reads: runs and CV groups as plain records, rankings, differences, histories.

Functions of a ``Database`` (and, for the hot reads, its prepared ``Statements``); ``Registry``'s
read methods call them. Each read is one transaction, and none scans a metric series unless asked
for it: final and best values come from the per-run summaries, CV means from the aggregates.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from archlab.metrics import checked_direction
from archlab.registry.artifacts import RUN_ID
from archlab.registry.engine import Database, RegistryError
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
from archlab.registry.prepared import Statements, json_value
from archlab.registry.records import Artifact, Change, CVGroup, CVInfo, MetricSummary, Ranked, Run
from archlab.registry.summaries import (
    GroupFields,
    RunParts,
    aggregate_record,
    group_record,
    nan,
    run_record,
    summary_record,
)


def runs(
    db: Database,
    where: str | None = None,
    order_by: str | Sequence[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[Run]:
    """Runs matching ``where`` (the query language), sorted, newest first by default; ``offset``
    skips that many of them first (a page of a listing, skipped by the database)."""
    from archlab.registry import query

    stmt = select(RunRow)
    condition = query.compile_where(where)
    if condition is not None:
        stmt = stmt.where(condition)
    orders = [order_by] if isinstance(order_by, str) else list(order_by or [])
    for field in orders:
        stmt = stmt.order_by(query.order_by(field))
    stmt = stmt.order_by(RunRow.started.desc(), RunRow.pk.desc())
    if limit is not None and not 0 <= limit < 2**63:
        raise RegistryError(f"a limit is a count from 0 to 2**63 - 1, not {limit}")
    if limit is not None:
        stmt = stmt.limit(limit)
    if not 0 <= offset < 2**63:
        raise RegistryError(f"an offset is a count from 0 to 2**63 - 1, not {offset}")
    if offset:
        stmt = stmt.offset(offset)
    with db.transaction() as tx:
        rows = list(tx.session.scalars(stmt))
        return records(tx.session, rows)


def count(db: Database, where: str | None = None) -> int:
    """How many runs match ``where`` (one ``count(*)``; no run is read)."""
    from archlab.registry import query

    stmt = select(func.count()).select_from(RunRow)
    condition = query.compile_where(where)
    if condition is not None:
        stmt = stmt.where(condition)
    with db.transaction() as tx:
        return int(tx.session.scalar(stmt) or 0)


def get(db: Database, run_id: str) -> Run:
    """One run with everything: summaries, tags, artifacts, provenance."""
    with db.transaction() as tx:
        [record] = records(tx.session, [run_row(tx.session, run_id)], full=True)
        return record


def split_fingerprints(db: Database, run_id: str) -> dict[str, Any]:
    """The sizes and SHA-256 fingerprints of the training and validation indices run ``run_id``
    recorded (``n_train``, ``train_sha256``, ``n_val``, ``val_sha256``; None where it recorded
    none), for a hold-out run as for a fold run."""
    with db.transaction() as tx:
        row = run_row(tx.session, run_id)
        return {
            "n_train": row.n_train,
            "train_sha256": row.train_sha256,
            "n_val": row.n_val,
            "val_sha256": row.val_sha256,
        }


def spec_document(db: Database, digest: str) -> dict[str, Any]:
    """The canonical spec stored under ``digest`` (a run's ``spec_hash``), as JSON data."""
    with db.transaction() as tx:
        row = tx.session.get(SpecRow, digest)
        if row is None:
            raise RegistryError(f"no spec {digest[:12]} in this registry")
        return json.loads(row.canonical)


def group(db: Database, sql: Statements, group_id: str) -> CVGroup:
    """A CV group with its fold runs and its aggregates (three prepared statements)."""
    with db.transaction() as tx:  # one snapshot
        conn = tx.conn
        found = sql.group_by_id.first(conn, (group_id,))
        if found is None:
            raise RegistryError(f"no CV group {group_id!r} in this registry")
        pk = found[0]
        fields = GroupFields._make((*found[1:11], json_value(found[11])))
        run_ids = [run_id for (run_id,) in sql.group_runs.all(conn, (pk,))]
        aggregates = {
            name: aggregate_record(name, mean, std, n, low, high)
            for name, mean, std, n, low, high in sql.group_aggregates.all(conn, (pk,))
        }
    return group_record(fields, run_ids, aggregates)


def completed_folds(db: Database, group_id: str) -> dict[int, str]:
    """The fold indices of a CV group that have a completed run, each with the run that counts
    for it (the first completed; the one its aggregates use)."""
    with db.transaction() as tx:
        session = tx.session
        group_pk = session.scalar(select(CVGroupRow.pk).where(CVGroupRow.id == group_id))
        if group_pk is None:
            raise RegistryError(f"no CV group {group_id!r} in this registry")
        found: dict[int, str] = {}
        for fold, run_id in session.execute(
            select(RunRow.fold, RunRow.id)
            .where(RunRow.cv_group_pk == group_pk, RunRow.status == "completed")
            .order_by(RunRow.pk)
        ):
            if fold is not None:
                found.setdefault(fold, run_id)
        return found


def fold_runs(db: Database, group_id: str) -> dict[int, Run]:
    """The completed run of each fold of a CV group that has one (the first completed, as
    ``completed_folds`` and the aggregates count it), with its summaries, by fold index."""
    with db.transaction() as tx:
        session = tx.session
        group_pk = session.scalar(select(CVGroupRow.pk).where(CVGroupRow.id == group_id))
        if group_pk is None:
            raise RegistryError(f"no CV group {group_id!r} in this registry")
        rows: dict[int, RunRow] = {}
        for row in session.scalars(
            select(RunRow)
            .where(RunRow.cv_group_pk == group_pk, RunRow.status == "completed")
            .order_by(RunRow.pk)
        ):
            if row.fold is not None:
                rows.setdefault(row.fold, row)
        found = records(session, list(rows.values()))
        return {run.cv.fold: run for run in found if run.cv is not None and run.cv.fold is not None}


def diff(db: Database, a: str, b: str) -> list[Change]:
    """Differences between two runs: spec (as JSON paths), then config, mixup and CV."""
    ra, rb = get(db, a), get(db, b)
    spec_a, spec_b = spec_document(db, ra.spec_hash), spec_document(db, rb.spec_hash)
    changes: list[Change] = []
    diff_json("spec", spec_a, spec_b, changes)
    diff_json("config", ra.config, rb.config, changes)
    diff_json(
        "mixup",
        ra.mixup.to_dict() if ra.mixup else None,
        rb.mixup.to_dict() if rb.mixup else None,
        changes,
    )
    diff_json("cv", cv_dict(ra.cv), cv_dict(rb.cv), changes)
    return changes


def run_values(metric: str, own: str, direction: str | None) -> tuple[Any, bool]:
    """Each run's best value of ``metric`` in the direction that ranks (``direction``, else the
    metric's ``own``), as a subquery of (run_pk, value), and whether lower ranks first.

    The summaries hold the best value in the metric's own direction; ranking the other way takes
    each run's lowest or highest point from its series instead (NaN never counts)."""
    wanted = own if direction is None else checked_direction(direction, metric)
    key = select(MetricKeyRow.id).where(MetricKeyRow.name == metric).scalar_subquery()
    if wanted == own:
        best = SummaryRow.best_value
        values = select(SummaryRow.run_pk, best.label("value")).where(
            SummaryRow.key_id == key, best.is_not(None)
        )
    else:
        extreme = func.min(MetricRow.value) if wanted == "min" else func.max(MetricRow.value)
        values = (
            select(MetricRow.run_pk, extreme.label("value"))
            .where(MetricRow.key_id == key, MetricRow.value.is_not(None))
            .group_by(MetricRow.run_pk)
        )
    return values.subquery(), wanted == "min"


def best(
    db: Database,
    metric: str,
    own: str,
    group_by: str | None = None,
    where: str | None = None,
    direction: str | None = None,
) -> list[Run]:
    """The best run by ``metric``'s best value, or the best of each spec (``own``: the
    direction the registry keeps for the metric; ``direction`` overrides it). One query: a
    window function ranks the runs of each spec."""
    from archlab.registry import query

    if group_by not in (None, "spec"):
        raise RegistryError(f"group_by takes 'spec' or nothing, not {group_by!r}")
    values, low = run_values(metric, own, direction)
    value = values.c.value
    ranking = value.asc() if low else value.desc()
    stmt = select(RunRow.pk, value.label("value")).join(values, values.c.run_pk == RunRow.pk)
    condition = query.compile_where(where)
    if condition is not None:
        stmt = stmt.where(condition)
    if group_by is None:
        chosen = stmt.order_by(ranking, RunRow.started.desc(), RunRow.pk.desc()).limit(1)
    else:
        rank = func.row_number().over(
            partition_by=RunRow.spec_hash,
            order_by=(ranking, RunRow.started.desc(), RunRow.pk.desc()),
        )
        ranked = stmt.add_columns(rank.label("rank")).subquery()
        best_first = ranked.c.value.asc() if low else ranked.c.value.desc()
        chosen = select(ranked.c.pk, ranked.c.value).where(ranked.c.rank == 1).order_by(best_first)
    with db.transaction() as tx:
        session = tx.session
        pks = [pk for pk, _ in session.execute(chosen)]
        rows = {r.pk: r for r in session.scalars(select(RunRow).where(RunRow.pk.in_(pks)))}
        return records(session, [rows[pk] for pk in pks])


def rank(
    db: Database,
    metric: str,
    own: str,
    group: Callable[[str], CVGroup],
    *,
    by: str = "auto",
    where: str | None = None,
    limit: int | None = 1,
    direction: str | None = None,
) -> list[Ranked]:
    """Runs and CV groups ranked by ``metric``, best first (see ``Registry.rank``); ``own`` is
    the metric's direction in the registry, ``group`` reads a CV group by id."""
    from archlab.registry import query

    if by not in ("auto", "group", "run"):
        raise RegistryError(f"rank by 'auto', 'group' or 'run', not {by!r}")
    values, low = run_values(metric, own, direction)
    condition = query.compile_where(where)
    found: list[tuple[float, float, int, str]] = []  # (value, -started, pk, kind)
    if by != "group":
        value = values.c.value
        stmt = (
            select(RunRow.pk, value, RunRow.started)
            .join(values, values.c.run_pk == RunRow.pk)
            .order_by(value.asc() if low else value.desc(), RunRow.started.desc())
        )
        if by == "auto":
            stmt = stmt.where(RunRow.cv_group_pk.is_(None))
        if condition is not None:
            stmt = stmt.where(condition)
        with db.transaction() as tx:
            rows = tx.session.execute(stmt.limit(limit)).all()
        found += [(v, -started, pk, "run") for pk, v, started in rows if v is not None]
    if by != "run":
        key = select(MetricKeyRow.id).where(MetricKeyRow.name == metric).scalar_subquery()
        mean = AggregateRow.mean
        stmt = (
            select(CVGroupRow.pk, mean, CVGroupRow.created)
            .join(AggregateRow, AggregateRow.group_pk == CVGroupRow.pk)
            .where(AggregateRow.key_id == key)
            .order_by(mean.asc() if low else mean.desc(), CVGroupRow.created.desc())
        )
        if condition is not None:
            stmt = stmt.where(
                CVGroupRow.pk.in_(
                    select(RunRow.cv_group_pk).where(RunRow.cv_group_pk.is_not(None), condition)
                )
            )
        with db.transaction() as tx:
            rows = tx.session.execute(stmt.limit(limit)).all()
        found += [(float(v), -created, pk, "group") for pk, v, created in rows]
    found.sort(key=lambda f: (f[0] if low else -f[0], f[1]))
    found = found[:limit] if limit is not None else found
    out = []
    with db.transaction() as tx:
        session = tx.session
        for value, _, pk, kind in found:
            if kind == "run":
                row = session.get(RunRow, pk)
                [run] = records(session, [row])  # type: ignore[list-item]
                out.append(Ranked(metric, value, run=run))
            else:
                group_id = session.scalar(select(CVGroupRow.id).where(CVGroupRow.pk == pk))
                out.append(Ranked(metric, value, group=group(group_id)))  # type: ignore[arg-type]
    return out


def kind_of(db: Database, ident: str) -> str:
    """``"run"`` or ``"group"``: what ``ident`` names (see ``Registry.kind_of``)."""
    with db.transaction() as tx:
        session = tx.session
        run = session.scalar(select(RunRow.pk).where(RunRow.id == ident))
        group = session.scalar(select(CVGroupRow.pk).where(CVGroupRow.id == ident))
        if run is not None and group is not None:
            raise RegistryError(
                f"{ident!r} is both a run and a CV group of this registry; use the run's "
                f"id with `arch runs show`, or the group's folds (--where \"cv.group == "
                f"'{ident}'\")"
            )
        if run is not None:
            return "run"
        if group is not None:
            return "group"
        pattern = f"{ident[:4]}%"
        close = [
            *session.scalars(select(RunRow.id).where(RunRow.id.like(pattern)).limit(3)),
            *session.scalars(select(CVGroupRow.id).where(CVGroupRow.id.like(pattern)).limit(3)),
        ]
    hint = f"; similar: {', '.join(close)}" if close else ""
    raise RegistryError(f"no run or CV group {ident!r} in this registry{hint}")


def dependents(db: Database, ids: Sequence[str]) -> list[tuple[str, str, str]]:
    """Runs outside ``ids`` that point to one of them (see ``Registry.dependents``)."""
    targets = [i for i in dict.fromkeys(ids) if RUN_ID.fullmatch(i)]
    if not targets:
        return []
    listed = ", ".join(f"'{i}'" for i in targets)
    where = (
        f"config.teacher in ({listed}) or config.teacher_run in ({listed}) "
        f"or tags.evaluates in ({listed})"
    )
    out = []
    for run in runs(db, where=where):
        if run.id in ids:
            continue
        pointers = (
            ("teacher", run.config.get("teacher")),
            ("teacher", run.config.get("teacher_run")),
            ("evaluates", run.tags.get("evaluates")),
        )
        for how, target in pointers:
            if isinstance(target, str) and target in targets:
                out.append((run.id, how, target))
    return sorted(set(out))


def metric_history(
    db: Database, run_id: str, name: str
) -> list[tuple[int, float | None, float, float]]:
    """One metric's series of a run: (step, epoch, value, time) by step."""
    with db.transaction() as tx:
        row = run_row(tx.session, run_id)
        stmt = (
            select(MetricRow.step, MetricRow.epoch, MetricRow.value, MetricRow.time)
            .join(MetricKeyRow, MetricKeyRow.id == MetricRow.key_id)
            .where(MetricRow.run_pk == row.pk, MetricKeyRow.name == name)
            .order_by(MetricRow.step)
        )
        return [
            (step, epoch, nan(value), at) for step, epoch, value, at in tx.session.execute(stmt)
        ]


# -- record assembly -----------------------------------------------------------------------------


def run_row(session: Session, run_id: str) -> RunRow:
    """The row of run ``run_id``; an unknown id raises ``RegistryError`` naming similar ones."""
    row = session.scalars(select(RunRow).where(RunRow.id == run_id)).first()
    if row is None:
        close = session.scalars(
            select(RunRow.id).where(RunRow.id.like(f"{run_id[:4]}%")).limit(3)
        ).all()
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise RegistryError(f"no run {run_id!r} in this registry{hint}")
    return row


def records(session: Session, rows: list[RunRow], full: bool = False) -> list[Run]:
    """Runs from their rows, with what each gathers read in one query per table for all of
    them; ``full`` adds artifacts and provenance."""
    if not rows:
        return []
    pks = [r.pk for r in rows]
    in_groups = {r.cv_group_pk for r in rows if r.cv_group_pk}
    groups = {
        g.pk: g for g in session.scalars(select(CVGroupRow).where(CVGroupRow.pk.in_(in_groups)))
    }
    mixups = {
        m.run_pk: m for m in session.scalars(select(MixupRow).where(MixupRow.run_pk.in_(pks)))
    }
    summaries: dict[int, dict[str, MetricSummary]] = {}
    for s, name in session.execute(
        select(SummaryRow, MetricKeyRow.name)
        .join(MetricKeyRow, MetricKeyRow.id == SummaryRow.key_id)
        .where(SummaryRow.run_pk.in_(pks))
    ):
        summaries.setdefault(s.run_pk, {})[name] = summary_record(name, s)
    tags: dict[int, dict[str, str]] = {}
    for t in session.scalars(select(TagRow).where(TagRow.run_pk.in_(pks))):
        tags.setdefault(t.run_pk, {})[t.key] = t.value
    artifacts: dict[int, list[Artifact]] = {}
    if full:
        for a in session.scalars(
            select(ArtifactRow).where(ArtifactRow.run_pk.in_(pks)).order_by(ArtifactRow.pk)
        ):
            artifacts.setdefault(a.run_pk, []).append(Artifact(a.path, a.kind, a.size, a.sha256))
    return [
        run_record(
            r,
            RunParts(
                group=groups.get(r.cv_group_pk) if r.cv_group_pk else None,
                mixup=mixups.get(r.pk),
                summaries=summaries.get(r.pk),
                tags=tags.get(r.pk),
                artifacts=artifacts.get(r.pk, ()),
            ),
            full,
        )
        for r in rows
    ]


def cv_dict(cv: CVInfo | None) -> dict[str, Any] | None:
    """A run's CV placement as the JSON ``diff`` compares."""
    if cv is None:
        return None
    return {
        "k": cv.k,
        "fold": cv.fold,
        "n_train": cv.n_train,
        "n_val": cv.n_val,
        "train_sha256": cv.train_sha256,
        "val_sha256": cv.val_sha256,
    }


def diff_json(path: str, a: Any, b: Any, out: list[Change]) -> None:
    """Append the differences of two JSON values, path by path (objects recursively)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            diff_json(f"{path}.{key}", a.get(key, _ABSENT), b.get(key, _ABSENT), out)
        return
    if a != b:
        out.append(Change(path, None if a is _ABSENT else a, None if b is _ABSENT else b))


_ABSENT = object()
