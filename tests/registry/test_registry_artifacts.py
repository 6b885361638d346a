"""Artifacts through a ``Registry``: files copied into the run folder or recorded in place, paths
that cannot escape it, sizes beyond 32 bits, and artifacts found from any directory. Tests taking ``registry`` run on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from archlab.registry import Registry, RegistryError
from archlab.registry.models import ArtifactRow

Doc = dict[str, Any]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_outside_files_are_copied_into_the_run_folder(
    registry: Registry, spec: Doc, isolated: Path
) -> None:
    source = isolated / "elsewhere" / "model.safetensors"
    source.parent.mkdir()
    source.write_bytes(os.urandom(3000))
    with registry.start_run(spec) as run:
        art = run.log_artifact(source, "checkpoint")
    assert art.path == f"{run.id}/model.safetensors"
    stored = registry.artifacts / art.path
    assert stored.read_bytes() == source.read_bytes()
    assert (art.kind, art.size, art.sha256) == ("checkpoint", 3000, sha256_of(source))
    assert registry.get(run.id).artifacts == [art]


def test_files_inside_the_folder_are_recorded_in_place(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec) as run:
        inside = registry.artifacts / "shared" / "plot.png"
        inside.parent.mkdir(parents=True)
        inside.write_bytes(b"png")
        art = run.log_artifact(inside, "plot")
        copied = run.log_artifact(inside, "plot", copy=True)
    assert art.path == "shared/plot.png"
    assert copied.path == f"{run.id}/plot.png"
    assert [a.path for a in registry.get(run.id).artifacts] == [art.path, copied.path]


def test_artifact_paths_cannot_escape_the_folder(
    registry: Registry, spec: Doc, isolated: Path
) -> None:
    secret = isolated / "secret.txt"
    secret.write_text("do not touch")
    root = registry.artifacts
    root.mkdir(parents=True)
    with registry.start_run(spec) as run:
        # a link inside the folder to a file outside: the content is copied in
        link = root / "innocent.txt"
        link.symlink_to(secret)
        art = run.log_artifact(link)
        assert art.path == f"{run.id}/innocent.txt"  # named as logged
        stored = root / art.path
        assert not stored.is_symlink() and stored.read_text() == "do not touch"

        # ../ out of the folder and back: the resolved file is outside, so it is copied in
        trick = root / run.id / ".." / ".." / "secret.txt"
        art = run.log_artifact(trick)
        assert ".." not in art.path and (root / art.path).resolve().is_relative_to(root.resolve())

        # a link planted where the copy goes is replaced, never written through
        (isolated / "payload.txt").write_text("evil")
        planted = root / run.id / "payload.txt"
        planted.symlink_to(secret)
        art = run.log_artifact(isolated / "payload.txt")
        assert secret.read_text() == "do not touch"
        assert not planted.is_symlink() and planted.read_text() == "evil"
        assert art.path == f"{run.id}/payload.txt"

    # a run folder that is a link to elsewhere is refused
    outside = isolated / "outside"
    outside.mkdir()
    with registry.start_run(spec) as other:
        (root / other.id).symlink_to(outside, target_is_directory=True)
        with pytest.raises(RegistryError, match="leads outside"):
            other.log_artifact(isolated / "payload.txt")
    assert list(outside.iterdir()) == []
    for a in registry.get(run.id).artifacts:
        assert (root / a.path).resolve().is_relative_to(root.resolve())
        assert sha256_of(root / a.path) == a.sha256


def test_missing_artifact_is_a_registry_error(
    registry: Registry, spec: Doc, isolated: Path
) -> None:
    with registry.start_run(spec) as run:
        with pytest.raises(RegistryError, match="no such artifact file"):
            run.log_artifact(isolated / "nope.bin")
        with pytest.raises(RegistryError, match="no such artifact file"):
            run.log_artifact(isolated)  # a folder is not a file
    assert registry.get(run.id).artifacts == []


def test_artifact_sizes_beyond_32_bits(registry: Registry, spec: Doc, raw_engine: Engine) -> None:
    """PostgreSQL's INTEGER stops at 2 GiB; checkpoints do not. (The row is written directly: a
    3 GiB file would take seconds to hash.)"""
    with registry.start_run(spec) as run:
        pass
    size = 3 * 2**30

    def write(session: Any) -> None:
        session.add(
            ArtifactRow(
                run_pk=run.pk,
                path="x.pt",
                kind="checkpoint",
                size=size,
                sha256="0" * 64,
                created=0.0,
            )
        )

    registry._transaction(lambda tx: write(tx.session))
    assert registry.get(run.id).artifacts[0].size == size
    with raw_engine.connect() as conn:
        assert conn.scalar(text("SELECT size FROM artifacts")) == size


def test_artifacts_are_found_from_any_directory(
    registry_url: str, isolated: Path, monkeypatch: pytest.MonkeyPatch, spec: Doc
) -> None:
    """An artifact recorded from one directory is read from another: beside a SQLite file, and
    for PostgreSQL under the root the registry records (``$ARCHLAB_ARTIFACTS`` when it was
    first opened to write), never under the current directory."""
    for name in ("a", "b", "shared"):
        (isolated / name).mkdir()
    monkeypatch.setenv("ARCHLAB_ARTIFACTS", str(isolated / "shared"))
    monkeypatch.chdir(isolated / "a")
    Path("w.bin").write_bytes(b"weights")
    with Registry(registry_url) as reg, reg.start_run(spec) as run:
        run.log_artifact("w.bin")
        root = reg.artifacts
    monkeypatch.delenv("ARCHLAB_ARTIFACTS")  # a teammate without the variable
    monkeypatch.chdir(isolated / "b")
    with Registry(registry_url, create=False) as reg:
        assert reg.artifacts == root and root.is_absolute()
        [artifact] = reg.get(run.id).artifacts
        assert (reg.artifacts / artifact.path).read_bytes() == b"weights"
    if registry_url.startswith("sqlite"):
        assert root == isolated / "artifacts"  # beside the database file
    else:
        assert root == isolated / "shared"  # recorded in the registry itself
    assert not (isolated / "a" / ".archlab").exists() and not (isolated / "b" / ".archlab").exists()
