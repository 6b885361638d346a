"""Version upgraders: every older spec version is brought to the current one before validation.

Version 1 is the first and current version, so the table is empty. When version 2 arrives it
registers ``UPGRADERS[1] = upgrade_1_to_2`` (a pure function on the JSON dict) and every version-1
file keeps loading; a chain of upgraders takes any older version to the newest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from archlab.specs.errors import SpecError
from archlab.specs.models import SPEC_VERSION

Upgrader = Callable[[dict[str, Any]], dict[str, Any]]

#: ``UPGRADERS[v]`` turns a version-``v`` document into a version-``v + 1`` document.
UPGRADERS: dict[int, Upgrader] = {}


def upgrade(data: dict[str, Any], origin: str | None = None) -> dict[str, Any]:
    """Bring a spec document to ``SPEC_VERSION``; refuse missing, unknown or future versions."""
    if "version" not in data:
        raise SpecError(
            [("version", f"'version' is required; add \"version\": {SPEC_VERSION}")], origin
        )
    version = data["version"]
    if isinstance(version, float) and version.is_integer():  # JSON's 1.0 is 1
        version = data["version"] = int(version)
    if not isinstance(version, int) or isinstance(version, bool):
        raise SpecError([("version", f"version must be an integer, not {version!r}")], origin)
    if version > SPEC_VERSION:
        raise SpecError(
            [
                (
                    "version",
                    f"version {version} is newer than this archlab understands ({SPEC_VERSION}); upgrade archlab",
                )
            ],
            origin,
        )
    while version < SPEC_VERSION:
        step = UPGRADERS.get(version)
        if step is None:
            raise SpecError(
                [("version", f"version {version} is not a spec version (the first is 1)")], origin
            )
        data = step(dict(data))
        version += 1
        data["version"] = version
    return data
