"""Where each field's value lives, alone: a column of ``runs`` or a correlated EXISTS over the
related rows, and the per-backend JSON checks of ``config`` fields. Compiled, not executed."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from archlab.registry.models import RunRow
from archlab.registry.query import FieldRef
from archlab.registry.query.sources import source

DIALECTS = [sqlite.dialect(), postgresql.psycopg.dialect()]


def sql(dialect: Dialect, ref: FieldRef, kind: str) -> str:
    src = source(ref, kind)
    return str(select(RunRow.id).where(src.wrap(src.present)).compile(dialect=dialect))


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_run_columns_need_no_subquery(dialect: Dialect) -> None:
    for ref in (FieldRef("status"), FieldRef("cv", ("fold",)), FieldRef("spec", ("hash",))):
        assert source(ref, "text").link == ()
        assert "EXISTS" not in sql(dialect, ref, "text")
    assert not source(FieldRef("status"), "text").nullable  # from the model: NOT NULL


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_related_rows_are_an_exists_correlated_to_the_run(dialect: Dialect) -> None:
    text = sql(dialect, FieldRef("metrics", ("val_acc",)), "number")
    assert "EXISTS (SELECT 1" in text and "metric_summaries.run_pk = runs.pk" in text
    assert "FROM metric_summaries, runs" not in text  # correlated, not a cross join
    assert "val_acc" not in text  # the metric name is a bound parameter
    std = sql(dialect, FieldRef("std", ("val_acc",)), "number")
    assert "cv_aggregates.n >" in std  # one fold has no sample std


def test_config_checks_the_json_type_per_backend() -> None:
    ref = FieldRef("config", ("optimizer", "lr"))
    lite, pg = (sql(d, ref, "number") for d in DIALECTS)
    assert "json_type(runs.config" in lite and "IN ('integer', 'real')" in lite
    assert "json_typeof(" in pg and "= 'number'" in pg
    assert "lr" not in lite and "lr" not in pg  # the path is bound
    present = sql(DIALECTS[0], ref, "null")
    assert "coalesce(json_type(" in present
    key = source(ref, "sort").scalar()
    assert str(key.compile(dialect=DIALECTS[0])).startswith("json_extract(runs.config")
    assert "AS JSONB" in str(key.compile(dialect=DIALECTS[1]))
