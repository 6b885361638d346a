"""Every trial of a sweep against its best (``Registry.compare_sweep``), Holm-corrected.

A sweep's trials are CV groups whose fold runs carry the tag ``sweep`` (the study name) and
``trial`` (``arch sweep``); only complete groups count (every fold completed: a pruned or
unfinished trial is left out). The best trial is the one with the best mean of ``metric`` over
its folds (by the metric's direction). Every other trial is compared with it fold for fold by
``compare_groups`` (the corrected resampled t-test; they share the sweep's splits), and the
p-values of those m comparisons are adjusted together by Holm's step-down method, so "worse
than the best at 0.05" holds for the whole family, not for each comparison alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archlab.registry.comparison import ALPHA, GroupComparison, compare_groups
from archlab.registry.engine import RegistryError

if TYPE_CHECKING:
    from archlab.registry.store import Registry


@dataclass(frozen=True)
class TrialComparison:
    """One trial against the best: its group, mean, and the comparison (best = A, trial = B)."""

    trial: str
    group: str
    mean: float
    comparison: GroupComparison
    p_holm: float

    def to_dict(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "trial": self.trial,
            "group": self.group,
            "mean": self.mean,
            "mean_diff": c.mean_diff,
            "p": c.corrected.p,
            "p_holm": self.p_holm,
            "ci_low": c.corrected.ci_low,
            "ci_high": c.corrected.ci_high,
            "p_best_better": c.p_a_better,
            "p_rope": c.p_rope,
            "p_trial_better": c.p_b_better,
        }


@dataclass(frozen=True)
class SweepComparison:
    """The best trial of ``study`` by ``metric`` and every other trial against it."""

    study: str
    metric: str
    best_trial: str
    best_group: str
    best_mean: float
    trials: list[TrialComparison]

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "metric": self.metric,
            "best": {"trial": self.best_trial, "group": self.best_group, "mean": self.best_mean},
            "trials": [t.to_dict() for t in self.trials],
        }

    def worse(self, alpha: float = ALPHA) -> list[str]:
        """The trials worse than the best at ``alpha`` for the whole family (Holm)."""
        return [t.trial for t in self.trials if t.p_holm <= alpha and t.comparison.mean_diff != 0]


def sweep_groups(registry: Registry, study: str) -> dict[str, str]:
    """The complete CV groups of sweep ``study``, each with its trial number: ``{group: trial}``
    (fold runs tagged ``sweep``; every fold of the group completed)."""
    quoted = study.replace("\\", "\\\\").replace("'", "\\'")
    folds: dict[str, set[int]] = {}
    trials: dict[str, str] = {}
    for run in registry.runs(where=f"tags.sweep == '{quoted}' and status == 'completed'"):
        if run.cv is not None and run.cv.fold is not None:
            folds.setdefault(run.cv.group, set()).add(run.cv.fold)
            trials[run.cv.group] = str(run.tags.get("trial", "?"))
    out = {}
    for group_id, seen in folds.items():
        group = registry.group(group_id)
        if len(seen) >= group.k * group.repeats:
            out[group_id] = trials[group_id]
    return out


def compare_sweep(
    registry: Registry,
    study: str,
    metric: str = "val_acc",
    *,
    at: str = "final",
    rope: float = 0.01,
    ratio: str = "folds",
) -> SweepComparison:
    """Every complete trial of ``study`` against the best by ``metric`` (module docstring)."""
    from archlab import stats

    groups = sweep_groups(registry, study)
    if len(groups) < 2:
        raise RegistryError(
            f"sweep {study!r} has {len(groups)} complete trial(s) in this registry; comparing "
            "trials with the best needs at least 2 (fold runs tagged sweep={study})"
        )
    direction = registry.metric_direction(metric)
    means: dict[str, float] = {}
    for group_id in groups:
        found = registry.group(group_id).aggregates.get(metric)
        if found is None:
            raise RegistryError(
                f"trial {groups[group_id]} (CV group {group_id}) has no {metric!r}; choose a "
                "metric its folds recorded (--metric)"
            )
        means[group_id] = found.mean
    sign = 1.0 if direction == "max" else -1.0
    best = max(
        means, key=lambda g: (sign * means[g], -int(groups[g]) if groups[g].isdigit() else 0)
    )
    others = sorted((g for g in groups if g != best), key=lambda g: -sign * means[g])
    compared = [
        compare_groups(registry, best, g, metric, at=at, rope=rope, ratio=ratio) for g in others
    ]
    adjusted = stats.holm([c.corrected.p for c in compared])
    trials = [
        TrialComparison(groups[g], g, means[g], c, p)
        for g, c, p in zip(others, compared, adjusted, strict=True)
    ]
    return SweepComparison(study, metric, groups[best], best, means[best], trials)


__all__ = ["SweepComparison", "TrialComparison", "compare_sweep", "sweep_groups"]
