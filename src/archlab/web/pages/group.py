"""``/groups/{group_id}``: a CV group as ``arch runs show GROUP`` shows it (its settings, each
metric's mean ± std over its completed folds, the folds), with every fold's curves on one chart
per metric family (one series per fold and metric), each fold's split fingerprints
(``Registry.split_fingerprints``), its configuration and mixup; ``/api/groups/{group_id}``: the
same as JSON (``arch runs show GROUP --json`` with the fingerprints and the charts)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from archlab.errors import UserInputError
from archlab.registry import Run, views
from archlab.web.charts import charts
from archlab.web.context import json_response, page_url, problem, render, web


def fold_label(run: Run) -> str:
    """A fold's name on the charts: ``fold N`` (the run id where it has no fold index)."""
    return f"fold {run.cv.fold}" if run.cv is not None and run.cv.fold is not None else run.id


def mixups(folds: list[Run]) -> list[tuple[str, dict[str, Any] | None]]:
    """The folds' mixup settings, each once with the folds using it: ``(folds, setting)``."""
    seen: dict[str, tuple[list[str], dict[str, Any] | None]] = {}
    for run in folds:
        setting = run.mixup.to_dict() if run.mixup is not None else None
        key = views.dumps(setting)
        seen.setdefault(key, ([], setting))[0].append(fold_label(run))
    return [(", ".join(labels), setting) for labels, setting in seen.values()]


def found(request: Request) -> views.Shown | Response:
    """The CV group the path names (``views.show``), or the 404 of an unknown id or a run's."""
    group_id = request.path_params["group_id"]
    try:
        shown = views.show(web(request).registry, group_id)
    except UserInputError as exc:  # RegistryError
        return problem(request, 404, str(exc))
    if shown.group is None or shown.run is not None:
        run = page_url(request, "run", run_id=group_id)
        return problem(request, 404, f"{group_id!r} is a run, not a CV group", run=run)
    return shown


def fingerprints(request: Request, folds: list[Run]) -> list[dict[str, Any]]:
    """Each fold's ``Registry.split_fingerprints`` with its fold index and run id."""
    registry = web(request).registry
    return [
        {"fold": f.cv.fold if f.cv else None, "id": f.id, **registry.split_fingerprints(f.id)}
        for f in folds
    ]


def group_charts(folds: list[Run]) -> dict[str, list[str]]:
    return charts([(fold_label(f), f.summaries) for f in folds])


def group_page(request: Request) -> Response:
    shown = found(request)
    if isinstance(shown, Response):
        return shown
    group, folds = shown.group, shown.folds
    assert group is not None
    summary = views.group_summary(group, folds)
    counts = {a.n for a in group.aggregates.values()}
    return render(
        request,
        "group.html",
        group=group,
        folds=folds,
        summary=summary,
        line=views.group_line(views.GroupView(group, folds)),
        n=counts.pop() if len(counts) == 1 else None,
        metric_names=views.metric_names(folds, [group.aggregates]),
        fingerprints=fingerprints(request, folds),
        mixups=mixups(folds),
        labels=",".join(fold_label(f) for f in folds),
        charts=group_charts(folds),
    )


def group_api(request: Request) -> Response:
    """``views.group_export`` (``arch runs list --group --json``'s entry) with ``folds`` (each
    fold's ``fold_dict``), ``fingerprints`` and ``charts`` (``{family: [series label]}``)."""
    shown = found(request)
    if isinstance(shown, Response):
        return shown
    group, folds = shown.group, shown.folds
    assert group is not None
    return json_response(
        {
            **views.group_export(group, folds),
            "folds": [views.fold_dict(f) for f in folds],
            "fingerprints": fingerprints(request, folds),
            "charts": group_charts(folds),
        }
    )


ROUTES = [
    Route("/groups/{group_id}", group_page, name="group"),
    Route("/api/groups/{group_id}", group_api, name="api_group"),
]
