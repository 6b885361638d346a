"""The recursive-descent parser: tokens into the ``Expr`` AST (``parse``), with each field name
and each literal checked against its field as it is read."""

from __future__ import annotations

from archlab.registry.query.errors import QueryError
from archlab.registry.query.fields import _FREE, _PLAIN, _SUBFIELDS, FIELDS
from archlab.registry.query.lexer import Token, tokenize
from archlab.registry.query.literals import coerce
from archlab.registry.query.nodes import And, Compare, Expr, FieldRef, Not, Or, Value

_MAX_DEPTH = 100
_MAX_COMPARISONS = 200  # each is a subquery; SQLite also caps expression depth at 1000


def parse(text: str) -> Expr:
    """The AST of a ``--where`` query; ``QueryError`` with a caret under the fault when malformed."""
    if not isinstance(text, str):
        raise QueryError(f"a query is a string, not {type(text).__name__}")
    return _Parser(text, tokenize(text)).query_expr()


class _Parser:
    def __init__(self, query: str, tokens: list[Token]) -> None:
        self.query = query
        self.tokens = tokens
        self.i = 0
        self.depth = 0
        self.comparisons = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def is_kw(self, *words: str) -> bool:
        return self.tok.kind == "kw" and self.tok.text in words

    def error(self, reason: str, tok: Token | None = None, hint: str | None = None) -> QueryError:
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
        ref = field_ref(name, self.query)
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
        self, ref: FieldRef, op: str, value: Value | tuple[Value, ...], tok: Token
    ) -> Compare:
        compare = Compare(ref, op, value, tok.pos)
        coerce(compare, self.query)  # raises on a literal the field cannot take
        return compare


def _describe(tok: Token) -> str:
    if tok.kind == "string":
        return f"string {tok.text}"
    if tok.kind in ("name", "number"):
        return f"{tok.kind} {tok.text!r}"
    return repr(tok.text)


def _column(query: str, pos: int) -> int:
    return pos - (query.rfind("\n", 0, pos) + 1) + 1


def field_ref(tok: Token, query: str) -> FieldRef:
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
