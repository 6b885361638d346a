"""Text from users (spec names, paths, tags) made safe to print on a terminal or embed in a file.

A spec name is free text: ``"\\x1b]0;pwned\\x07"`` would retitle the terminal, ``"\\x1b[2J"`` clear it,
a right-to-left override (U+202E) reorder what follows, and a newline forge a line of output.
``printable`` replaces each such character by a visible escape (``\\x1b``, ``\\n``, ``\\u202e``), so
what reaches the terminal is the text as typed, one line, with no effect on the terminal.
"""

from __future__ import annotations

import re

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

#: C0 and C1 controls and DEL; lone surrogates; line and paragraph separators; the bidirectional
#: embeddings, overrides, isolates and marks, which reorder the text around them.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]"
)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control, bidi-override and line-breaking character shown as an escape.

    ``printable("a\\x1b[31mb\\n")`` is ``"a\\\\x1b[31mb\\\\n"``: a single line that prints as typed.
    Other characters, including non-ASCII letters and emoji, are kept.
    """
    return _UNSAFE.sub(_escape, text)


#: ``_UNSAFE`` less the newline and the tab, which text a model writes may hold as text
_UNSAFE_IN_TEXT = re.compile(_UNSAFE.pattern.replace("\x00-\x1f", "\x00-\x08\x0b-\x1f"))


def printable_text(text: str) -> str:
    """``printable`` for running text (what a model generates): newlines and tabs stay, every
    other control, bidi-override and line-breaking character is shown as an escape."""
    return _UNSAFE_IN_TEXT.sub(_escape, text)
