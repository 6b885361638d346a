"""Where a registry is and how archlab connects to it: URLs, engines, SQLite's pragmas and WAL
mode, the transaction every read and write of the store goes through, and retries.

``locate`` chooses the registry as archlab's commands do; ``connect_engine`` makes its engine;
``Database.transaction`` is the one way to open a transaction (an ORM session and its connection,
for prepared statements alike), and ``retry`` repeats a write the database refused for a moment.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session

from archlab.errors import UserInputError
from archlab.metrics import Direction

T = TypeVar("T")


class RegistryError(UserInputError):
    """A registry problem a user can fix: bad URL, unreachable database, unknown run id."""


def check_text(value: str, what: str) -> None:
    """Refuse text no backend can store alike: PostgreSQL refuses NUL characters, and a lone
    surrogate is not UTF-8 at all (``what`` names the text in the message)."""
    from archlab.registry.query.literals import storable

    if not storable(value):
        raise RegistryError(
            f"{what} contains a NUL character or a lone surrogate, which a registry cannot store: "
            f"{value!r}; remove it"
        )


def storable_error(error: str | None) -> str | None:
    """An error text as a registry can store it (NUL and lone surrogates escaped)."""
    if error is None:
        return None
    return error.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


REGISTRY_FOLDER = ".archlab"  # a project's registry: REGISTRY_FOLDER/registry.db
REGISTRY_FILE = "registry.db"


def user_data_dir() -> Path:
    """archlab's user-level folder: ``$XDG_DATA_HOME/archlab``, else ``~/.local/share/archlab``."""
    base = os.environ.get("XDG_DATA_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "archlab"


@dataclass(frozen=True)
class Location:
    """Where a registry is (``url``), how it was chosen (``source``) and whether it exists yet
    (``exists``: None for a server database, which only opening can tell)."""

    url: str
    source: str
    exists: bool | None

    def describe(self) -> str:
        """The URL (password hidden) and how it was chosen, for messages."""
        return f"{make_url(self.url).render_as_string(hide_password=True)} ({self.source})"


def locate(
    url: str | None = None, *, create: bool = False, cwd: str | Path | None = None
) -> Location:
    """The registry to open, chosen as archlab's commands choose it:

    1. ``url`` (a database URL, or a plain path meaning a SQLite file), else ``$ARCHLAB_REGISTRY``;
    2. else ``.archlab/registry.db`` in the nearest folder, from ``cwd`` (default: the current
       directory) upwards, that has an ``.archlab/`` folder, as git finds its repository;
    3. else the user-level registry, ``$XDG_DATA_HOME/archlab/registry.db`` (by default
       ``~/.local/share/archlab/registry.db``).

    With ``create`` (commands that record runs) a registry file found by 2. or 3. may be created,
    with its folder for 3.; a file named by 1. may be created in an existing folder. Without it
    (commands that only read) nothing is created: a SQLite file that does not exist raises
    ``RegistryError`` naming the file and how it was chosen.
    """
    start = Path(cwd) if cwd is not None else Path.cwd()
    chosen, source = url, "given"
    if not chosen and os.environ.get("ARCHLAB_REGISTRY"):
        chosen, source = os.environ["ARCHLAB_REGISTRY"], "from $ARCHLAB_REGISTRY"
    if chosen:
        if "://" not in chosen:  # a plain path means a SQLite file
            chosen = f"sqlite:///{(start / chosen).absolute()}"
        where = Location(chosen, source, None)
        try:
            path = sqlite_path(chosen)
        except (ArgumentError, ValueError):  # not a URL: opening says so
            return where
        if path is None:
            return Location(chosen, source, None if is_server(chosen) else True)
        if not path.is_absolute():
            path = (start / path).absolute()
            where = Location(f"sqlite:///{path}", source, None)
        exists = path.is_file()
        if not exists and not create:
            raise RegistryError(
                f"no registry at {where.describe()}: the file {path} does not exist. A command "
                "that records runs (arch train, arch bench) creates it; check the path"
            )
        return Location(where.url, source, exists)
    for folder in (start.absolute(), *start.absolute().parents):
        if (folder / REGISTRY_FOLDER).is_dir():
            path = folder / REGISTRY_FOLDER / REGISTRY_FILE
            source = f"found in {folder / REGISTRY_FOLDER}, walking up from {start.absolute()}"
            break
    else:
        path = user_data_dir() / REGISTRY_FILE
        source = (
            f"the user-level registry: no {REGISTRY_FOLDER}/ folder in {start.absolute()} or above"
        )
    where = Location(f"sqlite:///{path}", source, path.is_file())
    if not where.exists:
        if not create:
            raise RegistryError(
                f"no registry at {where.describe()}. Commands that record runs (arch train, "
                f"arch bench) create it; give --registry URL or set $ARCHLAB_REGISTRY to read "
                f"another one, or create a {REGISTRY_FOLDER}/ folder to keep a project's runs in it"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(
                f"cannot create the registry at {where.describe()}: {exc}"
            ) from None
    return where


def is_server(url: str) -> bool:
    try:
        return make_url(url).get_backend_name() != "sqlite"
    except (ArgumentError, ValueError):
        return True


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def connect_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise RegistryError(
            f"not a database URL: {url!r}; use sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, the maintained driver
    path = sqlite_path(url)
    if path is not None and not path.parent.is_dir():
        raise RegistryError(
            f"the folder of the registry file {path} does not exist; create it first"
        )
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": 30.0}
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        hint = " (pip install 'archlab[postgres]')" if backend == "postgresql" else ""
        raise RegistryError(f"no driver for {parsed.drivername}{hint}: {exc}") from None
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN itself
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    _wal_mode(cursor)  # readers never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _wal_mode(cursor: Any, patience: float = 30.0) -> None:
    """Put the database in WAL mode (it stays so: later connections find it set).

    The switch needs the database to itself and, unlike other statements, fails at once with
    "database is locked" instead of waiting for the busy timeout; several processes opening a
    brand-new registry together race for it. So: nothing to do when it is set, else retry with
    jitter for up to ``patience`` seconds."""
    import sqlite3

    deadline = time.monotonic() + patience
    delay = 0.005
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            transient = any(word in str(exc).lower() for word in ("locked", "busy"))
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.25)


def _sqlite_begin(conn: Connection) -> None:
    # A write transaction takes the write lock up front (IMMEDIATE), so a busy database waits
    # (busy_timeout) instead of failing half-way with "database is locked"; reads stay deferred
    # and, under WAL, never wait for a writer.
    write = conn.get_execution_options().get("archlab_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# Transient failures worth retrying: SQLite's "database is locked" / "busy", PostgreSQL's deadlock
# and serialization failures (both roll the whole transaction back, so a retry is safe).
_TRANSIENT = ("locked", "busy", "deadlock detected", "could not serialize")


def retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """Run a write, retrying with jittered backoff when the database is momentarily locked."""
    delay = 0.05
    for attempt in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            message = str(exc).lower()
            if not any(word in message for word in _TRANSIENT) or attempt == attempts - 1:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------- transactions


class Tx:
    """One transaction: its connection (for prepared statements and Core), an ORM session on that
    same connection, made when first asked for, and what a write learnt (metric keys, stored
    specs, CV groups), for the registry to cache once it commits."""

    __slots__ = ("_session", "conn", "groups", "keys", "specs")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._session: Session | None = None
        self.keys: dict[str, tuple[int, Direction]] = {}
        self.specs: set[str] = set()
        self.groups: dict[str, tuple[int, str, int]] = {}

    @property
    def session(self) -> Session:
        """An ORM session inside this transaction (it never commits: the transaction does)."""
        if self._session is None:
            self._session = Session(bind=self.conn, expire_on_commit=False)
        return self._session


class Database:
    """A registry's engine and the one way to open a transaction on it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._write_engine = engine.execution_options(archlab_write=True)

    @contextlib.contextmanager
    def transaction(self, write: bool = False) -> Iterator[Tx]:
        """One transaction: committed on success, rolled back on any error. A write transaction
        takes SQLite's write lock up front (see ``_sqlite_begin``); reads never wait for one.
        The hot paths use only ``tx.conn``: a session costs its set-up only where it is used."""
        with (self._write_engine if write else self.engine).begin() as conn:
            tx = Tx(conn)
            try:
                yield tx
                if tx._session is not None:
                    tx._session.flush()
            finally:
                if tx._session is not None:
                    tx._session.close()
