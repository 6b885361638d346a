"""``arch runs ...``: query the experiment registry."""

from __future__ import annotations

import click


@click.group()
def runs() -> None:
    """Query the experiment registry (SQLite by default, PostgreSQL by URL)."""


COMMANDS = [runs]
