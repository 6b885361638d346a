"""JSON type checks, per backend.

A config value compares only with literals of its own JSON type: ``config.lr < 0.01`` must not
cast the string "auto" (an error on PostgreSQL, 0.0 on SQLite). These render ``json_type`` on
SQLite and ``json_typeof`` on PostgreSQL around SQLAlchemy's own JSON path element, so the path
stays a bound parameter and statement caching sees it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BinaryExpression, ColumnElement
from sqlalchemy.sql.functions import FunctionElement


class _JsonFunction(FunctionElement[Any]):
    inherit_cache = True

    def __init__(self, item: ColumnElement[Any]) -> None:
        super().__init__(item)

    def item(self) -> BinaryExpression[Any]:
        item = self.clauses.clauses[0]
        assert isinstance(item, BinaryExpression)
        return item


class _JsonTypeIs(_JsonFunction):
    type = Boolean()
    inherit_cache = True
    sqlite_types: tuple[str, ...] = ()
    pg_type = ""


class _JsonIsNumber(_JsonTypeIs):
    inherit_cache = True
    sqlite_types = ("integer", "real")
    pg_type = "number"


class _JsonIsString(_JsonTypeIs):
    inherit_cache = True
    sqlite_types = ("text",)
    pg_type = "string"


class _JsonIsBoolean(_JsonTypeIs):
    inherit_cache = True
    sqlite_types = ("true", "false")
    pg_type = "boolean"


class _JsonPresent(_JsonFunction):
    """The path exists and holds something other than JSON null."""

    type = Boolean()
    inherit_cache = True


class _JsonSortKey(_JsonFunction):
    """The value as the backend orders JSON: numbers by value, strings by text; null as NULL."""

    inherit_cache = True


def _sqlite_type(element: _JsonFunction, compiler: SQLCompiler, **kw: Any) -> str:
    item = element.item()
    return f"json_type({compiler.process(item.left, **kw)}, {compiler.process(item.right, **kw)})"


def _pg_type(element: _JsonFunction, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_typeof({compiler.process(element.item(), **kw)})"


@compiles(_JsonTypeIs, "sqlite")
def _type_is_sqlite(element: _JsonTypeIs, compiler: SQLCompiler, **kw: Any) -> str:
    names = ", ".join(f"'{t}'" for t in element.sqlite_types)
    return f"({_sqlite_type(element, compiler, **kw)} IN ({names}))"


@compiles(_JsonTypeIs, "postgresql")
def _type_is_pg(element: _JsonTypeIs, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({_pg_type(element, compiler, **kw)} = '{element.pg_type}')"


@compiles(_JsonPresent, "sqlite")
def _present_sqlite(element: _JsonPresent, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(coalesce({_sqlite_type(element, compiler, **kw)}, 'null') <> 'null')"


@compiles(_JsonPresent, "postgresql")
def _present_pg(element: _JsonPresent, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(coalesce({_pg_type(element, compiler, **kw)}, 'null') <> 'null')"


@compiles(_JsonSortKey, "sqlite")
def _sort_sqlite(element: _JsonSortKey, compiler: SQLCompiler, **kw: Any) -> str:
    item = element.item()
    return (
        f"json_extract({compiler.process(item.left, **kw)}, {compiler.process(item.right, **kw)})"
    )


@compiles(_JsonSortKey, "postgresql")
def _sort_pg(element: _JsonSortKey, compiler: SQLCompiler, **kw: Any) -> str:
    item = compiler.process(element.item(), **kw)
    return f"CASE WHEN json_typeof({item}) <> 'null' THEN CAST({item} AS JSONB) END"


@compiles(_JsonFunction)
def _unsupported(element: _JsonFunction, compiler: SQLCompiler, **kw: Any) -> str:
    raise NotImplementedError(
        f"config queries support SQLite and PostgreSQL, not {compiler.dialect.name}"
    )
