"""Errors raised for invalid specs: every problem at once, each with its JSON path."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from archlab.errors import UserInputError
from archlab.textsafe import printable

Loc = Sequence[str | int]


def format_path(loc: Loc) -> str:
    """Dotted JSON path of a location: ``("nodes", "enc", "overrides", 0)`` -> ``nodes.enc.overrides.0``."""
    return ".".join(str(part) for part in loc)


class SpecError(UserInputError):
    """An invalid spec.

    ``errors`` lists every problem found as ``(path, message)`` pairs, ``path`` being the dotted
    JSON path of the offending value (``nodes.enc.block.attention.heads``; ``""`` for the whole
    document). ``source`` names the file or string the spec came from, when known.
    """

    def __init__(self, errors: Iterable[tuple[str, str]], source: str | None = None) -> None:
        self.errors: list[tuple[str, str]] = _dedupe(errors)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        """One line per problem; text from the spec or its path is shown with visible escapes."""
        where = f"{printable(self.source)}: " if self.source else ""
        n = len(self.errors)
        head = f"{where}invalid spec ({n} problem{'s' if n != 1 else ''})"
        lines = [
            f"  {printable(path) or '<spec>'}: {printable(message)}"
            for path, message in self.errors
        ]
        return "\n".join([head, *lines])


def _dedupe(errors: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, str]] = []
    for err in errors:
        if err not in seen:
            seen.add(err)
            out.append(err)
    return out


class ErrorList:
    """Collects ``(path, message)`` pairs while a spec is checked, so all of them surface at once."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, loc: Loc | str, message: str) -> None:
        path = loc if isinstance(loc, str) else format_path(loc)
        self.items.append((path, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, source: str | None = None) -> None:
        if self.items:
            raise SpecError(self.items, source)
