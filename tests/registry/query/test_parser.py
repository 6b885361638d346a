"""The parser of ``archlab.registry.query``: the AST it builds, how it prints back, and every
malformed query refused with a caret under the fault. No database needed."""

from __future__ import annotations

import pytest

from archlab.errors import UserInputError
from archlab.registry.query import (
    And,
    Compare,
    FieldRef,
    Not,
    Or,
    QueryError,
    Value,
    compile_where,
    order_by,
    parse,
)

# --- the AST --------------------------------------------------------------------------------------


def test_parse_builds_the_ast() -> None:
    val_acc = FieldRef("metrics", ("val_acc",))
    assert parse("metrics.val_acc > 0.9") == Compare(val_acc, ">", Value(0.9))
    assert parse("not cv.k in (3, 5)") == Not(
        Compare(FieldRef("cv", ("k",)), "in", (Value(3), Value(5)))
    )
    assert parse("status = 'a'") == Compare(FieldRef("status"), "==", Value("a"))
    assert parse("config.optimizer.lr != null") == Compare(
        FieldRef("config", ("optimizer", "lr")), "!=", Value(None)
    )
    assert parse("config.layers.0 == 'x'") == Compare(
        FieldRef("config", ("layers", 0)), "==", Value("x")
    )
    assert parse("config.'0'.\"a b\" == 1") == Compare(
        FieldRef("config", ("0", "a b")), "==", Value(1)
    )
    assert parse("metrics.'acc@1' > 0") == Compare(FieldRef("metrics", ("acc@1",)), ">", Value(0))
    assert parse("config.a == true or config.b == false") == Or(
        (
            Compare(FieldRef("config", ("a",)), "==", Value(True)),
            Compare(FieldRef("config", ("b",)), "==", Value(False)),
        )
    )
    assert parse("id not like 'x%' and tags.seed not in (1)") == And(
        (
            Compare(FieldRef("id"), "not like", Value("x%")),
            Compare(FieldRef("tags", ("seed",)), "not in", (Value(1),)),
        )
    )
    for query, value, typ in [("metrics.x == 3", 3, int), ("metrics.x == -2.5e-3", -0.0025, float)]:
        cmp = parse(query)
        assert isinstance(cmp, Compare) and isinstance(cmp.value, Value)
        assert cmp.value.value == value and type(cmp.value.value) is typ


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        (
            "status == 'a' or kind == 'b' and id == 'c'",
            "(status == 'a' or (kind == 'b' and id == 'c'))",
        ),
        (
            "(status == 'a' or kind == 'b') and id == 'c'",
            "((status == 'a' or kind == 'b') and id == 'c')",
        ),
        (
            "status == 'a' and kind == 'b' or id == 'c'",
            "((status == 'a' and kind == 'b') or id == 'c')",
        ),
        ("not status == 'a' and kind == 'b'", "(not status == 'a' and kind == 'b')"),
        ("not (status == 'a' and kind == 'b')", "not (status == 'a' and kind == 'b')"),
        (
            "status == 'a' or kind == 'b' or id == 'c'",
            "(status == 'a' or kind == 'b' or id == 'c')",
        ),
        ("tags.q == 'it\\'s \\\\'", "tags.q == 'it\\'s \\\\'"),
        ('tags.q == "say \\"hi\\""', "tags.q == 'say \"hi\"'"),
        ("cv.k in (3, 5,)", "cv.k in (3, 5)"),
        ("metrics.x >= 1e-3", "metrics.x >= 1e-3"),
        ('metrics."acc@1" > 0', "metrics.'acc@1' > 0"),
        ("config.layers.0.'0'.'a.b'.c == 1", "config.layers.0.'0'.'a.b'.c == 1"),
        ("tags.'it\\'s' == 'x'", "tags.'it\\'s' == 'x'"),
    ],
)
def test_precedence_and_round_trip(query: str, shown: str) -> None:
    assert str(parse(query)) == shown
    assert parse(shown) == parse(query)


@pytest.mark.parametrize(
    "name", ["val_acc", "acc@1", "top.1", "5", "it's", 'a"b', "x\\y", "val acc", "é"]
)
def test_field_ref_text_round_trips(name: str) -> None:
    """``str(FieldRef(...))`` quotes what needs quoting: how callers build a field from a metric name."""
    ref = FieldRef("best", (name,))
    cmp = parse(f"{ref} > 0")
    assert isinstance(cmp, Compare)
    assert cmp.field.key == name
    order_by(f"-{ref}")


# --- errors ---------------------------------------------------------------------------------------

ERRORS: list[tuple[str, int, str]] = [
    ("(status == 'x'", 15, "expected ')'"),
    ("(status == 'x' or (kind == 'y')", 32, "expected ')'"),
    ("status === 'x'", 10, "expected a value"),
    ("status ~ 'x'", 8, "unexpected character '~'"),
    ("status => 'x'", 9, "expected a value"),
    ("status <> 'x'", 9, "expected a value"),
    ("status ! 'x'", 8, "unexpected character '!'"),
    ("status == 'x' junk", 15, "expected 'and', 'or' or the end of the query"),
    ("status == 'x' 'y'", 15, "expected 'and', 'or' or the end of the query"),
    ("status == 'x')", 14, "unmatched ')'"),
    ("status in ()", 12, "expected a value"),
    ("status in (,)", 12, "expected a value"),
    ("status in 'x'", 11, "expected '(' after 'in'"),
    ("status in ('a' 'b')", 16, "expected ',' or ')' in the list"),
    ("status in ('a', 'b'", 20, "expected ',' or ')' in the list"),
    ("metrics.val_acc > and status == 'x'", 19, "expected a value"),
    ("status == 'open", 11, "unterminated string"),
    ('status == "open\\"', 11, "unterminated string"),
    ("status ==", 10, "expected a value"),
    ("== 'x'", 1, "expected a field, 'not' or '('"),
    ("", 1, "expected a field, 'not' or '('"),
    ("status == 'x' and", 18, "expected a field, 'not' or '('"),
    ("status == 'x' and or kind == 'y'", 19, "expected a field, 'not' or '('"),
    ("not", 4, "expected a field, 'not' or '('"),
    ("()", 2, "expected a field, 'not' or '('"),
    ("status == failed", 11, "expected a value"),
    ("status", 7, "expected an operator after 'status'"),
    ("status not == 'x'", 12, "expected 'in' or 'like' after 'not'"),
    ("status & kind", 8, "unexpected character '&'"),
    ("status == 'a' || kind == 'b'", 15, "unexpected character '|'"),
    ("metrics.val_acc like 'x%'", 1, "like needs a text field; metrics.val_acc is a number"),
    ("started like '2026%'", 1, "like needs a text field; started is a time"),
    ("status like 5", 13, "like needs a quoted pattern"),
    ("tags.pct like '100\\\\'", 15, "like pattern ends with an escape"),
    ("metrics.val_acc > 'high'", 19, "metrics.val_acc is a number, not text"),
    ("cv.k in (3, '5')", 13, "cv.k is a number, not text"),
    ("started > 'yesterday'", 11, "not a date: 'yesterday'"),
    ("ended < '2026-13-01'", 9, "not a date"),
    ("status > true", 10, "status is text, not true/false"),
    ("config.amp < true", 14, "true/false only compare with ==, != or in"),
    ("metrics.val_acc < null", 19, "null only compares with == or !="),
    ("status in ('a', null)", 17, "null only compares with == or !="),
    ("config.x in (1, 'a')", 14, "mixed value types in the list"),
    ("tags.seed > 3", 13, "tags.seed holds text; quote the value"),
    ("status == 1e999", 11, "number out of range"),
    ("cv.k == 99999999999999999999", 9, "integer out of range"),
    ("metrics.x > 0.9and status == 'x'", 13, "malformed number"),
    ("metrics. > 1", 9, "expected a name after 'metrics.'"),
    ("config.a..b == 1", 10, "expected a name after 'config.a.'"),
    ("metrics.x- > 1", 11, "expected a name after 'metrics.x-'"),
    ("metrics.'' > 1", 9, "expected a name, not ''"),
    ("metrics.'acc > 1", 9, "unterminated string"),
    ("status-x == 1", 8, "expected a name after 'status-'"),
    ("mixup.0 == 1", 1, "unknown field 'mixup.0'"),
    ("status == 'a\x00b'", 13, "strings may not contain NUL characters"),
    ("status\x00 == 'a'", 7, "unexpected character '\\x00'"),
    ("(" * 150 + "status == 'x'" + ")" * 150, 101, "query nested more than 100 deep"),
    ("not " * 150 + "status == 'x'", 401, "query nested more than 100 deep"),
    (" or ".join(["id == 'x'"] * 201), 200 * 13 + 1, "more than 200 comparisons in one query"),
    # fields
    ("foo == 1", 1, "unknown field 'foo'"),
    ("foo.bar == 1", 1, "unknown field 'foo.bar'"),
    ("Status == 'x'", 1, "unknown field 'Status'"),
    ("mixup.beta == 1", 1, "unknown field 'mixup.beta'"),
    ("cv.folds == 1", 1, "unknown field 'cv.folds'"),
    ("spec.version == 1", 1, "unknown field 'spec.version'"),
    ("status.x == 'a'", 1, "'status' has no sub-fields"),
    ("metrics == 1", 1, "'metrics' needs a name: metrics.<name>"),
    ("config == 1", 1, "'config' needs a name: config.<key>"),
    ("kind == 'x' and mean == 1", 17, "'mean' needs a name: mean.<name>"),
]


@pytest.mark.parametrize(
    ("query", "column", "reason"), ERRORS, ids=[repr(q[:40]) for q, _, _ in ERRORS]
)
def test_malformed(query: str, column: int, reason: str) -> None:
    with pytest.raises(QueryError) as info:
        parse(query)
    err = info.value
    assert isinstance(err, UserInputError)
    assert reason in err.reason
    assert err.column == column
    assert err.position == column - 1
    lines = str(err).splitlines()
    assert lines[0].startswith(err.reason)
    assert lines[0].endswith(f" at column {column}")
    assert lines[1] == "  " + query.replace("\x00", "?")
    assert lines[2] == "  " + " " * (column - 1) + "^"
    if query.strip():  # compile_where raises the same error; it takes an empty query as none
        with pytest.raises(QueryError, match="at column"):
            compile_where(query)


def test_error_messages_guide_the_user() -> None:
    with pytest.raises(QueryError) as info:
        parse("metrics.val_acc > and x")
    assert str(info.value) == (
        "expected a value, found 'and' at column 19\n  metrics.val_acc > and x\n                    ^"
    )
    with pytest.raises(QueryError) as info:
        parse("foo.bar == 1")
    for form in (
        "metrics.<name>",
        "best.<name>",
        "mean.<name>",
        "config.<key>",
        "tags.<key>",
        "cv.<k|fold|group>",
    ):
        assert form in str(info.value)
    for plain in ("status", "kind", "id", "started", "ended", "spec.<name|hash>", "mixup.<alpha"):
        assert plain in str(info.value)
    with pytest.raises(QueryError, match=r"mixup fields: mixup.alpha, mixup.cutmix_alpha"):
        parse("mixup.beta == 1")
    with pytest.raises(QueryError, match=r"quote text: 'failed'"):
        parse("status == failed")
    with pytest.raises(QueryError, match=r"to close the '\(' at column 1"):
        parse("(status == 'x'")
    with pytest.raises(QueryError, match=r"use 'and'"):
        parse("status == 'x' && kind == 'y'")
    with pytest.raises(QueryError) as info:
        parse("status == 'x'\nand kind ==")
    assert str(info.value).splitlines() == [
        "expected a value at line 2, column 12",
        "  and kind ==",
        "             ^",
    ]
    with pytest.raises(QueryError, match="a query is a string"):
        parse(3)  # type: ignore[arg-type]
