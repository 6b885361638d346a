"""``make_splits``: K folds, repeats, hold-out and test splits, stratification, groups, errors."""

from __future__ import annotations

import math
from typing import Any

import numpy
import pytest

from archlab.errors import UserInputError
from archlab.registry import indices_sha256
from archlab.runners.splits import Fold, SplitError, SplitPlan, make_splits

# 3 imbalanced classes: 12, 20 and 31 examples (63 in all)
LABELS = numpy.repeat(numpy.array([0, 1, 2]), [12, 20, 31])
N = len(LABELS)
# 21 groups of 3 consecutive examples
GROUPS = numpy.arange(N) // 3


def as_set(indices: numpy.ndarray[Any, Any]) -> set[int]:
    return {int(i) for i in indices}


def assert_well_formed(plan: SplitPlan, n: int) -> None:
    """Sorted read-only int64 arrays inside range; train and val disjoint and clear of test."""
    test = as_set(plan.test) if plan.test is not None else set()
    arrays = [a for fold in plan.folds for a in (fold.train, fold.val)]
    arrays += [plan.test] if plan.test is not None else []
    for array in arrays:
        assert array.dtype == numpy.int64
        assert array.ndim == 1
        assert not array.flags.writeable
        assert numpy.all(numpy.diff(array) > 0)  # sorted, no duplicates
        assert array.size == 0 or (array[0] >= 0 and array[-1] < n)
    for fold in plan.folds:
        train, val = as_set(fold.train), as_set(fold.val)
        assert train and val
        assert not train & val
        assert not (train | val) & test
        assert train | val | test == set(range(n))


def assert_vals_partition(folds: list[Fold], pool: set[int]) -> None:
    vals = [as_set(fold.val) for fold in folds]
    assert sum(len(v) for v in vals) == len(pool)
    assert set().union(*vals) == pool


# ----------------------------------------------------------------------------------- K folds


def test_kfold_without_labels_partitions_the_data() -> None:
    plan = make_splits(50, folds=5, seed=3)
    assert_well_formed(plan, 50)
    assert [f.index for f in plan.folds] == [0, 1, 2, 3, 4]
    assert_vals_partition(plan.folds, set(range(50)))
    assert all(len(f.val) == 10 for f in plan.folds)
    assert plan.test is None
    assert (plan.k, plan.repeats, plan.splitter, plan.seed) == (5, 1, "KFold", 3)
    assert plan.shuffle and not plan.stratified and not plan.grouped
    assert plan.library.startswith("scikit-learn ")


def test_kfold_is_shuffled_and_reproducible() -> None:
    a, b = make_splits(40, folds=4, seed=7), make_splits(40, folds=4, seed=7)
    other = make_splits(40, folds=4, seed=8)
    assert [indices_sha256(f.val) for f in a.folds] == [indices_sha256(f.val) for f in b.folds]
    assert [as_set(f.val) for f in a.folds] != [as_set(f.val) for f in other.folds]
    assert as_set(a.folds[0].val) != set(range(10))  # not the unshuffled first block


def test_stratified_kfold_keeps_class_ratios_within_one_example() -> None:
    k = 5
    plan = make_splits(N, folds=k, labels=LABELS, seed=1)
    assert_well_formed(plan, N)
    assert_vals_partition(plan.folds, set(range(N)))
    assert plan.splitter == "StratifiedKFold" and plan.stratified
    for fold in plan.folds:
        for cls, total in zip(*numpy.unique(LABELS, return_counts=True), strict=True):
            in_val = int(numpy.sum(LABELS[fold.val] == cls))
            assert math.floor(total / k) <= in_val <= math.ceil(total / k)


def test_a_test_split_comes_first_and_folds_cover_the_rest() -> None:
    plan = make_splits(N, folds=4, labels=LABELS, test_size=0.2, seed=2)
    assert plan.test is not None
    assert len(plan.test) == math.ceil(0.2 * N)
    assert_well_formed(plan, N)
    assert_vals_partition(plan.folds, set(range(N)) - as_set(plan.test))
    # the test split is stratified too: each class keeps its share within one example
    for cls, total in zip(*numpy.unique(LABELS, return_counts=True), strict=True):
        in_test = int(numpy.sum(LABELS[plan.test] == cls))
        assert abs(in_test - total * len(plan.test) / N) <= 1


def test_repeats_give_a_fresh_partition_each_repeat_reproducibly() -> None:
    k, repeats = 4, 3
    plan = make_splits(40, folds=k, repeats=repeats, seed=5)
    again = make_splits(40, folds=k, repeats=repeats, seed=5)
    assert (plan.k, plan.repeats, plan.splitter) == (k, repeats, "RepeatedKFold")
    assert [f.index for f in plan.folds] == list(range(k * repeats))
    assert_well_formed(plan, 40)
    partitions = []
    for r in range(repeats):
        repeat = plan.folds[r * k : (r + 1) * k]
        assert_vals_partition(repeat, set(range(40)))
        partitions.append({frozenset(as_set(f.val)) for f in repeat})
    assert len({frozenset(p) for p in partitions}) == repeats
    assert [indices_sha256(f.train) for f in plan.folds] == [
        indices_sha256(f.train) for f in again.folds
    ]


def test_repeated_stratified_kfold() -> None:
    plan = make_splits(N, folds=3, repeats=2, labels=LABELS, seed=0)
    assert plan.splitter == "RepeatedStratifiedKFold" and plan.stratified
    assert len(plan.folds) == 6
    assert_well_formed(plan, N)
    for r in range(2):
        assert_vals_partition(plan.folds[r * 3 : (r + 1) * 3], set(range(N)))


def test_groups_never_straddle_train_and_val() -> None:
    plan = make_splits(N, folds=5, labels=LABELS, groups=GROUPS, test_size=0.2, seed=4)
    assert plan.splitter == "GroupKFold"
    assert plan.grouped and not plan.stratified and not plan.shuffle
    assert plan.test is not None
    assert_well_formed(plan, N)
    assert_vals_partition(plan.folds, set(range(N)) - as_set(plan.test))
    test_groups = as_set(GROUPS[plan.test])
    assert len(test_groups) == math.ceil(0.2 * 21)  # test_size counts groups
    for fold in plan.folds:
        train_groups, val_groups = as_set(GROUPS[fold.train]), as_set(GROUPS[fold.val])
        assert not train_groups & val_groups
        assert not (train_groups | val_groups) & test_groups


# ---------------------------------------------------------------------------------- hold-out


def test_hold_out_has_the_requested_size() -> None:
    plan = make_splits(101, folds=None, val_size=0.2, seed=0)
    (fold,) = plan.folds
    assert (fold.index, len(fold.val), len(fold.train)) == (0, 21, 80)  # ceil(0.2 * 101)
    assert (plan.k, plan.repeats, plan.splitter, plan.test) == (None, 1, "ShuffleSplit", None)
    assert_well_formed(plan, 101)


def test_hold_out_sizes_round_without_float_noise() -> None:
    (fold,) = make_splits(30, folds=None, val_size=0.1).folds  # 0.1 * 30 = 3.0000000000000004
    assert len(fold.val) == 3


def test_hold_out_with_test_takes_both_shares_of_all_examples() -> None:
    plan = make_splits(100, folds=None, val_size=0.2, test_size=0.1, seed=9)
    assert plan.test is not None
    assert (len(plan.test), len(plan.folds[0].val), len(plan.folds[0].train)) == (10, 20, 70)
    assert_well_formed(plan, 100)


def test_stratified_hold_out_keeps_class_ratios() -> None:
    plan = make_splits(N, folds=None, val_size=0.25, labels=LABELS, seed=3)
    assert plan.splitter == "StratifiedShuffleSplit" and plan.stratified
    val = plan.folds[0].val
    assert len(val) == math.ceil(0.25 * N)
    for cls, total in zip(*numpy.unique(LABELS, return_counts=True), strict=True):
        assert abs(int(numpy.sum(LABELS[val] == cls)) - total * len(val) / N) <= 1


def test_grouped_hold_out() -> None:
    plan = make_splits(N, folds=None, val_size=0.3, groups=GROUPS, seed=1)
    assert plan.splitter == "GroupShuffleSplit" and plan.grouped
    fold = plan.folds[0]
    assert len(as_set(GROUPS[fold.val])) == math.ceil(0.3 * 21)
    assert not as_set(GROUPS[fold.train]) & as_set(GROUPS[fold.val])
    assert_well_formed(plan, N)


# ------------------------------------------------------------------------------------ errors

ONE_OF_A_KIND = numpy.array([0] * 10 + [1] * 10 + [2])


@pytest.mark.parametrize(
    ("n", "kwargs", "pattern"),
    [
        (50, {"folds": 1}, r"folds must be at least 2, not 1"),
        (5, {"folds": 6}, r"folds=6 is more than the 5 examples; use folds=5 or fewer"),
        (10, {"folds": 6, "test_size": 0.5}, r"folds=6 is more than the 5 examples left after"),
        (
            N,
            {"folds": 13, "labels": LABELS},
            r"class 0 has only 12 examples.*use folds=12 or fewer",
        ),
        (21, {"folds": 2, "labels": ONE_OF_A_KIND}, r"class 2 has only 1 example;.*at least 2"),
        (21, {"folds": None, "labels": ONE_OF_A_KIND}, r"class 2 has only 1 example"),
        (N, {"folds": 22, "groups": GROUPS}, r"only 21 distinct groups, fewer than folds=22"),
        (4, {"folds": None, "groups": numpy.zeros(4)}, r"only 1 distinct group.*at least 2"),
        (
            N,
            {"folds": 3, "groups": GROUPS, "repeats": 2},
            r"repeats=2 cannot be combined with groups",
        ),
        (N, {"folds": None, "repeats": 2}, r"repeats=2 repeats a K-fold split; set folds too"),
        (N, {"folds": 3, "repeats": 0}, r"repeats must be at least 1"),
        (N, {"folds": None, "val_size": 0.0}, r"val_size .* must lie in \(0, 1\), not 0.0"),
        (N, {"folds": None, "val_size": 1.5}, r"val_size .* must lie in \(0, 1\)"),
        (N, {"folds": 3, "test_size": 1.0}, r"test_size .* must lie in \(0, 1\), not 1.0"),
        (N, {"folds": None, "val_size": 0.5, "test_size": 0.5}, r"add up to 1, leaving nothing"),
        (3, {"folds": None, "val_size": 0.9}, r"would take 3 of the 3 examples, leaving none"),
        (
            N,
            {"folds": None, "val_size": 0.5, "test_size": 0.45, "groups": GROUPS},
            r"validation split would take 11 of the 11 groups left after the test split",
        ),
        (
            N,
            {"folds": 3, "labels": LABELS[:10]},
            r"labels must hold one value per example.*\(63,\)",
        ),
        (N, {"folds": 3, "groups": GROUPS.reshape(-1, 3)}, r"groups must hold one value per"),
        (1, {"folds": None}, r"cannot split 1 example"),
        # fewer validation examples than classes: scikit-learn's complaint, as a SplitError
        (N, {"folds": None, "labels": LABELS, "val_size": 0.02}, r"StratifiedShuffleSplit cannot"),
    ],
)
def test_impossible_splits_raise_split_error(n: int, kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(SplitError, match=pattern) as info:
        make_splits(n, **kwargs)
    assert isinstance(info.value, UserInputError)  # the CLI exits 2 with the message
