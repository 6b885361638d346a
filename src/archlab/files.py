"""Writing files so that a crash or an error never leaves half of one behind."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
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


def replace_folder_atomically(
    path: str | os.PathLike[str],
    write: Callable[[Path], None],
    *,
    replace: bool = False,
    marker: str | None = None,
) -> Path:
    """Have ``write`` fill a new temporary folder beside ``path``, then rename it to ``path``.

    ``path`` may be absent or an empty folder. A folder with files in it is refused unless
    ``replace``, and then only when it holds ``marker`` (a file name showing it is a folder of
    the kind written here, not some other folder given by mistake); it is swapped out as a whole
    and removed. Missing parent folders are made. If ``write`` fails, nothing at ``path``
    changes and the temporary folder goes. Returns ``path``."""
    target = Path(path)
    existing = _existing_folder(target)
    if existing and not replace:
        raise OutputError(
            f"{target} is a folder with files in it; give a new or empty folder, or replace "
            "it (--replace)"
        )
    if existing and marker is not None and not (target / marker).is_file():
        raise OutputError(
            f"{target} has files but no {marker}, so it is not a folder archlab would replace; "
            "give a new or empty folder"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(
            f"cannot write {target}: part of {target.parent} is not a folder"
        ) from None
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    stem = f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}"
    temporary, old = target.with_name(stem + ".tmp"), target.with_name(stem + ".old")
    try:
        os.mkdir(temporary)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        write(temporary)
        if existing:
            os.rename(target, old)
            os.rename(temporary, target)
        else:
            os.replace(temporary, target)  # an empty folder is replaced
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        if existing and old.exists() and not target.exists():
            os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target


def _existing_folder(target: Path) -> bool:
    """Whether ``target`` is a folder with files in it; absent or empty: False; a symbolic link
    or anything but a folder is refused."""
    if target.is_symlink():
        raise OutputError(f"{target} is a symbolic link; give the folder itself")
    if not target.exists():
        return False
    if not target.is_dir():
        raise OutputError(f"{target} exists and is not a folder; give a new or empty folder")
    return any(target.iterdir())
