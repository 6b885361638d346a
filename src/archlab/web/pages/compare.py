"""``/compare?ids=A&ids=B...``: runs side by side as ``arch runs compare`` shows them (a CV
group's id standing for its folds): their curves overlaid (one series per run and metric), the
config, mixup, tag and metric rows (``views.comparison``; differing rows marked), what changed
from the first to the second (``Registry.diff``, as ``arch runs diff`` prints it: for two CV
groups, between their first folds), and for exactly two CV groups the paired statistics of
``arch runs compare GROUP_A GROUP_B`` (``Registry.compare_groups``). ``/api/compare`` takes the
same parameters.

Parameters: ``ids`` (repeatable, or comma-separated), ``all=1`` (every config, mixup and tag
row, not only those that differ), and for two groups ``metric`` (default ``val_acc``), ``at``
(``final`` or ``best``), ``rope`` and ``ratio`` (``folds`` or ``sizes``), as the CLI's options.
A refusal of the statistics (folds that do not pair, a metric a fold lacks) is shown as the CLI
words it, beside the rest; a bad parameter is 400, an unknown id 404.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from archlab.errors import UserInputError
from archlab.registry import views
from archlab.registry.comparison import AT, RATIOS, GroupComparison, verdict
from archlab.web.charts import charts
from archlab.web.context import ParameterError, json_response, problem, render, web
from archlab.web.format import mean_std

MOST = 50  # runs compared at once (a CV group counts its folds): each is a curve fetch
_SPLIT = re.compile(r"[\s,]+")


@dataclass
class Statistics:
    """Two CV groups' paired test as asked: the settings, the result, or the refusal."""

    metric: str = "val_acc"
    at: str = "final"
    rope: float = 0.01
    ratio: str = "folds"
    result: GroupComparison | None = None
    refusal: str | None = None

    def rows(self) -> list[tuple[str, str]]:
        """The table ``arch runs compare GROUP_A GROUP_B`` prints, as ``(what, value)``."""
        r = self.result
        assert r is not None
        j = len(r.diffs)
        t = r.corrected
        higher = "higher" if r.direction == "max" else "lower"
        rows = [("paired folds", f"{j} ({higher} {r.metric} is better)")]
        for name, values, group in (("A", r.values_a, r.a), ("B", r.values_b, r.b)):
            mean, std = statistics.fmean(values), statistics.stdev(values)
            rows.append((f"{name} {group}", mean_std(mean, std, j)))
        rows += [
            ("mean B − A", f"{r.mean_diff:+.4g}"),
            (
                f"{round(t.level * 100)}% interval (corrected)",
                f"{t.ci_low:+.4g} to {t.ci_high:+.4g}",
            ),
            ("corrected t-test", f"t = {t.t:.3f}, df {t.df}, p = {t.p:.3g}"),
            ("naive t-test (overconfident)", f"t = {r.naive.t:.3f}, p = {r.naive.p:.3g}"),
            ("P(A better)", f"{r.p_a_better:.3f}"),
            (f"P(|B − A| <= {r.rope:g})", f"{r.p_rope:.3f}"),
            ("P(B better)", f"{r.p_b_better:.3f}"),
        ]
        if r.five_by_two is not None:
            f = r.five_by_two
            rows.append(("5x2cv t (Dietterich)", f"t = {f.t:.3f}, p = {f.p:.3g}"))
            rows.append(("5x2cv F (Alpaydin)", f"F = {f.f:.3f}, p = {f.p_f:.3g}"))
        return rows

    def verdict(self) -> list[str]:
        return verdict(self.result) if self.result is not None else []

    def to_dict(self) -> dict[str, Any]:
        """``arch runs compare A B --json`` (with ``a``, ``b``, ``at``, ``rope``, ``ratio``, the
        fold runs and values and ``verdict``), or ``{"error": refusal}``."""
        if self.result is None:
            return {"metric": self.metric, "error": self.refusal}
        r = self.result
        return {
            "a": r.a,
            "b": r.b,
            "at": r.at,
            "rope": r.rope,
            "ratio": r.ratio,
            "direction": r.direction,
            **r.to_dict(),
            "runs_a": r.runs_a,
            "runs_b": r.runs_b,
            "values_a": r.values_a,
            "values_b": r.values_b,
            "verdict": self.verdict(),
        }


@dataclass
class Compared:
    """What the compare page shows: the ids asked, the comparison, the diff, the statistics."""

    idents: list[str]
    show_all: bool
    comparison: views.Comparison | None = None
    diff: tuple[str, str, list[str], list[dict[str, Any]]] | None = None
    stats: Statistics | None = None
    message: str | None = None

    def charts(self) -> dict[str, list[str]]:
        found = self.comparison.runs if self.comparison else []
        return charts([(r.id, r.summaries) for r in found])


def idents(request: Request) -> list[str]:
    """The ``ids`` parameters, split on commas and blanks, each once, in order."""
    out: dict[str, None] = {}
    for raw in request.query_params.getlist("ids"):
        out.update(dict.fromkeys(i for i in _SPLIT.split(raw) if i))
    return list(out)


def settings(request: Request) -> Statistics:
    """The statistics' parameters, checked as the CLI's options check them."""
    params = request.query_params
    asked = Statistics(metric=params.get("metric", "").strip() or "val_acc")
    asked.at = params.get("at", "") or "final"
    asked.ratio = params.get("ratio", "") or "folds"
    if asked.at not in AT:
        raise ParameterError(f"at is one of {', '.join(AT)}, not {asked.at!r}")
    if asked.ratio not in RATIOS:
        raise ParameterError(f"ratio is one of {', '.join(RATIOS)}, not {asked.ratio!r}")
    rope = params.get("rope", "")
    if rope:
        try:
            asked.rope = float(rope)
        except ValueError:
            raise ParameterError(f"rope takes a number, not {rope!r}") from None
        if not (math.isfinite(asked.rope) and asked.rope >= 0):
            raise ParameterError(f"rope takes a finite number >= 0, not {rope!r}")
    return asked


def compared(request: Request) -> Compared | Response:
    """The comparison the request asks for, or the 400 / 404 of a bad request."""
    registry = web(request).registry
    found = Compared(idents(request), request.query_params.get("all", "0") not in ("", "0"))
    try:
        asked = settings(request)
        run_ids = registry.expand(found.idents)
    except ParameterError as exc:
        return problem(request, 400, str(exc))
    except UserInputError as exc:  # RegistryError: an unknown or ambiguous id
        return problem(request, 404, str(exc))
    if len(run_ids) > MOST:
        return problem(request, 400, f"compare takes at most {MOST} runs, not {len(run_ids)}")
    if len(run_ids) < 2:
        found.message = "compare takes at least two run ids (or a CV group's id)"
        return found
    found.comparison = views.comparison(registry, found.idents, found.show_all)
    if len(found.idents) == 2:
        pair(request, found, asked)
    return found


def pair(request: Request, found: Compared, asked: Statistics) -> None:
    """For two ids: what changed from the first to the second (a group by its first fold),
    and for two CV groups their paired statistics or the refusal, in ``found``."""
    registry = web(request).registry
    first = [registry.expand([i])[:1] for i in found.idents]
    if all(first):
        changes = registry.diff(first[0][0], first[1][0])
        found.diff = (
            first[0][0],
            first[1][0],
            [views.change_line(c) for c in changes],
            [c.to_dict() for c in changes],
        )
    if all(registry.kind_of(i) == "group" for i in found.idents):
        found.stats = asked
        try:
            asked.result = registry.compare_groups(
                found.idents[0], found.idents[1], asked.metric, at=asked.at,
                rope=asked.rope, ratio=asked.ratio,
            )  # fmt: skip
        except UserInputError as exc:  # RegistryError: unpaired folds, a missing metric
            asked.refusal = f"error: {exc}"


def compare_page(request: Request) -> Response:
    found = compared(request)
    if isinstance(found, Response):
        return found
    return render(request, "compare.html", found=found, differs=views.differs)


def compare_api(request: Request) -> Response:
    """``{"ids", "runs", "rows", "diff", "statistics", "charts"}``: ``runs`` and ``rows`` as
    ``arch runs compare --json``; ``diff`` (two ids) ``{"a", "b", "changes"}`` as ``arch runs
    diff --json``; ``statistics`` (two CV groups) as ``Statistics.to_dict``; ``charts``
    ``{family: [series label]}`` of the curves."""
    found = compared(request)
    if isinstance(found, Response):
        return found
    if found.comparison is None:
        return problem(request, 400, found.message or "nothing to compare", ids=found.idents)
    doc: dict[str, Any] = {"ids": found.idents, **found.comparison.to_dict()}
    if found.diff is not None:
        doc["diff"] = {"a": found.diff[0], "b": found.diff[1], "changes": found.diff[3]}
    if found.stats is not None:
        doc["statistics"] = found.stats.to_dict()
    doc["charts"] = found.charts()
    return json_response(doc)


ROUTES = [
    Route("/compare", compare_page, name="compare"),
    Route("/api/compare", compare_api, name="api_compare"),
]
