"""The tokenizer: a query's text as ``Token``s (names, keywords, strings, numbers, operators),
with string escapes and number ranges checked where they are written."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from archlab.registry.query.errors import QueryError

_KEYWORDS = frozenset({"and", "or", "not", "in", "like", "true", "false", "null"})
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEGMENT = re.compile(r"[A-Za-z0-9_]+(?:[/-][A-Za-z0-9_]+)*")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "=")
_WORD_CHAR = re.compile(r"[A-Za-z0-9_.]")
_INT64 = 2**63


@dataclass(frozen=True)
class Token:
    """One token at offset ``pos``; ``value`` is a string's or number's value, and a name's
    ``(prefix, parts)`` (``("config", ("layers", 0))`` for ``config.layers.0``)."""

    kind: str  # name, kw, string, number, op, "(", ")", ",", end
    text: str  # source text (keywords lower-cased)
    pos: int
    value: Any = None


def tokenize(query: str, start: int = 0) -> list[Token]:
    """The tokens of ``query`` from offset ``start``, ending with an ``end`` token; ``QueryError``
    at the first character that starts no token."""
    tokens: list[Token] = []
    i, n = start, len(query)
    while i < n:
        c = query[i]
        if c in " \t\r\n":
            i += 1
        elif c in "(),":
            tokens.append(Token(c, c, i))
            i += 1
        elif c in "'\"":
            i = _string(query, i, tokens)
        elif c.isascii() and (
            c.isdigit()
            or (c in "+-." and i + 1 < n and query[i + 1].isascii() and query[i + 1].isdigit())
        ):
            m = _NUMBER.match(query, i)
            assert m is not None
            end = m.end()
            if end < n and _WORD_CHAR.match(query, end):
                raise QueryError("malformed number", query, i)
            tokens.append(Token("number", m.group(), i, _number(m.group(), query, i)))
            i = end
        elif c.isascii() and (c.isalpha() or c == "_"):
            i = _name(query, i, tokens)
        else:
            op = next((o for o in _OPERATORS if query.startswith(o, i)), None)
            if op is None:
                hint = {"&": "use 'and'", "|": "use 'or'", "!": "use 'not' or '!='"}.get(c)
                shown = repr(c) if c.isprintable() else f"{c!r} (U+{ord(c):04X})"
                raise QueryError(f"unexpected character {shown}", query, i, hint)
            tokens.append(Token("op", op, i))
            i += len(op)
    tokens.append(Token("end", "", n))
    return tokens


def _name(query: str, start: int, tokens: list[Token]) -> int:
    """Scans a keyword or a dotted field name (``config.optimizer.lr``, ``metrics.'acc@1'``: a
    quoted part is taken whole); returns the offset after it."""
    m = _WORD.match(query, start)
    assert m is not None
    word, end, n = m.group(), m.end(), len(query)
    if word.lower() in _KEYWORDS and not query.startswith(".", end):
        tokens.append(Token("kw", word.lower(), start))
        return end
    parts: list[str | int] = []
    while end < n and query[end] == ".":
        at = end + 1
        if at < n and query[at] in "'\"":
            text, end = _scan_string(query, at)
            if not text:
                raise QueryError("expected a name, not ''", query, at)
            parts.append(text)
            continue
        m = _SEGMENT.match(query, at)
        if m is None:
            raise QueryError(f"expected a name after {query[start:at]!r}", query, at)
        parts.append(int(m.group()) if m.group().isdigit() else m.group())
        end = m.end()
    if end < n and query[end] in "/-" and (end + 1 >= n or not query[end + 1].isdigit()):
        raise QueryError(f"expected a name after {query[start : end + 1]!r}", query, end + 1)
    tokens.append(Token("name", query[start:end], start, (word, tuple(parts))))
    return end


def _string(query: str, start: int, tokens: list[Token]) -> int:
    """Scans the string literal opening at ``start``; returns the offset after it."""
    text, end = _scan_string(query, start)
    tokens.append(Token("string", query[start:end], start, text))
    return end


def _scan_string(query: str, start: int) -> tuple[str, int]:
    """The value of the string literal opening at ``start``, and the offset after it."""
    quote = query[start]
    out: list[str] = []
    i = start + 1
    while i < len(query):
        c = query[i]
        if c == "\x00":
            raise QueryError("strings may not contain NUL characters", query, i)
        if c == "\\" and i + 1 < len(query) and query[i + 1] in "'\"\\":
            out.append(query[i + 1])
            i += 2
        elif c == quote:
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise QueryError("unterminated string", query, start, f"close it with {quote}")


def _number(text: str, query: str, pos: int) -> int | float:
    if re.fullmatch(r"[+-]?\d+", text):
        value = int(text)
        if not -_INT64 <= value < _INT64:
            raise QueryError("integer out of range", query, pos)
        return value
    number = float(text)
    if not math.isfinite(number):
        raise QueryError("number out of range", query, pos)
    return number
