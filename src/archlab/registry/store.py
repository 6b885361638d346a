"""The registry store: the ``Registry``, whose methods are the only way in to a registry's data.

``Registry(url)`` opens (and creates or migrates) a registry; ``start_run`` returns a
``RunHandle`` that buffers metrics, writes them in batches with a background heartbeat, and
records how the run ended. Reads (``runs``, ``get``, ``compare``, ``diff``, ``best``) never scan
metric series: final and best values live in per-run summaries kept current on every write, and
CV aggregates in per-group rows updated when a fold ends.

Every read and write is one ``Database.transaction`` (writes through ``_transaction``, which
retries them and caches what they learnt once they commit). The SQL is in ``reads``, ``writes``
and ``prepared``; run folders and artifact files in ``artifacts``; the value rules in
``summaries``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import select
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from archlab.jsonpolicy import jsonable
from archlab.metrics import Direction, checked_direction, default_direction
from archlab.registry import artifacts as runfiles
from archlab.registry import reads, writes
from archlab.registry.engine import (
    Database,
    Location,
    RegistryError,
    Tx,
    check_text,
    connect_engine,
    locate,
    retry,
)
from archlab.registry.handle import HEARTBEAT_S, Heartbeat, RunHandle
from archlab.registry.migrate import check_tables, has_schema, migrate
from archlab.registry.models import CVGroupRow
from archlab.registry.prepared import Statements, json_text
from archlab.registry.provenance import owner, provenance
from archlab.registry.records import (
    Artifact,
    Change,
    CVGroup,
    MixupSetting,
    Ranked,
    Run,
)
from archlab.registry.summaries import Point, SeriesSummary, fold_batch, stored

if TYPE_CHECKING:
    from archlab.registry.comparison import GroupComparison
    from archlab.registry.sweep_comparison import SweepComparison

KINDS = ("train", "eval", "bench")
DEFAULT_GRACE_S = 300.0  # a running run silent this long is stale
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford-style: no i, l, o, u

T = TypeVar("T")


def indices_sha256(indices: Iterable[int]) -> str:
    """SHA-256 of the sorted indices as little-endian int64: a split's fingerprint."""
    values = array("q", sorted(int(i) for i in indices))
    if sys.byteorder != "little":
        values.byteswap()
    return hashlib.sha256(values.tobytes()).hexdigest()


def new_id(length: int = 8) -> str:
    """A short, typeable, unique-enough id (40 bits)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


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
        self.engine = connect_engine(self.url)
        self._open(create)
        self._db = Database(self.engine)
        self._sql = Statements(self.engine.dialect)
        self.artifacts = (
            Path(artifacts).absolute()
            if artifacts is not None
            else runfiles.artifact_root(self._db, self.url, create)
        )
        # What committed transactions established, so the write path need not ask again: metric
        # keys (id, direction), the hashes of stored specs (and the hash and name of each spec
        # object seen), and CV groups (pk, spec hash, number of folds). Keys, specs and groups are
        # never deleted.
        self._keys: dict[str, tuple[int, Direction]] = {}
        self._spec_hashes: dict[int, tuple[Any, str, str | None]] = {}
        self._stored_specs: set[str] = set()
        self._groups: dict[str, tuple[int, str, int]] = {}
        self._heart = Heartbeat()
        if grace is not None:  # None: leave stale runs to an explicit mark_stale (arch runs gc)
            self.mark_stale(grace)

    def _open(self, create: bool) -> None:
        """Check, create or migrate the schema; any failure disposes of the engine and says which
        registry could not be opened."""
        try:
            if not create and not has_schema(self.engine):
                raise RegistryError(
                    f"no registry at {self.location.describe()}: the database has no archlab "
                    "tables. A command that records runs (arch train, arch bench) creates them"
                )
            migrate(self.engine)
            check_tables(self.engine, self.location)
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

    def _safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

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
        with self._db.transaction() as tx:
            yield tx.session

    def _transaction(self, fn: Callable[[Tx], T]) -> T:
        """One write transaction, retried when the database is momentarily locked. What it
        learnt (key ids, specs, groups) enters the registry's caches only once it has committed:
        a rolled-back insert must not leave a dangling id behind."""

        def attempt() -> T:
            with self._db.transaction(write=True) as tx:
                result = fn(tx)
            self._keys.update(tx.keys)
            self._stored_specs.update(tx.specs)
            self._groups.update(tx.groups)
            return result

        return retry(attempt)

    # -- specs, CV groups and runs ----------------------------------------------------------------

    def _spec_ref(self, tx: Tx, spec: Any) -> tuple[str, str | None]:
        """Store ``spec`` unless a spec with its hash is stored; return its hash and name."""
        from archlab.specs import load_spec, spec_hash

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
        writes.store_spec(tx.conn, loaded, digest)
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

        def write(tx: Tx) -> CVGroup:
            digest = self._spec_ref(tx, spec)[0]
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

        def write(tx: Tx) -> tuple[int, str, int | None]:
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
                writes.check_fold_free(conn, group_pk, group_id, fold)  # type: ignore[arg-type]
            run_id = new_id()
            row = (run_id, kind, "running", digest, spec_name, group_pk, fold, n_train, n_val,
                   train_sha, val_sha, begun, now, settings, origin, prov["host"],
                   prov["pid"])  # fmt: skip
            pk = sql.insert_run.insert(conn, row)
            if setting is not None and setting.active:
                writes.insert_mixup(sql, conn, pk, setting)
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
        pk, group_pk, summaries = self._transaction(
            lambda tx: writes.reopen_run(tx.conn, run_id, prov)
        )
        handle = RunHandle(self, pk, run_id, heartbeat=heartbeat, group_pk=group_pk)
        for name, summary in summaries.items():
            handle._series[name] = summary
            handle._steps[name] = summary.last_step
        return handle

    def spec_document(self, digest: str) -> dict[str, Any]:
        """The canonical spec stored under ``digest`` (a run's ``spec_hash``), as JSON data."""
        return reads.spec_document(self._db, digest)

    def _group_info(self, tx: Tx, group_id: str) -> tuple[int, str, int]:
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

    # -- metrics --------------------------------------------------------------------------------

    def _keys_of(
        self, tx: Tx, names: Iterable[str], declared: Mapping[str, Direction] | None = None
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
        with self._db.transaction() as tx:
            row = self._sql.key_id.first(tx.conn, (name,))
        if row is None:
            return default_direction(name)
        direction = checked_direction(row[1], name)
        self._keys[name] = (row[0], direction)  # committed, and keys are never deleted
        return direction

    def _write_metrics(
        self,
        handle: RunHandle,
        points: list[Point],
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
        sql = self._sql
        pk = handle.pk

        def write(tx: Tx) -> dict[str, SeriesSummary]:
            conn = tx.conn
            if finish is not None:
                changed = sql.finish.rowcount(
                    conn, (finish[0], time.time(), finish[1], pk, *owner())
                )
            elif heartbeat is not None:
                changed = sql.beat.rowcount(conn, (heartbeat, pk, *owner()))
            else:
                changed = 0
            if not changed and sql.run_exists.first(conn, (pk,)) is None:
                return {}  # the run was removed while running: its late metrics go with it
            series: dict[str, SeriesSummary] = {}
            if points:
                keys = self._keys_of(tx, {name for name, *_ in points})
                sql.upsert_metrics.many(
                    conn,
                    [
                        (pk, keys[name][0], step, epoch, stored(value), at)
                        for name, step, epoch, value, at in points
                    ],
                )
                series = self._fold_summaries(conn, handle, keys, points)
                sql.upsert_summaries.many(
                    conn,
                    [
                        (pk, keys[name][0], s.last_value, s.last_step, s.best, s.best_step, s.count)
                        for name, s in series.items()
                    ],
                )
            completed = finish is not None and finish[0] == "completed"
            if completed and changed and handle.group_pk is not None:
                writes.aggregate_group(sql, conn, handle.group_pk)
            return series

        handle._series.update(self._transaction(write))

    def _fold_summaries(
        self,
        conn: Connection,
        handle: RunHandle,
        keys: dict[str, tuple[int, Direction]],
        batch: list[Point],
    ) -> dict[str, SeriesSummary]:
        """The run's summaries of the metrics in ``batch``, brought up to date with it.

        The handle knows each metric's summary as last committed (it is the run's only writer):
        new steps past a metric's last step update it incrementally (``summaries.fold_batch``);
        a batch that rewrites or back-fills steps recomputes the summary from the stored series.
        """
        low = {name: direction == "min" for name, (_, direction) in keys.items()}
        out, again = fold_batch(handle._series, low, batch)
        for name in again:
            out[name] = writes.recompute_summary(conn, handle.pk, keys[name][0], low[name])
        return out

    def _finish(self, run_pk: int, status: str, error: str | None) -> None:
        """End a run without writing metrics (stale sweeps, a run whose last write failed)."""
        row = (status, time.time(), error, run_pk, *owner())
        completed = status == "completed"
        self._transaction(lambda tx: writes.finish_run(self._sql, tx.conn, run_pk, row, completed))

    # -- run folders and artifacts --------------------------------------------------------------

    def run_folder(self, run_id: str) -> Path:
        """The folder of run ``run_id`` under the artifact folder (created when a file is
        recorded there): where a run keeps its checkpoints and training state."""
        return runfiles.run_folder(self.artifacts, run_id)

    def run_file(self, run_id: str, name: str) -> Path:
        """The file ``name`` (a plain file name) in run ``run_id``'s folder."""
        return runfiles.run_file(self.artifacts, run_id, name)

    def _add_artifact(
        self, run_pk: int, run_id: str, path: str | os.PathLike[str], kind: str, copy: bool
    ) -> Artifact:
        """Record a file of a run (``RunHandle.log_artifact``), copied in when asked or when it
        lies outside the artifact folder."""
        record = runfiles.store_file(self.artifacts, run_id, path, kind, copy)
        self._transaction(lambda tx: writes.add_artifact(tx.session, run_pk, record))
        return record

    def artifact_file(self, run: Run, path: str) -> Path:
        """The file of run ``run``'s artifact ``path`` (relative to the artifact folder), checked
        before use: it must lie inside the artifact folder (no ``..``, no absolute path elsewhere,
        no symbolic link leading out), and hash to the sha256 the registry recorded for it (a
        file recorded under that path; a training state written since is only kept inside).
        Raises ``ArtifactError`` naming the file otherwise."""
        return runfiles.checked_file(self.artifacts, run, path)

    # -- maintenance ---------------------------------------------------------------------------

    def mark_stale(self, grace: float = DEFAULT_GRACE_S) -> list[str]:
        """Mark interrupted the running runs silent for ``grace`` seconds, or whose process is
        known dead on this host. Returns their ids."""
        dead = writes.stale_runs(self._db, grace)
        for pk, _ in dead:
            self._finish(
                pk, "interrupted", "no heartbeat: the process stopped without ending the run"
            )
        return [run_id for _, run_id in dead]

    def remove(self, run_id: str, *, files: bool = True) -> list[Path]:
        """Delete a run with its metrics, tags, mixup and artifact records and, with ``files``,
        its artifact files: its folder under the artifact root and the files it recorded there
        that no other run records. Returns the paths deleted. The records go first, in one
        transaction: files that cannot be deleted are left for ``orphan_artifacts``."""
        unshared = self._transaction(lambda tx: writes.delete_run(self._sql, tx, run_id))
        if not files:
            return []
        return runfiles.delete_files(self.artifacts, [run_id, *unshared])

    def remove_group(self, group_id: str, *, files: bool = True) -> list[Path]:
        """Delete a CV group: every fold run (as ``remove``), then the group and its aggregates."""
        removed: list[Path] = []
        for run_id in self.group(group_id).runs:
            removed += self.remove(run_id, files=files)
        self._transaction(lambda tx: writes.delete_group(tx.session, group_id))
        self._groups.pop(group_id, None)
        return removed

    def orphan_artifacts(self) -> list[Path]:
        """Folders under the artifact root named like a run id that no run of this registry has
        and no recorded artifact lies in: what removed runs left behind."""
        return writes.unclaimed(self._db, runfiles.run_folders(self.artifacts))

    def remove_orphans(self, folders: Sequence[Path]) -> list[Path]:
        """Delete folders ``orphan_artifacts`` returned (those still orphans)."""
        still = set(self.orphan_artifacts())
        return runfiles.delete_files(self.artifacts, [p.name for p in folders if p in still])

    def tag(self, run_id: str, **tags: Any) -> None:
        _check_tags(tags)
        self._transaction(lambda tx: writes.set_tags(tx.session, run_id, tags))

    # -- reads (``reads``) ---------------------------------------------------------------------

    def runs(
        self,
        where: str | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Run]:
        """Runs matching ``where`` (the query language), sorted, newest first by default;
        ``offset`` skips that many first (with ``limit``: one page of a listing)."""
        return reads.runs(self._db, where, order_by, limit, offset)

    def count(self, where: str | None = None) -> int:
        """How many runs match ``where`` (the query language): a listing's number of pages."""
        return reads.count(self._db, where)

    def get(self, run_id: str) -> Run:
        """One run with everything: summaries, tags, artifacts, provenance."""
        return reads.get(self._db, run_id)

    def split_fingerprints(self, run_id: str) -> dict[str, Any]:
        """The sizes and fingerprints of the training and validation indices run ``run_id``
        recorded: ``n_train``, ``train_sha256``, ``n_val``, ``val_sha256`` (hold-out runs too)."""
        return reads.split_fingerprints(self._db, run_id)

    def group(self, group_id: str) -> CVGroup:
        """A CV group with its fold runs and its aggregates (three prepared statements)."""
        return reads.group(self._db, self._sql, group_id)

    def completed_folds(self, group_id: str) -> dict[int, str]:
        """The fold indices of a CV group that have a completed run, each with the run that
        counts for it (the first completed; the one its aggregates use)."""
        return reads.completed_folds(self._db, group_id)

    def fold_runs(self, group_id: str) -> dict[int, Run]:
        """The completed run of each fold of a CV group, by fold index (the run its aggregates
        count: the first completed), with final and best values (``Run.summaries``)."""
        return reads.fold_runs(self._db, group_id)

    def compare_groups(
        self,
        a: str,
        b: str,
        metric: str = "val_acc",
        *,
        at: str = "final",
        rope: float = 0.01,
        ratio: str = "folds",
    ) -> GroupComparison:
        """Is CV group ``b`` better than ``a`` by ``metric``? Paired over their folds, which must
        be the same splits of the same data (else ``RegistryError`` names the first fold that
        differs): per fold d = B − A of the metric's final value (``at="best"``: its best), the
        corrected resampled t-test with its 95% interval, the naive t-test beside it, the
        Bayesian correlated t-test's P(A better), P(within ±``rope``), P(B better), and for
        5x2 CV Dietterich's t and Alpaydin's F (``archlab.registry.comparison``). ``ratio``:
        n2/n1 is 1/(k − 1) (``"folds"``) or the recorded mean validation / training sizes
        (``"sizes"``)."""
        from archlab.registry.comparison import compare_groups

        return compare_groups(self, a, b, metric, at=at, rope=rope, ratio=ratio)

    def compare_sweep(
        self,
        study: str,
        metric: str = "val_acc",
        *,
        at: str = "final",
        rope: float = 0.01,
        ratio: str = "folds",
    ) -> SweepComparison:
        """Every complete trial of sweep ``study`` (fold runs tagged ``sweep``) against the best
        one by ``metric``, each by ``compare_groups``, the corrected t-test's p-values adjusted
        by Holm's method over the trials (``archlab.registry.sweep_comparison``)."""
        from archlab.registry.sweep_comparison import compare_sweep

        return compare_sweep(self, study, metric, at=at, rope=rope, ratio=ratio)

    def compare(self, ids: Sequence[str]) -> list[Run]:
        return [self.get(run_id) for run_id in ids]

    def diff(self, a: str, b: str) -> list[Change]:
        """Differences between two runs: spec (as JSON paths), then config, mixup and CV."""
        return reads.diff(self._db, a, b)

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
        own = self.metric_direction(metric)
        return reads.best(self._db, metric, own, group_by, where, direction)

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
        own = self.metric_direction(metric)
        return reads.rank(
            self._db, metric, own, self.group, by=by, where=where, limit=limit, direction=direction
        )

    def kind_of(self, ident: str) -> str:
        """``"run"`` or ``"group"``: what ``ident`` names. An id that names neither, or both (a
        run and a CV group may share an id by chance), raises ``RegistryError``."""
        return reads.kind_of(self._db, ident)

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
        return reads.dependents(self._db, ids)

    def metric_history(
        self, run_id: str, name: str
    ) -> list[tuple[int, float | None, float, float]]:
        """One metric's series of a run: (step, epoch, value, time) by step."""
        return reads.metric_history(self._db, run_id, name)


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


def _check_tags(tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        if not 0 < len(str(key)) <= 100:
            raise RegistryError(f"a tag key has 1 to 100 characters, not {str(key)!r}")
        check_text(str(key), "a tag key")
        check_text(str(value), f"the value of tag {str(key)!r}")


__all__ = [
    "Location",
    "Registry",
    "RegistryError",
    "RunHandle",
    "indices_sha256",
    "locate",
    "new_id",
]
