"""Statements of the registry's hot paths, compiled once and sent straight to the driver.

A training loop ends a run every few seconds, and a bulk import or a cross-validation sweep ends
hundreds a second; each end writes a few hundred metric rows and a handful of small statements.
Through ``Connection.execute`` every statement pays SQLAlchemy's cache lookup, parameter
processing and result set-up (about 1.8 ms for 200 metric rows against 0.7 ms through the
driver). ``Prepared`` compiles a Core statement once for the registry's dialect and runs it with
``Connection.exec_driver_sql``: the same SQL text SQLAlchemy would send, the same transaction, the
same error wrapping (so ``OperationalError`` retries still apply), none of the per-call work.

The price is that values go to the driver as they are: numbers, strings and ``None``. A JSON
column takes text (``json_text``), and results come back as the driver returns them (SQLite gives
booleans as integers and JSON as text: ``json_value`` reads either).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import and_, bindparam, delete, insert, null, or_, select, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from archlab.registry.models import (
    AggregateRow,
    CVGroupRow,
    MetricKeyRow,
    MetricRow,
    MixupRow,
    RunRow,
    SummaryRow,
    TagRow,
)


class Prepared:
    """One statement compiled for ``dialect``; parameters are rows in the order of ``names``.

    Bound values written into the statement itself (``status == "running"``) are sent as the
    constants they are."""

    __slots__ = ("_constants", "_named", "_order", "names", "sql")

    def __init__(
        self, statement: ClauseElement, dialect: Dialect, names: Sequence[str] = ()
    ) -> None:
        self.names = tuple(names)
        # column_keys names an INSERT's parameters after its columns, as an executemany does
        compiled = cast(
            SQLCompiler,
            statement.compile(dialect=dialect, column_keys=list(self.names) or None),
        )
        self.sql = compiled.string
        constants = {k: v for k, v in compiled.params.items() if k not in self.names}
        if any(v is None for v in constants.values()):
            missing = sorted(k for k, v in constants.items() if v is None)
            raise ValueError(f"statement parameters {missing} are not in {self.names}")
        self._named = not compiled.positional
        self._constants = constants
        binds = list(compiled.positiontup or ()) if compiled.positional else []
        # a row is extended with the constants, then picked in the order the SQL wants
        extended = [*self.names, *constants]
        order = [extended.index(name) for name in binds]
        self._order: tuple[int, ...] | None = (
            None if order == list(range(len(self.names))) else tuple(order)
        )

    def _shape(self, row: Sequence[Any]) -> Any:
        if self._named:
            return {**self._constants, **dict(zip(self.names, row, strict=True))}
        if self._order is None:
            return tuple(row)
        extended = (*row, *self._constants.values())
        return tuple(extended[i] for i in self._order)

    def _cursor(self, conn: Connection, params: Any, many: bool) -> Any:
        """Run on the driver's own cursor, inside ``conn``'s transaction (already begun: see
        ``Registry._transaction``); driver errors become SQLAlchemy's, as ``execute`` raises."""
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            if many:
                cursor.executemany(self.sql, params)
            else:
                cursor.execute(self.sql, params)
        except conn.dialect.loaded_dbapi.Error as exc:
            cursor.close()
            raise DBAPIError.instance(
                self.sql, params, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
            ) from exc
        return cursor

    def rowcount(self, conn: Connection, row: Sequence[Any] = ()) -> int:
        """Execute; the number of rows changed."""
        cursor = self._cursor(conn, self._shape(row), many=False)
        count = int(cursor.rowcount)
        cursor.close()
        return count

    def first(self, conn: Connection, row: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """Execute; the first result row, or None."""
        cursor = self._cursor(conn, self._shape(row), many=False)
        found = cursor.fetchone()
        cursor.close()
        return tuple(found) if found is not None else None

    def scalar(self, conn: Connection, row: Sequence[Any] = ()) -> Any:
        """Execute; the first column of the first result row, or None."""
        found = self.first(conn, row)
        return found[0] if found is not None else None

    def all(self, conn: Connection, row: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Execute; every result row."""
        cursor = self._cursor(conn, self._shape(row), many=False)
        rows = [tuple(r) for r in cursor.fetchall()]
        cursor.close()
        return rows

    def insert(self, conn: Connection, row: Sequence[Any]) -> int:
        """Execute an INSERT; the new row's integer key (from RETURNING where there is one)."""
        cursor = self._cursor(conn, self._shape(row), many=False)
        found = cursor.fetchone() if cursor.description else None
        pk = found[0] if found is not None else cursor.lastrowid
        cursor.close()
        if pk is None:
            raise AssertionError("the database reported no key for the inserted row")
        return int(pk)

    def many(self, conn: Connection, rows: Iterable[Sequence[Any]]) -> None:
        """Execute once per row, through the driver's ``executemany``."""
        if self._named or self._order is not None:
            params = [self._shape(row) for row in rows]
        else:  # rows already are the driver's positional tuples
            params = rows if isinstance(rows, list) else list(rows)
        if params:
            self._cursor(conn, params, many=True).close()


def json_text(value: Any) -> str:
    """A JSON column's value as the driver takes it."""
    return json.dumps(value, separators=(",", ":"))


def json_value(value: Any) -> Any:
    """A JSON column's value as the driver returned it: text (SQLite) or already parsed."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def upsert(dialect: Dialect, table: Any) -> Any:
    """INSERT ... ON CONFLICT for the dialect (SQLite's and PostgreSQL's share the syntax)."""
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


#: The columns a new run is inserted with, in the order of ``Statements.insert_run``'s rows.
_RUN_COLUMNS = (
    "id", "kind", "status", "spec_hash", "spec_name", "cv_group_pk", "fold", "n_train", "n_val",
    "train_sha256", "val_sha256", "started", "heartbeat", "config", "provenance", "host", "pid",
)  # fmt: skip
#: The columns a new CV group is inserted with; ``group_by_id`` reads them back after its key.
_GROUP_COLUMNS = (
    "id", "spec_hash", "k", "splitter", "shuffle", "seed", "stratified", "grouped", "repeats",
    "library", "config", "created",
)  # fmt: skip


class Statements:
    """The registry's hot statements for one dialect: starting runs and CV groups, writing metric
    batches, summaries and heartbeats, ending runs, recomputing CV aggregates, reading a group.

    Each family is built by one method below; every statement is a ``Prepared`` attribute (or
    ``None`` where the dialect has no need of it)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.postgresql = dialect.name == "postgresql"
        self.returning = bool(dialect.insert_returning)
        self._prepare_starts()
        self._prepare_run_updates()
        self._prepare_metrics()
        self._prepare_aggregates()
        self._prepare_group_reads()

    def _prepare(self, statement: Any, *names: str) -> Prepared:
        return Prepared(statement, self.dialect, names)

    def _inserting(self, model: Any, *names: str, returning: Any = None) -> Prepared:
        statement = insert(model)
        if returning is not None and self.returning:
            statement = statement.returning(returning)
        return self._prepare(statement, *names)

    def _prepare_starts(self) -> None:
        """Inserting a run with its mixup settings and tags, and a CV group."""
        self.insert_run = self._inserting(RunRow, *_RUN_COLUMNS, returning=RunRow.pk)
        self.insert_mixup = self._inserting(
            MixupRow,
            "run_pk", "alpha", "cutmix_alpha", "cutmix_min", "cutmix_max", "prob", "switch_prob",
            "mode", "label_smoothing", "off_epoch",
        )  # fmt: skip
        self.insert_tag = self._inserting(TagRow, "run_pk", "key", "value")
        self.insert_group = self._inserting(CVGroupRow, *_GROUP_COLUMNS, returning=CVGroupRow.pk)

    def _prepare_run_updates(self) -> None:
        """A running run's heartbeat and end, and whether a run exists."""
        run: Any = bindparam("run")
        # The run's own process may write to it while it runs, and also once a sweep (arch runs
        # gc, a registry opened elsewhere) marked it interrupted though it was alive: its next
        # beat makes it running again and its end records how it really ended.
        mine = (
            RunRow.pk == run,
            or_(
                RunRow.status == "running",
                and_(
                    RunRow.status == "interrupted",
                    RunRow.host == bindparam("owner_host"),
                    RunRow.pid == bindparam("owner_pid"),
                ),
            ),
        )
        self.beat = self._prepare(
            update(RunRow)
            .where(*mine)
            .values(heartbeat=bindparam("at"), status="running", ended=null(), error=null()),
            "at", "run", "owner_host", "owner_pid",
        )  # fmt: skip
        self.finish = self._prepare(
            update(RunRow)
            .where(*mine)
            .values(
                status=bindparam("new_status"),
                ended=bindparam("at"),
                heartbeat=bindparam("at"),
                error=bindparam("message"),
            ),
            "new_status", "at", "message", "run", "owner_host", "owner_pid",
        )  # fmt: skip
        self.run_exists = self._prepare(select(RunRow.pk).where(RunRow.pk == run), "run")

    def _prepare_metrics(self) -> None:
        """Metric keys (looked up, or added with their direction), metric batches and summaries."""
        name: Any = bindparam("key_name")
        self.key_id = self._prepare(
            select(MetricKeyRow.id, MetricKeyRow.direction).where(MetricKeyRow.name == name),
            "key_name",
        )
        self.insert_key = self._prepare(
            upsert(self.dialect, MetricKeyRow)
            .values(name=name, direction=bindparam("key_direction"))
            .on_conflict_do_nothing(),
            "key_name", "key_direction",
        )  # fmt: skip
        metrics = upsert(self.dialect, MetricRow)
        self.upsert_metrics = self._prepare(
            metrics.on_conflict_do_update(
                index_elements=["run_pk", "key_id", "step"],
                set_={
                    "value": metrics.excluded.value,
                    "epoch": metrics.excluded.epoch,
                    "time": metrics.excluded.time,
                },
            ),
            "run_pk", "key_id", "step", "epoch", "value", "time",
        )  # fmt: skip
        summaries = upsert(self.dialect, SummaryRow)
        summary_values = ("last_value", "last_step", "best_value", "best_step", "count")
        self.upsert_summaries = self._prepare(
            summaries.on_conflict_do_update(
                index_elements=["run_pk", "key_id"],
                set_={c: summaries.excluded[c] for c in summary_values},
            ),
            "run_pk", "key_id", *summary_values,
        )  # fmt: skip

    def _prepare_aggregates(self) -> None:
        """Recomputing a CV group's aggregates: lock the group (PostgreSQL), read the completed
        folds' final values, replace the aggregate rows."""
        group: Any = bindparam("group")
        lock = select(CVGroupRow.pk).where(CVGroupRow.pk == group)
        self.lock_group = (
            self._prepare(lock.with_for_update(), "group") if self.postgresql else None
        )
        self.fold_finals = self._prepare(
            select(RunRow.fold, RunRow.pk, SummaryRow.key_id, SummaryRow.last_value)
            .join(RunRow, RunRow.pk == SummaryRow.run_pk)
            .where(RunRow.cv_group_pk == group, RunRow.status == "completed"),
            "group",
        )
        self.delete_aggregates = self._prepare(
            delete(AggregateRow).where(AggregateRow.group_pk == group), "group"
        )
        self.insert_aggregate = self._inserting(
            AggregateRow, "group_pk", "key_id", "mean", "std", "n", "min", "max"
        )

    def _prepare_group_reads(self) -> None:
        """Reading a CV group: its row by id, its runs, its aggregates."""
        group: Any = bindparam("group")
        self.group_by_id = self._prepare(
            select(CVGroupRow.pk, *(CVGroupRow.__table__.c[c] for c in _GROUP_COLUMNS)).where(
                CVGroupRow.id == bindparam("group_id")
            ),
            "group_id",
        )
        self.group_runs = self._prepare(
            select(RunRow.id)
            .where(RunRow.cv_group_pk == group)
            .order_by(RunRow.fold, RunRow.started),
            "group",
        )
        self.group_aggregates = self._prepare(
            select(
                MetricKeyRow.name,
                AggregateRow.mean,
                AggregateRow.std,
                AggregateRow.n,
                AggregateRow.min,
                AggregateRow.max,
            )
            .join(MetricKeyRow, MetricKeyRow.id == AggregateRow.key_id)
            .where(AggregateRow.group_pk == group)
            .order_by(MetricKeyRow.name),
            "group",
        )
