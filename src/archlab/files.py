"""Writing files so that a crash or an error never leaves half of one behind."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from archlab.errors import UserInputError


class OutputError(UserInputError):
    """An output path that cannot be written: a block device, or a device or FIFO whose write
    failed (``/dev/full``, a closed pipe)."""


def replace_atomically(
    path: str | os.PathLike[str], write: Callable[[str], None], *, write_through: bool = True
) -> None:
    """Have ``write`` create a temporary file beside ``path``, then rename it over ``path``.

    A regular file at ``path`` (or a symbolic link) is replaced, never written through, and stays
    as it was if ``write`` fails. The temporary file is created by ``write`` itself, so it gets
    the usual permissions (the umask's), not ``mkstemp``'s owner-only 0600.

    An existing path that is neither a regular file nor a folder (``/dev/stdout``, ``/dev/null``,
    a FIFO, a terminal) is never replaced: ``write`` is given ``path`` itself and must open it
    for writing, and a failed write (``/dev/full``) raises ``OutputError``. Block devices are
    refused. ``write_through=False`` (files inside the registry's own folders) replaces those
    too, as it does a symbolic link."""
    target = Path(path)
    if write_through:
        try:
            mode = target.stat().st_mode  # follows links: /dev/stdout -> the terminal or pipe
        except OSError:
            mode = stat.S_IFREG  # absent (or unreadable): the rename below decides
        if stat.S_ISBLK(mode):
            raise OutputError(
                f"{target} is a block device: archlab writes only files, character devices "
                "and FIFOs; choose another output path"
            )
        if stat.S_ISDIR(mode):
            raise OutputError(f"{target} is a folder: give the path of a file to write")
        if not stat.S_ISREG(mode):
            try:
                write(str(target))
            except OSError as exc:
                raise OutputError(
                    f"cannot write to {target}: {exc.strerror or exc}; choose another output path"
                ) from None
            return
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(str(temporary))
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
