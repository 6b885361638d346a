"""The registry's schema: the revisions this archlab knows, checks of what a database holds, and
``migrate``, which creates or upgrades the schema once even when several processes open a registry
together (a file lock beside a SQLite file, an advisory lock on PostgreSQL). The migrations
themselves are alembic scripts under ``migrations/``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from archlab._version import __version__
from archlab.registry.engine import Location, RegistryError, sqlite_path
from archlab.registry.models import Base

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK = 0x61726368  # "arch": the advisory lock id serialising migrations on PostgreSQL


def known_revisions() -> set[str]:
    return {p.stem.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*.py")}


def head_revision() -> str:
    return max(known_revisions())


def _check_known(revision: str | None, engine: Engine) -> None:
    """A schema revision this archlab does not ship was written by a newer archlab: refuse it
    clearly (alembic would fail with "Can't locate revision") rather than touch the data."""
    if revision is not None and revision not in known_revisions():
        where = engine.url.render_as_string(hide_password=True)
        raise RegistryError(
            f"the registry at {where} has schema revision {revision!r}, which this archlab "
            f"({__version__}) does not know (newest known: {head_revision()}); it was "
            "probably written by a newer archlab: upgrade archlab to open it"
        )


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:
            return None


def has_schema(engine: Engine) -> bool:
    """Whether the database holds an archlab registry (any revision)."""
    with engine.connect() as conn:
        return inspect(conn).has_table("alembic_version")


def check_tables(engine: Engine, where: Location) -> None:
    """Every table of the schema is there: a registry missing one (dropped by hand, a partial
    copy) is refused by name rather than failing later with the database's raw error."""
    with engine.connect() as conn:
        present = set(inspect(conn).get_table_names())
    missing = [name for name in Base.metadata.tables if name not in present]
    if missing:
        raise RegistryError(
            f"the registry at {where.describe()} lacks the table(s) {', '.join(missing)}: it is "
            "damaged (a table dropped, or a partial copy). Restore it from a backup, or point "
            "--registry at another registry; archlab does not open it as it is"
        )


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest migration, once even under concurrent opens."""
    current = current_revision(engine)
    if current == head_revision():
        return
    _check_known(current, engine)
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # BEGIN IMMEDIATE on SQLite: the migration holds the write lock from its first statement. A
    # deferred transaction that reads and then writes fails at once with "database is locked"
    # (no busy wait) when another connection wrote in between, as a brand-new file's first
    # connections do when they set WAL mode.
    with migration_lock(engine), engine.execution_options(archlab_write=True).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
        # another process may have migrated while this one waited for the lock
        with contextlib.suppress(DBAPIError), conn.begin_nested():
            _check_known(
                conn.execute(text("SELECT version_num FROM alembic_version")).scalar(), engine
            )
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


@contextlib.contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """A file lock beside a SQLite registry (PostgreSQL uses an advisory lock instead)."""
    path = sqlite_path(str(engine.url))
    if path is None:
        yield
        return
    import fcntl

    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
