"""``arch ui``: the registry in a browser (``archlab.web``), read-only, on 127.0.0.1."""

from __future__ import annotations

import click

from archlab.cli.options import registry_option


@click.command()
@registry_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to bind. Anything but loopback needs --token.",
)
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="The port to serve on (0: any free port).",
)
@click.option(
    "--token",
    default=None,
    metavar="TOKEN",
    help="Every request must carry TOKEN (Authorization: Bearer TOKEN, or ?token=TOKEN once, "
    "which sets a cookie). At least 16 URL-safe characters.",
)
def ui(registry_url: str | None, host: str, port: int, token: str | None) -> None:
    """Serve the registry as web pages: runs (filter with --where, sort, CV groups folded with
    mean ± std), each run's config, metrics, live curves, artifacts and spec; a JSON endpoint
    beside each page (/api/...). Read-only: never writes the registry. Needs the ui extra
    (pip install 'archlab[ui]')."""
    from archlab.web.serve import serve

    serve(registry_url, host, port, token)


COMMANDS = [ui]
