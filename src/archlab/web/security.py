"""The middleware every request passes, outermost first (``create_app`` stacks them):

1. ``SecurityHeaders``: every response (errors included) carries ``X-Content-Type-Options:
   nosniff``, a Content-Security-Policy allowing only this origin (no inline script, no
   framing; a response that sets a stricter one of its own, an SVG artifact's sandbox, keeps
   it), ``Referrer-Policy: no-referrer`` and ``Cross-Origin-Resource-Policy: same-origin``;
2. ``LoopbackHosts``: when the server is bound to loopback, only ``127.0.0.1``, ``localhost`` and
   ``[::1]`` Host headers are answered (400 otherwise), so a web page whose name an attacker
   re-points at 127.0.0.1 (DNS rebinding) cannot read the registry;
3. ``ReadOnly``: every method but GET and HEAD answers 405 on every path: the UI never writes;
4. ``TokenGate`` (with a token): a request carries it as ``Authorization: Bearer T``, as the
   ``archlab_token`` cookie, or once as ``?token=T``, which sets that cookie (HttpOnly,
   SameSite=Strict); anything else answers 401.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl

from starlette.datastructures import MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "archlab_token"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def host_name(header: str) -> str:
    """The host of a Host header without its port: ``[::1]:8765`` -> ``[::1]``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    # a response's own policy is stricter (an SVG artifact's sandbox): kept
                    if name == "Content-Security-Policy" and name in headers:
                        continue
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class LoopbackHosts:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_name(host) not in LOOPBACK_HOSTS:
                response = PlainTextResponse(
                    "this server answers only to 127.0.0.1, localhost and [::1]", status_code=400
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ReadOnly:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
            response = PlainTextResponse("arch ui is read-only: only GET and HEAD", status_code=405)
            response.headers["Allow"] = "GET, HEAD"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class TokenGate:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        cookies = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
        cookie = cookies[COOKIE].value if COOKIE in cookies else None
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if self._matches(bearer) or self._matches(cookie):
            await self.app(scope, receive, send)
            return
        if self._matches(query.get("token")):

            async def send_with_cookie(message: Message) -> None:
                if message["type"] == "http.response.start":
                    value = f"{COOKIE}={self.token.decode()}; HttpOnly; SameSite=Strict; Path=/"
                    MutableHeaders(scope=message).append("Set-Cookie", value)
                await send(message)

            await self.app(scope, receive, send_with_cookie)
            return
        response = PlainTextResponse(
            "this server needs its token: open the URL `arch ui` printed (with ?token=...), or "
            "send Authorization: Bearer TOKEN",
            status_code=401,
        )
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)
