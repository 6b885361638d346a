"""``compile_where`` and ``order_by`` of ``archlab.registry.query``, against real databases.

Every query test runs on SQLite (a temporary file) and, when ``ARCHLAB_TEST_POSTGRES`` holds a URL
such as ``postgresql+psycopg://postgres@127.0.0.1:5432/test``, on PostgreSQL in a schema of its own
(created and dropped here). Five runs cover every field kind, including the ones they lack.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, insert, inspect, select, text
from sqlalchemy.orm import Session

from archlab.registry.models import (
    AggregateRow,
    Base,
    CVGroupRow,
    MetricKeyRow,
    MixupRow,
    RunRow,
    SpecRow,
    SummaryRow,
    TagRow,
)
from archlab.registry.query import (
    QueryError,
    compile_where,
    order_by,
)

PG_URL = os.environ.get("ARCHLAB_TEST_POSTGRES")

VIT, GPT, ANON = "a" * 64, "b" * 64, "c" * 64
ALL = {"r1", "r2", "r3", "r4", "r5"}


def ts(iso: str) -> float:
    """Epoch seconds of a naive ISO time, in local time as the query language reads it."""
    return datetime.fromisoformat(iso).timestamp()


# --- data -----------------------------------------------------------------------------------------


def populate(engine: Engine) -> None:
    """r1, r2: folds of CV group g1 (k=5, ViT); r3: an eval with no CV, mixup or tags; r4: a bench
    with no name, metrics or end; r5: the only fold of g2 (k=3), still running."""
    with Session(engine) as s, s.begin():
        s.add_all(
            [
                SpecRow(hash=VIT, name="ViT-Small", version=1, canonical="{}", created=0.0),
                SpecRow(hash=GPT, name="gpt_tiny", version=1, canonical="{}", created=0.0),
                SpecRow(hash=ANON, name=None, version=1, canonical="{}", created=0.0),
            ]
        )
        s.flush()  # no relationship orders specs before the rows that name them
        keys = {
            n: MetricKeyRow(name=n) for n in ("val_acc", "loss", "train/loss", "acc@1", "grad_norm")
        }
        g1 = CVGroupRow(id="g1", spec_hash=VIT, k=5, splitter="kfold", created=0.0)
        g2 = CVGroupRow(id="g2", spec_hash=GPT, k=3, splitter="kfold", created=0.0)
        s.add_all([*keys.values(), g1, g2])
        s.flush()

        names = {VIT: "ViT-Small", GPT: "gpt_tiny", ANON: None}

        def run(rid: str, **kw: object) -> RunRow:
            # each run records its spec's name as it started (here the spec rows' names)
            name = names[str(kw["spec_hash"])]
            row = RunRow(id=rid, heartbeat=0.0, provenance={}, spec_name=name, **kw)
            s.add(row)
            return row

        r1 = run(
            "r1",
            kind="train",
            status="completed",
            spec_hash=VIT,
            cv_group_pk=g1.pk,
            fold=0,
            started=ts("2026-10-01T10:00"),
            ended=ts("2026-10-01T11:00"),
            config={
                "optimizer": {"lr": 0.001, "name": "AdamW"},
                "epochs": 100,
                "amp": True,
                "note": 'it\'s "fine"',
                "layers": [64, 128],
                "a.b": 1,
            },
        )
        r2 = run(
            "r2",
            kind="train",
            status="failed",
            spec_hash=VIT,
            cv_group_pk=g1.pk,
            fold=1,
            started=ts("2026-10-15T10:00"),
            ended=ts("2026-10-15T10:01"),
            config={"optimizer": {"lr": 0.01, "name": "sgd"}, "epochs": 50, "amp": False},
        )
        r3 = run(
            "r3",
            kind="eval",
            status="completed",
            spec_hash=GPT,
            started=ts("2026-11-02T10:00"),
            ended=ts("2026-11-02T10:00:10"),
            config={"optimizer": {"lr": "auto"}, "epochs": "100"},
        )
        r4 = run(
            "r4",
            kind="bench",
            status="interrupted",
            spec_hash=ANON,
            started=ts("2026-11-05T10:00"),
            config={},
        )
        r5 = run(
            "r5",
            kind="train",
            status="running",
            spec_hash=GPT,
            cv_group_pk=g2.pk,
            fold=2,
            started=ts("2026-12-01T10:00"),
            config={"optimizer": {"lr": 0.0005}, "epochs": None},
        )
        s.flush()
        tags = {
            r1: {"owner": "Ann", "seed": "1"},
            r2: {"owner": "bob", "my key": "v"},
            r4: {"path": "C:\\data\\x", "pct": "100%", "quote": 'say "hi"', "mixed": "MiXeD"},
        }
        s.add_all(
            TagRow(run_pk=r.pk, key=k, value=v) for r, kv in tags.items() for k, v in kv.items()
        )
        s.add_all(
            [
                MixupRow(
                    run_pk=r1.pk,
                    alpha=0.2,
                    cutmix_alpha=1.0,
                    cutmix_min=0.3,
                    cutmix_max=0.8,
                    mode="batch",
                    label_smoothing=0.1,
                    off_epoch=90,
                ),
                MixupRow(run_pk=r2.pk, alpha=0.8, mode="pair"),
                MixupRow(run_pk=r5.pk, alpha=0.0, cutmix_alpha=1.0, prob=0.5, mode="elem"),
            ]
        )
        summaries = {
            # None: NaN, as the store keeps it (a NaN final value; no best while all are NaN)
            r1: {
                "val_acc": (0.93, 0.95),
                "loss": (0.2, 0.1),
                "train/loss": (0.3, 0.25),
                "grad_norm": (None, 1.0),
            },
            r2: {"val_acc": (0.85, 0.88), "grad_norm": (None, None)},
            r3: {
                "val_acc": (0.97, 0.97),
                "loss": (0.05, 0.05),
                "acc@1": (0.7, 0.7),
                "grad_norm": (3.0, 0.5),
            },
            r5: {"val_acc": (0.5, 0.6)},
        }
        s.add_all(
            SummaryRow(
                run_pk=r.pk,
                key_id=keys[k].id,
                last_value=last,
                last_step=10,
                best_value=best,
                best_step=5,
                count=10,
            )
            for r, kv in summaries.items()
            for k, (last, best) in kv.items()
        )
        s.add_all(
            [
                AggregateRow(
                    group_pk=g1.pk,
                    key_id=keys["val_acc"].id,
                    mean=0.89,
                    std=0.04,
                    n=2,
                    min=0.85,
                    max=0.93,
                ),
                AggregateRow(
                    group_pk=g1.pk, key_id=keys["loss"].id, mean=0.2, std=0.0, n=1, min=0.2, max=0.2
                ),
                AggregateRow(
                    group_pk=g2.pk,
                    key_id=keys["val_acc"].id,
                    mean=0.5,
                    std=0.0,
                    n=1,
                    min=0.5,
                    max=0.5,
                ),
            ]
        )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = create_engine(f"sqlite:///{tmp_path_factory.mktemp('query') / 'registry.db'}")
        Base.metadata.create_all(eng)
        populate(eng)
        yield eng
        eng.dispose()
        return
    if not PG_URL:
        pytest.skip("set ARCHLAB_TEST_POSTGRES to a PostgreSQL URL to run the PostgreSQL tests")
    schema = f"archlab_query_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng = create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        Base.metadata.create_all(eng)
        populate(eng)
        yield eng
    finally:
        eng.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def ids(engine: Engine, where: str | None) -> set[str]:
    stmt = select(RunRow.id)
    cond = compile_where(where)
    if cond is not None:
        stmt = stmt.where(cond)
    with engine.connect() as conn:
        return set(conn.scalars(stmt))


def ordered(engine: Engine, sort: str, where: str | None = None) -> list[str]:
    stmt = select(RunRow.id).order_by(order_by(sort), RunRow.id)
    cond = compile_where(where)
    if cond is not None:
        stmt = stmt.where(cond)
    with engine.connect() as conn:
        return list(conn.scalars(stmt))


def runs_intact(engine: Engine) -> None:
    assert set(inspect(engine).get_table_names()) >= {"runs", "specs", "metric_summaries"}
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(RunRow)) == 5


# --- every field, operator and combination -------------------------------------------------------

CASES: list[tuple[str, set[str]]] = [
    # metrics.<name>: the final value; best.<name>: the best
    ("metrics.val_acc > 0.9", {"r1", "r3"}),
    ("metrics.val_acc >= 0.93", {"r1", "r3"}),
    ("metrics.val_acc < 0.85", {"r5"}),
    ("metrics.val_acc <= 0.85", {"r2", "r5"}),
    ("metrics.val_acc == 0.5", {"r5"}),
    ("metrics.val_acc = 0.5", {"r5"}),
    ("metrics.val_acc != 0.5", {"r1", "r2", "r3"}),
    ("metrics.val_acc in (0.5, 0.85)", {"r2", "r5"}),
    ("metrics.val_acc not in (0.5, 0.85)", {"r1", "r3"}),
    ("metrics.val_acc > -1", {"r1", "r2", "r3", "r5"}),
    ("metrics.val_acc > .9", {"r1", "r3"}),
    ("metrics.val_acc < 9e-1", {"r2", "r5"}),
    ("best.val_acc >= 0.95", {"r1", "r3"}),
    ("best.loss < 0.1", {"r3"}),
    ("best.val_acc > 0.55 and metrics.val_acc < 0.55", {"r5"}),
    ("metrics.train/loss < 1", {"r1"}),
    ("metrics.'acc@1' > 0.5", {"r3"}),
    ('metrics."acc@1" == null', {"r1", "r2", "r4", "r5"}),
    ("metrics.nope > 0", set()),
    ("metrics.nope == null", ALL),
    ("metrics.loss == null", {"r2", "r4", "r5"}),
    ("metrics.loss != null", {"r1", "r3"}),
    # a NaN (NULL) summary value is missing too
    ("metrics.grad_norm > 0", {"r3"}),
    ("not metrics.grad_norm > 0", set()),
    ("metrics.grad_norm != 1", {"r3"}),
    ("metrics.grad_norm == null", {"r1", "r2", "r4", "r5"}),
    ("best.grad_norm < 2", {"r1", "r3"}),
    ("not best.grad_norm < 1", {"r1"}),
    ("best.grad_norm == null", {"r2", "r4", "r5"}),
    # CV aggregates of the run's group
    ("mean.val_acc > 0.8", {"r1", "r2"}),
    ("std.val_acc < 0.01", set()),  # g2 has one fold: its std is undefined, not 0
    ("std.val_acc == null", {"r3", "r4", "r5"}),
    ("n.val_acc == 2", {"r1", "r2"}),
    ("min.val_acc >= 0.5", {"r1", "r2", "r5"}),
    ("max.val_acc == 0.93", {"r1", "r2"}),
    ("mean.loss > 0", {"r1", "r2"}),
    ("mean.val_acc == null", {"r3", "r4"}),
    ("not mean.val_acc > 0.8", {"r5"}),
    # config: typed by the literal; other JSON types are missing for the comparison
    ("config.optimizer.lr < 0.005", {"r1", "r5"}),
    ("not config.optimizer.lr < 0.005", {"r2"}),
    ("config.optimizer.lr == 'auto'", {"r3"}),
    ("config.optimizer.lr != 'auto'", set()),
    ("config.optimizer.lr > 0 and config.optimizer.lr < 1", {"r1", "r2", "r5"}),
    ("config.epochs == 100", {"r1"}),
    ("config.epochs == '100'", {"r3"}),
    ("config.epochs >= 50", {"r1", "r2"}),
    ("config.epochs in (50, 100)", {"r1", "r2"}),
    ("config.amp == true", {"r1"}),
    ("config.amp == false", {"r2"}),
    ("config.amp != true", {"r2"}),
    ("config.amp in (true, false)", {"r1", "r2"}),
    ("config.epochs == null", {"r4", "r5"}),
    ("config.epochs != null", {"r1", "r2", "r3"}),
    ("config.optimizer == null", {"r4"}),
    ("config.missing.deep == null", ALL),
    ("config.layers.1 == 128", {"r1"}),  # a bare number indexes an array
    ("config.layers.0 < 100", {"r1"}),
    ("config.layers.2 == null", ALL),
    ("config.'a.b' == 1", {"r1"}),  # a quoted part is one key, dots and all
    ("config.a.b == null", ALL),
    ("config.optimizer.name like 'adam%'", {"r1"}),
    ("config.optimizer.name not like 'adam%'", {"r2"}),
    ("config.note == 'it\\'s \"fine\"'", {"r1"}),
    ('config.note == "it\'s \\"fine\\""', {"r1"}),
    # tags: text
    ("tags.owner == 'Ann'", {"r1"}),
    ("tags.owner == 'ann'", set()),
    ("tags.owner like 'ann'", {"r1"}),
    ("tags.owner != 'Ann'", {"r2"}),
    ("not tags.owner == 'Ann'", {"r2"}),
    ("tags.owner == null", {"r3", "r4", "r5"}),
    ("tags.seed == 1", {"r1"}),
    ("tags.seed in (1, 2)", {"r1"}),
    ("tags.nope == 'x'", set()),
    ("tags.'my key' == 'v'", {"r2"}),
    ("tags.path == 'C:\\data\\x'", {"r4"}),  # a backslash before anything but a quote is itself
    ("tags.path == 'C:\\\\data\\\\x'", {"r4"}),  # \\ is one backslash
    ("tags.quote == 'say \"hi\"'", {"r4"}),
    ('tags.quote == "say \\"hi\\""', {"r4"}),
    # like: case-insensitive, % and _ wildcards, \ escapes them
    ("tags.mixed like 'mixed'", {"r4"}),
    ("tags.mixed like 'MIXED'", {"r4"}),
    ("tags.mixed like 'm_x%'", {"r4"}),
    ("tags.mixed like 'm_x'", set()),
    ("tags.pct like '100%'", {"r4"}),
    ("tags.pct like '1_0%'", {"r4"}),
    ("tags.pct like '100\\%'", {"r4"}),
    ("tags.pct like '10\\%'", set()),
    ("tags.pct like '10%'", {"r4"}),
    ("tags.path like 'c:\\\\\\\\data%'", {"r4"}),  # pattern c:\\data%: an escaped backslash
    # mixup
    ("mixup.alpha >= 0.2", {"r1", "r2"}),
    ("mixup.alpha == 0", {"r5"}),
    ("not mixup.alpha >= 0.2", {"r5"}),
    ("mixup.alpha == null", {"r3", "r4"}),
    ("mixup.cutmix_alpha == 1", {"r1", "r5"}),
    ("mixup.cutmix_min < 0.5", {"r1"}),
    ("mixup.cutmix_max > 0.5", {"r1"}),
    ("mixup.prob < 1", {"r5"}),
    ("mixup.switch_prob == 0.5", {"r1", "r2", "r5"}),
    ("mixup.mode == 'pair'", {"r2"}),
    ("mixup.mode in ('batch', 'elem')", {"r1", "r5"}),
    ("mixup.label_smoothing > 0", {"r1"}),
    ("mixup.off_epoch < 100", {"r1"}),
    ("not mixup.off_epoch < 100", set()),
    ("mixup.off_epoch == null", {"r2", "r3", "r4", "r5"}),
    # cv
    ("cv.k == 5", {"r1", "r2"}),
    ("cv.k != 5", {"r5"}),
    ("not cv.k == 5", {"r5"}),
    ("cv.k >= 3", {"r1", "r2", "r5"}),
    ("cv.k == 5.0", {"r1", "r2"}),
    ("cv.k < 4.5", {"r5"}),
    ("cv.fold >= 1", {"r2", "r5"}),
    ("cv.fold == 0", {"r1"}),
    ("cv.fold != null", {"r1", "r2", "r5"}),
    ("cv.group == 'g1'", {"r1", "r2"}),
    ("cv.group like 'G%'", {"r1", "r2", "r5"}),
    ("cv.group == null", {"r3", "r4"}),
    # spec
    ("spec.name like 'vit%'", {"r1", "r2"}),
    ("spec.name like 'VIT_SMALL'", {"r1", "r2"}),
    ("spec.name like '%tiny'", {"r3", "r5"}),
    ("spec.name == 'ViT-Small'", {"r1", "r2"}),
    ("spec.name == 'vit-small'", set()),
    ("spec.name == null", {"r4"}),
    ("not spec.name like 'vit%'", {"r3", "r5"}),
    ("spec.name not like 'gpt%'", {"r1", "r2"}),
    (f"spec.hash == '{VIT}'", {"r1", "r2"}),
    ("spec.hash like 'C%'", {"r4"}),
    # status, kind, id
    ("status == 'failed'", {"r2"}),
    ("status in ('failed', 'interrupted')", {"r2", "r4"}),
    ("status not in ('failed', 'interrupted')", {"r1", "r3", "r5"}),
    ("status in ('failed')", {"r2"}),
    ("kind == 'train'", {"r1", "r2", "r5"}),
    ("kind != 'train'", {"r3", "r4"}),
    ("kind < 'c'", {"r4"}),
    ("id == 'r3'", {"r3"}),
    ("id in (\"r1\", 'r2',)", {"r1", "r2"}),
    ("id like 'R%'", ALL),
    ("status == null", set()),
    ("status != null", ALL),
    # started / ended: epoch seconds or ISO dates
    ("started > '2026-11-01'", {"r3", "r4", "r5"}),
    ("started > '2026-11-01T00:00:00Z'", {"r3", "r4", "r5"}),
    ("started < '2026-10-15T10:00:00'", {"r1"}),
    ("started <= '2026-10-15T10:00'", {"r1", "r2"}),
    ("started <= '2026-10-15 10:00'", {"r1", "r2"}),
    (f"started >= {ts('2026-11-05T10:00')}", {"r4", "r5"}),
    (f"started == {int(ts('2026-11-05T10:00'))}", {"r4"}),
    ("started in ('2026-10-01T10:00', '2026-12-01T10:00')", {"r1", "r5"}),
    ("ended == null", {"r4", "r5"}),
    ("ended > '2026-01-01'", {"r1", "r2", "r3"}),
    ("not ended > '2026-01-01'", set()),
    # precedence, parentheses, not, keyword case
    ("status == 'failed' or status == 'completed' and kind == 'eval'", {"r2", "r3"}),
    ("(status == 'failed' or status == 'completed') and kind == 'eval'", {"r3"}),
    ("kind == 'eval' and status == 'completed' or status == 'failed'", {"r2", "r3"}),
    ("not status == 'failed' and kind == 'train'", {"r1", "r5"}),
    ("not (status == 'failed' or kind == 'train')", {"r3", "r4"}),
    ("not not status == 'failed'", {"r2"}),
    ("((((status == 'failed'))))", {"r2"}),
    ("status == 'failed' OR kind == 'eval'", {"r2", "r3"}),
    ("NOT status == 'failed' AnD kind == 'train'", {"r1", "r5"}),
    (
        "status IN ('failed') or id LIKE 'r1' or id Not In ('r1', 'r2', 'r3')",
        {"r1", "r2", "r4", "r5"},
    ),
    ("status == 'failed'\n  or kind == 'eval'", {"r2", "r3"}),
    ("status=='failed'or(kind=='eval')", {"r2", "r3"}),
    (
        "metrics.val_acc > 0.9 and (mixup.alpha >= 0.2 or cv.k == 5) and spec.name like 'vit%'",
        {"r1"},
    ),
    # three-valued logic: a missing field is unknown, and so is its negation
    ("metrics.loss > 0", {"r1", "r3"}),
    ("not metrics.loss > 0", set()),
    ("not metrics.loss > 0.1", {"r3"}),
    ("metrics.loss != 0.2", {"r3"}),
    ("not metrics.loss == null", {"r1", "r3"}),
    ("metrics.loss > 0.1 or not metrics.loss > 0.1", {"r1", "r3"}),
    ("not (metrics.loss > 0.1 or status == 'failed')", {"r3"}),
    ("not (metrics.loss > 0.1 and status == 'failed')", {"r1", "r3", "r4", "r5"}),
    ("not (not metrics.loss > 0.1)", {"r1"}),
    ("not (tags.owner == 'Ann' or mixup.alpha > 0.5)", set()),
    ("not (tags.owner == 'Ann' and mixup.alpha > 0.5)", {"r1", "r2", "r5"}),
    ("not (tags.owner in ('Ann', 'bob'))", set()),
    (None, ALL),
    ("", ALL),
    ("  \n ", ALL),
]


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[repr(q) for q, _ in CASES])
def test_where(engine: Engine, query: str | None, expected: set[str]) -> None:
    assert ids(engine, query) == expected


def test_big_queries(engine: Engine) -> None:
    values = ", ".join(f"'x{i}'" for i in range(500))
    assert ids(engine, f"id in ({values}, 'r4')") == {"r4"}
    assert ids(engine, " or ".join(f"id == 'r{i}'" for i in range(200))) == ALL
    nested = "(" * 98 + "status == 'failed'" + ")" * 98  # with the not: 99 deep
    assert ids(engine, f"not {nested} and not {nested}") == {"r1", "r3", "r4", "r5"}


# --- sorting --------------------------------------------------------------------------------------

SORTS: list[tuple[str, str | None, list[str]]] = [
    ("metrics.val_acc", None, ["r5", "r2", "r1", "r3", "r4"]),
    ("+metrics.val_acc", None, ["r5", "r2", "r1", "r3", "r4"]),
    ("-metrics.val_acc", None, ["r3", "r1", "r2", "r5", "r4"]),
    ("  - metrics.val_acc ", None, ["r3", "r1", "r2", "r5", "r4"]),
    ("best.val_acc", None, ["r5", "r2", "r1", "r3", "r4"]),
    ("-best.loss", None, ["r1", "r3", "r2", "r4", "r5"]),
    ("mean.val_acc", None, ["r5", "r1", "r2", "r3", "r4"]),
    ("-mean.val_acc", None, ["r1", "r2", "r5", "r3", "r4"]),
    ("n.val_acc", None, ["r5", "r1", "r2", "r3", "r4"]),
    ("started", None, ["r1", "r2", "r3", "r4", "r5"]),
    ("-started", None, ["r5", "r4", "r3", "r2", "r1"]),
    ("ended", None, ["r1", "r2", "r3", "r4", "r5"]),
    ("-ended", None, ["r3", "r2", "r1", "r4", "r5"]),
    ("tags.owner", None, ["r1", "r2", "r3", "r4", "r5"]),
    ("-tags.owner", None, ["r2", "r1", "r3", "r4", "r5"]),
    ("-cv.k", None, ["r1", "r2", "r5", "r3", "r4"]),
    ("cv.fold", None, ["r1", "r2", "r5", "r3", "r4"]),
    ("-cv.fold", None, ["r5", "r2", "r1", "r3", "r4"]),
    ("-cv.group", None, ["r5", "r1", "r2", "r3", "r4"]),
    ("mixup.alpha", None, ["r5", "r1", "r2", "r3", "r4"]),
    ("-mixup.alpha", None, ["r2", "r1", "r5", "r3", "r4"]),
    ("-mixup.off_epoch", None, ["r1", "r2", "r3", "r4", "r5"]),
    ("-metrics.'acc@1'", None, ["r3", "r1", "r2", "r4", "r5"]),
    ("-metrics.grad_norm", None, ["r3", "r1", "r2", "r4", "r5"]),
    ("best.grad_norm", None, ["r3", "r1", "r2", "r4", "r5"]),
    ("config.layers.1", None, ["r1", "r2", "r3", "r4", "r5"]),
    ("-spec.hash", None, ["r4", "r3", "r5", "r1", "r2"]),
    ("spec.name", "spec.name like 'gpt%' or spec.name == null", ["r3", "r5", "r4"]),
    ("status", None, ["r1", "r3", "r2", "r4", "r5"]),
    ("-kind", None, ["r1", "r2", "r5", "r3", "r4"]),
    ("-id", None, ["r5", "r4", "r3", "r2", "r1"]),
    ("config.optimizer.lr", "config.optimizer.lr < 1", ["r5", "r1", "r2"]),
    ("-config.optimizer.lr", "config.optimizer.lr < 1", ["r2", "r1", "r5"]),
    ("config.epochs", "kind == 'train'", ["r2", "r1", "r5"]),  # r5's JSON null sorts last
    ("-config.epochs", "kind == 'train'", ["r1", "r2", "r5"]),
    ("config.optimizer.name", "config.optimizer.name != null", ["r1", "r2"]),
    ("config.nope", None, ["r1", "r2", "r3", "r4", "r5"]),
]


@pytest.mark.parametrize(
    ("sort", "where", "expected"), SORTS, ids=[f"{s!r}|{w}" for s, w, _ in SORTS]
)
def test_order_by(engine: Engine, sort: str, where: str | None, expected: list[str]) -> None:
    assert ordered(engine, sort, where) == expected


def test_filter_sort_limit(engine: Engine) -> None:
    stmt = (
        select(RunRow)
        .where(compile_where("metrics.val_acc > 0.8"))
        .order_by(order_by("-best.val_acc"))
        .limit(2)
    )
    with Session(engine) as s:
        assert [r.id for r in s.scalars(stmt)] == ["r3", "r1"]


@pytest.mark.parametrize(
    ("sort", "column", "reason"),
    [
        ("", 1, "expected a field to sort by"),
        ("-", 2, "expected a field to sort by"),
        ("metrics.val_acc desc", 17, "expected the end of the sort key"),
        ("metrics.val_acc, id", 16, "expected the end of the sort key"),
        ("foo", 1, "unknown field 'foo'"),
        ("--metrics.val_acc", 2, "unexpected character '-'"),
        ("metrics.val_acc; drop table runs", 16, "unexpected character ';'"),
        ("'metrics.val_acc'", 1, "expected a field to sort by"),
        ("mixup.beta", 1, "unknown field 'mixup.beta'"),
    ],
)
def test_order_by_errors(sort: str, column: int, reason: str) -> None:
    with pytest.raises(QueryError) as info:
        order_by(sort)
    assert reason in info.value.reason
    assert info.value.column == column


def test_dates_are_local_unless_zoned() -> None:
    epoch = datetime.fromisoformat("2026-11-01T00:00:00+00:00").timestamp()
    cmp = compile_where("started > '2026-11-01T00:00:00Z'")
    assert cmp is not None
    assert epoch in cmp.compile().params.values()
    local = compile_where("started > '2026-11-01'")
    assert local is not None
    assert ts("2026-11-01T00:00") in local.compile().params.values()


# --- injection ------------------------------------------------------------------------------------

INJECTIONS: list[tuple[str, set[str] | None]] = [  # None: a QueryError
    ("status == '; drop table runs; --'", set()),
    ("status == ''; drop table runs; --'", None),
    ("1 or 1=1", None),
    ("status == 'x' or 1=1", None),
    ("status == 'x' or '1'='1'", None),
    ("status == 'x' union select * from runs", None),
    ("status == 'x'; delete from runs", None),
    ('status == "x"; delete from runs', None),
    ("status == 'x\\' or \\'1\\'=\\'1'", set()),
    ("status == 'x\\\\' or '1'='1'", None),
    ("status == 'robert'); drop table runs; --'", None),
    ("id == 'r1'--", None),
    ("id == 'r1' -- comment", None),
    ("spec.name == 'x' /* comment */", None),
    ("status == 'a\x00b'", None),
    ("status\x00 == 'a'", None),
    ("status == '\\x00'", set()),
    ("config.a') or ('1'='1 == 1", None),
    ("metrics.val_acc) or (1 > 0", None),
    ("tags.x;drop == 1", None),
    ("tags.owner == 'Ann' or tags.owner like '%'", {"r1", "r2"}),
    ("status like '%' or id like '%'", ALL),
    ("status == 'completed\\' or status == \\'failed'", set()),
    ("status == \"x' or 'a'='a\"", set()),
    ('status == \'x" or "a"="a\'', set()),
    ("status == '\u202e' or status like '%Ω%'", set()),
    ("status == 'x' or exists(select 1)", None),
    ("config.lr == 1 or json_extract(config, '$') != null", None),
    ("status == 'x' or sqlite_version() != null", None),
    ("status == $$x$$", None),
    ("status == E'\\x27'", None),
    ("status == `x`", None),
    ("status == 0x27", None),
    ("status == ?", None),
    ("status == :p", None),
    ("status == %(p)s", None),
]


@pytest.mark.parametrize(
    ("query", "expected"), INJECTIONS, ids=[repr(q[:40]) for q, _ in INJECTIONS]
)
def test_injection(engine: Engine, query: str, expected: set[str] | None) -> None:
    if expected is None:
        with pytest.raises(QueryError):
            compile_where(query)
    else:
        cond = compile_where(query)
        assert cond is not None
        sql = str(select(RunRow.id).where(cond).compile(engine))
        assert "drop" not in sql.lower() and "'1'" not in sql and "Ann" not in sql  # all bound
        assert ids(engine, query) == expected
    runs_intact(engine)


def test_sql_has_no_user_text(engine: Engine) -> None:
    query = "tags.owner == 'Ann' and spec.name like 'vit%' and config.evil_key == 'x' and metrics.acc > 0.5"
    cond = compile_where(query)
    assert cond is not None
    compiled = (
        select(RunRow.id).where(cond).order_by(order_by("-metrics.evil_metric")).compile(engine)
    )
    for word in ("Ann", "vit%", "evil_key", "acc", "evil_metric", "0.5"):
        assert word not in str(compiled)
    params = set(map(str, compiled.params.values()))
    assert {"Ann", "vit%", "acc", "evil_metric", "0.5"} <= params


# --- performance ----------------------------------------------------------------------------------


def test_metric_filter_and_sort_use_indexes(tmp_path: Path) -> None:
    """10,000 runs, 80,000 summaries: 20 runs filtered on two metrics and sorted on a third."""
    engine = create_engine(f"sqlite:///{tmp_path / 'big.db'}")
    Base.metadata.create_all(engine)
    rnd = random.Random(0)
    n_runs, n_keys = 10_000, 8
    with engine.begin() as conn:
        conn.execute(
            insert(SpecRow),
            [{"hash": VIT, "name": "vit", "version": 1, "canonical": "{}", "created": 0.0}],
        )
        conn.execute(insert(MetricKeyRow), [{"id": k + 1, "name": f"m{k}"} for k in range(n_keys)])
        conn.execute(
            insert(RunRow),
            [
                {
                    "pk": i + 1,
                    "id": f"r{i:05d}",
                    "kind": "train",
                    "status": "completed",
                    "spec_hash": VIT,
                    "started": float(i),
                    "heartbeat": 0.0,
                    "config": {},
                    "provenance": {},
                }
                for i in range(n_runs)
            ],
        )
        conn.exec_driver_sql(  # plain executemany: the ORM's insert would take seconds here
            "INSERT INTO metric_summaries (run_pk, key_id, last_value, last_step, best_value,"
            " best_step, count) VALUES (?, ?, ?, 1, ?, 1, 1)",
            [
                (i + 1, k + 1, rnd.random(), rnd.random())
                for i in range(n_runs)
                for k in range(n_keys)
            ],
        )
    stmt = (
        select(RunRow)
        .where(compile_where("metrics.m1 > 0.5 and best.m3 < 0.9"))
        .order_by(order_by("-metrics.m2"))
        .limit(20)
    )
    compiled = stmt.compile(engine)
    with engine.connect() as conn:
        params = tuple(compiled.params[k] for k in compiled.positiontup or ())
        plan = [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params)]
        summary_steps = [step for step in plan if "metric_summaries" in step]
        assert len(summary_steps) == 3, plan
        assert all(
            step.startswith("SEARCH") and "(run_pk=? AND key_id=?)" in step
            for step in summary_steps
        ), plan
        assert all("SCAN metric_keys" not in step for step in plan), plan
        rows = conn.execute(stmt).all()
        assert len(rows) == 20
    engine.dispose()
    # the query's speed is measured in bench/registry_bench.py, never asserted in a test
