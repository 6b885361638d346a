"""Serving ``arch ui``: the checks before binding (``check_bind``), the URL to open
(``address``) and the server itself (``serve``, uvicorn). Imports nothing outside the standard
library at module import, so the checks answer even where the ``ui`` extra is missing."""

from __future__ import annotations

import ipaddress
import re

from archlab.errors import UserInputError

TOKEN = re.compile(r"[A-Za-z0-9._~-]{16,}")
EXTRA = "pip install 'archlab[ui]'"


class UIError(UserInputError):
    """A server that must not start as asked: a bind without a token, a bad token, no extra."""


def loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve the registry beyond this machine without a token, and a token a URL or
    cookie could not carry or that is easy to guess."""
    if token is not None and not TOKEN.fullmatch(token):
        raise UIError(
            "a --token has at least 16 characters among letters, digits and . _ ~ - "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')"
        )
    if not loopback(host) and token is None:
        raise UIError(
            f"--host {host} serves the registry to other machines: give --token TOKEN too "
            "(every request must then carry it), or keep the default --host 127.0.0.1"
        )


def check_extra() -> None:
    """Raise ``UIError`` saying how to install the ``ui`` extra where it is missing."""
    import importlib.util

    missing = [m for m in ("starlette", "uvicorn", "jinja2") if importlib.util.find_spec(m) is None]
    if missing:
        raise UIError(f"arch ui needs {', '.join(missing)}: {EXTRA}")


def address(host: str, port: int, token: str | None) -> str:
    """The URL to open: ``http://127.0.0.1:8765/`` (with ``?token=`` when there is one)."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def serve(registry_url: str | None, host: str, port: int, token: str | None) -> None:
    """Check, open the registry, and serve it until interrupted (uvicorn)."""
    check_bind(host, token)
    check_extra()
    import uvicorn

    from archlab.web.app import create_app

    app = create_app(registry_url, token=token, host=host)
    print(f"arch ui: serving {app.state.web.registry.location.describe()}", flush=True)
    print(f"open {address(host, port, token)}", flush=True)
    uvicorn.run(app, host=host.strip("[]"), port=port, log_level="warning", server_header=False)
