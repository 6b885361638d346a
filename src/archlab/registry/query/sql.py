"""A query compiled to SQLAlchemy over ``RunRow``: ``compile_where`` for ``--where`` and ``order_by``
for ``--sort``. Values only reach the database as bound parameters."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, String, and_, func, literal, not_, or_
from sqlalchemy.sql.elements import ColumnElement

from archlab.registry.query.errors import QueryError
from archlab.registry.query.fields import FIELDS
from archlab.registry.query.lexer import tokenize
from archlab.registry.query.literals import coerce
from archlab.registry.query.nodes import And, Compare, Expr, Not, Or
from archlab.registry.query.parser import field_ref, parse
from archlab.registry.query.sources import source


def compile_where(text: str | None) -> ColumnElement[bool] | None:
    """The query as a condition over ``RunRow`` (``select(RunRow).where(...)``); ``None`` for no query."""
    if text is None or not text.strip():
        return None
    return _compile(parse(text), True, text)


def order_by(field: str) -> ColumnElement[Any]:
    """A sort key for ``.order_by()``: ``metrics.val_acc`` ascending, ``-metrics.val_acc`` descending,
    runs without the value last on every backend.

    Ties keep no order: add a tie-breaker (``.order_by(order_by(key), RunRow.pk)``). A ``config``
    key sorts numbers by value and strings as text; where one key holds both, SQLite puts numbers
    first and PostgreSQL (ordering ``jsonb``) strings first. Text sorts by the database's collation.
    """
    if not isinstance(field, str):
        raise QueryError(f"a sort key is a string, not {type(field).__name__}")
    stripped = field.lstrip()
    start = len(field) - len(stripped)
    descending = stripped.startswith("-")
    if stripped[:1] in ("-", "+"):
        start += 1
    tokens = tokenize(field, start)
    if tokens[0].kind != "name":
        raise QueryError(
            "expected a field to sort by", field, tokens[0].pos, "fields: " + ", ".join(FIELDS)
        )
    if tokens[1].kind != "end":
        raise QueryError(
            "expected the end of the sort key",
            field,
            tokens[1].pos,
            "sort by one field; '-' before it sorts descending",
        )
    ref = field_ref(tokens[0], field)
    key = source(ref, "sort").scalar()
    return (key.desc() if descending else key.asc()).nulls_last()


_NEGATED = {"!=": "==", "not in": "in", "not like": "like"}
_ORDERING: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "==": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _compile(expr: Expr, positive: bool, query: str) -> ColumnElement[bool]:
    """``expr`` when ``positive``, else ``not expr``, as two-valued SQL under three-valued logic.

    Negation is pushed down to the comparisons (De Morgan), where "not" means "present and not":
    so a comparison on a missing field is false both ways, without relying on how each backend
    treats NULL in EXISTS or JSON functions.
    """
    if isinstance(expr, Not):
        return _compile(expr.operand, not positive, query)
    if isinstance(expr, (And, Or)):
        parts = [_compile(t, positive, query) for t in expr.terms]
        conjunction = isinstance(expr, And) == positive
        return and_(*parts) if conjunction else or_(*parts)
    if isinstance(expr, Compare):
        return _comparison(expr, positive, query)
    raise TypeError(f"not a query node: {expr!r}")


def _comparison(cmp: Compare, positive: bool, query: str) -> ColumnElement[bool]:
    kind, values = coerce(cmp, query)
    op = cmp.op
    if op in _NEGATED:
        op, positive = _NEGATED[op], not positive
    src = source(cmp.field, kind)
    if kind == "null":  # a presence test: never unknown
        present = src.wrap(src.present)
        return not_(present) if positive else present
    col = src.column
    cond: ColumnElement[bool]
    if op == "in":
        cond = col.in_([_bind(v, kind) for v in values])
    elif op == "like":
        cond = func.lower(col).like(func.lower(_bind(values[0], kind)), escape="\\")
    else:
        cond = _ORDERING[op](col, _bind(values[0], kind))
    if not positive:
        cond = and_(src.present, not_(cond)) if src.nullable else not_(cond)
    return src.wrap(cond)


def _bind(value: Any, kind: str) -> ColumnElement[Any]:
    if kind == "text":
        return literal(value, String())
    if kind == "bool":
        return literal(value, Boolean())
    # 64-bit: PostgreSQL refuses a literal >= 2**31 bound as INTEGER (seeds reach 2**32 - 1);
    # the parser keeps integers within 64 bits
    return literal(value, BigInteger() if isinstance(value, int) else Float())
