"""``QueryError``: a malformed ``--where`` or ``--sort``, shown with a caret under the fault."""

from __future__ import annotations

from archlab.errors import UserInputError


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
