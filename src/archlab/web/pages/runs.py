"""``/``: the runs, a page at a time, and ``/api/runs`` with the same parameters.

Parameters (both): ``where`` (the ``--where`` language of ``arch runs list``), ``sort`` (a field,
``-`` for descending; repeatable), ``offset`` and ``limit`` (a page: the database skips and
counts, so a page of 10,000 runs reads only its own), ``group`` (``1``, the default: a CV
group's folds on the page folded into one row with each metric's mean ± std over the group's
completed folds, as ``arch runs list --group``; ``0``: every run on its own row).

A page is a page of runs, folded afterwards: a group whose folds straddle two pages shows on
both, each row saying how many of its folds the page holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from archlab.errors import UserInputError
from archlab.registry import Run, views
from archlab.web.context import integer_param, json_response, problem, render, web
from archlab.web.format import mean_std, num

PAGE = 50  # runs per page unless ?limit= says otherwise
MOST = 500  # the largest page
_NAME = re.compile(r"[A-Za-z0-9_]+(?:[./-][A-Za-z0-9_]+)*")


@dataclass
class Listing:
    """One page of the runs listing: what was asked, how many runs match, the page's entries
    (runs, or runs and CV groups), their metric names, and the error of a bad query."""

    where: str
    sort: list[str]
    offset: int
    limit: int
    grouped: bool
    total: int = 0
    entries: list[Run | views.GroupView] = field(default_factory=list)
    metric_names: list[str] = field(default_factory=list)
    error: str | None = None

    def query(self, **changes: Any) -> str:
        """This listing's query string with ``changes`` (a sort link, the next page)."""
        params: dict[str, Any] = {
            "where": self.where,
            "sort": self.sort,
            "offset": self.offset,
            "limit": self.limit,
            "group": int(self.grouped),
            **changes,
        }
        pairs = [(k, v) for k, vs in params.items() for v in (vs if isinstance(vs, list) else [vs])]
        return "?" + urlencode([(k, v) for k, v in pairs if v not in ("", None)])

    def sort_link(self, column: str) -> str:
        """The link of a column header: sort by it, descending first, the other way when it is
        already the sort."""
        now = self.sort[0] if self.sort else None
        return self.query(sort=[column if now == f"-{column}" else f"-{column}"], offset=0)

    def sorted_by(self, column: str) -> str:
        """``▼``/``▲`` when the listing is sorted by ``column``, else nothing."""
        now = self.sort[0] if self.sort else None
        return "▼" if now == f"-{column}" else "▲" if now == column else ""


def metric_field(name: str) -> str:
    """``metrics.NAME`` as the query language spells it: a name that is not words in quotes
    (``metrics.'acc@1'``)."""
    if _NAME.fullmatch(name):
        return f"metrics.{name}"
    return "metrics.'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ordered(names: list[str]) -> list[str]:
    """Metric names with each task's headline metrics first, as ``arch runs list`` orders them."""
    main = views.main_metrics(names)
    return [*main, *(n for n in names if n not in main)]


def listing(request: Request) -> Listing:
    """The page of runs the request asks for; a bad ``where``, ``sort`` or parameter leaves
    ``error`` set (the message ``arch runs list`` prints, caret and all) and no entries."""
    params = request.query_params
    found = Listing(
        where=params.get("where", "").strip(),
        sort=[s.strip() for s in params.getlist("sort") if s.strip()],
        offset=0,
        limit=PAGE,
        grouped=params.get("group", "1") != "0",
    )
    registry = web(request).registry
    try:
        found.offset = integer_param(request, "offset", 0, 0, 2**62)
        found.limit = integer_param(request, "limit", PAGE, 1, MOST)
        where = found.where or None
        found.total = registry.count(where)
        runs = registry.runs(where, found.sort, limit=found.limit, offset=found.offset)
    except UserInputError as exc:  # QueryError, RegistryError, ParameterError
        found.error = f"error: {exc}"
        return found
    if found.grouped:
        found.entries = views.grouped(registry, runs)
        found.metric_names = ordered(views.listing_metric_names(found.entries))
    else:
        found.entries = list(runs)
        found.metric_names = ordered(views.metric_names(runs))
    return found


def row(entry: Run | views.GroupView, metric_names: list[str]) -> dict[str, Any]:
    """One row of the listing as the template shows it."""
    if isinstance(entry, views.GroupView):
        line = views.group_line(entry)
        metrics = {}
        for name in metric_names:
            agg = line.aggregates.get(name)
            metrics[name] = "-" if agg is None else mean_std(agg.mean, agg.std, agg.n)
        return {
            "group": True,
            "id": line.id,
            "kind": line.kind,
            "statuses": line.statuses,
            "spec": line.spec,
            "cv": f"{line.folds} of {line.expected} folds",
            "mixup": line.mixup,
            "metrics": metrics,
            "tags": {},
            "started": line.started,
            "duration": line.duration,
            "folds": [r.id for r in entry.folds],
        }
    return {
        "group": False,
        "id": entry.id,
        "kind": entry.kind,
        "statuses": [(entry.status, 1)],
        "spec": entry.spec_name or entry.spec_hash[:12],
        "cv": "-" if entry.cv is None else f"{entry.cv.group}/{entry.cv.fold}",
        "mixup": views.mixup_label(entry),
        "metrics": {n: num(entry.metrics.get(n)) for n in metric_names},
        "tags": entry.tags,
        "started": views.when(entry.started),
        "duration": views.duration(entry),
        "folds": [],
    }


def runs_page(request: Request) -> Response:
    found = listing(request)
    return render(
        request,
        "runs.html",
        400 if found.error else 200,
        listing=found,
        metric_field=metric_field,
        rows=[row(e, found.metric_names) for e in found.entries],
    )


def runs_api(request: Request) -> Response:
    """``{"total", "offset", "limit", "where", "sort", "entries"}``: the entries as ``arch runs
    list --json`` gives them (``--group --json`` for a grouped listing)."""
    found = listing(request)
    if found.error:
        return problem(request, 400, found.error.removeprefix("error: "))
    entries = (
        views.grouped_json(found.entries)
        if found.grouped
        else [{"type": "run", **views.run_dict(r)} for r in found.entries if isinstance(r, Run)]
    )
    return json_response(
        {
            "total": found.total,
            "offset": found.offset,
            "limit": found.limit,
            "where": found.where,
            "sort": found.sort,
            "entries": entries,
        }
    )


ROUTES = [
    Route("/", runs_page, name="runs"),
    Route("/api/runs", runs_api, name="api_runs"),
]
