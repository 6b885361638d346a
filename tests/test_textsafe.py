"""``archlab.textsafe.printable``: user text shown on a terminal as typed, with no effect on it."""

from __future__ import annotations

import pytest

from archlab.textsafe import printable, printable_text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain name", "plain name"),
        ("vit-tiny-digits", "vit-tiny-digits"),
        ("ré-sumé 模型 🚀", "ré-sumé 模型 🚀"),
        ("a\x1b[31mred", "a\\x1b[31mred"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("two\nlines\r\tand tab", "two\\nlines\\r\\tand tab"),
        ("nul\x00del\x7fcsi\x9b", "nul\\x00del\\x7fcsi\\x9b"),
        ("abc\u202edcba", "abc\\u202edcba"),
        ("iso\u2066late\u2069 mark\u200f", "iso\\u2066late\\u2069 mark\\u200f"),
        ("line\u2028sep", "line\\u2028sep"),
        ("lone \ud800", "lone \\ud800"),
        ('quotes " and \\ stay', 'quotes " and \\ stay'),
    ],
)
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(shown) == shown  # what it returns is printable already
    assert shown.isprintable() or " " in shown


def test_printable_text_keeps_lines_and_tabs() -> None:
    """What a model writes is running text: its newlines and tabs stay, nothing else acts."""
    written = "To be,\n\tor not\r\x1b[2J\u202eto be\x00"
    assert printable_text(written) == "To be,\n\tor not\\r\\x1b[2J\\u202eto be\\x00"
