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
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, delete, event, func, select, text, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from archlab.errors import UserInputError
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
from archlab.registry.records import (
    Aggregate,
    Artifact,
    Change,
    CVGroup,
    CVInfo,
    MetricSummary,
    MixupSetting,
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
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


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
    with _migration_lock(engine), engine.begin() as conn:
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
        self._specs: dict[int, tuple[Any, str]] = {}
        self.artifacts = Path(artifacts) if artifacts is not None else self._default_artifacts()
        self._key_ids: dict[str, int] = {}
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
        def attempt() -> T:
            with self._write_sessions() as session:
                with session.begin():
                    result = fn(session)
                # metric key ids become known only once the transaction that found or made them
                # has committed: a rolled-back insert must not leave a dangling id in the cache
                self._key_ids.update(session.info.get("new_keys", {}))
                return result

        return _retry(attempt)

    # -- specs, CV groups and runs ----------------------------------------------------------------

    def _ensure_spec(self, session: Session, spec: Any) -> SpecRow:
        from archlab.specs import canonical_form, canonical_json, load_spec, spec_hash

        cached = self._specs.get(id(spec))
        if cached is not None and cached[0] is spec:
            row = session.get(SpecRow, cached[1])
            if row is not None:
                return row
        loaded = load_spec(spec)
        digest = spec_hash(loaded)
        if not isinstance(spec, str | os.PathLike | Mapping):
            self._specs[id(spec)] = (spec, digest)  # the reference keeps the id from being reused
        row = session.get(SpecRow, digest)
        if row is None:
            # ON CONFLICT DO NOTHING: two PostgreSQL writers may insert the same new spec at once
            # (SQLite's IMMEDIATE transactions serialise them anyway)
            dialect = session.get_bind().dialect.name
            session.execute(
                _upsert(dialect, SpecRow)
                .values(
                    hash=digest,
                    name=loaded.name,
                    version=loaded.version,
                    canonical=canonical_json(canonical_form(loaded)),
                    created=time.time(),
                )
                .on_conflict_do_nothing()
            )
            row = session.get_one(SpecRow, digest)
        return row

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

        def write(session: Session) -> CVGroup:
            spec_row = self._ensure_spec(session, spec)
            row = CVGroupRow(
                id=new_id(),
                spec_hash=spec_row.hash,
                k=k,
                splitter=splitter,
                shuffle=shuffle,
                seed=seed,
                stratified=stratified,
                grouped=grouped,
                repeats=repeats,
                library=library,
                config=_jsonable(dict(config or {})),
                created=time.time(),
            )
            session.add(row)
            session.flush()
            return _group_record(row, [], {})

        return self._write(write)

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
    ) -> RunHandle:
        """Record a new running run and return its handle (a context manager).

        ``cv_group`` and ``fold`` (0-based) place a fold run in its CV group; ``train_indices`` and
        ``val_indices`` are fingerprinted (sizes and SHA-256). ``mixup`` takes a dict or an object
        with ``MixupSetting``'s field names; an inactive setting records no mixup.
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
        prov = provenance()

        def write(session: Session) -> tuple[int, str]:
            spec_row = self._ensure_spec(session, spec)
            group_pk = None
            if group_id is not None:
                group = session.scalars(select(CVGroupRow).where(CVGroupRow.id == group_id)).first()
                if group is None:
                    raise RegistryError(f"no CV group {group_id!r} in this registry")
                if not 0 <= fold < group.k * group.repeats:  # type: ignore[operator]
                    raise RegistryError(
                        f"fold {fold} is outside the group's {group.k * group.repeats} folds"
                    )
                if group.spec_hash != spec_row.hash:
                    raise RegistryError(
                        f"CV group {group_id!r} belongs to another spec ({group.spec_hash[:12]})"
                    )
                group_pk = group.pk
            row = RunRow(
                id=new_id(),
                kind=kind,
                status="running",
                spec_hash=spec_row.hash,
                cv_group_pk=group_pk,
                fold=fold,
                n_train=len(train_indices) if train_indices is not None else None,
                n_val=len(val_indices) if val_indices is not None else None,
                train_sha256=indices_sha256(train_indices) if train_indices is not None else None,
                val_sha256=indices_sha256(val_indices) if val_indices is not None else None,
                started=now,
                heartbeat=now,
                config=_jsonable(dict(config or {})),
                provenance=prov,
                host=prov["host"],
                pid=prov["pid"],
            )
            session.add(row)
            session.flush()
            if setting is not None and setting.active:
                lo, hi = setting.cutmix_minmax or (None, None)
                session.add(
                    MixupRow(
                        run_pk=row.pk,
                        alpha=setting.alpha,
                        cutmix_alpha=setting.cutmix_alpha,
                        cutmix_min=lo,
                        cutmix_max=hi,
                        prob=setting.prob,
                        switch_prob=setting.switch_prob,
                        mode=setting.mode,
                        label_smoothing=setting.label_smoothing,
                        off_epoch=setting.off_epoch,
                    )
                )
            for key, value in (tags or {}).items():
                session.add(TagRow(run_pk=row.pk, key=str(key), value=str(value)))
            return row.pk, row.id

        pk, run_id = self._write(write)
        return RunHandle(self, pk, run_id, heartbeat=heartbeat)

    # -- writes used by run handles ------------------------------------------------------------

    def _key_id(self, session: Session, name: str) -> int:
        pending: dict[str, int] = session.info.setdefault("new_keys", {})
        key = self._key_ids.get(name) or pending.get(name)
        if key is None:
            key = session.scalars(select(MetricKeyRow.id).where(MetricKeyRow.name == name)).first()
            if key is None:
                dialect = session.get_bind().dialect.name
                stmt = _upsert(dialect, MetricKeyRow).values(name=name).on_conflict_do_nothing()
                session.execute(stmt)
                key = session.scalars(
                    select(MetricKeyRow.id).where(MetricKeyRow.name == name)
                ).one()
            pending[name] = key  # cached by _write once the transaction commits
        return key

    def _write_metrics(
        self,
        run_pk: int,
        points: list[tuple[str, int, float | None, float, float]],
        heartbeat: float | None,
    ) -> None:
        """Insert metric points and fold them into the run's summaries, in one transaction.

        A step logged twice keeps its last value (within the batch and against earlier batches).
        NaN is stored as NULL (SQLite cannot store NaN; PostgreSQL would sort it above every
        number): it counts as a point and can be the final value, never the best.
        """
        unique: dict[tuple[str, int], tuple[str, int, float | None, float, float]] = {}
        for point in points:  # one row per (name, step), the last logged wins
            unique.pop((point[0], point[1]), None)
            unique[(point[0], point[1])] = point
        batch = list(unique.values())

        def write(session: Session) -> None:
            dialect = session.get_bind().dialect.name
            if session.get(RunRow, run_pk) is None:
                return  # the run was removed while running: its late metrics go with it
            if batch:
                keys = {name: self._key_id(session, name) for name, *_ in batch}
                rows = [
                    {
                        "run_pk": run_pk,
                        "key_id": keys[name],
                        "step": step,
                        "epoch": epoch,
                        "value": None if math.isnan(value) else value,
                        "time": at,
                    }
                    for name, step, epoch, value, at in batch
                ]
                stmt = _upsert(dialect, MetricRow)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["run_pk", "key_id", "step"],
                    set_={
                        "value": stmt.excluded.value,
                        "epoch": stmt.excluded.epoch,
                        "time": stmt.excluded.time,
                    },
                )
                session.execute(stmt, rows)
                series: dict[str, list[tuple[int, float | None]]] = {}
                for name, step, _epoch, value, _at in batch:
                    series.setdefault(name, []).append((step, None if math.isnan(value) else value))
                self._fold_summaries(session, run_pk, keys, series)
            if heartbeat is not None:
                session.execute(
                    update(RunRow)
                    .where(RunRow.pk == run_pk, RunRow.status == "running")
                    .values(heartbeat=heartbeat)
                )

        self._write(write)

    def _fold_summaries(
        self,
        session: Session,
        run_pk: int,
        keys: dict[str, int],
        series: dict[str, list[tuple[int, float | None]]],
    ) -> None:
        """Bring the run's summaries of these metrics up to date with the points just written.

        New steps past a metric's last step update its summary incrementally; a batch that
        rewrites or back-fills steps recomputes the summary from the stored series instead.
        """
        existing = {
            row.key_id: row
            for row in session.scalars(
                select(SummaryRow).where(
                    SummaryRow.run_pk == run_pk, SummaryRow.key_id.in_(list(keys.values()))
                )
            )
        }
        for name, points in series.items():
            key = keys[name]
            low = minimize(name)
            row = existing.get(key)
            if row is not None and min(step for step, _ in points) <= row.last_step:
                self._recompute_summary(session, run_pk, key, low, row)
                continue
            points.sort(key=lambda p: p[0])
            best, best_step = (row.best_value, row.best_step) if row else (None, None)
            for step, value in points:
                if value is not None and (best is None or (value < best if low else value > best)):
                    best, best_step = value, step
            last_step, last_value = points[-1]
            if row is None:
                session.add(
                    SummaryRow(
                        run_pk=run_pk,
                        key_id=key,
                        last_value=last_value,
                        last_step=last_step,
                        best_value=best,
                        best_step=best_step,
                        count=len(points),
                    )
                )
            else:
                row.last_value, row.last_step = last_value, last_step
                row.best_value, row.best_step = best, best_step
                row.count += len(points)

    def _recompute_summary(
        self, session: Session, run_pk: int, key: int, low: bool, row: SummaryRow
    ) -> None:
        mine = (MetricRow.run_pk == run_pk, MetricRow.key_id == key)
        count, last_step = session.execute(
            select(func.count(), func.max(MetricRow.step)).where(*mine)
        ).one()
        last_value = session.scalars(
            select(MetricRow.value).where(*mine, MetricRow.step == last_step)
        ).one()
        best = session.execute(
            select(MetricRow.value, MetricRow.step)
            .where(*mine, MetricRow.value.is_not(None))
            .order_by(MetricRow.value.asc() if low else MetricRow.value.desc(), MetricRow.step)
            .limit(1)
        ).first()
        row.count, row.last_step, row.last_value = count, last_step, last_value
        row.best_value, row.best_step = (best[0], best[1]) if best is not None else (None, None)

    def _finish(self, run_pk: int, status: str, error: str | None) -> None:
        now = time.time()

        def write(session: Session) -> None:
            session.execute(
                update(RunRow)
                .where(RunRow.pk == run_pk, RunRow.status == "running")
                .values(status=status, ended=now, heartbeat=now, error=error)
            )
            # .first(): the run may have been removed while it was still running
            group_pk = session.scalars(
                select(RunRow.cv_group_pk).where(RunRow.pk == run_pk)
            ).first()
            if group_pk is not None:
                self._aggregate(session, group_pk)

        self._write(write)

    def _aggregate(self, session: Session, group_pk: int) -> None:
        """Recompute a CV group's per-metric aggregates over its completed folds (a fold whose
        final value is NaN does not count: ``n`` says how many did)."""
        # One recomputation per group at a time: on PostgreSQL two folds ending at once would
        # each read the other's fold as still running and insert the same aggregate rows. The
        # row lock serialises them, and READ COMMITTED lets the second see the first's commit.
        # (SQLite's IMMEDIATE write transactions are serial already; FOR UPDATE is dropped there.)
        session.execute(select(CVGroupRow.pk).where(CVGroupRow.pk == group_pk).with_for_update())
        values: dict[int, list[float]] = {}
        rows = session.execute(
            select(SummaryRow.key_id, SummaryRow.last_value)
            .join(RunRow, RunRow.pk == SummaryRow.run_pk)
            .where(
                RunRow.cv_group_pk == group_pk,
                RunRow.status == "completed",
                SummaryRow.last_value.is_not(None),
            )
        )
        for key, value in rows:
            if value is not None:
                values.setdefault(key, []).append(value)
        session.execute(delete(AggregateRow).where(AggregateRow.group_pk == group_pk))
        for key, xs in values.items():
            n = len(xs)
            mean = sum(xs) / n
            std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
            session.add(
                AggregateRow(
                    group_pk=group_pk, key_id=key, mean=mean, std=std, n=n, min=min(xs), max=max(xs)
                )
            )

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
                _copy_replacing(resolved, target)  # never writes through a link at target
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
        with self.session() as session:
            row = session.scalars(select(CVGroupRow).where(CVGroupRow.id == group_id)).first()
            if row is None:
                raise RegistryError(f"no CV group {group_id!r} in this registry")
            return self._group(session, row)

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
                self._aggregate(session, group_pk)

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
            name: Aggregate(name, a.mean, a.std, a.n, a.min, a.max)
            for a, name in session.execute(
                select(AggregateRow, MetricKeyRow.name)
                .join(MetricKeyRow, MetricKeyRow.id == AggregateRow.key_id)
                .where(AggregateRow.group_pk == row.pk)
            )
        }
        return _group_record(row, run_ids, dict(sorted(aggregates.items())))


# ---------------------------------------------------------------------------------- run handle


class RunHandle:
    """A running run: log metrics and artifacts, then end it (or use it as a context manager).

    Metrics are buffered and written in batches by a background thread every ``heartbeat``
    seconds (with the heartbeat itself), when the buffer is large, and when the run ends; so a run
    killed with SIGKILL loses at most the last few seconds. As a context manager the run ends
    ``completed``, ``failed`` (with the error text) on an exception, or ``interrupted`` on
    KeyboardInterrupt or SIGTERM.
    """

    FLUSH_ROWS = 5000

    def __init__(
        self, registry: Registry, pk: int, run_id: str, heartbeat: float = HEARTBEAT_S
    ) -> None:
        self.registry = registry
        self.pk = pk
        self.id = run_id
        self._buffer: list[tuple[str, int, float | None, float, float]] = []
        self._steps: dict[str, int] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._ended = False
        self._interval = min(float(heartbeat), 5.0)
        self._thread = threading.Thread(
            target=self._beat, name=f"archlab-heartbeat-{run_id}", daemon=True
        )
        self._thread.start()
        self._previous_sigterm: Any = None
        self._sigterm_installed = False

    def log_metrics(
        self, values: Mapping[str, float], step: int | None = None, epoch: float | None = None
    ) -> None:
        """Record metric values at ``step`` (default: one past the metric's last step).

        Logging a step again replaces its value; NaN is kept (it can be final, never best)."""
        if self._ended:
            raise RegistryError(f"run {self.id} has ended: it takes no more metrics")
        with self._lock:
            now = time.time()  # under the lock: ordered with the heartbeat a flush takes
            for name, value in values.items():
                s = self._steps.get(name, -1) + 1 if step is None else int(step)
                self._steps[name] = max(s, self._steps.get(name, -1))
                number = float(value)
                if not math.isfinite(number):
                    number = float("nan") if math.isnan(number) else number
                self._buffer.append((str(name), s, epoch, number, now))
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
            with self._lock:
                # every point logged before this instant is in this batch: once it is written,
                # the heartbeat vouches for all the points logged before it
                beat = time.time()
                points, self._buffer = self._buffer, []
            try:
                self.registry._write_metrics(self.pk, points, beat if heartbeat else None)
            except BaseException:
                with self._lock:
                    self._buffer[:0] = points
                raise

    def end(self, status: str = "completed", error: str | None = None) -> None:
        """End the run; idempotent."""
        if self._ended:
            return
        if status not in STATUSES[1:]:
            raise RegistryError(f"a run ends completed, failed or interrupted, not {status!r}")
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self.flush()
        except Exception as exc:
            # the metrics could not be written: still end the run rather than leave it running
            with contextlib.suppress(Exception):
                note = f"could not write the last metrics: {type(exc).__name__}: {exc}"
                self.registry._finish(self.pk, "failed", f"{error}; {note}" if error else note)
            self._ended = True
            raise
        self.registry._finish(self.pk, status, error)
        self._ended = True

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(Exception):  # a missed beat is retried on the next one
                self.flush()

    def __enter__(self) -> RunHandle:
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
            self._sigterm_installed = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if self._sigterm_installed:
            # None: the previous handler was not set from Python; the default is the best guess
            previous = self._previous_sigterm
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
            self._previous_sigterm, self._sigterm_installed = None, False
        if exc_type is None:
            self.end("completed")
        elif issubclass(exc_type, Terminated):
            self.end("interrupted", "interrupted by SIGTERM")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("interrupted", "interrupted by the user (KeyboardInterrupt)")
        else:
            self.end("failed", f"{exc_type.__name__}: {exc}")


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives during a run."""


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


# ------------------------------------------------------------------------------------ helpers


def _upsert(dialect: str, table: Any) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def _copy_replacing(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through a temporary file and a rename, so that whatever was
    at ``target`` (a symbolic link included) is replaced rather than written through."""
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, temporary)
        shutil.copystat(source, temporary)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


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
