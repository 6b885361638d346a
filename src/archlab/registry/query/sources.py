"""Where each field's value lives in the registry's tables: a column of ``runs``, or one reached
through a correlated subquery (metrics, CV aggregates, tags, mixup, a JSON config path)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, case, inspect, literal, literal_column, select
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

from archlab.registry.models import (
    AggregateRow,
    CVGroupRow,
    MetricKeyRow,
    MixupRow,
    RunRow,
    SummaryRow,
    TagRow,
)
from archlab.registry.query.fields import _AGGREGATE, _METRIC
from archlab.registry.query.jsonsql import (
    _JsonIsBoolean,
    _JsonIsNumber,
    _JsonIsString,
    _JsonPresent,
    _JsonSortKey,
    _JsonTypeIs,
)
from archlab.registry.query.nodes import FieldRef


@dataclass(frozen=True)
class Source:
    """Where a field's value lives: ``column`` inside the rows ``link`` ties to the run (no ``link``:
    a column of ``runs`` itself)."""

    column: ColumnElement[Any] | QueryableAttribute[Any]
    nullable: bool
    link: Sequence[ColumnElement[bool]] = ()
    presence: ColumnElement[bool] | None = None

    @property
    def present(self) -> ColumnElement[bool]:
        return self.presence if self.presence is not None else self.column.is_not(None)

    def wrap(self, cond: ColumnElement[bool]) -> ColumnElement[bool]:
        """``cond`` on the field's row as a condition on the run: EXISTS over the related row."""
        if not self.link:
            return cond
        return select(literal_column("1")).where(*self.link, cond).correlate(RunRow).exists()

    def scalar(self) -> ColumnElement[Any]:
        if not self.link:
            return self.column.expression
        return select(self.column).where(*self.link).correlate(RunRow).scalar_subquery()


def _mapped(attr: QueryableAttribute[Any], *link: ColumnElement[bool]) -> Source:
    """A mapped column's source; its nullability (from the model) decides whether "not" must also
    check that the value is there."""
    nullable = bool(inspect(attr.class_).columns[attr.key].nullable)
    return Source(attr, nullable=nullable, link=link)


def _metric_key(name: str) -> ColumnElement[Any]:
    return (
        select(MetricKeyRow.id)
        .where(MetricKeyRow.name == literal(name, String()))
        .scalar_subquery()
    )


def source(ref: FieldRef, kind: str) -> Source:
    """The field's value; ``kind`` (``number``, ``text``, ``bool``, ``null`` or ``sort``) picks the
    typed view of a JSON config value."""
    prefix, key = ref.prefix, ref.key
    if key is None:
        return _mapped(getattr(RunRow, prefix))
    if prefix in _METRIC:  # a NaN final or best value is stored as NULL: missing here
        column = SummaryRow.last_value if prefix == "metrics" else SummaryRow.best_value
        return _mapped(
            column, SummaryRow.run_pk == RunRow.pk, SummaryRow.key_id == _metric_key(key)
        )
    if prefix == "std":  # the sample std of a single fold is undefined: missing here
        return Source(
            AggregateRow.std,
            nullable=True,
            link=(
                AggregateRow.group_pk == RunRow.cv_group_pk,
                AggregateRow.key_id == _metric_key(key),
                AggregateRow.n > 1,
            ),
        )
    if prefix in _AGGREGATE:
        return _mapped(
            getattr(AggregateRow, prefix),
            AggregateRow.group_pk == RunRow.cv_group_pk,
            AggregateRow.key_id == _metric_key(key),
        )
    if prefix == "tags":
        return _mapped(
            TagRow.value, TagRow.run_pk == RunRow.pk, TagRow.key == literal(key, String())
        )
    if prefix == "mixup":
        return _mapped(getattr(MixupRow, key), MixupRow.run_pk == RunRow.pk)
    if prefix == "cv":
        if key == "fold":
            return _mapped(RunRow.fold)
        group = CVGroupRow.k if key == "k" else CVGroupRow.id
        return _mapped(group, CVGroupRow.pk == RunRow.cv_group_pk)
    if prefix == "spec":
        if key == "hash":
            return _mapped(RunRow.spec_hash)
        return _mapped(RunRow.spec_name)  # the name the run's spec had, not the first recorded
    assert prefix == "config", prefix
    item = RunRow.config[ref.parts]
    if kind == "sort":
        return Source(_JsonSortKey(item), nullable=True)
    if kind == "null":
        return Source(item, nullable=True, presence=_JsonPresent(item))
    typed: dict[str, tuple[type[_JsonTypeIs], ColumnElement[Any]]] = {
        "number": (_JsonIsNumber, item.as_float()),
        "text": (_JsonIsString, item.as_string()),
        "bool": (_JsonIsBoolean, item.as_boolean()),
    }
    check, value = typed[kind]
    return Source(case((check(item), value)), nullable=True)
