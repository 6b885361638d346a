"""The query language's tokenizer alone: token kinds, positions and values, and the characters it
refuses before any parsing."""

from __future__ import annotations

import pytest

from archlab.registry.query import QueryError
from archlab.registry.query.lexer import tokenize


def kinds(query: str, start: int = 0) -> list[tuple[str, str, int]]:
    return [(t.kind, t.text, t.pos) for t in tokenize(query, start)]


def test_tokens_carry_kind_text_and_offset() -> None:
    assert kinds("metrics.val_acc >= .5") == [
        ("name", "metrics.val_acc", 0),
        ("op", ">=", 16),
        ("number", ".5", 19),
        ("end", "", 21),
    ]
    assert kinds("NOT status in ('a', \"b\")") == [
        ("kw", "not", 0),  # keywords are lower-cased
        ("name", "status", 4),
        ("kw", "in", 11),
        ("(", "(", 14),
        ("string", "'a'", 15),
        (",", ",", 18),
        ("string", '"b"', 20),
        (")", ")", 23),
        ("end", "", 24),
    ]


def test_names_split_into_prefix_and_parts() -> None:
    name = tokenize("config.layers.0.'a.b' != 1")[0]
    assert name.value == ("config", ("layers", 0, "a.b"))  # a bare number part is an index
    assert tokenize("metrics.train/loss > 0")[0].value == ("metrics", ("train/loss",))
    assert tokenize("status == 'x'")[0].value == ("status", ())
    # a keyword followed by a dot is a (later refused) field name, not a keyword
    assert tokenize("not.x == 1")[0].kind == "name"


def test_literal_values() -> None:
    values = [t.value for t in tokenize("3 -2e3 +1.5 'it\\'s' \"a\\\\b\" 'c\\d'")[:-1]]
    assert values == [3, -2000.0, 1.5, "it's", "a\\b", "c\\d"]  # other backslashes are literal
    assert type(values[0]) is int and type(values[1]) is float


def test_tokenizing_from_an_offset() -> None:
    assert kinds("  -best.loss", 3) == [("name", "best.loss", 3), ("end", "", 12)]


@pytest.mark.parametrize(
    ("query", "position", "reason"),
    [
        ("status ~ 'x'", 7, "unexpected character '~'"),
        ("a && b", 2, "unexpected character '&'"),
        ("status == 'open", 10, "unterminated string"),
        ("x == 'a\x00'", 7, "strings may not contain NUL characters"),
        ("x == 1e999", 5, "number out of range"),
        ("x == 9223372036854775808", 5, "integer out of range"),
        ("x == 0.9and", 5, "malformed number"),
        ("metrics. > 1", 8, "expected a name after 'metrics.'"),
        ("metrics.'' > 1", 8, "expected a name, not ''"),
    ],
)
def test_refusals(query: str, position: int, reason: str) -> None:
    with pytest.raises(QueryError) as info:
        tokenize(query)
    assert info.value.reason == reason
    assert info.value.position == position


def test_int64_bounds_are_kept() -> None:
    assert tokenize("-9223372036854775808")[0].value == -(2**63)
    assert tokenize("9223372036854775807")[0].value == 2**63 - 1
