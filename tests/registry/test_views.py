"""``archlab.registry.views`` from Python: runs folded into CV groups, the compare table and
export rows, with no CLI in between. Tests taking ``registry`` run on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import subprocess
import sys
from datetime import datetime
from typing import Any

import pytest

from archlab.registry import Change, Registry, Run, views

Doc = dict[str, Any]


def _utc(text: str) -> float:
    """An ISO 8601 export time back to a timestamp; it must say UTC."""
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    return parsed.timestamp()


def test_runs_fold_into_their_cv_groups(registry: Registry, spec: Doc) -> None:
    """``grouped``: a run outside any group stays a Run; the folds of a group become one
    GroupView (folds by fold number), placed where the group's first fold appears."""
    with registry.start_run(spec, {"lr": 0.1}) as alone:
        alone.log_metrics({"val_acc": 0.5}, step=0)
    group = registry.start_cv(spec, k=3, seed=0)
    finals = [0.8, 0.9]
    for fold in (1, 0):  # out of order: the view sorts them
        with registry.start_run(spec, cv_group=group, fold=fold) as run:
            run.log_metrics({"val_acc": finals[fold]}, step=0)
    found = registry.runs(order_by=["started"])
    entries = views.grouped(registry, found)
    assert [type(e) for e in entries] == [Run, views.GroupView]
    assert isinstance(entries[0], Run) and entries[0].id == alone.id
    view = entries[1]
    assert isinstance(view, views.GroupView)
    assert view.group.id == group.id
    assert [f.cv.fold for f in view.folds if f.cv] == [0, 1]

    summary = view.summary()
    assert summary == views.group_summary(view.group, view.folds)
    assert summary["type"] == "cv_group" and summary["k"] == 3
    assert summary["status"] == {"completed": 2}
    assert summary["runs"] == [f.id for f in view.folds]
    agg = summary["aggregates"]["val_acc"]
    assert agg["n"] == 2
    assert agg["mean"] == pytest.approx(statistics.fmean(finals))
    assert agg["std"] == pytest.approx(statistics.stdev(finals))
    assert summary["started"] == min(f.started for f in view.folds)
    assert summary["ended"] == max(f.ended for f in view.folds if f.ended is not None)

    # the export forms: ISO times, a group row's metric is the mean with its std and n
    doc = views.group_export(view.group, view.folds)
    assert _utc(doc["started"]) == pytest.approx(summary["started"], abs=1e-3)
    json_docs = views.grouped_json(entries)
    assert [d["type"] for d in json_docs] == ["run", "cv_group"]
    assert json_docs[0]["id"] == alone.id
    rows = views.grouped_rows(entries)
    assert rows[1]["metrics.val_acc"] == pytest.approx(statistics.fmean(finals))
    assert rows[1]["metrics.val_acc.n"] == 2
    assert rows[1]["runs"] == " ".join(summary["runs"])
    assert json.loads(rows[1]["status"]) == {"completed": 2}


def test_a_running_group_has_no_end(registry: Registry, spec: Doc) -> None:
    group = registry.start_cv(spec, k=2, seed=0)
    with registry.start_run(spec, cv_group=group, fold=0):
        pass
    running = registry.start_run(spec, cv_group=group, fold=1)
    try:
        (view,) = views.grouped(registry, registry.runs())
        assert isinstance(view, views.GroupView)
        summary = view.summary()
        assert summary["status"] == {"completed": 1, "running": 1}
        assert summary["ended"] is None
        assert views.group_export(view.group, view.folds)["ended"] is None
    finally:
        running.end()


def test_compare_rows_show_what_differs(registry: Registry, spec: Doc) -> None:
    """``compare_rows``: fixed rows first, then only the config / tag fields that differ (every
    one with ``show_all``), nested keys dotted, then the final metrics, one value per run."""
    config_a = {"lr": 0.1, "opt": {"name": "adamw", "betas": [0.9, 0.99]}, "epochs": 3}
    config_b = {"lr": 0.2, "opt": {"name": "adamw", "betas": [0.9, 0.95]}, "epochs": 3}
    with registry.start_run(spec, config_a, tags={"owner": "ada"}) as a:
        a.log_metrics({"val_acc": 0.7, "val_loss": 0.9}, step=0)
    with registry.start_run(spec, config_b, tags={"owner": "ada"}) as b:
        b.log_metrics({"val_acc": 0.8}, step=0)
    found = registry.compare([a.id, b.id])
    rows = dict(views.compare_rows(found))
    assert list(rows)[:9] == [
        "kind", "status", "spec", "spec_hash", "started", "duration", "cv", "cv.n_train",
        "cv.n_val",
    ]  # fmt: skip
    assert rows["status"] == ["completed", "completed"]
    assert rows["config.lr"] == [0.1, 0.2]
    assert rows["config.opt.betas"] == [[0.9, 0.99], [0.9, 0.95]]  # lists stay values
    for same in ("config.epochs", "config.opt.name", "tags.owner"):
        assert same not in rows
    assert rows["metrics.val_acc"] == [0.7, 0.8]
    assert rows["metrics.val_loss"] == [0.9, None]
    assert "error" not in rows
    every = dict(views.compare_rows(found, show_all=True))
    assert every["config.epochs"] == [3, 3]
    assert every["tags.owner"] == ["ada", "ada"]
    assert views.differs(every["config.lr"]) and not views.differs(every["config.epochs"])


def test_export_rows_are_flat_with_iso_utc_times(registry: Registry, spec: Doc) -> None:
    """``export_rows``: one flat row per run (config keys dotted, lists as JSON text, NaN as
    None), times ISO 8601 in UTC; ``export_csv`` / ``export_json`` are those as text."""
    config = {"lr": 0.1, "opt": {"name": "adamw", "betas": [0.9, 0.99]}}
    with registry.start_run(spec, config, tags={"owner": "ada"}) as run:
        run.log_metrics({"val_acc": 0.5, "val_loss": math.nan}, step=0)
        run.log_metrics({"val_acc": 0.75}, step=1)
    got = registry.get(run.id)
    assert got.ended is not None
    (row,) = views.export_rows([got])
    assert row["id"] == got.id and row["status"] == "completed"
    assert _utc(row["started"]) == pytest.approx(got.started, abs=1e-3)
    assert _utc(row["ended"]) == pytest.approx(got.ended, abs=1e-3)
    assert row["started"].endswith("+00:00")
    assert row["duration"] == round(got.ended - got.started, 3)
    assert row["config.lr"] == 0.1
    assert row["config.opt.name"] == "adamw"
    assert json.loads(row["config.opt.betas"]) == [0.9, 0.99]
    assert row["tags.owner"] == "ada"
    assert row["metrics.val_acc"] == 0.75
    assert row["metrics.val_loss"] == "nan"  # archlab.jsonpolicy: NaN is the string "nan"
    assert row["cv.group"] is None and row["mixup.alpha"] is None

    table = list(csv.DictReader(io.StringIO(views.export_csv([got]))))
    assert len(table) == 1
    assert table[0]["started"] == row["started"]
    assert table[0]["metrics.val_loss"] == "nan"
    assert table[0]["config.opt.betas"] == row["config.opt.betas"]

    text = views.export_json([got])
    assert text.endswith("\n")
    (doc,) = json.loads(text)
    assert doc["started"] == row["started"] and doc["heartbeat"].endswith("+00:00")
    assert doc["duration"] == pytest.approx(got.ended - got.started)


def test_an_empty_export_is_just_the_header() -> None:
    assert views.export_csv([]) == ",".join(views.BASE_COLUMNS) + "\n"
    assert views.export_json([]) == "[]\n"


def test_times_and_json_policy() -> None:
    assert views.iso(None) is None
    assert views.iso(0.0) == "1970-01-01T00:00:00.000+00:00"
    assert views.iso(1.2345) == "1970-01-01T00:00:01.234+00:00"
    assert views.span(4.25) == "4.2s"
    assert views.span(185) == "3m05s"
    assert views.span(2 * 3600 + 600) == "2h10m"
    assert views.span(86400 + 3 * 3600) == "1d03h"
    assert views.jsonable({"a": (1, math.inf), 2: [math.nan]}) == {"a": [1, "inf"], "2": ["nan"]}
    assert json.loads(views.dumps({"x": -math.inf, "y": None})) == {"x": "-inf", "y": None}


def test_ranked_entries_and_folds_as_data(registry: Registry, spec: Doc) -> None:
    """``ranked_dict`` / ``ranked_row``: a CV group ranks by the mean of its folds' final values
    and exports that aggregate; a run exports as itself. ``fold_dict``: a fold in its group."""
    group = registry.start_cv(spec, k=2, seed=0)
    finals = [0.6, 0.7]
    for fold, acc in enumerate(finals):
        with registry.start_run(spec, cv_group=group, fold=fold) as run:
            run.log_metrics({"val_acc": acc}, step=0)
    with registry.start_run(spec) as alone:
        alone.log_metrics({"val_acc": 0.9}, step=0)
    ranked = registry.rank("val_acc", limit=None)
    assert [e.run.id if e.run else None for e in ranked] == [alone.id, None]
    assert views.ranked_dict(ranked[0]) == views.run_dict(ranked[0].run)  # type: ignore[arg-type]
    doc = views.ranked_dict(ranked[1])
    assert doc["type"] == "cv_group" and doc["id"] == group.id and doc["metric"] == "val_acc"
    assert doc["aggregate"]["mean"] == pytest.approx(statistics.fmean(finals))
    assert doc["aggregate"]["n"] == 2
    row = views.ranked_row(ranked[1])
    assert row["mean.val_acc"] == doc["aggregate"]["mean"]
    assert row["n.val_acc"] == 2
    assert row["runs"] == " ".join(registry.group(group.id).runs)
    folds = registry.compare(registry.group(group.id).runs)
    assert [views.fold_dict(f)["fold"] for f in folds] == [0, 1]
    assert views.fold_dict(folds[1])["metrics"] == {"val_acc": 0.7}


def test_views_import_no_torch_rich_or_click(registry: Registry, spec: Doc) -> None:
    """The views are plain data: using them loads neither torch nor the CLI's rich and click."""
    with registry.start_run(spec) as run:
        run.log_metrics({"val_acc": 0.5}, step=0)
    script = (
        "import sys\n"
        "from archlab.registry import Registry, views\n"
        f"with Registry({registry.url!r}, create=False) as reg:\n"
        "    found = reg.runs()\n"
        "    views.export_csv(found); views.export_json(found); views.compare_rows(found)\n"
        "    views.grouped_rows(views.grouped(reg, found))\n"
        "    views.show(reg, found[0].id).to_dict(); views.comparison(reg, [found[0].id])\n"
        "    from archlab.registry import maintenance, ranking\n"
        "    ranking.best(reg, 'val_acc').rows(); maintenance.plan_removal(reg, [found[0].id])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'rich', 'click'))\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_extreme_of_a_series_against_its_direction(registry: Registry, spec: Doc) -> None:
    """``extreme``: a run's lowest or highest point of a metric and its first step; NaN never
    counts (what ``runs best --min/--max`` shows when it overrides a metric's direction)."""
    with registry.start_run(spec) as run:
        for step, value in enumerate([0.4, math.nan, 0.9, 0.1, 0.9]):
            run.log_metrics({"val_acc": value}, step=step)
    points = registry.metric_history(run.id, "val_acc")
    assert views.extreme(points, low=True) == (0.1, 3)
    assert views.extreme(points, low=False) == (0.9, 2)
    assert views.extreme([], low=True) == (None, None)


def test_group_lines_for_a_listing(registry: Registry, spec: Doc) -> None:
    """``group_line``: a CV group as one listing line: kinds, statuses by status, spec name, the
    folds found of those expected, one mixup label (or ``varies``), a span without ``+`` once
    every fold has ended; ``listing_metric_names`` counts the groups' aggregated metrics too."""
    with registry.start_run(spec) as alone:
        alone.log_metrics({"val_loss": 0.5}, step=0)
    group = registry.start_cv(spec, k=3, seed=0)
    for fold, acc in ((0, 0.8), (1, 0.9)):
        with registry.start_run(spec, cv_group=group, fold=fold) as run:
            run.log_metrics({"val_acc": acc}, step=0)
    entries = views.grouped(registry, registry.runs(order_by=["started"]))
    view = entries[1]
    assert isinstance(view, views.GroupView)
    line = views.group_line(view)
    assert line.id == group.id and line.kind == "train"
    assert line.statuses == [("completed", 2)]
    assert line.spec == view.folds[0].spec_name
    assert (line.folds, line.expected) == (2, 3)
    assert line.mixup == "-"
    assert not line.duration.endswith("+")
    assert line.aggregates["val_acc"].n == 2
    assert views.listing_metric_names(entries) == ["val_acc", "val_loss"]


def test_main_metrics_come_in_a_fixed_order() -> None:
    names = ["val_loss", "train_loss", "val_acc", "bleu", "test_ppl", "loss"]
    assert views.main_metrics(names) == ["val_acc", "val_loss", "test_ppl", "loss"]
    assert views.main_metrics([]) == []


def test_select_keeps_the_named_runs_in_their_order(registry: Registry, spec: Doc) -> None:
    """``select``: every run matching ``where``; with ids, only those, in the order named, a CV
    group's id standing for its folds."""
    with registry.start_run(spec, {"lr": 0.1}) as a:
        pass
    with registry.start_run(spec, {"lr": 0.2}) as b:
        pass
    group = registry.start_cv(spec, k=2, seed=0)
    for fold in (0, 1):
        with registry.start_run(spec, cv_group=group, fold=fold):
            pass
    folds = registry.group(group.id).runs
    assert [r.id for r in views.select(registry, idents=[a.id, b.id])] == [a.id, b.id]
    assert [r.id for r in views.select(registry, idents=[b.id, a.id])] == [b.id, a.id]
    assert [r.id for r in views.select(registry, idents=[group.id, a.id])] == [*folds, a.id]
    assert [r.id for r in views.select(registry, "config.lr == 0.2")] == [b.id]
    assert [r.id for r in views.select(registry, "config.lr == 0.2", [a.id])] == []
    assert len(views.select(registry)) == 4


def test_show_a_run_a_fold_and_a_group(registry: Registry, spec: Doc) -> None:
    """``show``: a run alone, a fold with its group and folds, or a group's id alone; their
    ``to_dict`` is what ``arch runs show --json`` prints."""
    with registry.start_run(spec) as alone:
        alone.log_metrics({"val_acc": 0.5}, step=0)
    group = registry.start_cv(spec, k=2, seed=0)
    for fold in (0, 1):
        with registry.start_run(spec, cv_group=group, fold=fold) as run:
            run.log_metrics({"val_acc": 0.7 + fold / 10}, step=0)
    single = views.show(registry, alone.id)
    assert single.run is not None and single.group is None and single.folds == []
    assert single.to_dict() == views.run_dict(single.run)

    fold_run = registry.group(group.id).runs[1]
    shown = views.show(registry, fold_run)
    assert shown.run is not None and shown.run.id == fold_run
    assert shown.group is not None and shown.group.id == group.id
    doc = shown.to_dict()
    assert doc["id"] == fold_run
    assert [f["fold"] for f in doc["cv_group"]["folds"]] == [0, 1]

    whole = views.show(registry, group.id)
    assert whole.run is None and [f.id for f in whole.folds] == registry.group(group.id).runs
    assert whole.to_dict()["type"] == "cv_group" and whole.to_dict()["id"] == group.id


def test_provenance_rows_and_change_lines() -> None:
    prov = {
        "git": {"commit": "abc123", "dirty": True},
        "host": "box",
        "pid": 7,
        "user": None,
        "argv": ["arch", "train", "x.yaml"],
        "versions": {"archlab": "0.1", "torch": None},
    }
    assert views.provenance_rows(prov) == [
        ("git", "abc123 (dirty)"),
        ("host", "box"),
        ("pid", "7"),
        ("command", "arch train x.yaml"),
        ("versions", "archlab 0.1"),
    ]
    assert views.provenance_rows({"git": None}) == [("git", "-")]
    assert views.provenance_rows({}) == []
    change = Change("config.lr", 0.1, math.nan)
    assert views.change_line(change) == 'config.lr: 0.1 -> "nan"'
    assert views.change_line(Change("spec.nodes.enc.depth", None, 4)) == (
        "spec.nodes.enc.depth: null -> 4"
    )


def test_comparison_is_the_compare_table(registry: Registry, spec: Doc) -> None:
    """``comparison``: the runs named (a group's id standing for its folds, duplicates once) and
    their ``compare_rows``; ``to_dict`` marks the rows that differ."""
    with registry.start_run(spec, {"lr": 0.1}) as a:
        a.log_metrics({"val_acc": 0.7}, step=0)
    with registry.start_run(spec, {"lr": 0.2}) as b:
        b.log_metrics({"val_acc": 0.7}, step=0)
    found = views.comparison(registry, [a.id, b.id, a.id])
    assert [r.id for r in found.runs] == [a.id, b.id]
    assert found.rows == views.compare_rows(found.runs)
    doc = found.to_dict()
    assert doc["runs"] == [a.id, b.id]
    by_field = {row["field"]: row for row in doc["rows"]}
    assert by_field["config.lr"] == {"field": "config.lr", "values": [0.1, 0.2], "differs": True}
    assert by_field["metrics.val_acc"]["differs"] is False
    assert "config.lr" in dict(views.comparison(registry, [a.id, b.id], show_all=True).rows)
