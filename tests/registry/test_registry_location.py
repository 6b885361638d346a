"""``archlab.registry.engine`` and opening a ``Registry``: where the registry lives (the user-level
default, the nearest ``.archlab`` folder, ``ARCHLAB_REGISTRY``), which URLs and files open, and
the damaged or full registries refused. Tests taking ``registry`` run on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from archlab.registry import Registry, RegistryError, locate
from archlab.registry import migrate as migrate_module

Doc = dict[str, Any]


def test_default_location_is_the_user_level_registry(isolated: Path) -> None:
    """No ``.archlab/`` folder here or above: a writer opens (and creates) the user-level
    registry, never a folder in the current directory, and its artifacts live beside it."""
    if any((folder / ".archlab").is_dir() for folder in (isolated, *isolated.parents)):
        pytest.skip("an .archlab/ folder above the test folder would be found first")
    user = Path(os.environ["XDG_DATA_HOME"]) / "archlab"
    with Registry() as reg:
        assert reg.url == f"sqlite:///{user / 'registry.db'}"
        assert "user-level" in reg.location.describe()
        assert (user / "registry.db").is_file()
        assert reg.artifacts == user / "artifacts"
    assert not (isolated / ".archlab").exists()


def test_the_nearest_archlab_folder_is_found_walking_up(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, spec: Doc
) -> None:
    (isolated / "project" / ".archlab").mkdir(parents=True)
    deep = isolated / "project" / "src" / "models"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    with Registry() as reg:
        assert reg.url == f"sqlite:///{isolated / 'project' / '.archlab' / 'registry.db'}"
        assert f"found in {isolated / 'project' / '.archlab'}" in reg.location.describe()
        with reg.start_run(spec) as run:
            pass
    monkeypatch.chdir(isolated / "project")  # the same registry from anywhere in the project
    with Registry(create=False) as reg:
        assert [r.id for r in reg.runs()] == [run.id]
    # an explicit URL or $ARCHLAB_REGISTRY wins over the walk
    assert (
        locate(str(isolated / "other.db"), create=True).url == f"sqlite:///{isolated / 'other.db'}"
    )


def test_reading_creates_no_registry(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``create=False`` (the read-only commands): a missing registry is named, not created."""
    before = sorted(isolated.rglob("*"))
    with pytest.raises(RegistryError, match=r"no registry at sqlite:///.*user-level"):
        Registry(create=False)
    with pytest.raises(RegistryError, match=r"typo\.db \(given\).*does not exist"):
        Registry("typo.db", create=False)
    with pytest.raises(RegistryError, match=r"from \$ARCHLAB_REGISTRY"):
        monkeypatch.setenv("ARCHLAB_REGISTRY", f"sqlite:///{isolated / 'env.db'}")
        Registry(create=False)
    monkeypatch.delenv("ARCHLAB_REGISTRY")
    (isolated / ".archlab").mkdir()  # a project folder whose registry no run created yet
    with pytest.raises(RegistryError, match=r"no registry at .*found in"):
        Registry(create=False)
    assert sorted(isolated.rglob("*")) == [*before, isolated / ".archlab"]
    assert not (Path(os.environ["XDG_DATA_HOME"]) / "archlab").exists()


def test_an_empty_database_is_no_registry_to_read(registry_url: str) -> None:
    """A database without archlab's tables (an empty PostgreSQL database, a 0-byte file) is not
    a registry to a reader: it is refused, and nothing is created in it."""
    if registry_url.startswith("sqlite:"):
        Path(registry_url.removeprefix("sqlite:///")).touch()
    with pytest.raises(RegistryError, match="has no archlab tables"):
        Registry(registry_url, create=False)
    with Registry(registry_url):
        pass  # a writer creates the tables


def test_archlab_registry_variable_is_the_default(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHLAB_REGISTRY", f"sqlite:///{isolated / 'from-env.db'}")
    with Registry() as reg:
        assert reg.url.endswith("from-env.db")
    assert (isolated / "from-env.db").is_file()
    assert not (isolated / ".archlab").exists()
    monkeypatch.setenv("ARCHLAB_REGISTRY", str(isolated / "plain-path.db"))  # a bare path: SQLite
    with Registry():
        pass
    assert (isolated / "plain-path.db").is_file()
    with Registry(f"sqlite:///{isolated / 'argument.db'}") as reg:  # the argument wins
        assert reg.url.endswith("argument.db")


def test_explicit_sqlite_file_is_created_but_not_its_folder(isolated: Path) -> None:
    with Registry(f"sqlite:///{isolated / 'new.db'}"):
        pass
    assert (isolated / "new.db").is_file()
    missing = isolated / "no" / "such" / "folder" / "reg.db"
    with pytest.raises(RegistryError, match=r"folder .* does not exist"):
        Registry(f"sqlite:///{missing}")
    assert not (isolated / "no").exists()


def test_unreachable_postgresql_is_a_registry_error() -> None:
    with pytest.raises(RegistryError, match="cannot open the registry at postgresql"):
        Registry("postgresql://postgres@127.0.0.1:1/test")


def test_bad_url_and_non_database_file_are_registry_errors(isolated: Path) -> None:
    with pytest.raises(RegistryError, match="not a database URL"):
        Registry("sqlite+://::nonsense")
    junk = isolated / "junk.db"
    junk.write_bytes(b"this is not a database" * 200)
    with pytest.raises(RegistryError, match="not a database"):
        Registry(f"sqlite:///{junk}")


def test_a_registry_missing_a_table_is_refused_by_name(
    registry_url: str, raw_engine: Engine
) -> None:
    Registry(registry_url).close()
    with raw_engine.begin() as conn:
        conn.execute(text("DROP TABLE cv_aggregates"))
    with pytest.raises(RegistryError, match=r"lacks the table\(s\) cv_aggregates.*backup"):
        Registry(registry_url)


def test_a_full_disk_at_open_is_a_registry_error(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while creating the lock file beside a new SQLite registry: a RegistryError (exit 2)
    with the system's message, not a raw OSError."""
    import errno

    def full(path: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(migrate_module, "open", full, raising=False)
    with pytest.raises(RegistryError, match=r"cannot open the registry at .*No space left"):
        Registry(f"sqlite:///{isolated / 'r.db'}")
