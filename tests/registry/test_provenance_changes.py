"""What a run keeps of where it ran besides ``provenance()``'s git state: the installed packages
and the working tree's uncommitted changes (``working_tree_diff``), bounded in size."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

from archlab.registry.provenance import installed_packages, working_tree_diff


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   cwd=repo, capture_output=True, check=True)  # fmt: skip


def test_installed_packages_are_name_version_pairs_sorted_by_name() -> None:
    found = installed_packages()
    assert f"torch=={metadata.version('torch')}" in found
    names = [p.split("==")[0].lower() for p in found]
    assert names == sorted(names) and len(set(names)) == len(names)


def test_uncommitted_changes_with_untracked_names_and_a_bound(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    git(repo, "add", "a.py")
    git(repo, "commit", "-q", "-m", "one")
    assert working_tree_diff(str(repo)) is None  # a clean tree
    assert working_tree_diff(str(tmp_path)) is None  # no git tree
    (repo / "a.py").write_text("x = 2\n" * 100)
    (repo / "new.txt").write_text("secret\n")
    text = working_tree_diff(str(repo))
    assert text is not None and "-x = 1\n+x = 2\n" in text
    assert "#   new.txt\n" in text and "secret" not in text  # names, not contents
    cut = working_tree_diff(str(repo), limit=200)
    assert cut is not None and cut.startswith(text[:150])
    total = len(text.encode())
    assert cut.endswith(f"# archlab: truncated: the first 200 of {total} bytes of the "
                        "uncommitted changes are kept\n")  # fmt: skip
