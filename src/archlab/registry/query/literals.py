"""Literals checked and converted for the field they compare with: numbers, text, true/false,
null and dates (``started``/``ended``), each with its ``QueryError`` where the field cannot take it."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from archlab.registry.query.errors import QueryError
from archlab.registry.query.nodes import Compare, Value


def coerce(cmp: Compare, query: str) -> tuple[str, list[Any]]:
    """The comparison's values converted for its field, with their kind (``number``, ``text``,
    ``bool`` or ``null``); raises ``QueryError`` where the field cannot take them."""
    ftype = cmp.field.type
    values = cmp.value if isinstance(cmp.value, tuple) else (cmp.value,)
    kinds: set[str] = set()
    out: list[Any] = []
    for v in values:
        kind, converted = _coerce_one(cmp, v, ftype, query)
        kinds.add(kind)
        out.append(converted)
    if len(kinds) > 1:
        raise QueryError(
            "mixed value types in the list",
            query,
            values[0].pos,
            f"{cmp.field} compares with one type",
        )
    return kinds.pop(), out


_A = {"number": "a number", "time": "a time", "text": "text", "json": "JSON"}


def _coerce_one(cmp: Compare, v: Value, ftype: str, query: str) -> tuple[str, Any]:
    op, name, x = cmp.op, str(cmp.field), v.value
    if isinstance(x, str) and not storable(x):
        raise QueryError(
            "text with a NUL character or a lone surrogate: a registry stores no such text",
            query,
            v.pos,
            "remove the character",
        )
    if x is None:
        if op not in ("==", "!="):
            raise QueryError("null only compares with == or !=", query, v.pos)
        return "null", None
    if op in ("like", "not like"):
        if not isinstance(x, str):
            raise QueryError("like needs a quoted pattern", query, v.pos)
        if ftype not in ("text", "json"):
            raise QueryError(
                f"like needs a text field; {name} is {_A[ftype]}", query, cmp.field.pos
            )
        if re.search(r"(?<!\\)(?:\\\\)*\\$", x):
            raise QueryError(
                "like pattern ends with an escape ('\\')",
                query,
                v.pos,
                "write '\\\\\\\\' for a backslash",
            )
        return "text", x
    ordering = op in ("<", "<=", ">", ">=")
    if isinstance(x, bool):
        if ftype != "json":
            raise QueryError(f"{name} is {_A[ftype]}, not true/false", query, v.pos)
        if ordering:
            raise QueryError(f"true/false only compare with ==, != or in, not {op}", query, v.pos)
        return "bool", x
    if isinstance(x, (int, float)):
        if ftype == "text":
            if ordering:
                raise QueryError(
                    f"{name} holds text; quote the value to compare text",
                    query,
                    v.pos,
                    f"{name} {op} '{v.text}'",
                )
            return "text", v.text
        return "number", x
    # a string
    if ftype == "number":
        raise QueryError(f"{name} is a number, not text", query, v.pos)
    if ftype == "time":
        return "number", _epoch(x, query, v.pos)
    return "text", x


def storable(text: str) -> bool:
    """Whether every backend can store ``text``: no NUL, valid UTF-8 (no lone surrogate)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _epoch(text: str, query: str, pos: int) -> float:
    """Seconds since the epoch of an ISO 8601 date or time; naive ones are local time."""
    stripped = text.strip()
    if stripped[-1:] in ("Z", "z"):
        stripped = stripped[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(stripped).timestamp()
    except (ValueError, OverflowError, OSError):
        raise QueryError(
            f"not a date: {text!r}",
            query,
            pos,
            "write an ISO 8601 date or time: '2026-11-01', '2026-11-01T14:30'",
        ) from None
