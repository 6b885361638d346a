"""The registry store: all SQL lives here (and in ``query.py``); callers get plain records.

``Registry(url)`` opens (and creates or migrates) a registry; ``start_run`` returns a
``RunHandle`` that buffers metrics, writes them in batches with a background heartbeat, and
records how the run ended. Reads (``runs``, ``get``, ``compare``, ``diff``, ``best``) never scan
metric series: final and best values live in per-run summaries kept current on every write, and
CV aggregates in per-group rows updated when a fold ends.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import hashlib
import json
import math
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Engine,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from archlab._version import __version__, versions
from archlab.errors import UserInputError
from archlab.files import replace_atomically
from archlab.jsonpolicy import jsonable
from archlab.metrics import Direction, checked_direction, default_direction
from archlab.registry.models import (
    AggregateRow,
    ArtifactRow,
    Base,
    CVGroupRow,
    MetricKeyRow,
    MetricRow,
    MixupRow,
    RunRow,
    SettingRow,
    SpecRow,
    SummaryRow,
    TagRow,
)
from archlab.registry.prepared import Statements, json_text, json_value, upsert
from archlab.registry.records import (
    Aggregate,
    Artifact,
    Change,
    CVGroup,
    CVInfo,
    MetricSummary,
    MixupSetting,
    Ranked,
    Run,
)

KINDS = ("train", "eval", "bench")
STATUSES = ("running", "completed", "failed", "interrupted")
HEARTBEAT_S = 2.0  # background heartbeat and metric flush period (the issue asks for <= 5 s)
DEFAULT_GRACE_S = 300.0  # a running run silent this long is stale
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford-style: no i, l, o, u
_RUN_ID = re.compile(r"[0-9a-z]{4,16}")  # what a run or CV group id looks like

T = TypeVar("T")


class RegistryError(UserInputError):
    """A registry problem a user can fix: bad URL, unreachable database, unknown run id."""


class ArtifactError(RegistryError):
    """An artifact file that cannot be used: outside the artifact folder, missing, or changed
    since its run recorded it."""


def indices_sha256(indices: Iterable[int]) -> str:
    """SHA-256 of the sorted indices as little-endian int64: a split's fingerprint."""
    values = array("q", sorted(int(i) for i in indices))
    if sys.byteorder != "little":
        values.byteswap()
    return hashlib.sha256(values.tobytes()).hexdigest()


def new_id(length: int = 8) -> str:
    """A short, typeable, unique-enough id (40 bits)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


# --------------------------------------------------------------------------------- connecting


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
            path = _sqlite_path(chosen)
        except (ArgumentError, ValueError):  # not a URL: opening says so
            return where
        if path is None:
            return Location(chosen, source, None if _is_server(chosen) else True)
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


def _is_server(url: str) -> bool:
    try:
        return make_url(url).get_backend_name() != "sqlite"
    except (ArgumentError, ValueError):
        return True


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _connect_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise RegistryError(
            f"not a database URL: {url!r}; use sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, the maintained driver
    path = _sqlite_path(url)
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


def _retry(fn: Callable[[], T], attempts: int = 8) -> T:
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


# -------------------------------------------------------------------------------- migrations

_MIGRATIONS = Path(__file__).parent / "migrations"
ARTIFACT_ROOT = "artifact_root"  # the settings key of a server registry's artifact folder
_PG_LOCK = 0x61726368  # "arch": the advisory lock id serialising migrations on PostgreSQL


def _known_revisions() -> set[str]:
    return {p.stem.split("_", 1)[0] for p in (_MIGRATIONS / "versions").glob("[0-9]*.py")}


def _head_revision() -> str:
    return max(_known_revisions())


def _check_known(revision: str | None, engine: Engine) -> None:
    """A schema revision this archlab does not ship was written by a newer archlab: refuse it
    clearly (alembic would fail with "Can't locate revision") rather than touch the data."""
    if revision is not None and revision not in _known_revisions():
        where = engine.url.render_as_string(hide_password=True)
        raise RegistryError(
            f"the registry at {where} has schema revision {revision!r}, which this archlab "
            f"({__version__}) does not know (newest known: {_head_revision()}); it was "
            "probably written by a newer archlab: upgrade archlab to open it"
        )


def _current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:
            return None


def _has_schema(engine: Engine) -> bool:
    """Whether the database holds an archlab registry (any revision)."""
    with engine.connect() as conn:
        return inspect(conn).has_table("alembic_version")


def _check_tables(engine: Engine, where: Location) -> None:
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
    current = _current_revision(engine)
    if current == _head_revision():
        return
    _check_known(current, engine)
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    # BEGIN IMMEDIATE on SQLite: the migration holds the write lock from its first statement. A
    # deferred transaction that reads and then writes fails at once with "database is locked"
    # (no busy wait) when another connection wrote in between, as a brand-new file's first
    # connections do when they set WAL mode.
    with _migration_lock(engine), engine.execution_options(archlab_write=True).begin() as conn:
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
def _migration_lock(engine: Engine) -> Iterator[None]:
    """A file lock beside a SQLite registry (PostgreSQL uses an advisory lock instead)."""
    path = _sqlite_path(str(engine.url))
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


# -------------------------------------------------------------------------------- provenance


def provenance() -> dict[str, Any]:
    """Where and how a run was started: git state, host, user, pid, command, versions."""
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "user": _user(),
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "versions": versions(),
        "git": _git_state_of(os.getcwd()),
    }
    return info


@functools.lru_cache(maxsize=1)
def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


GIT_STATE_TTL_S = 5.0
_git_states: dict[str, tuple[float, dict[str, Any] | None]] = {}


def _git_state_of(cwd: str) -> dict[str, Any] | None:
    """The git state of ``cwd``, reused for a few seconds: a burst of runs (a CV loop, a
    benchmark) runs git once, while a run started after a commit or an edit records it."""
    now = time.monotonic()
    cached = _git_states.get(cwd)
    if cached is not None and now - cached[0] < GIT_STATE_TTL_S:
        return cached[1]
    state = _git_state()
    _git_states[cwd] = (now, state)
    return state


def _git_state() -> dict[str, Any] | None:
    if shutil.which("git") is None:
        return None

    def git(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["git", *args], capture_output=True, timeout=10, check=False)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return None
    diff = git("diff", "HEAD")
    status = git("status", "--porcelain")
    return {
        "commit": head.stdout.decode().strip(),
        "dirty": bool(status.stdout.strip()),
        "diff_sha256": hashlib.sha256(diff.stdout).hexdigest() if diff.stdout else None,
    }


def _owner() -> tuple[str, int]:
    """This process's host and pid, as a run started or resumed here records them."""
    return _hostname(), os.getpid()


@functools.lru_cache(maxsize=1)
def _hostname() -> str:
    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------- registry


class Registry:
    """The experiment registry at ``url`` (chosen by ``locate``), with its artifact folder.

    Opening creates or migrates the schema and marks as interrupted the runs that can no longer be
    running: those whose process is gone on this host, and those silent for the grace period.
    With ``create=False`` (commands that only read) a registry that does not exist yet is not
    created: ``RegistryError`` says which registry was looked for.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        artifacts: str | os.PathLike[str] | None = None,
        grace: float | None = DEFAULT_GRACE_S,
        create: bool = True,
    ) -> None:
        self.location = locate(url, create=create)
        self.url = self.location.url
        self.engine = _connect_engine(self.url)
        try:
            if not create and not _has_schema(self.engine):
                raise RegistryError(
                    f"no registry at {self.location.describe()}: the database has no archlab "
                    "tables. A command that records runs (arch train, arch bench) creates them"
                )
            migrate(self.engine)
            _check_tables(self.engine, self.location)
        except RegistryError:
            self.engine.dispose()
            raise
        except DBAPIError as exc:  # unreachable server, missing database, not a database file
            self.engine.dispose()
            raise RegistryError(
                f"cannot open the registry at {self._safe_url()}: {exc.orig}"
            ) from None
        except OSError as exc:  # the lock file beside a SQLite registry: a full disk, no rights
            self.engine.dispose()
            raise RegistryError(
                f"cannot open the registry at {self.location.describe()}: {exc}; free some "
                "space or fix the folder's permissions"
            ) from None
        except Exception as exc:  # alembic refusing the schema it found
            self.engine.dispose()
            if type(exc).__module__.split(".")[0] != "alembic":
                raise
            raise RegistryError(
                f"cannot migrate the registry at {self._safe_url()}: {exc}"
            ) from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            self.engine.execution_options(archlab_write=True), expire_on_commit=False
        )
        self._write_engine = self.engine.execution_options(archlab_write=True)
        self._sql = Statements(self.engine.dialect)
        self.artifacts = (
            Path(artifacts).absolute() if artifacts is not None else self._artifact_root(create)
        )
        # What committed transactions established, so the write path need not ask again: metric
        # keys (id, direction), the hashes of stored specs (and the hash and name of each spec object seen),
        # and CV groups (pk, spec hash, number of folds). Keys, specs and groups are never deleted.
        self._keys: dict[str, tuple[int, Direction]] = {}
        self._spec_hashes: dict[int, tuple[Any, str, str | None]] = {}
        self._stored_specs: set[str] = set()
        self._groups: dict[str, tuple[int, str, int]] = {}
        self._heart = _Heartbeat()
        if grace is not None:  # None: leave stale runs to an explicit mark_stale (arch runs gc)
            self.mark_stale(grace)

    def _safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def _artifact_root(self, create: bool) -> Path:
        """Where this registry's artifacts live, whatever the current directory: beside a SQLite
        file; for a server database, the root the registry records (``settings.artifact_root``),
        recorded by the first opening that may write: ``$ARCHLAB_ARTIFACTS`` then, else
        ``<user data folder>/artifacts/<host>-<database>``."""
        path = _sqlite_path(self.url)
        if path is not None:
            return path.absolute().parent / "artifacts"
        configured = os.environ.get("ARCHLAB_ARTIFACTS")
        if not _is_server(self.url):  # an in-memory SQLite database
            return Path(configured).absolute() if configured else user_data_dir() / "artifacts"
        with self.session() as session:
            recorded = session.get(SettingRow, ARTIFACT_ROOT)
            if recorded is not None:
                return Path(recorded.value)
        parsed = make_url(self.url)
        default = (
            Path(configured).absolute()
            if configured
            else user_data_dir() / "artifacts" / f"{parsed.host or 'local'}-{parsed.database}"
        )
        if not create:
            return default

        def write(session: Session) -> str:
            session.execute(
                upsert(session.bind.dialect, SettingRow)  # type: ignore[union-attr]
                .values(key=ARTIFACT_ROOT, value=str(default))
                .on_conflict_do_nothing()
            )
            return str(session.get(SettingRow, ARTIFACT_ROOT).value)  # type: ignore[union-attr]

        return Path(self._write(write))

    def close(self) -> None:
        self._heart.close()
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    def _write(self, fn: Callable[[Session], T]) -> T:
        """One ORM write transaction (the rarer writes: tags, artifacts, removals), retried when
        the database is momentarily locked."""

        def attempt() -> T:
            with self._write_sessions() as session, session.begin():
                return fn(session)

        return _retry(attempt)

    def _transaction(self, fn: Callable[[_Tx], T]) -> T:
        """One write transaction on a plain connection (the hot paths, with ``Statements``),
        retried when the database is momentarily locked. What it learnt (key ids, specs, groups)
        enters the registry's caches only once it has committed: a rolled-back insert must not
        leave a dangling id behind."""

        def attempt() -> T:
            with self._write_engine.begin() as conn:
                tx = _Tx(conn)
                result = fn(tx)
            self._keys.update(tx.keys)
            self._stored_specs.update(tx.specs)
            self._groups.update(tx.groups)
            return result

        return _retry(attempt)

    # -- specs, CV groups and runs ----------------------------------------------------------------

    def _spec_hash(self, tx: _Tx, spec: Any) -> str:
        """Store ``spec`` unless a spec with its hash is stored; return the hash."""
        return self._spec_ref(tx, spec)[0]

    def _spec_ref(self, tx: _Tx, spec: Any) -> tuple[str, str | None]:
        """Store ``spec`` unless a spec with its hash is stored; return its hash and name."""
        from archlab.specs import canonical_form, canonical_json, load_spec, spec_hash

        cached = self._spec_hashes.get(id(spec))
        if cached is not None and cached[0] is spec and cached[1] in self._stored_specs:
            return cached[1], cached[2]
        loaded = load_spec(spec)
        if loaded.name is not None:
            check_text(loaded.name, "a spec name")
        digest = spec_hash(loaded)
        if not isinstance(spec, str | os.PathLike | Mapping):
            # a Spec is immutable; the reference kept here keeps its id from being reused
            self._spec_hashes[id(spec)] = (spec, digest, loaded.name)
        if digest in self._stored_specs:
            return digest, loaded.name
        conn = tx.conn
        if conn.scalar(select(SpecRow.hash).where(SpecRow.hash == digest)) is None:
            # ON CONFLICT DO NOTHING: two PostgreSQL writers may insert the same new spec at once
            # (SQLite's IMMEDIATE transactions serialise them anyway)
            conn.execute(
                upsert(conn.dialect, SpecRow)
                .values(
                    hash=digest,
                    name=loaded.name,
                    version=loaded.version,
                    canonical=canonical_json(canonical_form(loaded)),
                    created=time.time(),
                )
                .on_conflict_do_nothing()
            )
        tx.specs.add(digest)
        return digest, loaded.name

    def start_cv(
        self,
        spec: Any,
        config: Mapping[str, Any] | None = None,
        *,
        k: int,
        splitter: str = "KFold",
        seed: int | None = None,
        shuffle: bool = True,
        stratified: bool = False,
        grouped: bool = False,
        repeats: int = 1,
        library: str | None = None,
    ) -> CVGroup:
        """Create a cross-validation group; its folds are runs started with ``cv_group=``."""
        if k < 2:
            raise RegistryError(f"a CV group needs k >= 2 folds, not {k}")
        if repeats < 1:
            raise RegistryError(f"a CV group is split at least once, not repeats={repeats}")
        settings = _json_object(config)

        def write(tx: _Tx) -> CVGroup:
            digest = self._spec_hash(tx, spec)
            group_id = new_id()
            values = (group_id, digest, k, splitter, shuffle, seed, stratified, grouped, repeats,
                      library, json_text(settings), time.time())  # fmt: skip
            pk = self._sql.insert_group.insert(tx.conn, values)
            tx.groups[group_id] = (pk, digest, k * repeats)
            return CVGroup(group_id, digest, k, splitter, shuffle, seed, stratified, grouped,
                           repeats, library, settings, [], {})  # fmt: skip

        return self._transaction(write)

    def start_run(
        self,
        spec: Any,
        config: Mapping[str, Any] | None = None,
        *,
        kind: str = "train",
        cv_group: str | CVGroup | None = None,
        fold: int | None = None,
        train_indices: Sequence[int] | None = None,
        val_indices: Sequence[int] | None = None,
        mixup: MixupSetting | Mapping[str, Any] | Any | None = None,
        tags: Mapping[str, Any] | None = None,
        heartbeat: float = HEARTBEAT_S,
        started: float | None = None,
    ) -> RunHandle:
        """Record a new running run and return its handle (a context manager).

        ``cv_group`` and ``fold`` (0-based) place a fold run in its CV group; ``train_indices`` and
        ``val_indices`` are fingerprinted (sizes and SHA-256). ``mixup`` takes a dict or an object
        with ``MixupSetting``'s field names; an inactive setting records no mixup. ``started``:
        when the work the run records began (Unix time; default now), for a measurement recorded
        once it is done. A fold index joins its group once: a fold already completed is refused.
        """
        if kind not in KINDS:
            raise RegistryError(f"unknown run kind {kind!r}; choose one of {', '.join(KINDS)}")
        if not float(heartbeat) > 0:
            raise RegistryError(f"the heartbeat period must be > 0 seconds, not {heartbeat!r}")
        try:
            setting = MixupSetting.from_any(mixup) if mixup is not None else None
        except ValueError as exc:
            raise RegistryError(str(exc)) from None
        _check_tags(tags or {})
        group_id = cv_group.id if isinstance(cv_group, CVGroup) else cv_group
        if (group_id is None) != (fold is None):
            raise RegistryError("a fold run needs both cv_group and fold")
        now = time.time()
        begun = now if started is None else min(float(started), now)
        prov = provenance()
        settings = _config_text(config)
        origin = json.dumps(prov, default=str)
        n_train, train_sha = _fingerprint(train_indices)
        n_val, val_sha = _fingerprint(val_indices)
        sql = self._sql

        def write(tx: _Tx) -> tuple[int, str, int | None]:
            conn = tx.conn
            digest, spec_name = self._spec_ref(tx, spec)
            group_pk = None
            if group_id is not None:
                group_pk, group_spec, folds = self._group_info(tx, group_id)
                if not 0 <= fold < folds:  # type: ignore[operator]
                    raise RegistryError(f"fold {fold} is outside the group's {folds} folds")
                if group_spec != digest:
                    raise RegistryError(
                        f"CV group {group_id!r} belongs to another spec ({group_spec[:12]})"
                    )
                done = conn.scalar(
                    select(RunRow.id).where(
                        RunRow.cv_group_pk == group_pk,
                        RunRow.fold == fold,
                        RunRow.status == "completed",
                    )
                )
                if done is not None:
                    raise RegistryError(
                        f"fold {fold} of CV group {group_id} is already completed (run {done}): "
                        "a fold joins its group once"
                    )
            run_id = new_id()
            row = (run_id, kind, "running", digest, spec_name, group_pk, fold, n_train, n_val,
                   train_sha, val_sha, begun, now, settings, origin, prov["host"],
                   prov["pid"])  # fmt: skip
            pk = sql.insert_run.insert(conn, row)
            if setting is not None and setting.active:
                lo, hi = setting.cutmix_minmax or (None, None)
                sql.insert_mixup.rowcount(
                    conn,
                    (pk, setting.alpha, setting.cutmix_alpha, lo, hi, setting.prob,
                     setting.switch_prob, setting.mode, setting.label_smoothing,
                     setting.off_epoch),
                )  # fmt: skip
            sql.insert_tag.many(conn, [(pk, str(k), str(v)) for k, v in (tags or {}).items()])
            return pk, run_id, group_pk

        pk, run_id, group_pk = self._transaction(write)
        return RunHandle(self, pk, run_id, heartbeat=heartbeat, group_pk=group_pk)

    def resume_run(self, run_id: str, *, heartbeat: float = HEARTBEAT_S) -> RunHandle:
        """Reopen an interrupted or failed run to continue it (``arch train --resume``).

        The run is running again, with this process's host and pid and a fresh heartbeat; its
        metrics and summaries stay, and what the handle logs next adds to them (a step logged
        again replaces its value). Its CV group counts it once it completes."""
        prov = provenance()

        def write(tx: _Tx) -> tuple[int, int | None, list[Any]]:
            conn = tx.conn
            found = conn.execute(
                select(RunRow.pk, RunRow.status, RunRow.cv_group_pk).where(RunRow.id == run_id)
            ).first()
            if found is None:
                raise RegistryError(f"no run {run_id!r} in this registry")
            pk, status, group_pk = found
            if status not in ("interrupted", "failed"):
                raise RegistryError(
                    f"run {run_id} is {status}: only an interrupted or failed run can be resumed"
                )
            now = time.time()
            conn.execute(
                update(RunRow)
                .where(RunRow.pk == pk)
                .values(
                    status="running",
                    ended=None,
                    error=None,
                    heartbeat=now,
                    host=prov["host"],
                    pid=prov["pid"],
                )
            )
            summaries = conn.execute(
                select(
                    MetricKeyRow.name,
                    SummaryRow.last_step,
                    SummaryRow.last_value,
                    SummaryRow.best_value,
                    SummaryRow.best_step,
                    SummaryRow.count,
                )
                .join(MetricKeyRow, MetricKeyRow.id == SummaryRow.key_id)
                .where(SummaryRow.run_pk == pk)
            ).all()
            return pk, group_pk, list(summaries)

        pk, group_pk, summaries = self._transaction(write)
        handle = RunHandle(self, pk, run_id, heartbeat=heartbeat, group_pk=group_pk)
        for name, last_step, last_value, best, best_step, count in summaries:
            handle._series[name] = _Series(last_step, last_value, best, best_step, count)
            handle._steps[name] = last_step
        return handle

    def spec_document(self, digest: str) -> dict[str, Any]:
        """The canonical spec stored under ``digest`` (a run's ``spec_hash``), as JSON data."""
        with self.session() as session:
            row = session.get(SpecRow, digest)
            if row is None:
                raise RegistryError(f"no spec {digest[:12]} in this registry")
            return json.loads(row.canonical)

    def _group_info(self, tx: _Tx, group_id: str) -> tuple[int, str, int]:
        """A CV group's pk, spec hash and number of folds (k x repeats)."""
        known = self._groups.get(group_id)
        if known is None:
            found = tx.conn.execute(
                select(
                    CVGroupRow.pk, CVGroupRow.spec_hash, CVGroupRow.k * CVGroupRow.repeats
                ).where(CVGroupRow.id == group_id)
            ).first()
            if found is None:
                raise RegistryError(f"no CV group {group_id!r} in this registry")
            known = tx.groups[group_id] = (found[0], found[1], found[2])
        return known

    # -- writes used by run handles ------------------------------------------------------------

    def _keys_of(
        self, tx: _Tx, names: Iterable[str], declared: Mapping[str, Direction] | None = None
    ) -> dict[str, tuple[int, Direction]]:
        """The id and direction of these metric names, interning the new ones with the direction
        ``declared`` gives them, else their name's default."""
        found: dict[str, tuple[int, Direction]] = {}
        for name in names:
            key = self._keys.get(name) or tx.keys.get(name)
            if key is None:
                row = self._sql.key_id.first(tx.conn, (name,))
                if row is None:
                    direction = (declared or {}).get(name) or default_direction(name)
                    self._sql.insert_key.rowcount(tx.conn, (name, direction))
                    row = self._sql.key_id.first(tx.conn, (name,))
                    assert row is not None
                key = tx.keys[name] = (row[0], checked_direction(row[1], name))
            found[name] = key
        return found

    def declare_metrics(self, directions: Mapping[str, str]) -> dict[str, Direction]:
        """Record each metric of ``directions`` with its direction, ``"min"`` (lower is better)
        or ``"max"``, unless the registry knows the metric already; return the directions the
        registry keeps.

        Declare a metric before its first ``log_metrics`` where its name's default
        (``archlab.metrics.default_direction``) is wrong for it. A metric has one direction per
        registry: declaring the other one raises ``RegistryError`` (and records nothing)."""
        wanted: dict[str, Direction] = {}
        for name, direction in directions.items():
            check_text(name, "a metric name")
            wanted[name] = checked_direction(direction, name)
        stored = self._transaction(lambda tx: self._keys_of(tx, wanted, wanted))
        for name, (_, direction) in stored.items():
            if direction != wanted[name]:
                raise RegistryError(
                    f"metric {name!r} is recorded in this registry as {direction!r} (since it "
                    f"was first logged), so it cannot be declared {wanted[name]!r}: a metric has "
                    "one direction per registry. Log this one under another name, or rank runs "
                    f"the other way with `arch runs best {name} --{wanted[name]}`"
                )
        return {name: direction for name, (_, direction) in stored.items()}

    def metric_direction(self, name: str) -> Direction:
        """The direction the registry keeps for metric ``name``, or, for a metric it has not
        recorded yet, the default of its name (what logging it would record)."""
        known = self._keys.get(name)
        if known is not None:
            return known[1]
        with self.engine.connect() as conn:
            row = self._sql.key_id.first(conn, (name,))
        if row is None:
            return default_direction(name)
        direction = checked_direction(row[1], name)
        self._keys[name] = (row[0], direction)  # committed, and keys are never deleted
        return direction

    def _write_metrics(
        self,
        handle: RunHandle,
        points: list[tuple[str, int, float | None, float, float]],
        heartbeat: float | None,
        finish: tuple[str, str | None] | None = None,
    ) -> None:
        """Insert metric points, fold them into the run's summaries, beat the heartbeat and, with
        ``finish=(status, error)``, end the run: all in one transaction.

        A step logged twice keeps its last value (within the batch and against earlier batches).
        NaN is stored as NULL (SQLite cannot store NaN; PostgreSQL would sort it above every
        number): it counts as a point and can be the final value, never the best. A run that
        completes as a CV fold brings its group's aggregates up to date in the same transaction.
        """
        # A step logged twice needs no de-duplication: executemany runs the upserts in order, so
        # the last logged value wins, and _fold_summaries recomputes such a metric's summary.
        batch = points
        sql = self._sql
        pk = handle.pk

        def write(tx: _Tx) -> dict[str, _Series]:
            conn = tx.conn
            owner = _owner()
            if finish is not None:
                now = time.time()
                changed = sql.finish.rowcount(conn, (finish[0], now, finish[1], pk, *owner))
            elif heartbeat is not None:
                changed = sql.beat.rowcount(conn, (heartbeat, pk, *owner))
            else:
                changed = 0
            if not changed and sql.run_exists.first(conn, (pk,)) is None:
                return {}  # the run was removed while running: its late metrics go with it
            series: dict[str, _Series] = {}
            if batch:
                keys = self._keys_of(tx, {name for name, *_ in batch})
                sql.upsert_metrics.many(
                    conn,
                    [
                        (pk, keys[name][0], step, epoch, None if value != value else value, at)
                        for name, step, epoch, value, at in batch
                    ],
                )
                series = self._fold_summaries(conn, handle, keys, batch)
                sql.upsert_summaries.many(
                    conn,
                    [
                        (pk, keys[name][0], s.last_value, s.last_step, s.best, s.best_step, s.count)
                        for name, s in series.items()
                    ],
                )
            completed = finish is not None and finish[0] == "completed"
            if completed and changed and handle.group_pk is not None:
                self._aggregate(conn, handle.group_pk)
            return series

        handle._series.update(self._transaction(write))

    def _fold_summaries(
        self,
        conn: Connection,
        handle: RunHandle,
        keys: dict[str, tuple[int, Direction]],
        batch: list[tuple[str, int, float | None, float, float]],
    ) -> dict[str, _Series]:
        """The run's summaries of the metrics in ``batch``, brought up to date with it.

        The handle knows each metric's summary as last committed (it is the run's only writer):
        new steps past a metric's last step update it incrementally; a batch that rewrites or
        back-fills steps recomputes the summary from the stored series instead.
        """
        # One pass over the batch, in logging order: per metric, whether the new points only
        # extend its series (steps past the last committed one, increasing), their last value and
        # the best so far. Slots: last step, last value, best, best step, count, extends, lower
        # is better.
        work: dict[str, list[Any]] = {}
        series = handle._series
        for name, step, _epoch, value, _at in batch:
            number = None if value != value else value  # NaN is stored as NULL
            acc = work.get(name)
            if acc is None:
                known = series.get(name)
                if known is None:
                    acc = [step, number, None, None, 0, True, keys[name][1] == "min"]
                else:
                    extends = step > known.last_step
                    acc = [step, number, known.best, known.best_step, known.count, extends,
                           keys[name][1] == "min"]  # fmt: skip
                work[name] = acc
            elif step > acc[0]:
                acc[0], acc[1] = step, number
            else:
                acc[5] = False  # out of order: recomputed from the stored series below
            acc[4] += 1
            if number is not None:
                best = acc[2]
                if best is None or (number < best if acc[6] else number > best):
                    acc[2], acc[3] = number, step
        out: dict[str, _Series] = {}
        for name, (last_step, last_value, best, best_step, count, extends, low) in work.items():
            if extends:
                out[name] = _Series(last_step, last_value, best, best_step, count)
            else:
                out[name] = self._recompute_summary(conn, handle.pk, keys[name][0], low)
        return out

    def _recompute_summary(self, conn: Connection, run_pk: int, key: int, low: bool) -> _Series:
        mine = (MetricRow.run_pk == run_pk, MetricRow.key_id == key)
        count, last_step = conn.execute(
            select(func.count(), func.max(MetricRow.step)).where(*mine)
        ).one()
        last_value = conn.scalar(select(MetricRow.value).where(*mine, MetricRow.step == last_step))
        best = conn.execute(
            select(MetricRow.value, MetricRow.step)
            .where(*mine, MetricRow.value.is_not(None))
            .order_by(MetricRow.value.asc() if low else MetricRow.value.desc(), MetricRow.step)
            .limit(1)
        ).first()
        best_value, best_step = (best[0], best[1]) if best is not None else (None, None)
        return _Series(last_step, last_value, best_value, best_step, count)

    def _finish(self, run_pk: int, status: str, error: str | None) -> None:
        """End a run without writing metrics (stale sweeps, a run whose last write failed)."""
        now = time.time()

        def write(tx: _Tx) -> None:
            changed = self._sql.finish.rowcount(tx.conn, (status, now, error, run_pk, *_owner()))
            if changed and status == "completed":
                group_pk = tx.conn.scalar(select(RunRow.cv_group_pk).where(RunRow.pk == run_pk))
                if group_pk is not None:
                    self._aggregate(tx.conn, group_pk)

        self._transaction(write)

    def _aggregate(self, conn: Connection, group_pk: int) -> None:
        """Recompute a CV group's per-metric aggregates over its completed folds (a fold whose
        final value is NaN does not count: ``n`` says how many did)."""
        sql = self._sql
        if sql.lock_group is not None:
            # One recomputation per group at a time: on PostgreSQL two folds ending at once would
            # each read the other's fold as still running and insert the same aggregate rows. The
            # row lock serialises them, and READ COMMITTED lets the second see the first's commit.
            # (SQLite's IMMEDIATE write transactions are serial already.)
            sql.lock_group.all(conn, (group_pk,))
        finals = sql.fold_finals.all(conn, (group_pk,))
        # one run per fold index: the first completed one (a registry written before folds were
        # checked on joining may hold a fold twice; it must not count twice)
        counted: dict[int | None, int] = {}
        for fold, run_pk, _key, _value in finals:
            counted[fold] = min(run_pk, counted.get(fold, run_pk))
        values: dict[int, list[float]] = {}
        for fold, run_pk, key, value in finals:
            if value is not None and counted[fold] == run_pk:
                values.setdefault(key, []).append(value)
        sql.delete_aggregates.rowcount(conn, (group_pk,))
        rows = []
        for key, xs in values.items():
            n = len(xs)
            mean = math.fsum(xs) / n
            # the sample std of one fold is undefined: 0.0 fills the column, read back as None
            std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
            rows.append((group_pk, key, mean, std, n, min(xs), max(xs)))
        sql.insert_aggregate.many(conn, rows)

    def _add_artifact(
        self, run_pk: int, run_id: str, path: str | os.PathLike[str], kind: str, copy: bool
    ) -> Artifact:
        source = Path(path)
        if not source.is_file():
            raise RegistryError(f"no such artifact file: {source}")
        if not 0 < len(kind) <= 32:
            raise RegistryError(f"an artifact kind has 1 to 32 characters, not {kind!r}")
        check_text(kind, "an artifact kind")
        root = self.artifacts.resolve()
        resolved = source.resolve()
        if copy or not resolved.is_relative_to(root):
            folder = root / run_id
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
        record = Artifact(
            str(resolved.relative_to(root)), kind, resolved.stat().st_size, _sha256(resolved)
        )

        def write(session: Session) -> None:
            session.add(
                ArtifactRow(
                    run_pk=run_pk,
                    path=record.path,
                    kind=kind,
                    size=record.size,
                    sha256=record.sha256,
                    created=time.time(),
                )
            )

        self._write(write)
        return record

    def artifact_file(self, run: Run, path: str) -> Path:
        """The file of run ``run``'s artifact ``path`` (relative to the artifact folder), checked
        before use: it must lie inside the artifact folder (no ``..``, no absolute path elsewhere,
        no symbolic link leading out), and hash to the sha256 the registry recorded for it (a
        file recorded under that path; a training state written since is only kept inside).
        Raises ``ArtifactError`` naming the file otherwise."""
        root = self.artifacts.resolve()
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
            found = _sha256(resolved)
            if found != recorded[-1].sha256:
                raise ArtifactError(
                    f"the artifact {resolved} of run {run.id} changed since it was recorded: "
                    f"sha256 {found}, recorded {recorded[-1].sha256}; archlab refuses to use a "
                    "file altered or replaced after its run, so restore it or train again"
                )
        return resolved

    # -- maintenance ---------------------------------------------------------------------------

    def mark_stale(self, grace: float = DEFAULT_GRACE_S) -> list[str]:
        """Mark interrupted the running runs silent for ``grace`` seconds, or whose process is
        known dead on this host. Returns their ids."""
        now = time.time()
        host = socket.gethostname()
        with self.session() as session:
            candidates = session.execute(
                select(RunRow.pk, RunRow.id, RunRow.heartbeat, RunRow.host, RunRow.pid).where(
                    RunRow.status == "running"
                )
            ).all()
        dead = [
            (pk, run_id)
            for pk, run_id, beat, run_host, pid in candidates
            if beat < now - grace
            or (run_host == host and pid is not None and pid != os.getpid() and not _pid_alive(pid))
        ]
        for pk, _ in dead:
            self._finish(
                pk, "interrupted", "no heartbeat: the process stopped without ending the run"
            )
        return [run_id for _, run_id in dead]

    # -- reads ---------------------------------------------------------------------------------

    def runs(
        self,
        where: str | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        """Runs matching ``where`` (the query language), sorted, newest first by default."""
        from archlab.registry import query

        stmt = select(RunRow)
        condition = query.compile_where(where)
        if condition is not None:
            stmt = stmt.where(condition)
        orders = [order_by] if isinstance(order_by, str) else list(order_by or [])
        for field in orders:
            stmt = stmt.order_by(query.order_by(field))
        stmt = stmt.order_by(RunRow.started.desc(), RunRow.pk.desc())
        if limit is not None and not 0 <= limit < 2**63:
            raise RegistryError(f"a limit is a count from 0 to 2**63 - 1, not {limit}")
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.session() as session:
            rows = list(session.scalars(stmt))
            return self._records(session, rows)

    def get(self, run_id: str) -> Run:
        """One run with everything: summaries, tags, artifacts, provenance."""
        with self.session() as session:
            row = self._row(session, run_id)
            [record] = self._records(session, [row], full=True)
            return record

    def group(self, group_id: str) -> CVGroup:
        """A CV group with its fold runs and its aggregates (three prepared statements)."""
        sql = self._sql
        with self.engine.connect() as conn, conn.begin():  # one snapshot
            found = sql.group_by_id.first(conn, (group_id,))
            if found is None:
                raise RegistryError(f"no CV group {group_id!r} in this registry")
            pk, gid, digest, k, splitter, shuffle, seed, stratified, grouped, repeats = found[:10]
            library, config = found[10], json_value(found[11])
            runs = [run_id for (run_id,) in sql.group_runs.all(conn, (pk,))]
            aggregates = {
                name: _aggregate(name, mean, std, n, low, high)
                for name, mean, std, n, low, high in sql.group_aggregates.all(conn, (pk,))
            }
        return CVGroup(gid, digest, k, splitter, bool(shuffle), seed, bool(stratified),
                       bool(grouped), repeats, library, config or {}, runs, aggregates)  # fmt: skip

    def completed_folds(self, group_id: str) -> dict[int, str]:
        """The fold indices of a CV group that have a completed run, each with the run that
        counts for it (the first completed; the one its aggregates use)."""
        with self.session() as session:
            group_pk = session.scalar(select(CVGroupRow.pk).where(CVGroupRow.id == group_id))
            if group_pk is None:
                raise RegistryError(f"no CV group {group_id!r} in this registry")
            found: dict[int, str] = {}
            for fold, run_id in session.execute(
                select(RunRow.fold, RunRow.id)
                .where(RunRow.cv_group_pk == group_pk, RunRow.status == "completed")
                .order_by(RunRow.pk)
            ):
                if fold is not None:
                    found.setdefault(fold, run_id)
            return found

    def compare(self, ids: Sequence[str]) -> list[Run]:
        return [self.get(run_id) for run_id in ids]

    def diff(self, a: str, b: str) -> list[Change]:
        """Differences between two runs: spec (as JSON paths), then config, mixup and CV."""
        ra, rb = self.get(a), self.get(b)
        with self.session() as session:
            spec_a = json.loads(session.get(SpecRow, ra.spec_hash).canonical)  # type: ignore[union-attr]
            spec_b = json.loads(session.get(SpecRow, rb.spec_hash).canonical)  # type: ignore[union-attr]
        changes: list[Change] = []
        _diff_json("spec", spec_a, spec_b, changes)
        _diff_json("config", ra.config, rb.config, changes)
        _diff_json(
            "mixup",
            ra.mixup.to_dict() if ra.mixup else None,
            rb.mixup.to_dict() if rb.mixup else None,
            changes,
        )
        cv_a = _cv_dict(ra.cv)
        cv_b = _cv_dict(rb.cv)
        _diff_json("cv", cv_a, cv_b, changes)
        return changes

    def best(
        self,
        metric: str,
        group_by: str | None = None,
        where: str | None = None,
        *,
        direction: str | None = None,
    ) -> list[Run]:
        """The best run by ``metric``'s best value, or the best of each spec: the lowest for a
        metric whose direction is ``"min"``, else the highest. ``direction`` overrides the
        direction the registry keeps for the metric (``metric_direction``).

        One query: a window function ranks the runs of each spec, so the answer never loads
        more runs than it returns.
        """
        from archlab.registry import query

        if group_by not in (None, "spec"):
            raise RegistryError(f"group_by takes 'spec' or nothing, not {group_by!r}")
        values, low = self._run_values(metric, direction)
        value = values.c.value
        ranking = value.asc() if low else value.desc()
        stmt = select(RunRow.pk, value.label("value")).join(values, values.c.run_pk == RunRow.pk)
        condition = query.compile_where(where)
        if condition is not None:
            stmt = stmt.where(condition)
        if group_by is None:
            chosen = stmt.order_by(ranking, RunRow.started.desc(), RunRow.pk.desc()).limit(1)
        else:
            rank = func.row_number().over(
                partition_by=RunRow.spec_hash,
                order_by=(ranking, RunRow.started.desc(), RunRow.pk.desc()),
            )
            ranked = stmt.add_columns(rank.label("rank")).subquery()
            best_first = ranked.c.value.asc() if low else ranked.c.value.desc()
            chosen = (
                select(ranked.c.pk, ranked.c.value).where(ranked.c.rank == 1).order_by(best_first)
            )
        with self.session() as session:
            pks = [pk for pk, _ in session.execute(chosen)]
            rows = {r.pk: r for r in session.scalars(select(RunRow).where(RunRow.pk.in_(pks)))}
            return self._records(session, [rows[pk] for pk in pks])

    def rank(
        self,
        metric: str,
        *,
        by: str = "auto",
        where: str | None = None,
        limit: int | None = 1,
        direction: str | None = None,
    ) -> list[Ranked]:
        """Runs and CV groups ranked by ``metric``, best first: lowest first for a metric whose
        direction is ``"min"`` (``direction`` overrides the one the registry keeps).

        A run counts with its best value; a CV group with the mean of its folds' final values
        (its aggregate), so a group is judged by all its folds, never by its luckiest one.
        ``by="auto"``: groups, and the runs outside groups; ``"group"``: groups only;
        ``"run"``: every run on its own, folds included (``best``). ``where`` (the query
        language, on runs) keeps the runs matching it and the groups with a fold matching it.
        """
        from archlab.registry import query

        if by not in ("auto", "group", "run"):
            raise RegistryError(f"rank by 'auto', 'group' or 'run', not {by!r}")
        values, low = self._run_values(metric, direction)
        key = select(MetricKeyRow.id).where(MetricKeyRow.name == metric).scalar_subquery()
        condition = query.compile_where(where)
        found: list[tuple[float, float, int, str]] = []  # (value, -started, pk, kind)
        if by != "group":
            best = values.c.value
            stmt = (
                select(RunRow.pk, best, RunRow.started)
                .join(values, values.c.run_pk == RunRow.pk)
                .order_by(best.asc() if low else best.desc(), RunRow.started.desc())
            )
            if by == "auto":
                stmt = stmt.where(RunRow.cv_group_pk.is_(None))
            if condition is not None:
                stmt = stmt.where(condition)
            with self.session() as session:
                rows = session.execute(stmt.limit(limit)).all()
            found += [(v, -started, pk, "run") for pk, v, started in rows if v is not None]
        if by != "run":
            mean = AggregateRow.mean
            stmt = (
                select(CVGroupRow.pk, mean, CVGroupRow.created)
                .join(AggregateRow, AggregateRow.group_pk == CVGroupRow.pk)
                .where(AggregateRow.key_id == key)
                .order_by(mean.asc() if low else mean.desc(), CVGroupRow.created.desc())
            )
            if condition is not None:
                stmt = stmt.where(
                    CVGroupRow.pk.in_(
                        select(RunRow.cv_group_pk).where(RunRow.cv_group_pk.is_not(None), condition)
                    )
                )
            with self.session() as session:
                rows = session.execute(stmt.limit(limit)).all()
            found += [(float(v), -created, pk, "group") for pk, v, created in rows]
        found.sort(key=lambda f: (f[0] if low else -f[0], f[1]))
        found = found[:limit] if limit is not None else found
        out = []
        with self.session() as session:
            for value, _, pk, kind in found:
                if kind == "run":
                    row = session.get(RunRow, pk)
                    [run] = self._records(session, [row])  # type: ignore[list-item]
                    out.append(Ranked(metric, value, run=run))
                else:
                    group_id = session.scalar(select(CVGroupRow.id).where(CVGroupRow.pk == pk))
                    out.append(Ranked(metric, value, group=self.group(group_id)))  # type: ignore[arg-type]
        return out

    def _run_values(self, metric: str, direction: str | None) -> tuple[Any, bool]:
        """Each run's best value of ``metric`` in the direction that ranks (``direction``, else
        the metric's own), as a subquery of (run_pk, value), and whether lower ranks first.

        The summaries hold the best value in the metric's own direction; ranking the other way
        takes each run's lowest or highest point from its series instead (NaN never counts)."""
        own = self.metric_direction(metric)
        wanted = own if direction is None else checked_direction(direction, metric)
        key = select(MetricKeyRow.id).where(MetricKeyRow.name == metric).scalar_subquery()
        if wanted == own:
            best = SummaryRow.best_value
            values = select(SummaryRow.run_pk, best.label("value")).where(
                SummaryRow.key_id == key, best.is_not(None)
            )
        else:
            extreme = func.min(MetricRow.value) if wanted == "min" else func.max(MetricRow.value)
            values = (
                select(MetricRow.run_pk, extreme.label("value"))
                .where(MetricRow.key_id == key, MetricRow.value.is_not(None))
                .group_by(MetricRow.run_pk)
            )
        return values.subquery(), wanted == "min"

    def remove(self, run_id: str, *, files: bool = True) -> list[Path]:
        """Delete a run with its metrics, tags, mixup and artifact records and, with ``files``,
        its artifact files: its folder under the artifact root and the files it recorded there
        that no other run records. Returns the paths deleted. The records go first, in one
        transaction: files that cannot be deleted are left for ``orphan_artifacts``."""

        def write(session: Session) -> list[str]:
            row = self._row(session, run_id)
            group_pk = row.cv_group_pk
            recorded = list(
                session.scalars(select(ArtifactRow.path).where(ArtifactRow.run_pk == row.pk))
            )
            for table in (MetricRow, SummaryRow, TagRow, MixupRow, ArtifactRow):
                session.execute(delete(table).where(table.run_pk == row.pk))
            session.delete(row)
            session.flush()
            if group_pk is not None:
                self._aggregate(session.connection(), group_pk)
            shared = set(
                session.scalars(select(ArtifactRow.path).where(ArtifactRow.path.in_(recorded)))
            )
            return [path for path in recorded if path not in shared]

        unshared = self._write(write)
        if not files:
            return []
        return self._delete_files([run_id, *unshared])

    def remove_group(self, group_id: str, *, files: bool = True) -> list[Path]:
        """Delete a CV group: every fold run (as ``remove``), then the group and its aggregates."""
        removed: list[Path] = []
        for run_id in self.group(group_id).runs:
            removed += self.remove(run_id, files=files)

        def write(session: Session) -> None:
            found = session.scalars(select(CVGroupRow).where(CVGroupRow.id == group_id)).first()
            if found is not None:
                session.execute(delete(AggregateRow).where(AggregateRow.group_pk == found.pk))
                session.delete(found)

        self._write(write)
        self._groups.pop(group_id, None)
        return removed

    def _delete_files(self, relative: Sequence[str]) -> list[Path]:
        """Delete these paths under the artifact root (a folder with its contents); a path that
        leads outside the root (a symbolic link, ``..``) is left alone."""
        root = self.artifacts.resolve()
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

    def orphan_artifacts(self) -> list[Path]:
        """Folders under the artifact root named like a run id that no run of this registry has
        and no recorded artifact lies in: what removed runs left behind."""
        root = self.artifacts
        if not root.is_dir():
            return []
        candidates = {
            p.name: p
            for p in root.iterdir()
            if p.is_dir() and not p.is_symlink() and _RUN_ID.fullmatch(p.name)
        }
        if not candidates:
            return []
        with self.session() as session:
            known = set(session.scalars(select(RunRow.id).where(RunRow.id.in_(candidates))))
            used = {
                path.split("/", 1)[0]
                for path in session.scalars(select(ArtifactRow.path))
                if "/" in path
            }
        return sorted(p for name, p in candidates.items() if name not in known | used)

    def remove_orphans(self, folders: Sequence[Path]) -> list[Path]:
        """Delete folders ``orphan_artifacts`` returned (those still orphans)."""
        still = set(self.orphan_artifacts())
        return self._delete_files([p.name for p in folders if p in still])

    def kind_of(self, ident: str) -> str:
        """``"run"`` or ``"group"``: what ``ident`` names. An id that names neither, or both (a
        run and a CV group may share an id by chance), raises ``RegistryError``."""
        with self.session() as session:
            run = session.scalar(select(RunRow.pk).where(RunRow.id == ident))
            group = session.scalar(select(CVGroupRow.pk).where(CVGroupRow.id == ident))
            if run is not None and group is not None:
                raise RegistryError(
                    f"{ident!r} is both a run and a CV group of this registry; use the run's "
                    f"id with `arch runs show`, or the group's folds (--where \"cv.group == "
                    f"'{ident}'\")"
                )
            if run is not None:
                return "run"
            if group is not None:
                return "group"
            pattern = f"{ident[:4]}%"
            close = [
                *session.scalars(select(RunRow.id).where(RunRow.id.like(pattern)).limit(3)),
                *session.scalars(select(CVGroupRow.id).where(CVGroupRow.id.like(pattern)).limit(3)),
            ]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise RegistryError(f"no run or CV group {ident!r} in this registry{hint}")

    def expand(self, idents: Sequence[str]) -> list[str]:
        """Run ids for ``idents``: a run id stays, a CV group id becomes its folds' run ids (in
        fold order); duplicates go. Unknown or ambiguous ids raise ``RegistryError``."""
        out: dict[str, None] = {}
        for ident in idents:
            if self.kind_of(ident) == "run":
                out[ident] = None
            else:
                out.update(dict.fromkeys(self.group(ident).runs))
        return list(out)

    def dependents(self, ids: Sequence[str]) -> list[tuple[str, str, str]]:
        """Runs outside ``ids`` that point to one of them: (run, how, target), where how is
        ``teacher`` (a student's ``config.teacher`` / ``config.teacher_run``) or ``evaluates``
        (an eval run's tag)."""
        targets = [i for i in dict.fromkeys(ids) if _RUN_ID.fullmatch(i)]
        if not targets:
            return []
        listed = ", ".join(f"'{i}'" for i in targets)
        where = (
            f"config.teacher in ({listed}) or config.teacher_run in ({listed}) "
            f"or tags.evaluates in ({listed})"
        )
        out = []
        for run in self.runs(where=where):
            if run.id in ids:
                continue
            pointers = (
                ("teacher", run.config.get("teacher")),
                ("teacher", run.config.get("teacher_run")),
                ("evaluates", run.tags.get("evaluates")),
            )
            for how, target in pointers:
                if isinstance(target, str) and target in targets:
                    out.append((run.id, how, target))
        return sorted(set(out))

    def tag(self, run_id: str, **tags: Any) -> None:
        _check_tags(tags)

        def write(session: Session) -> None:
            row = self._row(session, run_id)
            for key, value in tags.items():
                existing = session.get(TagRow, (row.pk, key))
                if existing is None:
                    session.add(TagRow(run_pk=row.pk, key=key, value=str(value)))
                else:
                    existing.value = str(value)

        self._write(write)

    def metric_history(
        self, run_id: str, name: str
    ) -> list[tuple[int, float | None, float, float]]:
        """One metric's series of a run: (step, epoch, value, time) by step."""
        with self.session() as session:
            row = self._row(session, run_id)
            stmt = (
                select(MetricRow.step, MetricRow.epoch, MetricRow.value, MetricRow.time)
                .join(MetricKeyRow, MetricKeyRow.id == MetricRow.key_id)
                .where(MetricRow.run_pk == row.pk, MetricKeyRow.name == name)
                .order_by(MetricRow.step)
            )
            return [
                (step, epoch, _nan(value), at) for step, epoch, value, at in session.execute(stmt)
            ]

    # -- record assembly -------------------------------------------------------------------------

    def _row(self, session: Session, run_id: str) -> RunRow:
        row = session.scalars(select(RunRow).where(RunRow.id == run_id)).first()
        if row is None:
            close = session.scalars(
                select(RunRow.id).where(RunRow.id.like(f"{run_id[:4]}%")).limit(3)
            ).all()
            hint = f"; similar: {', '.join(close)}" if close else ""
            raise RegistryError(f"no run {run_id!r} in this registry{hint}")
        return row

    def _records(self, session: Session, rows: list[RunRow], full: bool = False) -> list[Run]:
        if not rows:
            return []
        pks = [r.pk for r in rows]
        groups = {
            g.pk: g
            for g in session.scalars(
                select(CVGroupRow).where(
                    CVGroupRow.pk.in_({r.cv_group_pk for r in rows if r.cv_group_pk})
                )
            )
        }
        mixups = {
            m.run_pk: m for m in session.scalars(select(MixupRow).where(MixupRow.run_pk.in_(pks)))
        }
        summaries: dict[int, dict[str, MetricSummary]] = {}
        for s, name in session.execute(
            select(SummaryRow, MetricKeyRow.name)
            .join(MetricKeyRow, MetricKeyRow.id == SummaryRow.key_id)
            .where(SummaryRow.run_pk.in_(pks))
        ):
            summaries.setdefault(s.run_pk, {})[name] = MetricSummary(
                name, _nan(s.last_value), s.last_step, _nan(s.best_value), s.best_step, s.count
            )
        tags: dict[int, dict[str, str]] = {}
        for t in session.scalars(select(TagRow).where(TagRow.run_pk.in_(pks))):
            tags.setdefault(t.run_pk, {})[t.key] = t.value
        artifacts: dict[int, list[Artifact]] = {}
        if full:
            for a in session.scalars(
                select(ArtifactRow).where(ArtifactRow.run_pk.in_(pks)).order_by(ArtifactRow.pk)
            ):
                artifacts.setdefault(a.run_pk, []).append(
                    Artifact(a.path, a.kind, a.size, a.sha256)
                )
        out = []
        for r in rows:
            group = groups.get(r.cv_group_pk) if r.cv_group_pk else None
            cv = (
                CVInfo(group.id, group.k, r.fold, r.n_train, r.n_val, r.train_sha256, r.val_sha256)
                if group
                else None
            )
            m = mixups.get(r.pk)
            mixup = (
                MixupSetting(
                    m.alpha,
                    m.cutmix_alpha,
                    (m.cutmix_min, m.cutmix_max)
                    if m.cutmix_min is not None and m.cutmix_max is not None
                    else None,
                    m.prob,
                    m.switch_prob,
                    m.mode,
                    m.label_smoothing,
                    m.off_epoch,
                )
                if m is not None
                else None
            )
            run_summaries = summaries.get(r.pk, {})
            out.append(
                Run(
                    id=r.id,
                    kind=r.kind,
                    status=r.status,
                    spec_name=r.spec_name,
                    spec_hash=r.spec_hash,
                    cv=cv,
                    mixup=mixup,
                    metrics={k: v.final for k, v in sorted(run_summaries.items())},
                    started=r.started,
                    ended=r.ended,
                    heartbeat=r.heartbeat,
                    error=r.error,
                    config=r.config or {},
                    tags=tags.get(r.pk, {}),
                    provenance=(r.provenance or {}) if full else {},
                    summaries=dict(sorted(run_summaries.items())),
                    artifacts=artifacts.get(r.pk, []),
                )
            )
        return out

    def _group(self, session: Session, row: CVGroupRow) -> CVGroup:
        run_ids = list(
            session.scalars(
                select(RunRow.id)
                .where(RunRow.cv_group_pk == row.pk)
                .order_by(RunRow.fold, RunRow.started)
            )
        )
        aggregates = {
            name: _aggregate(name, a.mean, a.std, a.n, a.min, a.max)
            for a, name in session.execute(
                select(AggregateRow, MetricKeyRow.name)
                .join(MetricKeyRow, MetricKeyRow.id == AggregateRow.key_id)
                .where(AggregateRow.group_pk == row.pk)
            )
        }
        return _group_record(row, run_ids, dict(sorted(aggregates.items())))


# ---------------------------------------------------------------------------------- run handle


class _Tx:
    """A write transaction's connection and what it learnt, cached once it commits."""

    __slots__ = ("conn", "groups", "keys", "specs")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.keys: dict[str, tuple[int, Direction]] = {}
        self.specs: set[str] = set()
        self.groups: dict[str, tuple[int, str, int]] = {}


@dataclass(slots=True)
class _Series:
    """A metric's summary in a run, as the run's handle last committed it."""

    last_step: int
    last_value: float | None
    best: float | None
    best_step: int | None
    count: int


class _Heartbeat:
    """One background thread per registry that flushes each live run's metrics and beats its
    heartbeat every ``heartbeat`` seconds (a thread per run cost more than a short run itself)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[RunHandle, float] = {}
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, handle: RunHandle) -> None:
        with self._cond:
            self._due[handle] = time.monotonic() + handle._interval
            if self._thread is None or not self._thread.is_alive():
                self._closed = False
                self._thread = threading.Thread(
                    target=self._run, name="archlab-heartbeat", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def remove(self, handle: RunHandle) -> None:
        with self._cond:
            self._due.pop(handle, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._due.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    due = [h for h, at in self._due.items() if at <= now]
                    if due:
                        for handle in due:
                            self._due[handle] = now + handle._interval
                        break
                    self._cond.wait(min(self._due.values()) - now if self._due else None)
            for handle in due:
                with contextlib.suppress(Exception):  # a missed beat is retried on the next one
                    handle._beat()


class RunHandle:
    """A running run: log metrics and artifacts, then end it (or use it as a context manager).

    Metrics are buffered and written in batches by a background thread every ``heartbeat``
    seconds (with the heartbeat itself), when the buffer is large, and when the run ends; so a run
    killed with SIGKILL loses at most the last few seconds. As a context manager the run ends
    ``completed``, ``failed`` (with the error text) on an exception, or ``interrupted`` on
    KeyboardInterrupt (``archlab.runners.lifecycle`` turns SIGTERM into one).
    """

    FLUSH_ROWS = 5000

    def __init__(
        self,
        registry: Registry,
        pk: int,
        run_id: str,
        heartbeat: float = HEARTBEAT_S,
        group_pk: int | None = None,
    ) -> None:
        self.registry = registry
        self.pk = pk
        self.id = run_id
        self.group_pk = group_pk
        self._buffer: list[tuple[str, int, float | None, float, float]] = []
        self._steps: dict[str, int] = {}
        self._series: dict[str, _Series] = {}  # the summaries as last committed
        self._lock = threading.Lock()  # guards the buffer
        self._write_lock = threading.Lock()  # one write of this run at a time
        self._beats = True  # False once the run ends (or its heartbeat is stopped)
        self._ended = False
        self._interval = min(float(heartbeat), 5.0)
        registry._heart.add(self)

    def log_metrics(
        self, values: Mapping[str, float], step: int | None = None, epoch: float | None = None
    ) -> None:
        """Record metric values at ``step`` (default: one past the metric's last step).

        Logging a step again replaces its value; NaN is kept (it can be final, never best)."""
        if self._ended:
            raise RegistryError(f"run {self.id} has ended: it takes no more metrics")
        steps = self._steps
        for name in values:
            if name not in steps:  # a metric name seen first: one the registry can store?
                check_text(str(name), "a metric name")
        with self._lock:
            append = self._buffer.append  # under the lock: a flush swaps the buffer
            now = time.time()  # under the lock: ordered with the heartbeat a flush takes
            if step is None:
                for name, value in values.items():
                    s = steps[name] = steps.get(name, -1) + 1
                    append((str(name), s, epoch, float(value), now))
            else:
                s = int(step)
                for name, value in values.items():
                    if steps.get(name, -1) < s:
                        steps[name] = s
                    append((str(name), s, epoch, float(value), now))
            large = len(self._buffer) >= self.FLUSH_ROWS
        if large:
            self.flush()

    def log_artifact(
        self, path: str | os.PathLike[str], kind: str = "file", *, copy: bool = False
    ) -> Artifact:
        """Record a file (checkpoint, plot); files outside the artifact folder are copied in."""
        return self.registry._add_artifact(self.pk, self.id, path, kind, copy)

    def tag(self, **tags: Any) -> None:
        self.registry.tag(self.id, **tags)

    def flush(self, heartbeat: bool = True) -> None:
        """Write buffered metrics now (and the heartbeat). If the write fails, the points go back
        to the buffer for the next flush."""
        with self._write_lock:
            self._flush(heartbeat)

    def _flush(self, heartbeat: bool, finish: tuple[str, str | None] | None = None) -> None:
        with self._lock:
            # every point logged before this instant is in this batch: once it is written,
            # the heartbeat vouches for all the points logged before it
            beat = time.time()
            points, self._buffer = self._buffer, []
        try:
            self.registry._write_metrics(self, points, beat if heartbeat else None, finish)
        except BaseException:
            with self._lock:
                self._buffer[:0] = points
            raise

    def end(self, status: str = "completed", error: str | None = None) -> None:
        """End the run: write the last metrics and the status in one transaction; idempotent."""
        if self._ended:
            return
        if status not in STATUSES[1:]:
            raise RegistryError(f"a run ends completed, failed or interrupted, not {status!r}")
        error = _storable_error(error)
        self._stop_heartbeat()
        with self._write_lock:
            try:
                self._flush(True, finish=(status, error))
            except Exception as exc:
                # the metrics could not be written: still end the run rather than leave it running
                with contextlib.suppress(Exception):
                    note = f"could not write the last metrics: {type(exc).__name__}: {exc}"
                    self.registry._finish(self.pk, "failed", f"{error}; {note}" if error else note)
                self._ended = True
                raise
            self._ended = True

    def _beat(self) -> None:
        """The registry's heartbeat thread calls this every ``heartbeat`` seconds."""
        with self._write_lock:
            if self._beats:
                self._flush(True)

    def _stop_heartbeat(self) -> None:
        """No more background beats (once one in progress is done)."""
        self.registry._heart.remove(self)
        with self._write_lock:
            self._beats = False

    def __enter__(self) -> RunHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc_type is None:
            self.end("completed")
        elif issubclass(exc_type, KeyboardInterrupt):
            # Ctrl-C, or a signal archlab.runners.lifecycle turned into an interruption
            reason = str(exc) or "interrupted by the user (KeyboardInterrupt)"
            self.end("interrupted", reason)
        else:
            self.end("failed", f"{exc_type.__name__}: {exc}")


# ------------------------------------------------------------------------------------ helpers


def _fingerprint(indices: Sequence[int] | None) -> tuple[int | None, str | None]:
    """A split's size and SHA-256, or nothing."""
    if indices is None:
        return None, None
    return len(indices), indices_sha256(indices)


def _config_text(config: Mapping[str, Any] | None) -> str:
    """A run's configuration as the JSON text it is stored as (see ``archlab.jsonpolicy``)."""
    value = dict(config or {})
    try:  # the common case in one pass: plain, finite values
        return json.dumps(value, default=str, allow_nan=False)
    except ValueError:
        return json_text(jsonable(value))


def _json_object(config: Mapping[str, Any] | None) -> dict[str, Any]:
    return jsonable(dict(config or {}))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy(source: Path, temporary: str) -> None:
    shutil.copyfile(source, temporary)
    shutil.copystat(source, temporary)


def _check_tags(tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        if not 0 < len(str(key)) <= 100:
            raise RegistryError(f"a tag key has 1 to 100 characters, not {str(key)!r}")
        check_text(str(key), "a tag key")
        check_text(str(value), f"the value of tag {str(key)!r}")


def check_text(value: str, what: str) -> None:
    """Refuse text no backend can store alike: PostgreSQL refuses NUL characters, and a lone
    surrogate is not UTF-8 at all (``what`` names the text in the message)."""
    from archlab.registry.query.literals import _storable

    if not _storable(value):
        raise RegistryError(
            f"{what} contains a NUL character or a lone surrogate, which a registry cannot store: "
            f"{value!r}; remove it"
        )


def _storable_error(error: str | None) -> str | None:
    """An error text as a registry can store it (NUL and lone surrogates escaped)."""
    if error is None:
        return None
    return error.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _nan(value: float | None) -> float:
    """A stored metric value: NULL stands for NaN."""
    return math.nan if value is None else value


def _aggregate(name: str, mean: float, std: float, n: int, low: float, high: float) -> Aggregate:
    """An aggregate as stored; the std of fewer than two folds is undefined (None)."""
    return Aggregate(name, mean, std if n > 1 else None, n, low, high)


def _group_record(row: CVGroupRow, runs: list[str], aggregates: dict[str, Aggregate]) -> CVGroup:
    return CVGroup(
        row.id,
        row.spec_hash,
        row.k,
        row.splitter,
        row.shuffle,
        row.seed,
        row.stratified,
        row.grouped,
        row.repeats,
        row.library,
        row.config or {},
        runs,
        aggregates,
    )


def _cv_dict(cv: CVInfo | None) -> dict[str, Any] | None:
    if cv is None:
        return None
    return {
        "k": cv.k,
        "fold": cv.fold,
        "n_train": cv.n_train,
        "n_val": cv.n_val,
        "train_sha256": cv.train_sha256,
        "val_sha256": cv.val_sha256,
    }


def _diff_json(path: str, a: Any, b: Any, out: list[Change]) -> None:
    """Append the differences of two JSON values, path by path (objects recursively)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            _diff_json(f"{path}.{key}", a.get(key, _ABSENT), b.get(key, _ABSENT), out)
        return
    if a != b:
        out.append(Change(path, None if a is _ABSENT else a, None if b is _ABSENT else b))


_ABSENT = object()

__all__ = [
    "Location",
    "Registry",
    "RegistryError",
    "RunHandle",
    "indices_sha256",
    "locate",
    "new_id",
]
