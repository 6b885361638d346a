"""The registry's query language: ``--where`` filters and ``--sort`` keys, compiled to SQLAlchemy.

A query such as ``metrics.val_acc > 0.9 and (mixup.alpha >= 0.2 or cv.k == 5) and spec.name like
'vit%'`` is tokenised and parsed by hand (recursive descent) into a small AST (``parse``), then
compiled into a boolean expression over ``RunRow`` (``compile_where``). Values only ever reach the
database as bound parameters; nothing the user types is pasted into SQL.

Grammar (keywords are case-insensitive)::

    query      = or_expr ;
    or_expr    = and_expr { "or" and_expr } ;
    and_expr   = not_expr { "and" not_expr } ;
    not_expr   = "not" not_expr | "(" or_expr ")" | comparison ;
    comparison = field ( cmp_op value
                       | [ "not" ] "in" "(" value { "," value } [ "," ] ")"
                       | [ "not" ] "like" string ) ;
    cmp_op     = "==" | "=" | "!=" | "<" | "<=" | ">" | ">=" ;
    value      = string | number | "true" | "false" | "null" ;
    field      = "status" | "kind" | "id" | "started" | "ended"
               | ( "metrics" | "best" | "mean" | "std" | "min" | "max" | "n" ) "." name
               | "config" "." part { "." part } | "tags" "." name
               | "mixup" "." mixup_field | "cv" "." ( "k" | "fold" | "group" )
               | "spec" "." ( "name" | "hash" ) ;
    name       = part { "." part } ;                 (* metric / tag names may hold dots *)
    part       = word | string ;                     (* word: [A-Za-z0-9_]+, joined by "/" or "-" *)
    mixup_field = "alpha" | "cutmix_alpha" | "cutmix_min" | "cutmix_max" | "prob"
               | "switch_prob" | "mode" | "label_smoothing" | "off_epoch" ;
    string     = "'" chars "'" | '"' chars '"' ;     (* \\' \\" \\\\ escape; other \\ is literal *)
    number     = [ "+" | "-" ] ( digits [ "." [ digits ] ] | "." digits ) [ ( "e" | "E" ) [ "+" | "-" ] digits ] ;
    sort_key   = [ "+" | "-" ] field ;               (* order_by; "-" sorts descending *)

Semantics, in short:

- ``metrics.X`` is the run's final value of metric X, ``best.X`` its best; ``mean/std/min/max/n.X``
  are the aggregates of the run's CV group; ``config.a.b`` walks the run's JSON config (a bare
  number part indexes an array: ``config.layers.0``; a quoted part is one key: ``config.'a.b'``).
  Names that are not words go in quotes: ``metrics.'acc@1'``, ``tags."my key"``.
- A ``config`` value compares as the literal's JSON type (number, string, true/false).
- Logic is SQL's three-valued logic: a comparison on a field the run lacks (no such metric, no
  mixup, no CV group, a config value of another JSON type) is *unknown*, so it and its ``not`` are
  both false. ``field == null`` / ``field != null`` test presence and are never unknown.
- ``like`` is case-insensitive on every backend (SQLite folds ASCII letters only); ``%`` and ``_``
  are wildcards, ``\\`` escapes them.
- ``started``/``ended`` take epoch seconds or ISO 8601 strings (naive ones in local time).
- Text fields compare a number literal with its text as written (``tags.seed == 3``).
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    String,
    and_,
    case,
    func,
    inspect,
    literal,
    literal_column,
    not_,
    or_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BinaryExpression, ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from archlab.errors import UserInputError
from archlab.registry.models import (
    AggregateRow,
    CVGroupRow,
    MetricKeyRow,
    MixupRow,
    RunRow,
    SummaryRow,
    TagRow,
)

__all__ = [
    "FIELDS",
    "And",
    "Compare",
    "Expr",
    "FieldRef",
    "Not",
    "Or",
    "QueryError",
    "Value",
    "compile_where",
    "order_by",
    "parse",
]


class QueryError(UserInputError):
    """A malformed ``--where`` / ``--sort``: the message shows the query with a caret under the fault.

    ``reason`` is the bare message, ``query`` the text and ``position`` the 0-based offset of the
    fault (``None`` when it concerns the whole query); ``hint`` an optional last line.
    """

    def __init__(
        self,
        reason: str,
        query: str | None = None,
        position: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.reason = reason
        self.query = query
        self.position = position
        self.hint = hint
        super().__init__(self.render())

    @property
    def column(self) -> int | None:
        """1-based column of the fault in its line."""
        if self.query is None or self.position is None:
            return None
        return self.position - (self.query.rfind("\n", 0, self.position) + 1) + 1

    def render(self) -> str:
        lines = [self.reason]
        if self.query is not None and self.position is not None:
            pos = min(max(self.position, 0), len(self.query))
            start = self.query.rfind("\n", 0, pos) + 1
            end = self.query.find("\n", pos)
            end = len(self.query) if end < 0 else end
            col = pos - start + 1
            where = f"column {col}"
            if "\n" in self.query:
                where = f"line {self.query.count(chr(10), 0, pos) + 1}, {where}"
            lines = [f"{self.reason} at {where}", f"  {_printable(self.query[start:end])}"]
            lines.append("  " + " " * (col - 1) + "^")
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


def _printable(line: str) -> str:
    """The line as shown above the caret: one visible character per character, so the caret lines up."""
    return "".join(c if c.isprintable() else ("?" if not c.isspace() else " ") for c in line)


# --- fields ---------------------------------------------------------------------------------------

MIXUP_FIELDS = (
    "alpha",
    "cutmix_alpha",
    "cutmix_min",
    "cutmix_max",
    "prob",
    "switch_prob",
    "mode",
    "label_smoothing",
    "off_epoch",
)
_PLAIN = ("status", "kind", "id", "started", "ended")
_METRIC = ("metrics", "best")
_AGGREGATE = ("mean", "std", "min", "max", "n")
_SUBFIELDS: dict[str, tuple[str, ...]] = {
    "mixup": MIXUP_FIELDS,
    "cv": ("k", "fold", "group"),
    "spec": ("name", "hash"),
}
_FREE = (*_METRIC, *_AGGREGATE, "config", "tags")  # prefixes followed by any name

#: Every field form, as shown in error messages and help text.
FIELDS = (
    "metrics.<name>",
    "best.<name>",
    "mean.<name>",
    "std.<name>",
    "min.<name>",
    "max.<name>",
    "n.<name>",
    "config.<key>[.<key>...]",
    "tags.<key>",
    "mixup.<" + "|".join(MIXUP_FIELDS) + ">",
    "cv.<k|fold|group>",
    "spec.<name|hash>",
    *_PLAIN,
)


def _field_type(prefix: str, key: str | None) -> str:
    """``number``, ``text``, ``time`` or ``json``: what literals a field compares with."""
    if prefix in _METRIC or prefix in _AGGREGATE:
        return "number"
    if prefix == "config":
        return "json"
    if prefix in ("started", "ended"):
        return "time"
    if prefix == "mixup":
        return "text" if key == "mode" else "number"
    if prefix == "cv":
        return "text" if key == "group" else "number"
    return "text"  # status, kind, id, tags, spec


# --- AST ------------------------------------------------------------------------------------------


class Expr:
    """A node of a parsed query. ``str()`` gives back a fully parenthesised query."""

    pos: int


@dataclass(frozen=True)
class FieldRef:
    """``prefix`` (``metrics``, ``cv``, ``status``...) and the ``parts`` after it: ``("val_acc",)``
    for ``metrics.val_acc``, ``("optimizer", "lr")`` for ``config.optimizer.lr``, ``()`` for
    ``status``. A bare number part (``config.layers.0``) is an ``int``, an array index."""

    prefix: str
    parts: tuple[str | int, ...] = ()
    pos: int = dataclasses.field(default=0, compare=False)

    @property
    def key(self) -> str | None:
        """The parts joined by dots (a metric or tag name); ``None`` without parts."""
        return ".".join(map(str, self.parts)) if self.parts else None

    @property
    def type(self) -> str:
        return _field_type(self.prefix, self.key)

    def __str__(self) -> str:
        return self.prefix + "".join("." + _show_part(p) for p in self.parts)


def _show_part(part: str | int) -> str:
    if isinstance(part, int) or (_SEGMENT.fullmatch(part) and not part.isdigit()):
        return str(part)
    return _quote(part)


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Value:
    """A literal: ``str``, ``int``, ``float``, ``bool`` or ``None``; ``text`` is its source."""

    value: str | int | float | bool | None
    text: str = dataclasses.field(default="", compare=False)
    pos: int = dataclasses.field(default=0, compare=False)

    def __str__(self) -> str:
        v = self.value
        if isinstance(v, str):
            return _quote(v)
        if v is None or isinstance(v, bool):
            return {None: "null", True: "true", False: "false"}[v]
        return self.text or repr(v)


@dataclass(frozen=True)
class Compare(Expr):
    """``field op value``; ``op`` is one of ``== != < <= > >= like not like`` with a ``Value``, or
    ``in`` / ``not in`` with a tuple of them."""

    field: FieldRef
    op: str
    value: Value | tuple[Value, ...]
    pos: int = dataclasses.field(default=0, compare=False)

    def __str__(self) -> str:
        if isinstance(self.value, tuple):
            return f"{self.field} {self.op} ({', '.join(str(v) for v in self.value)})"
        return f"{self.field} {self.op} {self.value}"


@dataclass(frozen=True)
class Not(Expr):
    operand: Expr
    pos: int = dataclasses.field(default=0, compare=False)

    def __str__(self) -> str:
        return f"not {self.operand}"


@dataclass(frozen=True)
class And(Expr):
    terms: tuple[Expr, ...]
    pos: int = dataclasses.field(default=0, compare=False)

    def __str__(self) -> str:
        return "(" + " and ".join(str(t) for t in self.terms) + ")"


@dataclass(frozen=True)
class Or(Expr):
    terms: tuple[Expr, ...]
    pos: int = dataclasses.field(default=0, compare=False)

    def __str__(self) -> str:
        return "(" + " or ".join(str(t) for t in self.terms) + ")"


# --- tokenizer ------------------------------------------------------------------------------------

_KEYWORDS = frozenset({"and", "or", "not", "in", "like", "true", "false", "null"})
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEGMENT = re.compile(r"[A-Za-z0-9_]+(?:[/-][A-Za-z0-9_]+)*")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "=")
_WORD_CHAR = re.compile(r"[A-Za-z0-9_.]")
_MAX_DEPTH = 100
_MAX_COMPARISONS = 200  # each is a subquery; SQLite also caps expression depth at 1000
_INT64 = 2**63


@dataclass(frozen=True)
class _Token:
    kind: str  # name, kw, string, number, op, "(", ")", ",", end
    text: str  # source text (keywords lower-cased)
    pos: int
    value: Any = None


def _tokenize(query: str, start: int = 0) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = start, len(query)
    while i < n:
        c = query[i]
        if c in " \t\r\n":
            i += 1
        elif c in "(),":
            tokens.append(_Token(c, c, i))
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
            tokens.append(_Token("number", m.group(), i, _number(m.group(), query, i)))
            i = end
        elif c.isascii() and (c.isalpha() or c == "_"):
            i = _name(query, i, tokens)
        else:
            op = next((o for o in _OPERATORS if query.startswith(o, i)), None)
            if op is None:
                hint = {"&": "use 'and'", "|": "use 'or'", "!": "use 'not' or '!='"}.get(c)
                shown = repr(c) if c.isprintable() else f"{c!r} (U+{ord(c):04X})"
                raise QueryError(f"unexpected character {shown}", query, i, hint)
            tokens.append(_Token("op", op, i))
            i += len(op)
    tokens.append(_Token("end", "", n))
    return tokens


def _name(query: str, start: int, tokens: list[_Token]) -> int:
    """Scans a keyword or a dotted field name (``config.optimizer.lr``, ``metrics.'acc@1'``: a
    quoted part is taken whole); returns the offset after it."""
    m = _WORD.match(query, start)
    assert m is not None
    word, end, n = m.group(), m.end(), len(query)
    if word.lower() in _KEYWORDS and not query.startswith(".", end):
        tokens.append(_Token("kw", word.lower(), start))
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
    tokens.append(_Token("name", query[start:end], start, (word, tuple(parts))))
    return end


def _string(query: str, start: int, tokens: list[_Token]) -> int:
    """Scans the string literal opening at ``start``; returns the offset after it."""
    text, end = _scan_string(query, start)
    tokens.append(_Token("string", query[start:end], start, text))
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


# --- parser ---------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, query: str, tokens: list[_Token]) -> None:
        self.query = query
        self.tokens = tokens
        self.i = 0
        self.depth = 0
        self.comparisons = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def is_kw(self, *words: str) -> bool:
        return self.tok.kind == "kw" and self.tok.text in words

    def error(self, reason: str, tok: _Token | None = None, hint: str | None = None) -> QueryError:
        tok = tok or self.tok
        if tok.kind != "end":
            reason = f"{reason}, found {_describe(tok)}"
        return QueryError(reason, self.query, tok.pos, hint)

    def query_expr(self) -> Expr:
        expr = self.or_expr()
        if self.tok.kind == ")":
            raise self.error("unmatched ')'")
        if self.tok.kind != "end":
            raise self.error("expected 'and', 'or' or the end of the query")
        return expr

    def or_expr(self) -> Expr:
        pos = self.tok.pos
        terms = [self.and_expr()]
        while self.is_kw("or"):
            self.take()
            terms.append(self.and_expr())
        return terms[0] if len(terms) == 1 else Or(tuple(terms), pos)

    def and_expr(self) -> Expr:
        pos = self.tok.pos
        terms = [self.not_expr()]
        while self.is_kw("and"):
            self.take()
            terms.append(self.not_expr())
        return terms[0] if len(terms) == 1 else And(tuple(terms), pos)

    def not_expr(self) -> Expr:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.error(f"query nested more than {_MAX_DEPTH} deep")
        try:
            tok = self.tok
            if self.is_kw("not"):
                self.take()
                return Not(self.not_expr(), tok.pos)
            if tok.kind == "(":
                self.take()
                expr = self.or_expr()
                if self.tok.kind != ")":
                    raise self.error(
                        "expected ')'",
                        hint=f"to close the '(' at column {_column(self.query, tok.pos)}",
                    )
                self.take()
                return expr
            if tok.kind == "name":
                return self.comparison()
            raise self.error("expected a field, 'not' or '('")
        finally:
            self.depth -= 1

    def comparison(self) -> Compare:
        self.comparisons += 1
        if self.comparisons > _MAX_COMPARISONS:
            raise self.error(f"more than {_MAX_COMPARISONS} comparisons in one query")
        name = self.take()
        ref = _field_ref(name, self.query)
        tok = self.tok
        if tok.kind == "op":
            self.take()
            op = "==" if tok.text == "=" else tok.text
            return self.checked(ref, op, self.value(), tok)
        negated = self.is_kw("not")
        if negated:
            self.take()
            if not self.is_kw("in", "like"):
                raise self.error("expected 'in' or 'like' after 'not'")
        if self.is_kw("in"):
            self.take()
            if self.tok.kind != "(":
                raise self.error(
                    "expected '(' after 'in'",
                    hint="write a list: status in ('failed', 'interrupted')",
                )
            self.take()
            values = [self.value()]
            while self.tok.kind == ",":
                self.take()
                if self.tok.kind == ")":
                    break
                values.append(self.value())
            if self.tok.kind != ")":
                raise self.error("expected ',' or ')' in the list")
            self.take()
            return self.checked(ref, "not in" if negated else "in", tuple(values), tok)
        if self.is_kw("like"):
            self.take()
            return self.checked(ref, "not like" if negated else "like", self.value(), tok)
        raise self.error(
            f"expected an operator after {name.text!r}",
            hint="operators: == != < <= > >= in, not in, like, not like",
        )

    def value(self) -> Value:
        tok = self.tok
        if tok.kind in ("string", "number"):
            self.take()
            return Value(tok.value, tok.text, tok.pos)
        if self.is_kw("true", "false", "null"):
            self.take()
            return Value({"true": True, "false": False, "null": None}[tok.text], tok.text, tok.pos)
        hint = f"quote text: '{tok.text}'" if tok.kind == "name" else None
        raise self.error("expected a value", hint=hint)

    def checked(
        self, ref: FieldRef, op: str, value: Value | tuple[Value, ...], tok: _Token
    ) -> Compare:
        compare = Compare(ref, op, value, tok.pos)
        _coerce(compare, self.query)  # raises on a literal the field cannot take
        return compare


def _describe(tok: _Token) -> str:
    if tok.kind == "string":
        return f"string {tok.text}"
    if tok.kind in ("name", "number"):
        return f"{tok.kind} {tok.text!r}"
    return repr(tok.text)


def _column(query: str, pos: int) -> int:
    return pos - (query.rfind("\n", 0, pos) + 1) + 1


def _field_ref(tok: _Token, query: str) -> FieldRef:
    prefix, parts = tok.value
    ref, pos = FieldRef(prefix, parts, tok.pos), tok.pos
    allowed = "fields: " + ", ".join(FIELDS)
    if prefix in _PLAIN:
        if parts:
            raise QueryError(f"{prefix!r} has no sub-fields", query, pos, allowed)
        return ref
    if prefix in _FREE or prefix in _SUBFIELDS:
        if not parts:
            form = next(f for f in FIELDS if f.startswith(prefix + "."))
            raise QueryError(f"{prefix!r} needs a name: {form}", query, pos)
        if prefix in _SUBFIELDS and parts not in [(k,) for k in _SUBFIELDS[prefix]]:
            names = ", ".join(f"{prefix}.{k}" for k in _SUBFIELDS[prefix])
            raise QueryError(f"unknown field {tok.text!r}", query, pos, f"{prefix} fields: {names}")
        return ref
    raise QueryError(f"unknown field {tok.text!r}", query, pos, allowed)


# --- literals -------------------------------------------------------------------------------------


def _coerce(cmp: Compare, query: str) -> tuple[str, list[Any]]:
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
    if isinstance(x, str) and not _storable(x):
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


def _storable(text: str) -> bool:
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


# --- public entry points --------------------------------------------------------------------------


def parse(text: str) -> Expr:
    """The AST of a ``--where`` query; ``QueryError`` with a caret under the fault when malformed."""
    if not isinstance(text, str):
        raise QueryError(f"a query is a string, not {type(text).__name__}")
    return _Parser(text, _tokenize(text)).query_expr()


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
    tokens = _tokenize(field, start)
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
    ref = _field_ref(tokens[0], field)
    key = _source(ref, "sort").scalar()
    return (key.desc() if descending else key.asc()).nulls_last()


# --- compiler -------------------------------------------------------------------------------------

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
    kind, values = _coerce(cmp, query)
    op = cmp.op
    if op in _NEGATED:
        op, positive = _NEGATED[op], not positive
    src = _source(cmp.field, kind)
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


@dataclass(frozen=True)
class _Source:
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


def _mapped(attr: QueryableAttribute[Any], *link: ColumnElement[bool]) -> _Source:
    """A mapped column's source; its nullability (from the model) decides whether "not" must also
    check that the value is there."""
    nullable = bool(inspect(attr.class_).columns[attr.key].nullable)
    return _Source(attr, nullable=nullable, link=link)


def _metric_key(name: str) -> ColumnElement[Any]:
    return (
        select(MetricKeyRow.id)
        .where(MetricKeyRow.name == literal(name, String()))
        .scalar_subquery()
    )


def _source(ref: FieldRef, kind: str) -> _Source:
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
        return _Source(
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
        return _Source(_JsonSortKey(item), nullable=True)
    if kind == "null":
        return _Source(item, nullable=True, presence=_JsonPresent(item))
    typed: dict[str, tuple[type[_JsonTypeIs], ColumnElement[Any]]] = {
        "number": (_JsonIsNumber, item.as_float()),
        "text": (_JsonIsString, item.as_string()),
        "bool": (_JsonIsBoolean, item.as_boolean()),
    }
    check, value = typed[kind]
    return _Source(case((check(item), value)), nullable=True)


# --- JSON type checks, per backend ----------------------------------------------------------------
#
# A config value compares only with literals of its own JSON type: ``config.lr < 0.01`` must not
# cast the string "auto" (an error on PostgreSQL, 0.0 on SQLite). These render ``json_type`` on
# SQLite and ``json_typeof`` on PostgreSQL around SQLAlchemy's own JSON path element, so the path
# stays a bound parameter and statement caching sees it.


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
