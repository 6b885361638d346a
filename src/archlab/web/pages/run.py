"""``/runs/{run_id}``: everything about a run, as ``arch runs show`` shows it, with its curves;
``/api/runs/{run_id}`` (``arch runs show --json``), ``/api/runs/{run_id}/metrics`` (every
series) and ``/runs/{run_id}/artifacts/{path}`` (a recorded artifact, checked).

The curves are drawn by ``static/curves.js`` from the metrics endpoint; while the run is running
the page polls it every 2 s and redraws without reloading.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from archlab.errors import UserInputError
from archlab.registry import ArtifactError, RegistryError, Run, views
from archlab.web.context import json_response, page_url, problem, render, web

# served inline (the pictures runs record); every other artifact is a download
INLINE = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
# an SVG is a document that may hold script: opened on its own it is sandboxed (a unique origin,
# no script, nothing loaded); shown by an <img> it never runs script anyway
SVG_POLICY = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
)


def metric_series(request: Request, run: Run) -> dict[str, dict[str, list[Any]]]:
    """Each metric of ``run`` as ``{name: {"step": [...], "epoch": [...], "value": [...]}}``,
    by step (``Registry.metric_history``, as ``arch runs plot`` reads them)."""
    registry = web(request).registry
    out: dict[str, dict[str, list[Any]]] = {}
    for name in sorted(run.summaries):
        points = registry.metric_history(run.id, name)
        out[name] = {
            "step": [p[0] for p in points],
            "epoch": [p[1] for p in points],
            "value": [p[2] for p in points],
        }
    return out


def graph_rows(spec: dict[str, Any] | None) -> list[dict[str, str]] | None:
    """The spec's graph as ``arch compile`` infers it, without torch: each node in the order the
    forward runs it, with its op, inputs and output shape (a stack with its depth). None when
    the document does not load (a spec of an older language, say)."""
    if spec is None:
        return None
    from archlab.specs import load_spec
    from archlab.specs.analysis import analyze

    try:
        graph = analyze(load_spec(spec))
    except (UserInputError, RecursionError):
        return None
    rows = []
    for node_id in graph.order:
        info = graph.nodes[node_id]
        op = info.op if info.stack is None else f"{info.op} x{len(info.stack.layers)}"
        rows.append(
            {"id": node_id, "op": op, "inputs": ", ".join(info.inputs), "shape": str(info.shape)}
        )
    return rows


def run_page(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    registry = web(request).registry
    try:
        shown = views.show(registry, run_id)
    except RegistryError as exc:
        return problem(request, 404, str(exc))
    if shown.run is None:  # a CV group's id
        group = page_url(request, "group", group_id=run_id)
        if group is not None:
            return RedirectResponse(group, status_code=302)
        return problem(request, 404, f"{run_id!r} is a CV group, not a run")
    run = shown.run
    try:
        spec = registry.spec_document(run.spec_hash)
    except RegistryError:
        spec = None
    return render(
        request,
        "run.html",
        run=run,
        group=shown.group,
        folds=shown.folds,
        spec=spec,
        graph=graph_rows(spec),
        provenance=views.provenance_rows(run.provenance),
        mixup=run.mixup.to_dict() if run.mixup is not None else None,
        when=views.when,
        duration=views.duration(run),
        fold_metrics=views.metric_names(shown.folds)[:6] if shown.folds else [],
    )


def run_api(request: Request) -> Response:
    """``arch runs show ID --json``: the run (a fold with its CV group), or the CV group."""
    try:
        shown = views.show(web(request).registry, request.path_params["run_id"])
    except RegistryError as exc:
        return problem(request, 404, str(exc))
    return json_response(shown.to_dict())


def metrics_api(request: Request) -> Response:
    """``{"run", "status", "metrics": {name: {"step", "epoch", "value"}}}``: every series of the
    run (NaN as ``"nan"``, archlab's JSON policy)."""
    try:
        run = web(request).registry.get(request.path_params["run_id"])
    except RegistryError as exc:
        return problem(request, 404, str(exc))
    return json_response(
        {"run": run.id, "status": run.status, "metrics": metric_series(request, run)}
    )


def artifact(request: Request) -> Response:
    """A file the run recorded, only through the registry's artifact API: the path must be
    exactly one of the run's recorded artifacts, lie inside the run's folder once resolved (no
    ``..``, no absolute path, no symbolic link leading out) and still hash to what was
    recorded. Anything else is 404, saying no more than that."""
    registry = web(request).registry
    run_id, path = request.path_params["run_id"], request.path_params["path"]
    missing = problem(request, 404, f"run {run_id!r} records no artifact {path!r}")
    try:
        run = registry.get(run_id)
    except RegistryError:
        return missing
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or path not in {a.path for a in run.artifacts}:
        return missing
    try:
        file = registry.artifact_file(run, path)
    except ArtifactError:
        return missing
    if not file.is_relative_to(registry.run_folder(run.id).resolve()):
        return missing
    media = INLINE.get(file.suffix.lower())
    response = FileResponse(
        file,
        media_type=media or "application/octet-stream",
        filename=file.name,
        content_disposition_type="inline" if media else "attachment",
    )
    if media == "image/svg+xml":
        response.headers["Content-Security-Policy"] = SVG_POLICY
    return response


ROUTES = [
    Route("/runs/{run_id}", run_page, name="run"),
    Route("/api/runs/{run_id}", run_api, name="api_run"),
    Route("/api/runs/{run_id}/metrics", metrics_api, name="api_run_metrics"),
    Route("/runs/{run_id}/artifacts/{path:path}", artifact, name="artifact"),
]
