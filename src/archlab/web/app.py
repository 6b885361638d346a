"""``create_app``: the Starlette application of ``arch ui`` over one registry, read-only."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from archlab.registry import Registry
from archlab.web import security
from archlab.web.context import Web, problem
from archlab.web.format import FILTERS
from archlab.web.pages import ROUTES
from archlab.web.serve import loopback

HERE = Path(__file__).parent


def templates() -> Environment:
    """The Jinja2 environment: the package's templates, autoescaped (every value a page shows
    reaches it escaped unless a template says otherwise, and ours never do)."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


def create_app(
    registry_url: str | None, *, token: str | None = None, host: str = "127.0.0.1"
) -> Starlette:
    """The application serving the registry at ``registry_url`` (found as ``arch runs`` finds
    it when None). The registry is opened now, never created (a missing one raises
    ``RegistryError``), and never written: stale runs are left for ``arch runs gc`` (only a
    registry of an older archlab is migrated on opening, as by every command). ``host``
    is the address the server binds: on loopback only loopback Host headers are answered.
    ``token``: every request must carry it (see ``archlab.web.security``)."""
    registry = Registry(registry_url, create=False, grace=None)
    state = Web(registry, templates())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        registry.close()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return problem(request, exc.status_code, exc.detail)

    middleware = [Middleware(security.SecurityHeaders)]
    if loopback(host):
        middleware.append(Middleware(security.LoopbackHosts))
    middleware.append(Middleware(security.ReadOnly))
    if token is not None:
        middleware.append(Middleware(security.TokenGate, token=token))
    routes = [*ROUTES, Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.web = state
    return app
