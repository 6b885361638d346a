"""The best runs and CV groups by a metric, as ``arch runs best`` shows them and a Python user
can ask for them: the ranking (``Registry.rank`` / ``Registry.best``), each run's value in the
direction asked for, and plain rows to print.

A direction given against the metric's own (``--min`` on an accuracy) ranks each run by the
other extreme of its series, read from its history: its summary's best value is the wrong one.
Imports no torch, rich or click.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from archlab.errors import UserInputError
from archlab.registry import views
from archlab.registry.records import Ranked

if TYPE_CHECKING:
    from archlab.registry.records import Run
    from archlab.registry.store import Registry

# how many runs are read to name the metrics recorded, when nothing ranks
RECORDED_SAMPLE = 2000
KNOWN_SAMPLE = 500


@dataclass(frozen=True)
class BestRow:
    """One line of the best-by-metric table, as plain values.

    For a run: ``value`` is its best value (or its extreme in the direction asked for) at
    ``step``, ``final`` its final value, ``cv`` ``GROUP/FOLD`` or ``-``. For a CV group
    (``group`` true): ``value`` is the mean of its folds' final values with ``std`` and ``n``,
    ``status`` says how many folds completed, ``cv`` reads ``CV group, k=K``."""

    group: bool
    spec_name: str | None
    spec_hash: str
    id: str
    status: str
    value: float | None
    which: str
    final: float | None = None
    std: float | None = None
    n: int | None = None
    cv: str = "-"
    mixup: str = "-"
    started: str = "-"


@dataclass(frozen=True)
class Best:
    """The answer to "which is best by ``metric``": the ranked entries, best first."""

    metric: str
    ranked: list[Ranked]
    lowest: bool  # lowest is better, as ranked
    # run id -> (value, step) for runs ranked against the metric's own direction
    extremes: dict[str, tuple[float | None, int | None]]
    spec_names: dict[str, str | None]  # CV group id -> its first fold's spec name
    known: list[str]  # nothing ranked: the metrics the matching runs record

    @property
    def direction(self) -> str:
        """``lowest`` or ``highest``: which is better, as ranked."""
        return "lowest" if self.lowest else "highest"

    def rows(self) -> list[BestRow]:
        """The ranked entries as table rows, best first."""
        return [
            self._run_row(e.run) if e.run is not None else self._group_row(e) for e in self.ranked
        ]

    def _run_row(self, run: Run) -> BestRow:
        s = run.summaries[self.metric]
        value, step = self.extremes.get(run.id, (s.best, s.best_step))
        which = "best" if run.id not in self.extremes else self.direction
        return BestRow(
            group=False,
            spec_name=run.spec_name,
            spec_hash=run.spec_hash,
            id=run.id,
            status=run.status,
            value=value,
            which=f"{which}, step {'-' if step is None else step}",
            final=s.final,
            cv="-" if run.cv is None else f"{run.cv.group}/{run.cv.fold}",
            mixup=views.mixup_label(run),
            started=views.when(run.started),
        )

    def _group_row(self, entry: Ranked) -> BestRow:
        group, agg = entry.group, entry.aggregate
        assert group is not None and agg is not None
        return BestRow(
            group=True,
            spec_name=self.spec_names.get(group.id),
            spec_hash=group.spec_hash,
            id=group.id,
            status=f"{agg.n} of {group.k * group.repeats} folds",
            value=agg.mean,
            std=agg.std,
            n=agg.n,
            which=f"mean of final values over {agg.n} fold{'s' if agg.n != 1 else ''}",
            cv=f"CV group, k={group.k}",
        )


def best(
    registry: Registry,
    metric: str,
    *,
    group_by: str | None = None,
    by: str = "auto",
    where: str | None = None,
    direction: str | None = None,
) -> Best:
    """The best by ``metric``: with ``group_by="spec"`` the best run of each spec
    (``Registry.best``), else runs and CV groups ranked ``by`` ``"auto"``, ``"run"`` or
    ``"group"`` (``Registry.rank``). ``direction`` (``"min"``/``"max"``) overrides the one the
    registry keeps for the metric.

    Nothing ranked in a registry that has runs, none recording ``metric``: raises
    ``UserInputError`` naming the metrics recorded (and the closest one).
    """
    if group_by is not None:
        found = registry.best(metric, group_by=group_by, where=where, direction=direction)
        ranked = [Ranked(metric, r.summaries[metric].best, run=r) for r in found]
    else:
        ranked = registry.rank(metric, by=by, where=where, direction=direction)
    own = registry.metric_direction(metric)
    low = (direction or own) == "min"
    # ranked against the metric's own direction: each run by its lowest or highest point
    # (its summary's best value is the other extreme)
    extremes = {
        e.run.id: views.extreme(registry.metric_history(e.run.id, metric), low)
        for e in ranked
        if direction not in (None, own) and e.run is not None
    }
    known: list[str] = []
    if not ranked:
        recorded = views.metric_names(registry.runs(limit=RECORDED_SAMPLE))
        if recorded:  # an empty registry is said to be empty, not an unknown metric
            check_recorded(metric, recorded, f"registry {registry.location.describe()}")
        known = views.metric_names(registry.runs(where=where, limit=KNOWN_SAMPLE))
    spec_names = {
        e.group.id: registry.get(e.group.runs[0]).spec_name
        for e in ranked
        if e.group is not None and e.group.runs
    }
    return Best(metric, ranked, low, extremes, spec_names, known)


def check_recorded(metric: str, recorded: list[str], source: str) -> None:
    """Raise ``UserInputError`` when ``metric`` is not among ``recorded`` (the metric names of
    ``source``), naming them and the closest one."""
    if metric in recorded:
        return
    close = difflib.get_close_matches(metric, recorded, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    names = ", ".join(sorted(recorded)) or "none yet"
    raise UserInputError(
        f"no run in {source} records a metric {metric!r}; {hint}the metrics recorded: {names}"
    )
