"""Cross-validation groups: fold runs with their split fingerprints, the aggregates of completed
folds, ranking a group by its mean, and ending a fold in one transaction. Tests taking ``registry`` run on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import struct
import sys
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from registry_testing import count
from sqlalchemy import Engine

from archlab.registry import Registry, RegistryError
from archlab.registry.models import RunRow

Doc = dict[str, Any]


def sha_of_sorted_int64_le(indices: list[int]) -> str:
    """The fingerprint computed independently of the store: struct, little-endian int64."""
    return hashlib.sha256(struct.pack(f"<{len(indices)}q", *sorted(indices))).hexdigest()


def test_fold_runs_record_split_sizes_and_fingerprints(registry: Registry, spec: Doc) -> None:
    group = registry.start_cv(
        spec, {"epochs": 3}, k=3, splitter="StratifiedKFold", seed=7, stratified=True,
        library="scikit-learn 1.7.2",
    )  # fmt: skip
    assert (group.k, group.splitter, group.seed, group.stratified) == (
        3,
        "StratifiedKFold",
        7,
        True,
    )
    train = [9, 3, 5, 2**40, 0, 7]  # unsorted, one beyond 32 bits
    val = [1, 4, 8]
    with registry.start_run(
        spec, cv_group=group, fold=0, train_indices=train, val_indices=val
    ) as run:
        pass
    cv = registry.get(run.id).cv
    assert cv is not None
    assert (cv.group, cv.k, cv.fold, cv.n_train, cv.n_val) == (group.id, 3, 0, 6, 3)
    assert cv.train_sha256 == sha_of_sorted_int64_le(train)
    assert cv.val_sha256 == sha_of_sorted_int64_le(val)
    native = array("q", sorted(val))
    if sys.byteorder == "big":
        native.byteswap()
    assert cv.val_sha256 == hashlib.sha256(native.tobytes()).hexdigest()
    assert registry.group(group.id).runs == [run.id]
    # a fold run of a group given by id works the same
    with registry.start_run(spec, cv_group=group.id, fold=1) as other:
        pass
    assert registry.get(other.id).cv.fold == 1  # type: ignore[union-attr]
    assert registry.get(other.id).cv.n_train is None  # type: ignore[union-attr]


def test_cv_aggregates_follow_completed_folds(registry: Registry, spec: Doc) -> None:
    group = registry.start_cv(spec, k=4, seed=0)
    finals = [0.81, 0.86, 0.84]
    ids = []
    for fold, acc in enumerate(finals):
        with registry.start_run(spec, cv_group=group, fold=fold) as run:
            run.log_metrics({"val_acc": acc - 0.1, "val_loss": 1.0}, step=0)
            run.log_metrics({"val_acc": acc, "val_loss": 1.0 - acc}, step=1)
        ids.append(run.id)
        agg = registry.group(group.id).aggregates["val_acc"]
        done = finals[: fold + 1]
        assert agg.n == len(done)
        assert agg.mean == pytest.approx(statistics.fmean(done))
        # the sample std of a single fold is undefined: None, never a reassuring 0.0
        assert agg.std == (pytest.approx(statistics.stdev(done)) if len(done) > 1 else None)
        assert (agg.min, agg.max) == (min(done), max(done))
    loss = registry.group(group.id).aggregates["val_loss"]
    assert loss.mean == pytest.approx(statistics.fmean(1 - a for a in finals))

    # a failed and a still-running fold do not count
    with pytest.raises(RuntimeError), registry.start_run(spec, cv_group=group, fold=3) as bad:
        bad.log_metrics({"val_acc": 0.1}, step=1)
        raise RuntimeError("oom")
    running = registry.start_run(spec, cv_group=group, fold=3)
    running.log_metrics({"val_acc": 0.2}, step=1)
    running.flush()
    assert registry.group(group.id).aggregates["val_acc"].n == 3
    running.end("interrupted")
    assert registry.group(group.id).aggregates["val_acc"].n == 3

    # removing a fold updates the aggregates
    registry.remove(ids[1])
    agg = registry.group(group.id).aggregates["val_acc"]
    kept = [finals[0], finals[2]]
    assert (agg.n, agg.min, agg.max) == (2, min(kept), max(kept))
    assert agg.mean == pytest.approx(statistics.fmean(kept))
    assert agg.std == pytest.approx(statistics.stdev(kept))
    assert ids[1] not in registry.group(group.id).runs
    with pytest.raises(RegistryError):
        registry.get(ids[1])


def test_a_nan_final_value_does_not_enter_the_aggregates(registry: Registry, spec: Doc) -> None:
    group = registry.start_cv(spec, k=3)
    for fold, value in enumerate([0.5, math.nan, 0.7]):
        with registry.start_run(spec, cv_group=group, fold=fold) as run:
            run.log_metrics({"val_acc": value}, step=0)
    agg = registry.group(group.id).aggregates["val_acc"]
    assert (agg.n, agg.min, agg.max) == (2, 0.5, 0.7)
    assert agg.mean == pytest.approx(0.6)


def test_fold_runs_are_checked(
    registry: Registry, spec: Doc, raw_engine: Engine, minimal_gpt: Callable[[], Doc]
) -> None:
    with pytest.raises(RegistryError, match="k >= 2"):
        registry.start_cv(spec, k=1)
    group = registry.start_cv(spec, k=3)
    with pytest.raises(RegistryError, match="belongs to another spec"):
        registry.start_run(minimal_gpt(), cv_group=group, fold=0)
    for fold in (3, -1):
        with pytest.raises(RegistryError, match="outside the group's 3 folds"):
            registry.start_run(spec, cv_group=group, fold=fold)
    with pytest.raises(RegistryError, match="needs both cv_group and fold"):
        registry.start_run(spec, cv_group=group)
    with pytest.raises(RegistryError, match="needs both cv_group and fold"):
        registry.start_run(spec, fold=0)
    with pytest.raises(RegistryError, match="no CV group 'nosuch'"):
        registry.start_run(spec, cv_group="nosuch", fold=0)
    assert count(raw_engine, RunRow) == 0
    repeated = registry.start_cv(spec, k=2, repeats=3)  # repeated k-fold: k x repeats folds
    with registry.start_run(spec, cv_group=repeated, fold=5):
        pass


def test_a_fold_counts_once_in_its_group(registry: Registry, spec: Doc) -> None:
    from click.testing import CliRunner

    from archlab.cli.main import cli

    group = registry.start_cv(spec, k=3)
    with registry.start_run(spec, cv_group=group, fold=0) as run:
        run.log_metrics({"val_acc": 0.8}, step=1)
    with pytest.raises(RegistryError, match=f"fold 0 of CV group {group.id} is already completed"):
        registry.start_run(spec, cv_group=group, fold=0)
    # two runs of one fold started before either completed (or written by an older archlab):
    # the first completed one counts, the other does not enter the aggregates
    first = registry.start_run(spec, cv_group=group, fold=1)
    second = registry.start_run(spec, cv_group=group, fold=1)
    for handle, value in ((first, 0.6), (second, 0.9)):
        handle.log_metrics({"val_acc": value}, step=1)
        handle.end()
    agg = registry.group(group.id).aggregates["val_acc"]
    assert (agg.n, agg.mean, agg.max) == (2, pytest.approx(0.7), 0.8)
    assert registry.completed_folds(group.id) == {0: run.id, 1: first.id}
    listed = CliRunner().invoke(cli, ["runs", "list", "--group", "--registry", registry.url])
    assert listed.exit_code == 0, listed.output
    assert "2 of 3 folds" in listed.output  # three runs, two folds


def test_rank_judges_a_cv_group_by_its_mean_not_its_best_fold(
    registry: Registry, spec: Doc
) -> None:
    from click.testing import CliRunner

    from archlab.cli.main import cli

    groups = []
    for finals in ([0.95, 0.55], [0.8, 0.8]):  # means 0.75 and 0.8
        group = registry.start_cv(spec, k=2)
        for fold, value in enumerate(finals):
            with registry.start_run(spec, cv_group=group, fold=fold) as run:
                run.log_metrics({"val_acc": value, "val_loss": 1 - value}, step=1)
        groups.append(group.id)
    lucky, steady = groups
    with registry.start_run(spec) as alone:
        alone.log_metrics({"val_acc": 0.78, "val_loss": 0.3}, step=1)
        alone.log_metrics({"val_acc": 0.7, "val_loss": 0.1}, step=2)
    [top] = registry.rank("val_acc")
    assert top.group is not None and top.id == steady and top.value == pytest.approx(0.8)
    assert top.aggregate is not None and top.aggregate.n == 2
    assert [e.id for e in registry.rank("val_acc", limit=None)] == [steady, alone.id, lucky]
    assert [e.id for e in registry.rank("val_acc", by="group", limit=None)] == [steady, lucky]
    [fold] = registry.rank("val_acc", by="run")  # every run alone: the lucky fold
    assert fold.run is not None and fold.run.cv is not None and fold.run.cv.group == lucky
    # lower is better for a loss: the lone run's best 0.1 beats both groups' means
    assert [e.id for e in registry.rank("val_loss", limit=None)] == [alone.id, steady, lucky]
    with pytest.raises(RegistryError, match="rank by 'auto', 'group' or 'run'"):
        registry.rank("val_acc", by="fold")
    runner = CliRunner()
    url = registry.url
    shown = runner.invoke(cli, ["runs", "best", "--metric", "val_acc", "--registry", url])
    assert shown.exit_code == 0, shown.output
    assert steady in shown.output and "mean of final values over 2 folds" in shown.output
    doc = json.loads(
        runner.invoke(
            cli, ["runs", "best", "--metric", "val_acc", "--group", "--format", "json",
                  "--registry", url],
        ).output
    )  # fmt: skip
    assert [(d["type"], d["id"]) for d in doc] == [("cv_group", steady)]
    runs = runner.invoke(cli, ["runs", "best", "--metric", "val_acc", "--runs", "--registry", url])
    assert runs.exit_code == 0 and lucky in runs.output


def test_ending_a_fold_is_one_transaction(
    registry: Registry, spec: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last metrics, the status and the group's aggregates commit together: a run is never
    seen completed without its final values, nor its group without its fold."""
    group = registry.start_cv(spec, k=2)
    run = registry.start_run(spec, cv_group=group, fold=0)
    run.log_metrics({"val_acc": 0.8}, step=0)
    transactions: list[str] = []
    real = registry._transaction

    def spy(fn: Any) -> Any:
        transactions.append(fn.__qualname__)
        return real(fn)

    monkeypatch.setattr(registry, "_transaction", spy)
    run.end()
    assert len(transactions) == 1
    assert registry.get(run.id).status == "completed"
    assert registry.group(group.id).aggregates["val_acc"].mean == pytest.approx(0.8)


def test_groups_and_specs_made_by_another_registry_are_found(
    registry_url: str, spec: Doc, isolated: Path
) -> None:
    with Registry(registry_url, artifacts=isolated / "a") as first:
        group = first.start_cv(spec, k=3, seed=7)
    with Registry(registry_url, artifacts=isolated / "a") as second:
        with second.start_run(spec, cv_group=group.id, fold=2) as run:
            run.log_metrics({"val_acc": 0.5}, step=0)
        with pytest.raises(RegistryError, match="outside the group's 3 folds"):
            second.start_run(spec, cv_group=group.id, fold=3)
        got = second.group(group.id)
    assert (got.k, got.seed, got.shuffle, got.runs) == (3, 7, True, [run.id])
    assert got.aggregates["val_acc"].n == 1


def test_a_cv_group_repeats_at_least_once(registry: Registry, spec: Doc) -> None:
    with pytest.raises(RegistryError, match="at least once"):
        registry.start_cv(spec, k=3, repeats=0)
