"""The parsed query: ``Expr`` nodes (``Compare``, ``Not``, ``And``, ``Or``) over ``FieldRef`` and
``Value``; ``str()`` of a node gives back a fully parenthesised query."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from archlab.registry.query.fields import _field_type
from archlab.registry.query.lexer import _SEGMENT


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
