"""The registry under stress, on SQLite and PostgreSQL: many writers at once, writers killed with
SIGTERM and SIGKILL, concurrent first opens, and no torch import. The writers are separate
interpreters (``scripts.py``), as real training processes would be."""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, make_url, select, text, update

from archlab.registry import Registry
from archlab.registry.engine import _wal_mode
from archlab.registry.migrate import head_revision
from archlab.registry.models import MetricRow, RunRow, SpecRow, SummaryRow

Script = Callable[..., subprocess.Popen[str]]
Doc = dict[str, Any]


@pytest.fixture
def spec_file(minimal_vit: Callable[[], Doc], isolated: Path) -> str:
    path = isolated / "spec.json"
    path.write_text(json.dumps(minimal_vit()))
    return str(path)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_file(url: str) -> str:
    database = make_url(url).database
    assert database
    return database


class Lines:
    """Reads a child's stdout (lines) and stderr on threads, so the test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._new = threading.Condition()
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._new:
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.append(self.proc.stderr.read())

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self._new:
            while not predicate(self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or not self._threads[0].is_alive():
                    raise AssertionError(f"child said {self.lines[-5:]}; stderr:\n{self.err()}")
                self._new.wait(min(left, 0.5))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = 120) -> str:
        """Wait for the child to exit; its stderr."""
        self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=30)
        return self.err()

    def err(self) -> str:
        return "".join(self.stderr)


# --- SQLite settings ------------------------------------------------------------------------------


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(isolated: Path) -> None:
    path = isolated / "wal.db"
    with Registry(f"sqlite:///{path}") as reg, reg.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db = sqlite3.connect(path)  # WAL is a property of the file: any client sees it
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()


# --- many writers ---------------------------------------------------------------------------------

WRITERS, RUNS, STEPS = 8, 100, 50


@pytest.mark.slow
def test_eight_processes_writing_at_once_lose_nothing(
    registry_url: str, run_script: Script, spec_file: str
) -> None:
    Registry(registry_url).close()  # the schema exists; the writers race on data, not DDL
    procs = [
        run_script("write", registry_url, spec_file, str(w), str(RUNS), str(STEPS))
        for w in range(WRITERS)
    ]
    readers = [Lines(p) for p in procs]
    for r in readers:  # the barrier: every writer is connected and waiting ...
        r.wait_for(lambda lines: "ready" in lines)
    for r in readers:  # ... then all start at once
        r.send("go")
    for p, r in zip(procs, readers, strict=True):
        err = r.wait(timeout=600)
        assert p.returncode == 0, err
        assert err == "", err  # raised nothing, warned nothing (-W error)
        assert r.lines[-1].startswith("done")

    with Registry(registry_url) as reg, reg.session() as s:
        total = WRITERS * RUNS
        assert s.scalar(select(func.count()).select_from(RunRow)) == total
        assert (
            s.scalar(select(func.count()).select_from(RunRow).where(RunRow.status == "completed"))
            == total
        )
        assert s.scalar(select(func.count()).select_from(MetricRow)) == total * STEPS * 2
        assert s.scalar(select(func.count()).select_from(SpecRow)) == 1
        per_run = s.execute(
            select(RunRow.config, func.count()).join(MetricRow).group_by(RunRow.pk)
        ).all()
        assert len(per_run) == total and {n for _, n in per_run} == {STEPS * 2}
        assert sorted((c["worker"], c["i"]) for c, _ in per_run) == [
            (w, i) for w in range(WRITERS) for i in range(RUNS)
        ]
        summaries = s.execute(select(SummaryRow.count, SummaryRow.last_value)).all()
        assert len(summaries) == total * 2
        assert {n for n, _ in summaries} == {STEPS}
        assert {v for _, v in summaries} == {1.0 / STEPS, (STEPS - 1) / 100}


# --- signals and kills ----------------------------------------------------------------------------


def test_sigterm_interrupts_the_run(registry_url: str, run_script: Script, spec_file: str) -> None:
    Registry(registry_url).close()
    proc = run_script("sigterm", registry_url, spec_file)
    lines = Lines(proc)
    lines.wait_for(lambda ls: any(line.startswith("run ") for line in ls))
    run_id = lines.lines[0].split()[1]
    time.sleep(0.3)  # a few steps and a heartbeat
    proc.send_signal(signal.SIGTERM)
    err = lines.wait()
    assert proc.returncode != 0
    assert "Interrupted" in err  # lifecycle's SIGTERM handler raised in the main thread
    with Registry(registry_url) as reg:
        got = reg.get(run_id)
    assert got.status == "interrupted"
    assert got.error == "interrupted by SIGTERM"
    assert got.ended is not None
    assert got.summaries["loss"].count > 0  # the metrics were flushed on the way out


def started_killable(
    run_script: Script, url: str, spec_file: str, heartbeat: float = 0.2
) -> tuple[subprocess.Popen[str], Lines, str]:
    proc = run_script("kill-me", url, spec_file, str(heartbeat))
    lines = Lines(proc)
    lines.wait_for(lambda ls: any(line.startswith("run ") for line in ls))
    return proc, lines, lines.lines[0].split()[1]


def wait_until_stored(engine: Engine, run_id: str, points: int, timeout: float = 30) -> None:
    """Until the heartbeat has flushed at least ``points`` metric points of the run."""
    deadline = time.monotonic() + timeout
    stmt = select(func.count()).select_from(MetricRow).join(RunRow).where(RunRow.id == run_id)
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if (conn.scalar(stmt) or 0) >= points:
                return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {points} points of {run_id} reached the database")


def kill_and_check_metrics(
    proc: subprocess.Popen[str], lines: Lines, engine: Engine, run_id: str
) -> None:
    """SIGKILL the writer; every step it logged before its last heartbeat must be stored."""
    wait_until_stored(engine, run_id, 20)
    time.sleep(0.25)  # die between two heartbeats, with points in the buffer
    proc.send_signal(signal.SIGKILL)
    lines.wait()
    assert proc.returncode == -signal.SIGKILL
    with engine.connect() as conn:
        pk, status, beat = conn.execute(
            select(RunRow.pk, RunRow.status, RunRow.heartbeat).where(RunRow.id == run_id)
        ).one()
        stored = list(
            conn.scalars(select(MetricRow.step).where(MetricRow.run_pk == pk).order_by("step"))
        )
        latest = conn.scalar(select(func.max(MetricRow.time)).where(MetricRow.run_pk == pk))
    assert status == "running"  # nobody has looked yet
    logged = {
        int(w[1]): float(w[2]) for w in (line.split() for line in lines.lines) if w[0] == "step"
    }
    assert stored == list(range(len(stored)))  # a prefix: no holes
    assert len(stored) >= 20
    assert latest is not None and latest <= beat  # nothing newer than the last heartbeat ...
    before_beat = [step for step, at in logged.items() if at < beat]  # (printed after logging)
    assert set(before_beat) <= set(stored)  # ... and everything logged before it is there


def integrity_ok(url: str) -> None:
    if is_sqlite(url):
        db = sqlite3.connect(sqlite_file(url))
        try:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        finally:
            db.close()


def test_a_killed_writer_is_marked_interrupted_after_the_grace_period(
    registry_url: str, run_script: Script, spec_file: str, raw_engine: Engine
) -> None:
    """As if the writer had run on another host: only its silence tells that it is gone."""
    reg = Registry(registry_url)
    try:
        proc, lines, run_id = started_killable(run_script, registry_url, spec_file)
        kill_and_check_metrics(proc, lines, raw_engine, run_id)
        with raw_engine.begin() as conn:
            conn.execute(update(RunRow).where(RunRow.id == run_id).values(host="another-host"))
        assert reg.mark_stale(grace=60) == []  # silent for less than the grace period
        assert reg.get(run_id).status == "running"
        beat = reg.get(run_id).heartbeat
        while time.time() - beat <= 1.0:
            time.sleep(0.1)
        assert reg.mark_stale(grace=1.0) == [run_id]
        got = reg.get(run_id)
        assert got.status == "interrupted"
        assert "no heartbeat" in (got.error or "")
        assert got.ended is not None and got.ended >= beat
        assert reg.mark_stale(grace=1.0) == []  # once
    finally:
        reg.close()
    integrity_ok(registry_url)


def test_a_killed_writer_is_marked_interrupted_on_the_next_open(
    registry_url: str, run_script: Script, spec_file: str, raw_engine: Engine
) -> None:
    """Its pid is dead on this host: the next ``Registry(...)`` marks it at once (while alive, it
    is left alone however short the grace)."""
    Registry(registry_url).close()
    proc, lines, run_id = started_killable(run_script, registry_url, spec_file)
    wait_until_stored(raw_engine, run_id, 5)
    with Registry(registry_url) as reg:
        assert reg.mark_stale(grace=2.0) == []  # alive on this host and beating
        assert reg.get(run_id).status == "running"
    kill_and_check_metrics(proc, lines, raw_engine, run_id)
    with Registry(registry_url) as reg:  # the default grace (5 min) has not passed
        got = reg.get(run_id)
        assert got.status == "interrupted"
        assert got.summaries["loss"].count >= 20
        assert reg.mark_stale() == []
    integrity_ok(registry_url)


# --- opening ---------------------------------------------------------------------------------------


def test_concurrent_first_opens_do_not_race(registry_url: str, run_script: Script) -> None:
    procs = [run_script("open", registry_url) for _ in range(3)]
    readers = [Lines(p) for p in procs]
    for r in readers:
        r.wait_for(lambda lines: "ready" in lines)
    for r in readers:
        r.send("go")
    for p, r in zip(procs, readers, strict=True):
        err = r.wait()
        assert p.returncode == 0, err
        assert err == ""
        assert r.lines[-1] == "opened"
    with Registry(registry_url) as reg, reg.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
            head_revision()
        ]
        assert conn.scalar(select(func.count()).select_from(RunRow)) == 0
    integrity_ok(registry_url)


def test_switching_to_wal_waits_for_a_database_held_by_another_connection(
    isolated: Path,
) -> None:
    """Switching a new file to WAL fails at once, without the busy timeout, while another
    connection holds the database: the connect hook retries (the race of concurrent first
    opens)."""
    path = isolated / "new.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("PRAGMA journal_mode=WAL")  # what a single attempt meets
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _wal_mode(other.cursor(), patience=0.2)  # patience runs out: the error stands
    release = threading.Timer(0.3, holder.execute, ["COMMIT"])
    release.start()
    try:
        _wal_mode(other.cursor(), patience=20)
    finally:
        release.join()
    assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    other.close()
    holder.close()


def test_folds_ending_at_once_in_many_processes_aggregate_right(
    registry_url: str, run_script: Script, spec_file: str
) -> None:
    """Every fold end recomputes the group's aggregates; concurrent ends must not collide (on
    PostgreSQL two recomputations would insert the same rows) nor miss each other's fold."""
    k, per_process = 8, 4
    with Registry(registry_url) as reg:
        group = reg.start_cv(spec_file, k=k)
    procs = [
        run_script(
            "folds", registry_url, spec_file, group.id, *map(str, range(p, k, k // per_process))
        )
        for p in range(k // per_process)
    ]
    readers = [Lines(p) for p in procs]
    for r in readers:
        r.wait_for(lambda lines: "ready" in lines)
    for r in readers:
        r.send("go")
    for p, r in zip(procs, readers, strict=True):
        err = r.wait()
        assert p.returncode == 0, err
    with Registry(registry_url) as reg:
        agg = reg.group(group.id).aggregates["val_acc"]
    values = [0.5 + f / 100 for f in range(k)]
    assert agg.n == k
    assert agg.mean == pytest.approx(sum(values) / k)
    assert (agg.min, agg.max) == (min(values), max(values))


def test_the_registry_imports_no_torch(run_script: Script, spec_file: str, isolated: Path) -> None:
    url = f"sqlite:///{isolated / 'registry.db'}"
    proc = run_script("no-torch", url, spec_file, str(isolated / "artifacts"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_nan_survives_a_round_trip_through_a_second_process(
    registry_url: str, minimal_vit: Callable[[], Doc]
) -> None:
    """NaN is NULL in the database; any reader sees NaN again."""
    with Registry(registry_url) as reg, reg.start_run(minimal_vit()) as run:
        run.log_metrics({"loss": math.nan}, step=0)
    with Registry(registry_url) as reg:
        [(step, _, value, _)] = reg.metric_history(run.id, "loss")
        assert step == 0 and math.isnan(value)
