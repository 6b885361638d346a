"""Errors raised for invalid specs: every problem at once, each with its JSON path."""

from __future__ import annotations

from collections.abc import Sequence

from archlab.errors import ProblemsError

Loc = Sequence[str | int]


def format_path(loc: Loc) -> str:
    """Dotted JSON path of a location: ``("nodes", "enc", "overrides", 0)`` -> ``nodes.enc.overrides.0``."""
    return ".".join(str(part) for part in loc)


class SpecError(ProblemsError):
    """An invalid spec.

    ``errors`` lists every problem found as ``(path, message)`` pairs, ``path`` being the dotted
    JSON path of the offending value (``nodes.enc.block.attention.heads``; ``""`` for the whole
    document). ``source`` names the file or string the spec came from, when known.
    """

    what = "spec"
    whole = "<spec>"


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
