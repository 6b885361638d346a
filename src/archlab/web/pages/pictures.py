"""``/pictures``: the pictures runs recorded (PNG, JPEG and SVG artifacts: ``arch embed``'s
embedding maps, kept patches, relevance maps, curves), a gallery grouped by run with captions;
``/runs/{run_id}/pictures``: one run's. ``/api/pictures`` and ``/api/runs/{run_id}/pictures``:
the same as JSON. Every image is served by the artifact route (``/runs/{id}/artifacts/{path}``),
checked there against what the run recorded.

Parameters of ``/pictures``: ``where`` (the ``--where`` language), ``kind`` (an artifact kind;
repeatable), ``offset`` and ``limit``: a page is a page of runs (newest first), of which those
holding a picture are shown (the registry keeps artifacts per run, not an index of pictures).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from archlab.errors import UserInputError
from archlab.registry import Artifact, Run
from archlab.web.context import (
    integer_param,
    json_response,
    page_url,
    problem,
    render,
    web,
)

IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
PAGE = 50  # runs looked at per page unless ?limit= says otherwise
MOST = 200


def is_picture(artifact: Artifact) -> bool:
    return PurePosixPath(artifact.path).suffix.lower() in IMAGES


@dataclass
class Gallery:
    """A page of the gallery: what was asked, how many runs match, the runs of the page that
    recorded pictures (with them), the kinds of picture on the page, and a bad query's error."""

    where: str = ""
    kinds: list[str] = field(default_factory=list)
    offset: int = 0
    limit: int = PAGE
    total: int = 0
    runs: list[tuple[Run, list[Artifact]]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    error: str | None = None

    def query(self, **changes: Any) -> str:
        params = {"where": self.where, "kind": self.kinds, "offset": self.offset, **changes}
        params["limit"] = self.limit
        pairs = [(k, v) for k, vs in params.items() for v in (vs if isinstance(vs, list) else [vs])]
        return "?" + urlencode([(k, v) for k, v in pairs if v not in ("", None)])


def collect(request: Request, gallery: Gallery, runs: list[Run]) -> Gallery:
    """``gallery`` with the pictures of ``runs`` (read with their artifacts) of its kinds."""
    registry = web(request).registry
    seen: set[str] = set()
    for run in registry.compare([r.id for r in runs]):
        pictures = [a for a in run.artifacts if is_picture(a)]
        seen.update(a.kind for a in pictures)
        chosen = [a for a in pictures if not gallery.kinds or a.kind in gallery.kinds]
        if chosen:
            gallery.runs.append((run, chosen))
    gallery.seen = sorted(seen | set(gallery.kinds))
    return gallery


def gallery(request: Request) -> Gallery:
    """The page of the gallery the request asks for; a bad parameter or ``where`` leaves
    ``error`` set (the message ``arch runs list`` prints) and no runs."""
    params = request.query_params
    found = Gallery(
        where=params.get("where", "").strip(),
        kinds=[k.strip() for k in params.getlist("kind") if k.strip()],
    )
    registry = web(request).registry
    try:
        found.offset = integer_param(request, "offset", 0, 0, 2**62)
        found.limit = integer_param(request, "limit", PAGE, 1, MOST)
        where = found.where or None
        found.total = registry.count(where)
        runs = registry.runs(where, limit=found.limit, offset=found.offset)
    except UserInputError as exc:  # QueryError, RegistryError, ParameterError
        found.error = f"error: {exc}"
        return found
    return collect(request, found, runs)


def picture_url(request: Request, run: Run, artifact: Artifact) -> str:
    """The artifact route's URL of a picture, its path percent-encoded."""
    url = page_url(request, "artifact", run_id=run.id, path=quote(artifact.path, safe="/"))
    assert url is not None  # the run page's route
    return url


def picture_dict(request: Request, run: Run, artifact: Artifact) -> dict[str, Any]:
    suffix = PurePosixPath(artifact.path).suffix.lower()
    return {
        "path": artifact.path,
        "name": PurePosixPath(artifact.path).name,
        "kind": artifact.kind,
        "size": artifact.size,
        "sha256": artifact.sha256,
        "media_type": IMAGES[suffix],
        "url": picture_url(request, run, artifact),
    }


def runs_json(request: Request, found: Gallery) -> list[dict[str, Any]]:
    return [
        {
            "id": run.id,
            "kind": run.kind,
            "status": run.status,
            "spec_name": run.spec_name,
            "spec_hash": run.spec_hash,
            "pictures": [picture_dict(request, run, a) for a in pictures],
        }
        for run, pictures in found.runs
    ]


def show(
    request: Request, found: Gallery, status: int = 200, single: Run | None = None
) -> Response:
    cards = [
        (run, [(a, PurePosixPath(a.path).name, picture_url(request, run, a)) for a in pictures])
        for run, pictures in found.runs
    ]
    return render(request, "pictures.html", status, gallery=found, cards=cards, single=single)


def pictures_page(request: Request) -> Response:
    found = gallery(request)
    return show(request, found, 400 if found.error else 200)


def pictures_api(request: Request) -> Response:
    """``{"total", "offset", "limit", "where", "kinds", "runs": [{"id", "kind", "status",
    "spec_name", "spec_hash", "pictures": [{"path", "name", "kind", "size", "sha256",
    "media_type", "url"}]}]}``: ``total`` counts the runs matching ``where``."""
    found = gallery(request)
    if found.error:
        return problem(request, 400, found.error.removeprefix("error: "))
    return json_response(
        {
            "total": found.total,
            "offset": found.offset,
            "limit": found.limit,
            "where": found.where,
            "kinds": found.kinds,
            "runs": runs_json(request, found),
        }
    )


def one_run(request: Request) -> tuple[Run, Gallery] | Response:
    """The run the path names with its pictures (of ``kind``), or the 404 of an unknown id."""
    try:
        run = web(request).registry.get(request.path_params["run_id"])
    except UserInputError as exc:  # RegistryError
        return problem(request, 404, str(exc))
    found = Gallery(kinds=[k.strip() for k in request.query_params.getlist("kind") if k.strip()])
    found.total = 1
    return run, collect(request, found, [run])


def run_pictures_page(request: Request) -> Response:
    found = one_run(request)
    if isinstance(found, Response):
        return found
    return show(request, found[1], single=found[0])


def run_pictures_api(request: Request) -> Response:
    """``{"id", "pictures": [...]}``: one run's pictures (as in ``/api/pictures``)."""
    found = one_run(request)
    if isinstance(found, Response):
        return found
    run, pictures = found
    docs = runs_json(request, pictures)
    return json_response({"id": run.id, "pictures": docs[0]["pictures"] if docs else []})


ROUTES = [
    Route("/pictures", pictures_page, name="pictures"),
    Route("/api/pictures", pictures_api, name="api_pictures"),
    Route("/runs/{run_id}/pictures", run_pictures_page, name="run_pictures"),
    Route("/api/runs/{run_id}/pictures", run_pictures_api, name="api_run_pictures"),
]
