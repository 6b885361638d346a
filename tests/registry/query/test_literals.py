"""Literals checked against their field alone: what each field type takes, what the value becomes,
and ``QueryError`` where it cannot take it. No database needed."""

from __future__ import annotations

from datetime import datetime

import pytest

from archlab.registry.query import Compare, FieldRef, QueryError, Value
from archlab.registry.query.literals import coerce, storable


def cmp(prefix: str, key: str | None, op: str, *values: object, text: str = "") -> Compare:
    ref = FieldRef(prefix, (key,) if key else ())
    vals = tuple(Value(v, text or str(v)) for v in values)  # type: ignore[arg-type]
    return Compare(ref, op, vals if op in ("in", "not in") else vals[0])


@pytest.mark.parametrize(
    ("compare", "expected"),
    [
        (cmp("metrics", "val_acc", ">", 0.9), ("number", [0.9])),
        (cmp("status", None, "==", "failed"), ("text", ["failed"])),
        (cmp("tags", "seed", "==", 3, text="03"), ("text", ["03"])),  # the number as written
        (cmp("config", "amp", "==", True), ("bool", [True])),
        (cmp("config", "lr", "in", 1, 2.5), ("number", [1, 2.5])),
        (cmp("cv", "k", "!=", None), ("null", [None])),
        (cmp("mixup", "mode", "like", "b%"), ("text", ["b%"])),
        (cmp("started", None, ">", 5), ("number", [5])),  # epoch seconds
    ],
)
def test_coerced_kind_and_values(compare: Compare, expected: tuple[str, list[object]]) -> None:
    assert coerce(compare, "q") == expected


def test_times_become_epoch_seconds() -> None:
    zoned = datetime.fromisoformat("2026-11-01T00:00:00+00:00").timestamp()
    assert coerce(cmp("ended", None, "<", "2026-11-01T00:00:00Z"), "q") == ("number", [zoned])
    local = datetime.fromisoformat("2026-11-01").timestamp()  # naive: local time
    assert coerce(cmp("ended", None, "<", "2026-11-01"), "q") == ("number", [local])


@pytest.mark.parametrize(
    ("compare", "reason"),
    [
        (cmp("metrics", "x", ">", "high"), "metrics.x is a number, not text"),
        (cmp("status", None, ">", True), "status is text, not true/false"),
        (cmp("config", "a", "<", False), "true/false only compare with ==, != or in, not <"),
        (cmp("metrics", "x", "<", None), "null only compares with == or !="),
        (cmp("started", None, "like", "2026%"), "like needs a text field; started is a time"),
        (cmp("status", None, "like", 5), "like needs a quoted pattern"),
        (cmp("tags", "seed", ">", 3), "tags.seed holds text; quote the value to compare text"),
        (cmp("config", "x", "in", 1, "a"), "mixed value types in the list"),
        (cmp("started", None, ">", "yesterday"), "not a date: 'yesterday'"),
        (cmp("status", None, "==", "a\ud800"), "text with a NUL character or a lone surrogate"),
    ],
)
def test_refusals(compare: Compare, reason: str) -> None:
    with pytest.raises(QueryError) as info:
        coerce(compare, "q")
    assert info.value.reason.startswith(reason)


def test_storable_text() -> None:
    assert storable("plain é ✓")
    assert not storable("a\x00b")
    assert not storable("lone \ud800 surrogate")
