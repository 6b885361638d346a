"""The series ``arch runs plot`` draws, gathered from the registry.

``metric_series(registry, ID, metric, path, fmt)`` collects one metric of a run, or of every fold
of a CV group (a run that is a fold stands for its whole group), with the group's per-step mean
and std and its final values, as a ``PlotSummary``; ``archlab.viz.curves.draw_curves`` draws it.
Nothing here draws: registry/ imports neither matplotlib nor torch.

Statistics, as in the registry's aggregates: std is the sample std (n - 1), 0 for a single value;
NaN values count as absent. At a step only some folds reached, mean and std are over those
present; a step no fold has a finite value at is left out. A fold's final value is its value at
its last step. The band on the bar panel is the group's aggregate (final values of its completed
folds), or, while no fold has completed, the same statistic over the plotted folds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archlab.registry.engine import RegistryError

if TYPE_CHECKING:
    from archlab.registry.records import CVGroup, Run
    from archlab.registry.store import Registry


class SeriesError(RegistryError):
    """A series that is not in the registry: a metric the run (or no fold) logged."""


@dataclass(frozen=True)
class Curve:
    """One run's series of the metric, in step order (NaN values kept, as logged)."""

    run_id: str
    label: str
    fold: int | None
    status: str
    steps: tuple[int, ...]
    values: tuple[float, ...]
    epochs: tuple[float | None, ...]

    @property
    def final(self) -> float:
        """The value at the last step."""
        return self.values[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "label": self.label,
            "fold": self.fold,
            "status": self.status,
            "steps": list(self.steps),
            "values": list(self.values),
            "final": self.final,
        }


@dataclass(frozen=True)
class PlotSummary:
    """What ``plot`` drew. ``steps``, ``mean``, ``std`` and ``counts`` (folds with a finite value
    there) are the group's per-step statistics, empty for a single run; ``final_*`` are the mean,
    std and n of the band on the bar panel, None for a single run."""

    path: Path
    format: str
    metric: str
    title: str
    run_id: str | None  # the run asked for, if a run id was given
    group_id: str | None
    k: int | None
    curves: tuple[Curve, ...]
    skipped: tuple[str, ...]  # fold runs of the group that never logged the metric
    steps: tuple[int, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()
    final_mean: float | None = None
    final_std: float | None = None
    final_n: int = 0
    final_source: str | None = None  # "completed folds" (the registry's) or "plotted folds"

    @property
    def folds(self) -> int:
        return len(self.curves) if self.group_id is not None else 0

    @property
    def finals(self) -> dict[str, float]:
        """Each curve's final value by its label."""
        return {c.label: c.final for c in self.curves}

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "metric": self.metric,
            "title": self.title,
            "run_id": self.run_id,
            "group_id": self.group_id,
            "k": self.k,
            "curves": [c.to_dict() for c in self.curves],
            "skipped": list(self.skipped),
            "steps": list(self.steps),
            "mean": list(self.mean),
            "std": list(self.std),
            "counts": list(self.counts),
            "final_mean": self.final_mean,
            "final_std": self.final_std,
            "final_n": self.final_n,
            "final_source": self.final_source,
        }


# ------------------------------------------------------------------------------- statistics


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample std (n - 1; 0 for one value) and n of the finite values; NaNs, NaN, 0 if
    there are none."""
    xs = [v for v in values if math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return mean, std, n


def per_step(
    curves: Sequence[Curve],
) -> tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...], tuple[int, ...]]:
    """Steps (the union of the curves'), mean, std and count of the finite values there."""
    at: dict[int, list[float]] = {}
    for curve in curves:
        for step, value in zip(curve.steps, curve.values, strict=True):
            at.setdefault(step, []).append(value)
    steps: list[int] = []
    means: list[float] = []
    stds: list[float] = []
    counts: list[int] = []
    for step in sorted(at):
        mean, std, n = mean_std(at[step])
        if n:
            steps.append(step)
            means.append(mean)
            stds.append(std)
            counts.append(n)
    return tuple(steps), tuple(means), tuple(stds), tuple(counts)


# ---------------------------------------------------------------------------------- gathering


def _metric_list(runs: Sequence[Run]) -> str:
    names = sorted({name for run in runs for name in run.summaries})
    return ", ".join(names) if names else "none"


def _curve(registry: Registry, run: Run, metric: str) -> Curve | None:
    history = registry.metric_history(run.id, metric)
    if not history:
        return None
    fold = run.cv.fold if run.cv is not None else None
    return Curve(
        run_id=run.id,
        label=f"fold {fold}" if fold is not None else run.id,
        fold=fold,
        status=run.status,
        steps=tuple(step for step, _, _, _ in history),
        values=tuple(value for _, _, value, _ in history),
        epochs=tuple(epoch for _, epoch, _, _ in history),
    )


def _resolve(registry: Registry, ident: str) -> tuple[Run | None, CVGroup | None]:
    """The run ``ident`` and its CV group (if any), or no run and the CV group ``ident``."""
    try:
        run = registry.get(ident)
    except RegistryError as run_error:
        try:
            return None, registry.group(ident)
        except RegistryError:
            hint = str(run_error).partition("; similar: ")[2]
            raise RegistryError(
                f"no run or CV group {ident!r} in this registry"
                + (f" (similar run ids: {hint})" if hint else "")
                + "; `arch runs list --group` lists both"
            ) from None
    return run, registry.group(run.cv.group) if run.cv is not None else None


def metric_series(registry: Registry, ident: str, metric: str, path: Path, fmt: str) -> PlotSummary:
    """``metric`` of run or CV group ``ident``, to be drawn to ``path`` as ``fmt``."""
    run, group = _resolve(registry, ident)
    if group is None:
        assert run is not None
        curve = _curve(registry, run, metric)
        if curve is None:
            raise SeriesError(
                f"run {run.id} never logged metric {metric!r}; its metrics: {_metric_list([run])}"
            )
        title = f"{run.spec_name or run.spec_hash[:12]} · run {run.id} ({run.status}): {metric}"
        summary = PlotSummary(
            path=path,
            format=fmt,
            metric=metric,
            title=title,
            run_id=run.id,
            group_id=None,
            k=None,
            curves=(curve,),
            skipped=(),
        )
        return summary

    folds = registry.compare(group.runs)
    if not folds:
        raise SeriesError(f"CV group {group.id} has no fold runs yet")
    curves: list[Curve] = []
    skipped: list[str] = []
    for fold in folds:
        curve = _curve(registry, fold, metric)
        if curve is None:
            skipped.append(fold.id)
        else:
            curves.append(curve)
    if not curves:
        raise SeriesError(
            f"no fold of CV group {group.id} logged metric {metric!r}; "
            f"their metrics: {_metric_list(folds)}"
        )
    steps, mean, std, counts = per_step(curves)
    aggregate = group.aggregates.get(metric)
    if aggregate is not None:
        final_mean, final_std, final_n = aggregate.mean, aggregate.std, aggregate.n
        source = "completed folds"
    else:
        final_mean, spread, final_n = mean_std([c.final for c in curves])
        final_std = spread if final_n > 1 else None
        source = "plotted folds"
    spec = folds[0].spec_name or group.spec_hash[:12]
    repeats = f" x {group.repeats} repeats" if group.repeats > 1 else ""
    title = f"{spec} · CV group {group.id} (k={group.k}{repeats}): {metric}, mean ± std over folds"
    summary = PlotSummary(
        path=path,
        format=fmt,
        metric=metric,
        title=title,
        run_id=run.id if run is not None else None,
        group_id=group.id,
        k=group.k,
        curves=tuple(curves),
        skipped=tuple(skipped),
        steps=steps,
        mean=mean,
        std=std,
        counts=counts,
        final_mean=final_mean if final_n else None,
        final_std=final_std if final_n else None,
        final_n=final_n,
        final_source=source if final_n else None,
    )
    return summary
