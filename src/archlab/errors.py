"""The one base class for problems a user can fix (bad spec, file, option): exit code 2 in the CLI."""

from __future__ import annotations

from collections.abc import Iterable

from archlab.textsafe import printable


class UserInputError(ValueError):
    """Bad input from the user: a spec, a file, a device or dtype name, an option value."""


class ProblemsError(UserInputError):
    """Every problem found in one document at once, each as ``(path, message)``: the dotted path
    of the offending value (``""`` for the whole document). ``source`` names the file or string
    the document came from, when known. Subclasses name the kind of document (``what``) and how
    a problem with the whole of it is shown (``whole``)."""

    what = "input"
    whole = "<input>"

    def __init__(self, errors: Iterable[tuple[str, str]], source: str | None = None) -> None:
        self.errors: list[tuple[str, str]] = list(dict.fromkeys(errors))  # duplicates once
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        """One line per problem; text from the document or its path is shown with visible
        escapes."""
        where = f"{printable(self.source)}: " if self.source else ""
        n = len(self.errors)
        head = f"{where}invalid {self.what} ({n} problem{'s' if n != 1 else ''})"
        lines = [
            f"  {printable(path) or self.whole}: {printable(message)}"
            for path, message in self.errors
        ]
        return "\n".join([head, *lines])


class InteropError(UserInputError):
    """A checkpoint archlab cannot import or export: an unsupported model type, a missing or
    damaged weight file, a tensor of the wrong shape, a config the weights contradict."""
