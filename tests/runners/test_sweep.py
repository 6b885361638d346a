"""arch sweep's runner: trials as tagged CV groups, rejected variants never trained, the pruner,
several objectives and the Pareto front, Optuna's storage beside the registry."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from archlab.registry import Registry
from archlab.runners.sweep import pareto_front, run_sweep, sweep_trials
from archlab.runners.sweep_file import load_sweep

pytest.importorskip("optuna")

VIT = Path(__file__).parents[2] / "specs/vit-tiny-digits.json"


def sweep_file(tmp_path: Path, data: str, **changes: Any) -> Path:
    doc: dict[str, Any] = {
        "base": str(VIT),
        "space": {"nodes.encoder.depth": {"int": [1, 3]}, "train.lr": {"log": [1e-4, 1e-2]}},
        "objectives": {"val_acc": "max"},
        "budget": {"max_params": 120000},  # depth 3 (152,202) is over it
        "train": {"data": data, "folds": 2, "epochs": 1, "batch_size": 32},
        "trials": 4,
    }
    doc.update(changes)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    return path


def test_trials_are_tagged_cv_groups_and_over_budget_ones_are_rejected(
    tmp_path: Path, registry: Registry, random_images: Callable[[int, int], str]
) -> None:
    sweep = load_sweep(sweep_file(tmp_path, random_images(60, 3)))
    report = run_sweep(sweep, registry, heartbeat=None)
    assert report.ran == [0, 1, 2, 3] and len(report.trials) == 4
    rejected = [t for t in report.trials if t.state == "REJECTED"]
    trained = [t for t in report.trials if t.state == "COMPLETE"]
    assert len(rejected) + len(trained) == 4 and rejected and trained
    for t in rejected:
        assert t.params["nodes.encoder.depth"] == 3
        assert t.reason == "152,202 parameters > max_params 120,000"
        assert t.attrs["rejected_ms"] < 1000
        assert not registry.runs(where=f"tags.trial == '{t.number}'")  # never trained
    for t in trained:
        runs = registry.runs(where=f"tags.sweep == 's' and tags.trial == '{t.number}'")
        assert {r.cv.group for r in runs if r.cv} == {t.group} and len(runs) == 2
        assert all(r.config["lr"] == t.params["train.lr"] for r in runs)
        mean = sum(r.metrics["val_acc"] for r in runs) / 2
        assert t.values == [pytest.approx(mean)]
    objectives, rows = sweep_trials(registry, "s")
    assert objectives == {"val_acc": "max"} and [r.state for r in rows] == [
        t.state for t in report.trials
    ]
    # Optuna's tables sit in a file of their own, not in the registry's
    assert Path(f"{tmp_path / 'r.db'}.optuna.db").is_file()
    with sqlite3.connect(tmp_path / "r.db") as db:
        tables = {n for (n,) in db.execute("select name from sqlite_master where type='table'")}
    assert "studies" not in tables and "runs" in tables


def test_a_second_call_continues_the_study_to_the_new_total(
    tmp_path: Path, registry: Registry, random_images: Callable[[int, int], str]
) -> None:
    sweep = load_sweep(sweep_file(tmp_path, random_images(60, 3), trials=2))
    first = run_sweep(sweep, registry, heartbeat=None)
    again = run_sweep(sweep, registry, heartbeat=None)
    assert again.ran == [] and len(again.trials) == 2
    more = run_sweep(sweep, registry, trials=3, heartbeat=None)
    assert first.ran == [0, 1] and more.ran == [2] and len(more.trials) == 3


def test_several_objectives_give_a_pareto_front_from_the_registry(
    tmp_path: Path, registry: Registry, random_images: Callable[[int, int], str]
) -> None:
    objectives = {"val_acc": "max", "params": "min"}
    path = sweep_file(tmp_path, random_images(60, 3), objectives=objectives, budget={})
    report = run_sweep(load_sweep(path), registry, heartbeat=None)
    complete = [t for t in report.trials if t.state == "COMPLETE"]
    assert len(complete) == 4 and all(len(t.values or []) == 2 for t in complete)
    points = pareto_front(registry, "s", objectives)
    assert {p.group for p in points} == {t.group for t in complete}
    by_group = {t.group: t.values for t in complete}
    for p in points:
        assert [p.values["val_acc"], p.values["params"]] == pytest.approx(by_group[p.group])
        beaten = any(
            q.values["val_acc"] >= p.values["val_acc"]
            and q.values["params"] <= p.values["params"]
            and q.values != p.values
            for q in points
        )
        assert p.front == (not beaten)
    assert points[0].front


def test_the_pruner_stops_a_trial_that_cannot_win(
    tmp_path: Path, registry: Registry, random_images: Callable[[int, int], str]
) -> None:
    """A median pruner (2 trials to start) stops later trials whose first fold is below the
    median: their CV groups keep the folds that ran."""
    data = random_images(60, 3)
    train = {"data": data, "folds": 3, "epochs": 1, "batch_size": 32}
    path = sweep_file(
        tmp_path, data, trials=8, budget={}, objectives={"val_loss": "min"}, train=train
    )
    report = run_sweep(load_sweep(path), registry, heartbeat=None)
    pruned = [t for t in report.trials if t.state == "PRUNED"]
    assert len(report.trials) == 8 and pruned, [t.state for t in report.trials]
    for t in pruned:
        assert t.reason is not None and t.reason.startswith("pruned after fold")
        folds = registry.runs(where=f"tags.trial == '{t.number}'")
        assert 1 <= len(folds) < 3


def test_a_point_sampled_again_reuses_its_result(
    tmp_path: Path, registry: Registry, random_images: Callable[[int, int], str]
) -> None:
    path = sweep_file(
        tmp_path,
        random_images(60, 3),
        space={"train.mixup": {"choice": [0.0]}},
        trials=3,
        budget={},
    )
    report = run_sweep(load_sweep(path), registry, heartbeat=None)
    first, *again = report.trials
    assert first.state == "COMPLETE" and first.reason is None
    for t in again:
        assert t.state == "COMPLETE" and t.values == first.values and t.group == first.group
        assert t.reason == "same point as trial 0: its result, not trained again"
    assert len(registry.runs()) == 2  # the two folds of trial 0 alone
