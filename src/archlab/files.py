"""Writing files so that a crash or an error never leaves half of one behind."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def replace_atomically(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Have ``write`` create a temporary file beside ``path``, then rename it over ``path``.

    Whatever was at ``path`` (a symbolic link included) is replaced, never written through, and
    stays as it was if ``write`` fails. The temporary file is created by ``write`` itself, so it
    gets the usual permissions (the umask's), not ``mkstemp``'s owner-only 0600."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(str(temporary))
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
