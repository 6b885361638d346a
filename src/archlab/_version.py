"""archlab's version, and the versions a run records, in a module of their own: importing them
loads neither the top package ``archlab`` nor torch."""

from __future__ import annotations

import functools
import sys

__version__ = "0.1.0"


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str | None], ...]:
    from importlib import metadata

    found: list[tuple[str, str | None]] = [
        ("python", sys.version.split()[0]),
        ("archlab", __version__),
    ]
    for dist in ("torch", "scikit-learn"):
        try:
            found.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            found.append((dist, None))
    return tuple(found)


def versions() -> dict[str, str | None]:
    """Versions of python, archlab, torch and scikit-learn (None where one is not installed),
    read from package metadata: this imports neither torch nor scikit-learn. Bench and train runs
    and every run's provenance record this same dict; looked up once per process."""
    return dict(_versions())
