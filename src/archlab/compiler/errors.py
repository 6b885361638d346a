"""The compiler's own error, apart so that the model, its builders and its code generator can
all raise it without importing each other."""

from __future__ import annotations

from archlab.errors import UserInputError


class CompileError(UserInputError):
    """A valid spec that this build of archlab cannot turn into a module (yet), or bad options."""


__all__ = ["CompileError"]
