"""``Registry.compare_groups``: two CV groups recorded through the API with the fingerprints of the
same scikit-learn splits, compared fold for fold; every way two groups fail to pair is refused
with the first fold that differs. Tests taking ``registry`` run on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import math
from typing import Any

import baycomp
import numpy as np
import pytest
from sklearn.model_selection import RepeatedKFold

from archlab import stats
from archlab.registry import Registry, RegistryError
from archlab.registry.comparison import verdict

Doc = dict[str, Any]
N = 60  # examples split
DATA = "d" * 64
KEYS = [
    "metric", "k", "repeats", "diffs", "mean_diff", "t", "p", "ci_low", "ci_high", "t_naive",
    "p_naive", "p_a_better", "p_rope", "p_b_better",
]  # fmt: skip


def splits(k: int, repeats: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """(train, val) of each fold, repeat r fold f at r * k + f (as arch train splits)."""
    folds = RepeatedKFold(n_splits=k, n_repeats=repeats, random_state=seed).split(np.arange(N))
    return [(t.tolist(), v.tolist()) for t, v in folds]


def record_group(
    registry: Registry,
    spec: Doc,
    finals: list[float],
    *,
    k: int,
    repeats: int = 1,
    seed: int = 0,
    data: str | None = DATA,
    best_offset: float = 0.05,
    loss: list[float] | None = None,
    split_seed: int | None = None,
) -> str:
    """A completed CV group whose fold j logs val_acc ``finals[j] + best_offset`` then
    ``finals[j]`` (so its best is the first), and val_loss ``loss[j]`` when given."""
    config = {"lr": 1e-3} if data is None else {"lr": 1e-3, "data_sha256": data}
    group = registry.start_cv(spec, config, k=k, repeats=repeats, seed=seed)
    folds = splits(k, repeats, seed if split_seed is None else split_seed)
    for fold, (train, val) in enumerate(folds):
        with registry.start_run(
            spec, config, cv_group=group, fold=fold, train_indices=train, val_indices=val
        ) as run:
            run.log_metrics({"val_acc": finals[fold] + best_offset}, step=0)
            point = {"val_acc": finals[fold]}
            if loss is not None:
                point["val_loss"] = loss[fold]
            run.log_metrics(point, step=1)
    return group.id


def deeper(spec: Doc) -> Doc:
    doc = json.loads(json.dumps(spec))
    doc["nodes"]["enc"]["depth"] += 1
    return doc


def scores(j: int, seed: int) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.6, 0.9, j)
    return (base + rng.normal(0, 0.02, j)).tolist(), (base + rng.normal(0.01, 0.02, j)).tolist()


def test_compare_groups_pairs_folds_and_matches_the_references(
    registry: Registry, spec: Doc
) -> None:
    a_scores, b_scores = scores(15, 1)
    a = record_group(registry, spec, a_scores, k=5, repeats=3)
    b = record_group(registry, deeper(spec), b_scores, k=5, repeats=3)
    got = registry.compare_groups(a, b, "val_acc", rope=0.01)
    assert (got.a, got.b, got.k, got.repeats, got.at, got.direction) == (a, b, 5, 3, "final", "max")
    assert got.values_a == pytest.approx(a_scores, abs=1e-12)
    assert got.runs_a == [registry.fold_runs(a)[j].id for j in range(15)]
    diffs = np.asarray(b_scores) - np.asarray(a_scores)
    assert got.diffs == pytest.approx(diffs.tolist(), abs=1e-12)
    mean, var, df = baycomp.CorrelatedTTest.compute_statistics(
        np.asarray(got.values_a), np.asarray(got.values_b), runs=3
    )
    assert got.corrected.t == pytest.approx(mean / math.sqrt(var), abs=1e-9, rel=1e-9)
    assert got.corrected.df == df == 14
    ref = baycomp.two_on_single(np.asarray(got.values_a), np.asarray(got.values_b), 0.01, runs=3)
    assert (got.p_a_better, got.p_rope, got.p_b_better) == pytest.approx(ref, abs=1e-9)
    assert got.naive == stats.corrected_ttest(got.diffs, 0.0)
    doc = got.to_dict()
    assert list(doc) == KEYS
    assert doc["p"] == got.corrected.p and doc["ci_low"] < doc["mean_diff"] < doc["ci_high"]
    assert got.five_by_two is None
    words = "\n".join(verdict(got))
    assert "corrected resampled t-test" in words and "naive paired t-test" in words
    assert ("B is better than A" in words) == (got.mean_diff > 0)


def test_at_best_ratio_sizes_and_a_lower_is_better_metric(registry: Registry, spec: Doc) -> None:
    a = record_group(registry, spec, [0.5, 0.6, 0.7], k=3, best_offset=0.1, loss=[0.9, 0.8, 0.7])
    b = record_group(
        registry, deeper(spec), [0.6, 0.6, 0.6], k=3, best_offset=0.2, loss=[0.5, 0.6, 0.4]
    )
    best = registry.compare_groups(a, b, at="best")
    assert best.values_a == pytest.approx([0.6, 0.7, 0.8]) and best.values_b == pytest.approx(
        [0.8, 0.8, 0.8]
    )
    sizes = registry.compare_groups(a, b, ratio="sizes")
    assert sizes.size_ratio == pytest.approx(20 / 40)  # 60 examples in 3 folds
    assert sizes.corrected == stats.corrected_ttest(sizes.diffs, 0.5)
    folds = registry.compare_groups(a, b)
    assert folds.size_ratio == 0.5 and folds.corrected == sizes.corrected  # 1/(k-1) = 20/40
    loss = registry.compare_groups(a, b, "val_loss", rope=0.0)
    assert loss.direction == "min" and loss.mean_diff < 0  # B's loss is lower: B is better
    posterior = stats.correlated_bayes(loss.diffs, 0.5, 0.0)
    assert (loss.p_a_better, loss.p_b_better) == (posterior.p_above, posterior.p_below)
    assert loss.p_b_better > 0.5 and loss.p_rope == 0.0
    assert "B is better than A" in verdict(loss)[0]


def test_five_by_two_groups_add_dietterich_and_alpaydin(registry: Registry, spec: Doc) -> None:
    a_scores, b_scores = scores(10, 2)
    a = record_group(registry, spec, a_scores, k=2, repeats=5)
    b = record_group(registry, deeper(spec), b_scores, k=2, repeats=5)
    got = registry.compare_groups(a, b)
    assert got.five_by_two == stats.five_by_two(got.diffs)
    assert list(got.to_dict()) == [*KEYS, "t_5x2cv", "p_5x2cv", "f_5x2cv", "p_f_5x2cv"]
    assert "Dietterich" in verdict(got)[-1]


def test_equal_groups_give_no_nan(registry: Registry, spec: Doc) -> None:
    a = record_group(registry, spec, [0.5, 0.75, 0.25], k=3)
    b = record_group(registry, deeper(spec), [0.5, 0.75, 0.25], k=3)
    got = registry.compare_groups(a, b)
    values = [v for v in got.to_dict().values() if isinstance(v, float)]
    assert not any(math.isnan(v) for v in values)
    assert (got.corrected.t, got.corrected.p, got.p_rope) == (0.0, 1.0, 1.0)
    assert "level" in verdict(got)[0] and "practically equivalent (probability" in verdict(got)[3]


def test_groups_that_do_not_pair_are_refused(registry: Registry, spec: Doc) -> None:
    a = record_group(registry, spec, [0.5, 0.6, 0.7], k=3)
    other_k = record_group(registry, spec, [0.5, 0.6, 0.7, 0.8], k=4)
    other_seed = record_group(registry, spec, [0.5, 0.6, 0.7], k=3, seed=1)
    other_data = record_group(registry, spec, [0.5, 0.6, 0.7], k=3, data="e" * 64)
    no_data = record_group(registry, spec, [0.5, 0.6, 0.7], k=3, data=None)
    # same recorded seed, other splits: the fingerprints tell
    resplit = record_group(registry, spec, [0.5, 0.6, 0.7], k=3, split_seed=5)
    with pytest.raises(RegistryError, match=r"k 3 \(A\) vs 4 \(B\)"):
        registry.compare_groups(a, other_k)
    with pytest.raises(RegistryError, match=r"CV seed 0 \(A\) vs 1 \(B\)"):
        registry.compare_groups(a, other_seed)
    with pytest.raises(RegistryError, match="data hash 'ddd"):
        registry.compare_groups(a, other_data)
    with pytest.raises(RegistryError, match=f"CV group {no_data} records no data hash"):
        registry.compare_groups(a, no_data)
    with pytest.raises(
        RegistryError, match=r"fold 0 \(repeat 0, fold 0\) differs: its training examples"
    ):
        registry.compare_groups(a, resplit)
    with pytest.raises(RegistryError, match=r"not .* with itself"):
        registry.compare_groups(a, a)


def test_missing_folds_metrics_and_ids_are_refused(registry: Registry, spec: Doc) -> None:
    a = record_group(registry, spec, [0.5, 0.6, 0.7], k=3)
    group = registry.start_cv(spec, {"lr": 1e-3, "data_sha256": DATA}, k=3, seed=0)
    for fold, (train, val) in enumerate(splits(3, 1, 0)):
        if fold == 1:
            continue  # never trained
        with registry.start_run(
            spec, cv_group=group, fold=fold, train_indices=train, val_indices=val
        ) as run:
            run.log_metrics({"val_acc": 0.5}, step=0)
    with pytest.raises(RegistryError, match=f"fold 1 .* of CV group {group.id} has no completed"):
        registry.compare_groups(a, group.id)
    b = record_group(registry, deeper(spec), [0.5, 0.6, 0.7], k=3)
    with pytest.raises(RegistryError, match="has no metric 'val_f1'; metrics recorded: val_acc"):
        registry.compare_groups(a, b, "val_f1")
    with pytest.raises(RegistryError, match="B: no CV group 'zzzzzzzz'"):
        registry.compare_groups(a, "zzzzzzzz")
    run_id = registry.fold_runs(a)[0].id
    with pytest.raises(RegistryError, match=f"A: {run_id} is a run, not a CV group"):
        registry.compare_groups(run_id, b)
    with pytest.raises(RegistryError, match="at is one of final, best"):
        registry.compare_groups(a, b, at="last")
    with pytest.raises(RegistryError, match="ratio is one of folds, sizes"):
        registry.compare_groups(a, b, ratio="n")
    with pytest.raises(RegistryError, match="ROPE half-width"):
        registry.compare_groups(a, b, rope=-1.0)


def test_a_fold_rerun_after_a_failure_counts_once(registry: Registry, spec: Doc) -> None:
    a = record_group(registry, spec, [0.5, 0.6, 0.7], k=3)
    group = registry.start_cv(spec, {"lr": 1e-3, "data_sha256": DATA}, k=3, seed=0)
    folds = splits(3, 1, 0)
    with (
        pytest.raises(RuntimeError),
        registry.start_run(
            spec, cv_group=group, fold=0, train_indices=folds[0][0], val_indices=folds[0][1]
        ) as run,
    ):
        run.log_metrics({"val_acc": 0.1}, step=0)
        raise RuntimeError("diverged")
    for fold, (train, val) in enumerate(folds):
        with registry.start_run(
            spec, cv_group=group, fold=fold, train_indices=train, val_indices=val
        ) as run:
            run.log_metrics({"val_acc": 0.75}, step=0)
    got = registry.compare_groups(a, group.id)
    assert got.values_b == [0.75, 0.75, 0.75]


def test_a_nan_fold_value_is_refused(registry: Registry, spec: Doc) -> None:
    a = record_group(registry, spec, [0.5, 0.6, 0.7], k=3)
    b = record_group(registry, deeper(spec), [0.5, math.nan, 0.7], k=3, best_offset=0.0)
    with pytest.raises(RegistryError, match=r"fold 1 of CV group .*: its final val_acc is nan"):
        registry.compare_groups(a, b)
    with pytest.raises(RegistryError, match="its best val_acc is nan"):
        registry.compare_groups(a, b, at="best")
