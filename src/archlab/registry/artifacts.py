"""Run folders and artifact files: the only code that builds a path under a registry's artifact
folder.

Each run owns ``<artifact root>/<run id>/``. Recording a file copies it there unless it lies
inside the root already, and hashes it; reading one back checks that it lies inside the root and
still hashes to what was recorded. Deleting leaves alone any path that leads outside the root.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.engine import make_url

from archlab.files import replace_atomically
from archlab.registry.engine import (
    Database,
    RegistryError,
    check_text,
    is_server,
    retry,
    sqlite_path,
    user_data_dir,
)
from archlab.registry.models import SettingRow
from archlab.registry.prepared import upsert
from archlab.registry.records import Artifact, Run

ARTIFACT_ROOT = "artifact_root"  # the settings key of a server registry's artifact folder
RUN_ID = re.compile(r"[0-9a-z]{4,16}")  # what a run or CV group id looks like


class ArtifactError(RegistryError):
    """An artifact file that cannot be used: outside the artifact folder, missing, or changed
    since its run recorded it."""


def artifact_root(db: Database, url: str, create: bool) -> Path:
    """Where a registry's artifacts live, whatever the current directory: beside a SQLite file;
    for a server database, the root the registry records (``settings.artifact_root``), recorded
    by the first opening that may write: ``$ARCHLAB_ARTIFACTS`` then, else
    ``<user data folder>/artifacts/<host>-<database>``."""
    path = sqlite_path(url)
    if path is not None:
        return path.absolute().parent / "artifacts"
    configured = os.environ.get("ARCHLAB_ARTIFACTS")
    if not is_server(url):  # an in-memory SQLite database
        return Path(configured).absolute() if configured else user_data_dir() / "artifacts"
    with db.transaction() as tx:
        recorded = tx.session.get(SettingRow, ARTIFACT_ROOT)
        if recorded is not None:
            return Path(recorded.value)
    parsed = make_url(url)
    default = (
        Path(configured).absolute()
        if configured
        else user_data_dir() / "artifacts" / f"{parsed.host or 'local'}-{parsed.database}"
    )
    if not create:
        return default

    def write() -> str:
        with db.transaction(write=True) as tx:
            tx.conn.execute(
                upsert(tx.conn.dialect, SettingRow)
                .values(key=ARTIFACT_ROOT, value=str(default))
                .on_conflict_do_nothing()
            )
            return str(tx.session.get(SettingRow, ARTIFACT_ROOT).value)  # type: ignore[union-attr]

    return Path(retry(write))


def run_folder(root: Path, run_id: str) -> Path:
    """The folder of run ``run_id`` under the artifact root (not created here)."""
    if not RUN_ID.fullmatch(run_id):
        raise RegistryError(f"not a run id: {run_id!r}")
    return root / run_id


def run_file(root: Path, run_id: str, name: str) -> Path:
    """The file ``name`` (a plain file name) in run ``run_id``'s folder (not created here)."""
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise RegistryError(f"a run's file is named by a plain file name, not {name!r}")
    return run_folder(root, run_id) / name


def store_file(
    root: Path, run_id: str, path: str | os.PathLike[str], kind: str, copy: bool
) -> Artifact:
    """The record of the artifact file ``path`` of run ``run_id``: copied into the run's folder
    with ``copy`` or when it lies outside ``root`` (never written through a symbolic link),
    with its path relative to ``root``, size and sha256."""
    source = Path(path)
    if not source.is_file():
        raise RegistryError(f"no such artifact file: {source}")
    if not 0 < len(kind) <= 32:
        raise RegistryError(f"an artifact kind has 1 to 32 characters, not {kind!r}")
    check_text(kind, "an artifact kind")
    root = root.resolve()
    resolved = source.resolve()
    if copy or not resolved.is_relative_to(root):
        folder = run_folder(root, run_id)
        folder.mkdir(parents=True, exist_ok=True)
        folder = folder.resolve()
        if not folder.is_relative_to(root):
            raise RegistryError(
                f"the artifact folder of run {run_id} leads outside {root} (a symbolic link?)"
            )
        target = folder / source.name
        if target.is_symlink() or not target.exists() or not target.samefile(resolved):
            replace_atomically(  # never written through, even to a device
                target, functools.partial(_copy, resolved), write_through=False
            )
        resolved = target
    return Artifact(
        str(resolved.relative_to(root)), kind, resolved.stat().st_size, sha256(resolved)
    )


def checked_file(root: Path, run: Run, path: str) -> Path:
    """The file of run ``run``'s artifact ``path`` (relative to ``root``), checked before use: it
    must lie inside ``root`` (no ``..``, no absolute path elsewhere, no symbolic link leading
    out), and hash to the sha256 the registry recorded for it (a file recorded under that path; a
    training state written since is only kept inside). Raises ``ArtifactError`` naming the file
    otherwise."""
    root = root.resolve()
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root):
        raise ArtifactError(
            f"run {run.id} records the artifact {path!r}, which leads outside the artifact "
            f"folder {root} (to {resolved}): archlab reads artifacts only inside it, and "
            "this record or a link in its place was altered"
        )
    if not resolved.is_file():
        raise ArtifactError(
            f"the artifact {resolved} of run {run.id} is missing (or not a file): it was "
            "removed or moved since the run recorded it"
        )
    recorded = [a for a in run.artifacts if a.path == path]
    if recorded:
        found = sha256(resolved)
        if found != recorded[-1].sha256:
            raise ArtifactError(
                f"the artifact {resolved} of run {run.id} changed since it was recorded: "
                f"sha256 {found}, recorded {recorded[-1].sha256}; archlab refuses to use a "
                "file altered or replaced after its run, so restore it or train again"
            )
    return resolved


def delete_files(root: Path, relative: Sequence[str]) -> list[Path]:
    """Delete these paths under ``root`` (a folder with its contents); a path that leads outside
    the root (a symbolic link, ``..``) is left alone. Returns the paths deleted."""
    root = root.resolve()
    removed = []
    for name in relative:
        path = root / name
        if not path.exists() and not path.is_symlink():
            continue
        if path.is_symlink() or not path.resolve().is_relative_to(root) or path == root:
            continue
        with contextlib.suppress(OSError):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def run_folders(root: Path) -> dict[str, Path]:
    """The folders under ``root`` named like a run id (symbolic links aside), by name."""
    if not root.is_dir():
        return {}
    return {
        p.name: p
        for p in root.iterdir()
        if p.is_dir() and not p.is_symlink() and RUN_ID.fullmatch(p.name)
    }


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy(source: Path, temporary: str) -> None:
    shutil.copyfile(source, temporary)
    shutil.copystat(source, temporary)
