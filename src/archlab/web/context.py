"""What a page module needs from the application: the registry and templates (``web``), a page
(``render``), JSON (``json_response``), an error as a page or as JSON (``problem``) and links to
pages that may or may not be installed (``page_url``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import NoMatchFound

from archlab.errors import UserInputError
from archlab.jsonpolicy import jsonable
from archlab.registry import Registry


@dataclass
class Web:
    """The application's state: the registry it reads (opened once, never written) and the
    Jinja2 environment (autoescaped)."""

    registry: Registry
    templates: Environment


def web(request: Request) -> Web:
    found: Web = request.app.state.web
    return found


def is_api(request: Request) -> bool:
    """Whether ``request`` asks a JSON endpoint (``/api/...``)."""
    return request.url.path.startswith("/api/")


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    """``template`` rendered with ``context`` (plus ``request`` and ``page_url``)."""
    page = web(request).templates.get_template(template)
    html = page.render(
        request=request, page_url=lambda *a, **k: page_url(request, *a, **k), **context
    )
    return HTMLResponse(html, status_code=status_code)


class StrictJSONResponse(Response):
    """JSON following archlab's policy: NaN and the infinities as ``"nan"``, ``"inf"``,
    ``"-inf"`` (``archlab.jsonpolicy``), so every parser reads it."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(jsonable(content), allow_nan=False, separators=(",", ":")).encode()


def json_response(content: Any, status_code: int = 200) -> Response:
    return StrictJSONResponse(content, status_code=status_code)


def problem(request: Request, status_code: int, message: str, **extra: Any) -> Response:
    """An error: ``{"error": message, ...}`` on a JSON endpoint, else the error page."""
    if is_api(request):
        return json_response({"error": message, **extra}, status_code)
    return render(request, "error.html", status_code, status=status_code, message=message)


def page_url(request: Request, name: str, **params: Any) -> str | None:
    """The path of page ``name`` (a route's name) with ``params``, or None where no page of that
    name is installed: links to pages other modules add appear once they exist."""
    try:
        return str(request.app.url_path_for(name, **params))
    except NoMatchFound:
        return None


class ParameterError(UserInputError):
    """A query parameter a page cannot take (``offset=x``, ``at=worst``): answered 400."""


def integer_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """The whole-number query parameter ``name`` (``default`` when absent), from ``low`` to
    ``high``; anything else raises ``ParameterError`` naming the parameter."""
    raw = request.query_params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ParameterError(f"{name} takes a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ParameterError(f"{name} takes a number from {low} to {high}, not {value}")
    return value
