"""``archlab.registry.artifacts`` alone, with no database: run folders, recording a file
(copy, containment, sha256), checking one before use, and deleting only inside the root."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from archlab.registry import ArtifactError, RegistryError
from archlab.registry.artifacts import (
    checked_file,
    delete_files,
    run_file,
    run_folder,
    run_folders,
    store_file,
)
from archlab.registry.records import Artifact, Run


def a_run(run_id: str, artifacts: list[Artifact]) -> Run:
    return Run(run_id, "train", "completed", None, "0" * 64, None, None, {}, 0.0, 1.0, 1.0,
               artifacts=artifacts)  # fmt: skip


def test_a_run_folder_and_file_lie_under_the_root(tmp_path: Path) -> None:
    assert run_folder(tmp_path, "abcd1234") == tmp_path / "abcd1234"
    assert run_file(tmp_path, "abcd1234", "state.pt") == tmp_path / "abcd1234" / "state.pt"
    assert not (tmp_path / "abcd1234").exists()  # nothing is created by asking


@pytest.mark.parametrize("run_id", ["..", "../x", "a/b", "", "ABCD1234"])
def test_a_run_folder_needs_a_run_id(tmp_path: Path, run_id: str) -> None:
    with pytest.raises(RegistryError, match="not a run id"):
        run_folder(tmp_path, run_id)


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../state.pt"])
def test_a_run_file_is_a_plain_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(RegistryError, match="plain file name"):
        run_file(tmp_path, "abcd1234", name)


def test_a_file_outside_the_root_is_copied_into_the_run_folder(tmp_path: Path) -> None:
    root, source = tmp_path / "root", tmp_path / "best.pt"
    root.mkdir()
    data = os.urandom(5000)
    source.write_bytes(data)
    record = store_file(root, "abcd1234", source, "checkpoint", copy=False)
    assert record == Artifact(
        "abcd1234/best.pt", "checkpoint", 5000, hashlib.sha256(data).hexdigest()
    )
    assert (root / "abcd1234" / "best.pt").read_bytes() == data
    assert source.exists()  # copied, not moved


def test_a_file_inside_the_root_is_recorded_where_it_is(tmp_path: Path) -> None:
    inside = tmp_path / "shared" / "x.bin"
    inside.parent.mkdir()
    inside.write_bytes(b"x")
    assert store_file(tmp_path, "abcd1234", inside, "file", copy=False).path == "shared/x.bin"
    assert not (tmp_path / "abcd1234").exists()
    assert store_file(tmp_path, "abcd1234", inside, "file", copy=True).path == "abcd1234/x.bin"


def test_recording_refuses_a_missing_file_and_a_bad_kind(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no such artifact file"):
        store_file(tmp_path, "abcd1234", tmp_path / "nope", "file", copy=False)
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(RegistryError, match="1 to 32 characters"):
        store_file(tmp_path, "abcd1234", tmp_path / "f", "k" * 33, copy=False)


def test_a_run_folder_linked_outside_the_root_is_refused(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "abcd1234").symlink_to(elsewhere)
    (tmp_path / "f").write_bytes(b"data")
    with pytest.raises(RegistryError, match="leads outside"):
        store_file(root, "abcd1234", tmp_path / "f", "file", copy=True)
    assert list(elsewhere.iterdir()) == []


def test_a_checked_file_is_inside_and_unchanged(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    record = store_file(tmp_path / "root", "abcd1234", tmp_path / "f", "file", copy=False)
    run = a_run("abcd1234", [record])
    file = tmp_path / "root" / record.path
    assert checked_file(tmp_path / "root", run, record.path) == file.resolve()
    file.write_bytes(b"dat!")
    with pytest.raises(ArtifactError, match="changed since it was recorded"):
        checked_file(tmp_path / "root", run, record.path)
    with pytest.raises(ArtifactError, match="leads outside the artifact folder"):
        checked_file(tmp_path / "root", run, "../f")
    with pytest.raises(ArtifactError, match="is missing"):
        checked_file(tmp_path / "root", run, "abcd1234/nope")


def test_deleting_stays_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "abcd1234").mkdir(parents=True)
    (root / "abcd1234" / "a.pt").write_bytes(b"a")
    (root / "loose.bin").write_bytes(b"b")
    outside = tmp_path / "keep"
    outside.write_bytes(b"c")
    (root / "link").symlink_to(outside)
    removed = delete_files(root, ["abcd1234", "loose.bin", "link", "../keep", ".", "gone"])
    assert removed == [root.resolve() / "abcd1234", root.resolve() / "loose.bin"]
    assert outside.exists() and (root / "link").is_symlink()


def test_run_folders_are_folders_named_like_run_ids(tmp_path: Path) -> None:
    assert run_folders(tmp_path / "absent") == {}
    (tmp_path / "abcd1234").mkdir()
    (tmp_path / "Not-A-Run").mkdir()
    (tmp_path / "efgh5678").write_bytes(b"")
    (tmp_path / "jkmn9012").symlink_to(tmp_path / "abcd1234")
    assert run_folders(tmp_path) == {"abcd1234": tmp_path / "abcd1234"}
