"""``archlab.registry.prepared``: statements compiled once and sent to the driver, on both
dialects (compiled for PostgreSQL here; executed on SQLite here and on PostgreSQL through the
registry tests)."""

from __future__ import annotations

import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    func,
    insert,
)
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from archlab.registry.prepared import Prepared, Statements, json_text, json_value

meta = MetaData()
items = Table(
    "items",
    meta,
    Column("pk", Integer, primary_key=True),
    Column("name", String(20)),
    Column("size", Integer),
    Column("state", String(10)),
)


def test_rows_follow_the_declared_names_whatever_order_the_sql_wants() -> None:
    engine = create_engine("sqlite://")
    meta.create_all(engine)
    # the SQL wants (size, name); the rows come as (name, size)
    add = Prepared(insert(items).values(size=bindparam("n"), name=bindparam("label")), engine.dialect, ["label", "n"])  # fmt: skip
    query = Prepared(
        sa_select(items.c.name, items.c.size)
        .where(items.c.size > bindparam("least"), items.c.state.is_(None))
        .order_by(items.c.size),
        engine.dialect,
        ["least"],
    )
    with engine.begin() as conn:
        add.many(conn, [("a", 1), ("b", 2), ("c", 3)])
        add.many(conn, [])  # nothing to do is not an error
        assert query.all(conn, (1,)) == [("b", 2), ("c", 3)]
        assert query.first(conn, (2,)) == ("c", 3)
        assert query.scalar(conn, (5,)) is None


def test_values_written_into_the_statement_are_sent_as_constants() -> None:
    engine = create_engine("sqlite://")
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(items), [{"name": "x", "size": 1, "state": "open"}])
        conn.execute(insert(items), [{"name": "y", "size": 2, "state": "shut"}])
        open_ones = Prepared(
            sa_select(items.c.name).where(items.c.state == "open", items.c.size >= bindparam("s")),
            engine.dialect,
            ["s"],
        )
        assert open_ones.all(conn, (0,)) == [("x",)]


def test_inserts_return_their_key_and_driver_errors_are_sqlalchemy_errors() -> None:
    engine = create_engine("sqlite://")
    meta.create_all(engine)
    add = Prepared(insert(items).returning(items.c.pk), engine.dialect, ["pk", "name"])
    plain = Prepared(insert(items), engine.dialect, ["pk", "name"])
    with engine.begin() as conn:
        assert add.insert(conn, (7, "a")) == 7
        assert plain.insert(conn, (9, "b")) == 9  # no RETURNING: the driver's lastrowid
        with pytest.raises(IntegrityError, match="UNIQUE"):  # what retries and callers catch
            plain.many(conn, [(10, "c"), (7, "again")])
        count = Prepared(sa_select(func.count()).select_from(items), engine.dialect)
        assert count.scalar(conn) == 3  # the failed executemany stopped at its failing row


def test_a_parameter_without_a_value_is_refused_at_preparation() -> None:
    with pytest.raises(ValueError, match="not in"):
        Prepared(sa_select(items).where(items.c.size == bindparam("size")), sqlite.dialect(), [])


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.psycopg.dialect()])
def test_every_registry_statement_compiles(dialect: object) -> None:
    statements = Statements(dialect)  # type: ignore[arg-type]
    prepared = [v for v in vars(statements).values() if isinstance(v, Prepared)]
    assert len(prepared) >= 15
    if dialect.name == "postgresql":  # type: ignore[attr-defined]
        assert statements.lock_group is not None
        assert "FOR UPDATE" in statements.lock_group.sql
        assert "::JSON" in statements.insert_run.sql  # text is cast to the JSON column's type
    else:
        assert statements.lock_group is None


def test_json_helpers() -> None:
    assert json_value(json_text({"a": [1, 2.5, None]})) == {"a": [1, 2.5, None]}
    assert json_value({"already": "parsed"}) == {"already": "parsed"}
    assert json_value(None) is None
