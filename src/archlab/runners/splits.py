"""Cross-validation and hold-out splits for ``arch train``, made by scikit-learn's splitters.

``make_splits`` turns a data set size (plus optional class labels and groups) into a
``SplitPlan``: an optional held-out test set, then either K folds (optionally repeated) or one
hold-out validation split. Every index array indexes the full data set and is a sorted, read-only
int64 array, so the training loop can hand it to the registry as is (``start_run(...,
train_indices=, val_indices=)``), whose fingerprint (``indices_sha256``) is then reproducible. The
plan also records what the registry's ``start_cv`` wants to know about how it was made: the
splitter, its seed, whether it shuffled, stratified or grouped, and the scikit-learn version,
since a different version may split differently.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy
import sklearn
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    RepeatedKFold,
    RepeatedStratifiedKFold,
    ShuffleSplit,
    StratifiedKFold,
    StratifiedShuffleSplit,
)

from archlab.errors import UserInputError
from archlab.runners.config import held_out_problem, repeats_problem

Indices = numpy.ndarray[Any, numpy.dtype[numpy.int64]]


#: Recorded with every plan: another scikit-learn version may split the same data differently.
LIBRARY = f"scikit-learn {sklearn.__version__}"


class SplitError(UserInputError):
    """Data and split settings that cannot be split as asked (the CLI exits 2 with the message)."""


# eq=False: the fields hold numpy arrays, which have no single truth value to compare by.
@dataclass(frozen=True, eq=False)
class Fold:
    """One train / validation split. ``index`` counts over all folds: repeat r, fold f is
    ``r * k + f``; a hold-out split is fold 0."""

    index: int
    train: Indices
    val: Indices


@dataclass(frozen=True, eq=False)
class SplitPlan:
    """Every split of one data set, and how they were made.

    ``folds`` holds ``k * repeats`` folds, or the single hold-out split (``k`` is then None).
    ``test`` is the held-out test set every fold's model is evaluated on once (None without
    ``test_size``); it never overlaps any fold's train or val set. ``splitter`` is the class name
    of the scikit-learn splitter that made the folds, ``library`` the scikit-learn version.
    """

    folds: list[Fold]
    test: Indices | None
    k: int | None
    repeats: int
    splitter: str
    shuffle: bool
    seed: int
    stratified: bool
    grouped: bool
    library: str


def make_splits(
    n: int,
    *,
    folds: int | None,
    repeats: int = 1,
    seed: int = 0,
    val_size: float = 0.2,
    test_size: float | None = None,
    labels: numpy.ndarray[Any, Any] | None = None,
    groups: numpy.ndarray[Any, Any] | None = None,
) -> SplitPlan:
    """Split ``n`` examples for training; raises ``SplitError`` when that cannot be done.

    With ``test_size``, a test set is taken first from all ``n`` examples; the rest is then split
    into folds or a hold-out validation set. ``folds=K`` makes a K-fold split of the rest
    (``StratifiedKFold`` when ``labels`` are given, else ``KFold``, both shuffled with ``seed``;
    ``RepeatedStratifiedKFold`` / ``RepeatedKFold`` when ``repeats > 1``, each repeat a fresh
    partition). ``folds=None`` makes one hold-out split whose validation set holds ``val_size``
    of all ``n`` examples (``StratifiedShuffleSplit`` with labels, else ``ShuffleSplit``).

    ``groups`` keep all examples of a group on one side of every split (``GroupShuffleSplit``
    for the test and hold-out splits, ``GroupKFold`` for folds). Stratification is then off and
    ``labels`` are ignored, because these splitters cannot honour both; ``GroupKFold`` balances
    fold sizes deterministically, so ``seed`` does not change its folds and ``repeats > 1`` is
    refused. With groups, ``val_size`` and ``test_size`` are fractions of the groups, not of the
    examples. Held-out sizes round up as in scikit-learn: ``ceil(val_size * n)`` examples.
    """
    _check_settings(n, folds, repeats, val_size, test_size)
    labels = _per_example("labels", labels, n)
    groups = _per_example("groups", groups, n)
    stratify = labels if groups is None else None

    # held-out sizes count examples, or whole groups when grouping, out of all of them
    total = n if groups is None else len(numpy.unique(groups))
    rest: Indices = numpy.arange(n, dtype=numpy.int64)
    test: Indices | None = None
    if test_size is not None:
        size = _count(test_size, total)
        rest, test, _ = _hold_out(rest, size, stratify, groups, seed, "test", "")
    after_test = " left after the test split" if test is not None else ""

    if folds is None:
        size = _count(val_size, total)
        train, val, splitter = _hold_out(
            rest, size, stratify, groups, seed, "validation", after_test
        )
        made, repeats = [Fold(0, train, val)], 1
    else:
        made, splitter = _k_folds(rest, folds, repeats, seed, stratify, groups, after_test)
    return SplitPlan(
        folds=made,
        test=test,
        k=folds,
        repeats=repeats,
        splitter=splitter,
        shuffle=folds is None or groups is None,
        seed=seed,
        stratified=stratify is not None,
        grouped=groups is not None,
        library=LIBRARY,
    )


def _check_settings(
    n: int, folds: int | None, repeats: int, val_size: float, test_size: float | None
) -> None:
    """Refuse split settings that cannot work whatever the data holds."""
    if n < 2:
        raise SplitError(f"cannot split {n} example(s): splitting needs at least 2")
    if repeats < 1:
        raise SplitError(f"repeats must be at least 1, not {repeats}")
    problem = repeats_problem(folds, repeats)
    if problem:
        raise SplitError(problem)
    if folds is not None and folds < 2:
        raise SplitError(f"folds must be at least 2, not {folds}; omit it for a hold-out split")
    _check_fraction("val_size", val_size)
    if test_size is not None:
        _check_fraction("test_size", test_size)
    problem = held_out_problem(folds, val_size, test_size)
    if problem:
        raise SplitError(problem)


def _k_folds(
    pool: Indices,
    k: int,
    repeats: int,
    seed: int,
    stratify: numpy.ndarray[Any, Any] | None,
    groups: numpy.ndarray[Any, Any] | None,
    where: str,
) -> tuple[list[Fold], str]:
    """``k`` folds of ``pool`` (``repeats`` times), as indices into the full data set, and the
    splitter's name; ``where`` says which examples ``pool`` is, for messages."""
    if k > len(pool):
        raise SplitError(
            f"folds={k} is more than the {len(pool)} examples{where}; "
            f"use folds={len(pool)} or fewer"
        )
    if groups is not None and repeats > 1:
        raise SplitError(
            f"repeats={repeats} cannot be combined with groups: GroupKFold always makes the "
            "same folds, so a repeat would only copy them; use repeats=1"
        )
    if groups is not None:
        _check_group_count(groups[pool], k, where)
    if stratify is not None:
        _check_class_counts(stratify[pool], k, where)
    kfold = _kfold_splitter(k, repeats, seed, stratify, groups)
    y = stratify[pool] if stratify is not None else None
    g = groups[pool] if groups is not None else None
    pieces = _split(kfold, len(pool), y, g)
    made = [Fold(i, _take(pool, train), _take(pool, val)) for i, (train, val) in enumerate(pieces)]
    return made, type(kfold).__name__


# ------------------------------------------------------------------------------------ splitters


def _hold_out_splitter(
    stratify: numpy.ndarray[Any, Any] | None,
    groups: numpy.ndarray[Any, Any] | None,
    size: int,
    seed: int,
) -> GroupShuffleSplit | StratifiedShuffleSplit | ShuffleSplit:
    """The one-split splitter: grouped, else stratified when there are labels, else plain."""
    if groups is not None:
        return GroupShuffleSplit(n_splits=1, test_size=size, random_state=seed)
    if stratify is not None:
        return StratifiedShuffleSplit(n_splits=1, test_size=size, random_state=seed)
    return ShuffleSplit(n_splits=1, test_size=size, random_state=seed)


def _kfold_splitter(
    k: int,
    repeats: int,
    seed: int,
    stratify: numpy.ndarray[Any, Any] | None,
    groups: numpy.ndarray[Any, Any] | None,
) -> GroupKFold | StratifiedKFold | KFold | RepeatedStratifiedKFold | RepeatedKFold:
    """The K-fold splitter: grouped (deterministic), else (repeated) stratified or plain, shuffled."""
    if groups is not None:
        return GroupKFold(n_splits=k)
    if repeats > 1:
        repeated = RepeatedStratifiedKFold if stratify is not None else RepeatedKFold
        return repeated(n_splits=k, n_repeats=repeats, random_state=seed)
    single = StratifiedKFold if stratify is not None else KFold
    return single(n_splits=k, shuffle=True, random_state=seed)


def _hold_out(
    pool: Indices,
    size: int,
    stratify: numpy.ndarray[Any, Any] | None,
    groups: numpy.ndarray[Any, Any] | None,
    seed: int,
    what: str,
    where: str,
) -> tuple[Indices, Indices, str]:
    """Hold ``size`` examples (groups, when grouping) of ``pool`` out, once.

    Returns (kept, held out) as indices into the full data set, and the splitter's name. ``what``
    names the held-out set and ``where`` says which examples ``pool`` is, for messages.
    """
    if groups is not None:
        _check_group_count(groups[pool], 2, where)
    if stratify is not None:
        _check_class_counts(stratify[pool], 2, where)
    units = "examples" if groups is None else "groups"
    available = len(pool) if groups is None else len(numpy.unique(groups[pool]))
    if size >= available:
        raise SplitError(
            f"the {what} split would take {size} of the {available} {units}{where}, leaving "
            "none to train on; lower val_size or test_size"
        )
    splitter = _hold_out_splitter(stratify, groups, size, seed)
    y = stratify[pool] if stratify is not None else None
    g = groups[pool] if groups is not None else None
    ((kept, held),) = _split(splitter, len(pool), y, g)
    return _take(pool, kept), _take(pool, held), type(splitter).__name__


def _split(
    splitter: Any,
    n: int,
    y: numpy.ndarray[Any, Any] | None,
    groups: numpy.ndarray[Any, Any] | None,
) -> list[tuple[Indices, Indices]]:
    """Run a scikit-learn splitter; its complaints about the sizes become ``SplitError``."""
    try:
        pieces: Iterator[tuple[Indices, Indices]] = splitter.split(numpy.zeros((n, 1)), y, groups)
        return list(pieces)
    except ValueError as exc:
        raise SplitError(f"{type(splitter).__name__} cannot split {n} examples: {exc}") from None


# --------------------------------------------------------------------------------------- checks


def _check_fraction(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise SplitError(f"{name} is a fraction of the data and must lie in (0, 1), not {value}")


def _per_example(
    name: str, values: numpy.ndarray[Any, Any] | None, n: int
) -> numpy.ndarray[Any, Any] | None:
    """``labels`` / ``groups`` as a 1-D array with one entry per example."""
    if values is None:
        return None
    array = numpy.asarray(values)
    if array.ndim != 1 or len(array) != n:
        raise SplitError(
            f"{name} must hold one value per example: expected shape ({n},), got {array.shape}"
        )
    return array


def _check_class_counts(labels: numpy.ndarray[Any, Any], needed: int, where: str) -> None:
    """Every class needs ``needed`` members: one per fold (at least 2 for any split)."""
    classes, counts = numpy.unique(labels, return_counts=True)
    smallest = int(numpy.argmin(counts))
    count = int(counts[smallest])
    if count >= needed:
        return
    name = repr(classes[smallest].item())
    members = f"{count} example{'s' if count != 1 else ''}"
    if count < 2:
        raise SplitError(
            f"class {name} has only {members}{where}; a stratified split needs at least 2 per "
            "class: remove or merge that class, or split without labels"
        )
    raise SplitError(
        f"class {name} has only {members}{where}, fewer than folds={needed}, so some fold's "
        f"validation set would lack it; use folds={count} or fewer"
    )


def _check_group_count(groups: numpy.ndarray[Any, Any], needed: int, where: str) -> None:
    distinct = len(numpy.unique(groups))
    if distinct >= needed:
        return
    if needed == 2:
        raise SplitError(
            f"only {distinct} distinct group{where}: a grouped split needs at least 2 groups"
        )
    raise SplitError(
        f"only {distinct} distinct groups{where}, fewer than folds={needed}: "
        f"use folds={distinct} or fewer"
    )


# ------------------------------------------------------------------------------------- results


def _count(fraction: float, n: int) -> int:
    """``ceil(fraction * n)`` without float noise (0.1 * 30 is 3.0000000000000004)."""
    return math.ceil(round(fraction * n, 9))


def _take(pool: Indices, positions: numpy.ndarray[Any, Any]) -> Indices:
    """Positions within ``pool`` -> sorted, read-only int64 indices into the full data set."""
    out: Indices = numpy.sort(pool[positions]).astype(numpy.int64, copy=False)
    out.setflags(write=False)
    return out
