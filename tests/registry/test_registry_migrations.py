"""Schema migrations: an old registry upgrades without loss, a newer one is refused clearly, and the
migrations build exactly the schema the models describe (SQLite and PostgreSQL)."""

from __future__ import annotations

import importlib.util
import math
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, make_url, text

from archlab.registry import Registry, RegistryError
from archlab.registry.migrate import MIGRATIONS, head_revision
from archlab.registry.models import Base

FIXTURES = Path(__file__).with_name("fixtures")
V0001 = FIXTURES / "registry_v0001.db"
TABLES_0001 = [
    "specs",
    "cv_groups",
    "runs",
    "run_tags",
    "mixup",
    "metric_keys",
    "metrics",
    "metric_summaries",
    "cv_aggregates",
    "artifacts",
]


def load_make_fixture() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURES / "make_fixture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_fixture = load_make_fixture()


def engine_for(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed)


@pytest.fixture
def engine(registry_url: str) -> Iterator[Engine]:
    eng = engine_for(registry_url)
    try:
        yield eng
    finally:
        eng.dispose()


# columns later revisions added to revision 0001's tables (compared on their own)
ADDED_COLUMNS = {"spec_name", "direction"}


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of revision 0001's tables, in a stable order (floats compared exactly), without
    the columns later revisions added."""
    out = {}
    with engine.connect() as conn:
        for table in TABLES_0001:
            result = conn.execute(text(f"SELECT * FROM {table}"))  # table names are constants
            keep = [i for i, name in enumerate(result.keys()) if name not in ADDED_COLUMNS]
            rows = [tuple(r[i] for i in keep) for r in result]
            out[table] = sorted(rows, key=repr)
    return out


def check_spec_names(reg: Registry, engine: Engine) -> None:
    """Revision 0004: every run recorded before it carries its spec row's name."""
    with engine.connect() as conn:
        names = dict(conn.execute(text("SELECT hash, name FROM specs")).all())
        runs = conn.execute(text("SELECT id, spec_hash, spec_name FROM runs")).all()
    assert runs and all(name == names[digest] for _, digest, name in runs)
    for run_id, digest, _ in runs:
        assert reg.get(run_id).spec_name == names[digest]


def check_directions(engine: Engine) -> None:
    """Revision 0005: every metric recorded before it has its name's direction."""
    with engine.connect() as conn:
        keys = dict(conn.execute(text("SELECT name, direction FROM metric_keys")).all())
    assert keys == {"val_acc": "max", "loss": "min"}


def alembic_config(conn: Any) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def test_the_fixture_is_small_and_at_revision_0001() -> None:
    assert V0001.stat().st_size < 200_000
    db = sqlite3.connect(f"file:{V0001}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (5,)
        assert db.execute("SELECT count(*) FROM metrics").fetchone() == (100,)
    finally:
        db.close()


def check_upgraded(reg: Registry) -> None:
    """The fixture's runs, metrics, CV group, mixup, tags and artifact, read through the API."""
    expected = make_fixture.EXPECTED
    for run_id, want in expected["runs"].items():
        run = reg.get(run_id)
        assert run.status == want["status"]
        assert run.spec_hash == want["spec_hash"]
        assert (run.cv.fold if run.cv else None) == want["fold"]
        for name, s in want["summaries"].items():
            got = run.summaries[name]
            assert (got.final, got.final_step, got.best, got.best_step, got.count) == (
                s["final"],
                s["final_step"],
                s["best"],
                s["best_step"],
                s["count"],
            )
            assert [v for _, _, v, _ in reg.metric_history(run_id, name)] == want["metrics"][name]
    group = reg.group(make_fixture.GROUP_ID)
    assert group.runs == ["fold0aaa", "fold1bbb", "fold2ccc"]
    for name, a in expected["aggregates"].items():
        got = group.aggregates[name]
        assert (got.mean, got.std, got.n, got.min, got.max) == (
            a["mean"],
            a["std"],
            a["n"],
            a["min"],
            a["max"],
        )
    train = reg.get("train0dd")
    assert train.tags == {"owner": "fixture"}
    assert train.mixup is not None and train.mixup.cutmix_minmax == (0.3, 0.8)
    assert [(a.path, a.size) for a in train.artifacts] == [
        (make_fixture.ARTIFACT["path"], make_fixture.ARTIFACT["size"])
    ]


def keeps_working(reg: Registry, minimal_vit: Any) -> None:
    """Writes after the upgrade: a new run with a NaN (new in 0002), a tag and a removal on the old
    rows (the group's aggregates follow)."""
    with reg.start_run(minimal_vit(), tags={"after": "upgrade"}) as run:
        run.log_metrics({"val_acc": math.nan, "loss": 0.5}, step=0)
        run.log_metrics({"val_acc": 0.95, "loss": 0.25}, step=1)
    got = reg.get(run.id).summaries["val_acc"]
    assert (got.final, got.best, got.count) == (0.95, 0.95, 2)
    reg.tag("fold0aaa", checked="yes")
    assert reg.get("fold0aaa").tags == {"checked": "yes"}
    reg.remove("fold1bbb")
    left = reg.group(make_fixture.GROUP_ID).aggregates["val_acc"]
    final = make_fixture.EXPECTED["runs"]["fold0aaa"]["summaries"]["val_acc"]["final"]
    assert (left.n, left.mean, left.std) == (1, final, None)  # one fold: no std


def test_a_revision_0001_registry_upgrades_without_loss(isolated: Path, minimal_vit: Any) -> None:
    path = isolated / "old.db"
    shutil.copyfile(V0001, path)
    url = f"sqlite:///{path}"
    old = engine_for(url)
    before = dump(old)
    old.dispose()
    assert sum(len(rows) for rows in before.values()) > 100
    with Registry(url, artifacts=isolated / "artifacts") as reg:
        after = dump(reg.engine)
        with reg.engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head_revision()
        assert after == before  # every row of every table, every value
        check_spec_names(reg, reg.engine)
        check_directions(reg.engine)
        check_upgraded(reg)
        keeps_working(reg, minimal_vit)
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        # revision 0003: the points live in their key's B-tree, and runs.status has no index of
        # its own (the (status, heartbeat) index serves it)
        [(metrics_sql,)] = db.execute("SELECT sql FROM sqlite_master WHERE name = 'metrics'")
        assert metrics_sql.rstrip().endswith("WITHOUT ROWID")
        indexes = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert "ix_runs_status_heartbeat" in indexes and "ix_runs_status" not in indexes
    finally:
        db.close()


def test_a_revision_0001_registry_upgrades_on_postgresql_too(
    registry_url: str, engine: Engine, isolated: Path, minimal_vit: Any
) -> None:
    """The same rows built on either backend (the fixture's own builder), plus on PostgreSQL a NaN
    that revision 0001 stored as NaN and as a best value: it becomes NULL and the best is
    recomputed."""
    make_fixture.build(registry_url)
    nan_run = engine.dialect.name == "postgresql"
    if nan_run:
        with engine.begin() as conn:
            conn.execute(text("UPDATE metrics SET value = 'NaN' WHERE run_pk = 4 AND step = 0"))
            conn.execute(
                text(
                    "UPDATE metric_summaries SET best_value = 'NaN', best_step = 0 WHERE run_pk = 4"
                )
            )
    before = dump(engine)
    with Registry(registry_url, artifacts=isolated / "artifacts") as reg:
        after = dump(reg.engine)
        if nan_run:
            train = reg.get("train0dd")
            for name in ("val_acc", "loss"):
                want = make_fixture.EXPECTED["runs"]["train0dd"]["summaries"][name]
                assert (train.summaries[name].best, train.summaries[name].best_step) == (
                    want["best"],
                    want["best_step"],
                )
                assert math.isnan(reg.metric_history("train0dd", name)[0][2])
        else:
            assert after == before
            check_upgraded(reg)
        check_spec_names(reg, engine)
        check_directions(engine)
        keeps_working(reg, minimal_vit)
    assert {t: len(rows) for t, rows in after.items()} == {
        t: len(rows) for t, rows in before.items()
    }


def test_revision_0005_gives_old_metrics_directions_and_recomputes_their_best(
    registry_url: str, engine: Engine, isolated: Path
) -> None:
    """A latency recorded before revision 0005 had its runs' best values chosen as the highest
    (its name has no loss, err or perplexity): after the upgrade it is lower-better, its best
    values are the lowest points, and ``best`` names the fastest run. Metrics whose
    direction did not change keep their rows exactly."""
    make_fixture.build(registry_url)
    fast, slow = (make_fixture.EXPECTED["runs"][r]["pk"] for r in ("train0dd", "fold0aaa"))
    points = {fast: [9.0, 4.0, 5.0], slow: [12.0, 8.0]}
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO metric_keys (id, name) VALUES (3, 'latency_ms')"))
        for pk, values in points.items():
            for step, value in enumerate(values):
                conn.execute(
                    text(
                        "INSERT INTO metrics (run_pk, key_id, step, epoch, value, time)"
                        " VALUES (:pk, 3, :step, NULL, :value, 0)"
                    ),
                    {"pk": pk, "step": step, "value": value},
                )
            highest = max(values)  # as revisions 0001-0004 chose it
            conn.execute(
                text(
                    "INSERT INTO metric_summaries (run_pk, key_id, last_value, last_step,"
                    " best_value, best_step, count) VALUES (:pk, 3, :last, :n, :best, :at, :count)"
                ),
                {
                    "pk": pk,
                    "last": values[-1],
                    "n": len(values) - 1,
                    "best": highest,
                    "at": values.index(highest),
                    "count": len(values),
                },
            )
    with Registry(registry_url, artifacts=isolated / "artifacts") as reg:
        assert reg.metric_direction("latency_ms") == "min"
        assert reg.metric_direction("val_acc") == "max" and reg.metric_direction("loss") == "min"
        best = {r: reg.get(r).summaries["latency_ms"] for r in ("train0dd", "fold0aaa")}
        assert [(s.best, s.best_step, s.final, s.count) for s in best.values()] == [
            (4.0, 1, 5.0, 3),
            (8.0, 1, 8.0, 2),
        ]
        assert [r.id for r in reg.best("latency_ms")] == ["train0dd"]
        check_upgraded(reg)  # the fixture's own metrics, summaries and aggregates: unchanged
    with engine.begin() as conn:  # and back: best values chosen as revision 0004 chose them
        command.downgrade(alembic_config(conn), "0004")
        rows = conn.execute(
            text(
                "SELECT best_value, best_step FROM metric_summaries WHERE key_id = 3 ORDER BY best_value"
            )
        ).all()
    assert [tuple(r) for r in rows] == [(9.0, 0), (12.0, 0)]


def test_migrations_build_the_schema_the_models_describe(
    registry: Registry, engine: Engine
) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_downgrade_to_0001_and_back(registry_url: str, engine: Engine) -> None:
    Registry(registry_url).close()
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "0001"
    columns = {c["name"]: c for c in inspect(engine).get_columns("metrics")}
    assert not columns["value"]["nullable"]  # NOT NULL again
    Registry(registry_url).close()  # and up again on open
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head_revision()


def test_a_registry_from_a_newer_archlab_is_refused_clearly(
    registry_url: str, engine: Engine
) -> None:
    Registry(registry_url).close()
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(RegistryError, match=r"schema revision '9999'.*newer archlab") as exc:
        Registry(registry_url)
    assert exc.value.__cause__ is None  # a clear message, not a chained traceback
    with engine.connect() as conn:  # untouched
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "9999"
