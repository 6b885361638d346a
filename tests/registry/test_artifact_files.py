"""``Registry.artifact_file``: an artifact is used only inside the artifact folder and only with
the sha256 its run recorded (both backends)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, update

from archlab.registry import ArtifactError, Registry
from archlab.registry.models import ArtifactRow

Doc = dict[str, Any]


def recorded(registry: Registry, spec: Doc, isolated: Path) -> tuple[str, str, Path]:
    """A run with one checkpoint artifact: (run id, its recorded path, the file)."""
    source = isolated / "best.safetensors"
    source.write_bytes(os.urandom(3000))
    with registry.start_run(spec) as run:
        art = run.log_artifact(source, "checkpoint")
    return run.id, art.path, registry.artifacts / art.path


def test_an_intact_artifact_is_returned_resolved(
    registry: Registry, spec: Doc, isolated: Path
) -> None:
    run_id, path, file = recorded(registry, spec, isolated)
    assert registry.artifact_file(registry.get(run_id), path) == file.resolve()


def test_a_changed_artifact_is_refused_with_both_hashes(
    registry: Registry, spec: Doc, isolated: Path
) -> None:
    run_id, path, file = recorded(registry, spec, isolated)
    run = registry.get(run_id)
    [art] = run.artifacts
    file.write_bytes(file.read_bytes()[:-1] + b"!")
    with pytest.raises(ArtifactError, match=rf"best\.safetensors of run {run_id} changed") as exc:
        registry.artifact_file(run, path)
    assert art.sha256 in str(exc.value) and str(file.resolve()) in str(exc.value)
    file.unlink()
    with pytest.raises(ArtifactError, match="is missing"):
        registry.artifact_file(run, path)


@pytest.mark.parametrize("where", ["../outside.bin", "/etc/hostname", "link"])
def test_an_artifact_leading_outside_the_folder_is_refused(
    registry: Registry, spec: Doc, isolated: Path, raw_engine: Engine, where: str
) -> None:
    """A record altered to point elsewhere (``..``, an absolute path), or a file replaced by a
    link out of the folder (even to an identical copy, whose hash would match)."""
    run_id, path, file = recorded(registry, spec, isolated)
    outside = isolated / "outside.bin"
    outside.write_bytes(file.read_bytes())
    if where == "link":
        file.unlink()
        file.symlink_to(outside)
    else:
        with raw_engine.begin() as conn:
            conn.execute(update(ArtifactRow).values(path=where))
        path = where
    with pytest.raises(ArtifactError, match="leads outside the artifact folder"):
        registry.artifact_file(registry.get(run_id), path)


def test_an_unrecorded_file_is_only_kept_inside(
    registry: Registry, spec: Doc, isolated: Path
) -> None:
    """A training state written after the last record (an interrupted run's) has no hash to
    check yet: it is returned if it lies inside the folder."""
    run_id, _path, file = recorded(registry, spec, isolated)
    state = file.with_name("state.pt")
    state.write_bytes(b"state")
    run = registry.get(run_id)
    assert registry.artifact_file(run, f"{run_id}/state.pt") == state.resolve()
    with pytest.raises(ArtifactError, match="leads outside"):
        registry.artifact_file(run, f"{run_id}/../../state.pt")
