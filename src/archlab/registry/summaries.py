"""Summaries as pure functions: a run's per-metric summary folded over a batch of points, a CV
group's aggregates over its folds' final values, and the plain records built from stored rows.

No SQL here: the store reads the rows and writes what these functions return, so each rule (a step
logged twice keeps its last value, NaN is never best, a fold counts once, the std of one fold is
undefined) is stated, and testable, in one place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from archlab.registry.records import (
    Aggregate,
    Artifact,
    CVGroup,
    CVInfo,
    MetricSummary,
    MixupSetting,
    Run,
)

# One logged metric value as a run handle buffers it: (name, step, epoch, value, time), value NaN
# as logged. A plain tuple: a run logs millions of them, and building a named tuple costs more.
Point = tuple[str, int, float | None, float, float]


@dataclass(slots=True)
class SeriesSummary:
    """A metric's summary in a run, as the run's handle last committed it."""

    last_step: int
    last_value: float | None
    best: float | None
    best_step: int | None
    count: int


@dataclass(slots=True)
class _Fold:
    """A metric's summary while a batch is folded in, and whether the batch only extends the
    series (steps past the last committed one, increasing)."""

    summary: SeriesSummary
    extends: bool
    low: bool  # lower is better


def stored(value: float | None) -> float | None:
    """A metric value as the registry stores it: NaN becomes NULL (SQLite cannot store NaN;
    PostgreSQL would sort it above every number)."""
    return None if value is None or value != value else value


def nan(value: float | None) -> float:
    """A stored metric value: NULL stands for NaN."""
    return math.nan if value is None else value


def fold_batch(
    known: Mapping[str, SeriesSummary], low: Mapping[str, bool], batch: Iterable[Point]
) -> tuple[dict[str, SeriesSummary], list[str]]:
    """The summaries of the metrics in ``batch`` brought up to date with it, from those ``known``
    (as last committed; ``low[name]``: lower is better), and the names whose summary must be
    recomputed from the stored series instead: a batch that rewrites or back-fills a step.

    A point counts once per logging (the store's upsert then keeps one value per step); NaN
    counts as a point and can be the last value, never the best."""
    work: dict[str, _Fold] = {}
    for name, step, _epoch, value, _at in batch:
        number = stored(value)
        fold = work.get(name)
        if fold is None:
            before = known.get(name)
            if before is None:
                summary = SeriesSummary(step, number, None, None, 0)
                fold = _Fold(summary, True, low[name])
            else:
                summary = SeriesSummary(step, number, before.best, before.best_step, before.count)
                fold = _Fold(summary, step > before.last_step, low[name])
            work[name] = fold
        elif step > fold.summary.last_step:
            fold.summary.last_step, fold.summary.last_value = step, number
        else:
            fold.extends = False  # out of order: recomputed from the stored series
        s = fold.summary
        s.count += 1
        if number is not None and (
            s.best is None or (number < s.best if fold.low else number > s.best)
        ):
            s.best, s.best_step = number, step
    done = {name: f.summary for name, f in work.items() if f.extends}
    return done, [name for name, f in work.items() if not f.extends]


class FoldFinal(NamedTuple):
    """A completed fold run's final value of one metric (None: NaN)."""

    fold: int | None
    run_pk: int
    key: int
    value: float | None


class Stats(NamedTuple):
    """A CV group's aggregate of one metric (by key id) over its folds, as stored."""

    key: int
    mean: float
    std: float
    n: int
    low: float
    high: float


def aggregate_finals(finals: Iterable[FoldFinal]) -> list[Stats]:
    """Per metric, the mean, sample std, count, min and max of the folds' final values.

    A fold counts once, with its first completed run (a registry written before folds were
    checked on joining may hold a fold twice); a final value that is NaN does not count (``n``
    says how many did). The std of one fold is undefined: 0.0 fills the column."""
    finals = list(finals)
    counted: dict[int | None, int] = {}
    for f in finals:
        counted[f.fold] = min(f.run_pk, counted.get(f.fold, f.run_pk))
    values: dict[int, list[float]] = {}
    for f in finals:
        if f.value is not None and counted[f.fold] == f.run_pk:
            values.setdefault(f.key, []).append(f.value)
    out = []
    for key, xs in values.items():
        n = len(xs)
        mean = math.fsum(xs) / n
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
        out.append(Stats(key, mean, std, n, min(xs), max(xs)))
    return out


def aggregate_record(
    name: str, mean: float, std: float, n: int, low: float, high: float
) -> Aggregate:
    """An aggregate as stored; the std of fewer than two folds is undefined (None)."""
    return Aggregate(name, mean, std if n > 1 else None, n, low, high)


class GroupFields(NamedTuple):
    """A CV group's own columns, in the order the prepared ``group_by_id`` reads them."""

    id: str
    spec_hash: str
    k: int
    splitter: str
    shuffle: bool
    seed: int | None
    stratified: bool
    grouped: bool
    repeats: int
    library: str | None
    config: dict[str, Any] | None


def group_record(row: Any, runs: list[str], aggregates: dict[str, Aggregate]) -> CVGroup:
    """A CV group from its columns (``GroupFields``, or a ``CVGroupRow``)."""
    return CVGroup(
        row.id,
        row.spec_hash,
        row.k,
        row.splitter,
        bool(row.shuffle),
        row.seed,
        bool(row.stratified),
        bool(row.grouped),
        row.repeats,
        row.library,
        row.config or {},
        runs,
        aggregates,
    )


def summary_record(name: str, row: Any) -> MetricSummary:
    """A metric's summary from its ``SummaryRow`` (NULL values read back as NaN)."""
    return MetricSummary(
        name, nan(row.last_value), row.last_step, nan(row.best_value), row.best_step, row.count
    )


def mixup_record(row: Any | None) -> MixupSetting | None:
    """A run's mixup setting from its ``MixupRow`` (None: the run mixed nothing)."""
    if row is None:
        return None
    both = row.cutmix_min is not None and row.cutmix_max is not None
    return MixupSetting(
        row.alpha,
        row.cutmix_alpha,
        (row.cutmix_min, row.cutmix_max) if both else None,
        row.prob,
        row.switch_prob,
        row.mode,
        row.label_smoothing,
        row.off_epoch,
    )


@dataclass(frozen=True)
class RunParts:
    """What a run's record gathers besides its own row, each read in one query for many runs."""

    group: Any | None = None  # its CVGroupRow
    mixup: Any | None = None  # its MixupRow
    summaries: Mapping[str, MetricSummary] | None = None
    tags: Mapping[str, str] | None = None
    artifacts: Sequence[Artifact] = ()


def run_record(row: Any, parts: RunParts, full: bool = False) -> Run:
    """A run from its ``RunRow`` and ``parts``; ``full`` keeps its provenance."""
    group = parts.group
    cv = (
        CVInfo(group.id, group.k, row.fold, row.n_train, row.n_val, row.train_sha256,
               row.val_sha256)
        if group is not None
        else None
    )  # fmt: skip
    summaries = dict(sorted((parts.summaries or {}).items()))
    return Run(
        id=row.id,
        kind=row.kind,
        status=row.status,
        spec_name=row.spec_name,
        spec_hash=row.spec_hash,
        cv=cv,
        mixup=mixup_record(parts.mixup),
        metrics={k: v.final for k, v in summaries.items()},
        started=row.started,
        ended=row.ended,
        heartbeat=row.heartbeat,
        error=row.error,
        config=row.config or {},
        tags=dict(parts.tags or {}),
        provenance=(row.provenance or {}) if full else {},
        summaries=summaries,
        artifacts=list(parts.artifacts),
    )
