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

from sqlalchemy import Engine, create_engine, delete, event, func, select, text, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from archlab.errors import UserInputError
from archlab.files import replace_atomically
from archlab.registry.models import (
    AggregateRow,
    ArtifactRow,
    CVGroupRow,
    MetricKeyRow,
    MetricRow,
    MixupRow,
    RunRow,
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

DEFAULT_URL = "sqlite:///.archlab/registry.db"
KINDS = ("train", "eval", "bench")
STATUSES = ("running", "completed", "failed", "interrupted")
HEARTBEAT_S = 2.0  # background heartbeat and metric flush period (the issue asks for <= 5 s)
DEFAULT_GRACE_S = 300.0  # a running run silent this long is stale
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford-style: no i, l, o, u

T = TypeVar("T")


class RegistryError(UserInputError):
    """A registry problem a user can fix: bad URL, unreachable database, unknown run id."""


def minimize(name: str) -> bool:
    """Whether lower is better for a metric: names with ``loss``, ``err`` or ``perplexity``."""
    lowered = name.lower()
    return any(word in lowered for word in ("loss", "err", "perplexity", "ppl"))


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


def resolve_url(url: str | None) -> str:
    """The registry URL: the argument, else ``$ARCHLAB_REGISTRY``, else ``.archlab/registry.db``."""
    chosen = url or os.environ.get("ARCHLAB_REGISTRY")
    if chosen:
        if "://" not in chosen:  # a plain path means a SQLite file
            chosen = f"sqlite:///{chosen}"
        return chosen
    Path(".archlab").mkdir(exist_ok=True)
    return DEFAULT_URL


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
            f"({_archlab_version()}) does not know (newest known: {_head_revision()}); it was "
            "probably written by a newer archlab: upgrade archlab to open it"
        )


def _archlab_version() -> str:
    import archlab

    return archlab.__version__


def _current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:
            return None


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


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str | None], ...]:
    """Versions of python, archlab, torch and scikit-learn, read from package metadata (this
    imports neither torch nor scikit-learn); looked up once per process."""
    from importlib import metadata

    import archlab

    found: list[tuple[str, str | None]] = [
        ("python", sys.version.split()[0]),
        ("archlab", archlab.__version__),
    ]
    for dist in ("torch", "scikit-learn"):
        try:
            found.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            found.append((dist, None))
    return tuple(found)


def provenance() -> dict[str, Any]:
    """Where and how a run was started: git state, host, user, pid, command, versions."""
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "user": _user(),
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "versions": dict(_versions()),
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
    """The experiment registry at ``url`` (see ``resolve_url``), with its artifact folder.

    Opening creates or migrates the schema and marks as interrupted the runs that can no longer be
    running: those whose process is gone on this host, and those silent for the grace period.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        artifacts: str | os.PathLike[str] | None = None,
        grace: float | None = DEFAULT_GRACE_S,
    ) -> None:
        self.url = resolve_url(url)
        self.engine = _connect_engine(self.url)
        try:
            migrate(self.engine)
        except RegistryError:
            self.engine.dispose()
            raise
        except DBAPIError as exc:  # unreachable server, missing database, not a database file
            self.engine.dispose()
            raise RegistryError(
                f"cannot open the registry at {self._safe_url()}: {exc.orig}"
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
        self.artifacts = Path(artifacts) if artifacts is not None else self._default_artifacts()
        # What committed transactions established, so the write path need not ask again: metric
        # key ids, the hashes of stored specs (and the hash of each spec object seen), and CV
        # groups (pk, spec hash, number of folds). Keys, specs and groups are never deleted.
        self._key_ids: dict[str, int] = {}
        self._spec_hashes: dict[int, tuple[Any, str]] = {}
        self._stored_specs: set[str] = set()
        self._groups: dict[str, tuple[int, str, int]] = {}
        self._heart = _Heartbeat()
        if grace is not None:  # None: leave stale runs to an explicit mark_stale (arch runs gc)
            self.mark_stale(grace)

    def _safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def _default_artifacts(self) -> Path:
        path = _sqlite_path(self.url)
        if path is not None:
            return path.parent / "artifacts"
        return Path(os.environ.get("ARCHLAB_ARTIFACTS", ".archlab/artifacts"))

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
            self._key_ids.update(tx.keys)
            self._stored_specs.update(tx.specs)
            self._groups.update(tx.groups)
            return result

        return _retry(attempt)

    # -- specs, CV groups and runs ----------------------------------------------------------------

    def _spec_hash(self, tx: _Tx, spec: Any) -> str:
        """Store ``spec`` unless a spec with its hash is stored; return the hash."""
        from archlab.specs import canonical_form, canonical_json, load_spec, spec_hash

        cached = self._spec_hashes.get(id(spec))
        if cached is not None and cached[0] is spec and cached[1] in self._stored_specs:
            return cached[1]
        loaded = load_spec(spec)
        digest = spec_hash(loaded)
        if not isinstance(spec, str | os.PathLike | Mapping):
            # a Spec is immutable; the reference kept here keeps its id from being reused
            self._spec_hashes[id(spec)] = (spec, digest)
        if digest in self._stored_specs:
            return digest
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
        return digest

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
            digest = self._spec_hash(tx, spec)
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
            row = (run_id, kind, "running", digest, group_pk, fold, n_train, n_val, train_sha,
                   val_sha, begun, now, settings, origin, prov["host"], prov["pid"])  # fmt: skip
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

    def _key_ids_of(self, tx: _Tx, names: Iterable[str]) -> dict[str, int]:
        """The ids of these metric names, interning the new ones."""
        found: dict[str, int] = {}
        for name in names:
            key = self._key_ids.get(name) or tx.keys.get(name)
            if key is None:
                key = self._sql.key_id.scalar(tx.conn, (name,))
                if key is None:
                    self._sql.insert_key.rowcount(tx.conn, (name,))
                    key = self._sql.key_id.scalar(tx.conn, (name,))
                tx.keys[name] = key
            found[name] = key
        return found

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
            if finish is not None:
                now = time.time()
                changed = sql.finish.rowcount(conn, (finish[0], now, finish[1], pk))
            elif heartbeat is not None:
                changed = sql.beat.rowcount(conn, (heartbeat, pk))
            else:
                changed = 0
            if not changed and sql.run_exists.first(conn, (pk,)) is None:
                return {}  # the run was removed while running: its late metrics go with it
            series: dict[str, _Series] = {}
            if batch:
                keys = self._key_ids_of(tx, {name for name, *_ in batch})
                sql.upsert_metrics.many(
                    conn,
                    [
                        (pk, keys[name], step, epoch, None if value != value else value, at)
                        for name, step, epoch, value, at in batch
                    ],
                )
                series = self._fold_summaries(conn, handle, keys, batch)
                sql.upsert_summaries.many(
                    conn,
                    [
                        (pk, keys[name], s.last_value, s.last_step, s.best, s.best_step, s.count)
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
        keys: dict[str, int],
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
                    acc = [step, number, None, None, 0, True, minimize(name)]
                else:
                    extends = step > known.last_step
                    acc = [step, number, known.best, known.best_step, known.count, extends,
                           minimize(name)]  # fmt: skip
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
                out[name] = self._recompute_summary(conn, handle.pk, keys[name], low)
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
            changed = self._sql.finish.rowcount(tx.conn, (status, now, error, run_pk))
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
                replace_atomically(target, functools.partial(_copy, resolved))  # no write-through
            resolved = target
        digest = hashlib.sha256()
        with open(resolved, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        record = Artifact(
            str(resolved.relative_to(root)), kind, resolved.stat().st_size, digest.hexdigest()
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

    def best(self, metric: str, group_by: str | None = None, where: str | None = None) -> list[Run]:
        """The best run by ``metric``'s best value (lowest for losses), or the best of each spec.

        One query: a window function ranks the runs of each spec, so the answer never loads
        more runs than it returns.
        """
        from archlab.registry import query

        if group_by not in (None, "spec"):
            raise RegistryError(f"group_by takes 'spec' or nothing, not {group_by!r}")
        key = select(MetricKeyRow.id).where(MetricKeyRow.name == metric).scalar_subquery()
        value = SummaryRow.best_value
        ranking = value.asc() if minimize(metric) else value.desc()
        stmt = (
            select(RunRow.pk, value.label("value"))
            .join(SummaryRow, (SummaryRow.run_pk == RunRow.pk) & (SummaryRow.key_id == key))
            .where(value.is_not(None))
        )
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
            best_first = ranked.c.value.asc() if minimize(metric) else ranked.c.value.desc()
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
    ) -> list[Ranked]:
        """Runs and CV groups ranked by ``metric``, best first (lowest for losses).

        A run counts with its best value; a CV group with the mean of its folds' final values
        (its aggregate), so a group is judged by all its folds, never by its luckiest one.
        ``by="auto"``: groups, and the runs outside groups; ``"group"``: groups only;
        ``"run"``: every run on its own, folds included (``best``). ``where`` (the query
        language, on runs) keeps the runs matching it and the groups with a fold matching it.
        """
        from archlab.registry import query

        if by not in ("auto", "group", "run"):
            raise RegistryError(f"rank by 'auto', 'group' or 'run', not {by!r}")
        low = minimize(metric)
        key = select(MetricKeyRow.id).where(MetricKeyRow.name == metric).scalar_subquery()
        condition = query.compile_where(where)
        found: list[tuple[float, float, int, str]] = []  # (value, -started, pk, kind)
        if by != "group":
            best = SummaryRow.best_value
            stmt = (
                select(RunRow.pk, best, RunRow.started)
                .join(SummaryRow, (SummaryRow.run_pk == RunRow.pk) & (SummaryRow.key_id == key))
                .where(best.is_not(None))
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

    def remove(self, run_id: str) -> None:
        """Delete a run with its metrics, tags, mixup and artifact records (files stay)."""

        def write(session: Session) -> None:
            row = self._row(session, run_id)
            group_pk = row.cv_group_pk
            for table in (MetricRow, SummaryRow, TagRow, MixupRow, ArtifactRow):
                session.execute(delete(table).where(table.run_pk == row.pk))
            session.delete(row)
            session.flush()
            if group_pk is not None:
                self._aggregate(session.connection(), group_pk)

        self._write(write)

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
        specs = dict(
            session.execute(
                select(SpecRow.hash, SpecRow.name).where(
                    SpecRow.hash.in_({r.spec_hash for r in rows})
                )
            ).all()
        )
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
                    spec_name=specs.get(r.spec_hash),
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
        self.keys: dict[str, int] = {}
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
    """A run's configuration as the JSON text it is stored as (see ``_jsonable``)."""
    value = dict(config or {})
    try:  # the common case in one pass: plain, finite values
        return json.dumps(value, default=str, allow_nan=False)
    except ValueError:
        return json_text(_jsonable(value))


def _json_object(config: Mapping[str, Any] | None) -> dict[str, Any]:
    return _jsonable(dict(config or {}))


def _copy(source: Path, temporary: str) -> None:
    shutil.copyfile(source, temporary)
    shutil.copystat(source, temporary)


def _check_tags(tags: Mapping[str, Any]) -> None:
    for key in tags:
        if not 0 < len(str(key)) <= 100:
            raise RegistryError(f"a tag key has 1 to 100 characters, not {str(key)!r}")


def _nan(value: float | None) -> float:
    """A stored metric value: NULL stands for NaN."""
    return math.nan if value is None else value


_NON_FINITE = {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}


def _jsonable(value: Any) -> Any:
    """Config values as JSON: tuples become lists, paths and other objects their str(), and
    NaN / infinities the strings "nan" / "inf" / "-inf" (strict JSON, which PostgreSQL requires,
    has no such numbers)."""
    return json.loads(json.dumps(value, default=str), parse_constant=_NON_FINITE.__getitem__)


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
    "Registry",
    "RegistryError",
    "RunHandle",
    "indices_sha256",
    "minimize",
    "new_id",
    "resolve_url",
]
