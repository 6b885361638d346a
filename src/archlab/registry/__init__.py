"""The experiment registry: specs, runs, CV groups, mixup settings, metrics and artifacts.

SQLAlchemy 2.0 on SQLite (the default, zero set-up) or PostgreSQL (by URL). Imports no torch.
"""

from archlab.registry.records import (
    Aggregate,
    Artifact,
    Change,
    CVGroup,
    CVInfo,
    MetricSummary,
    MixupSetting,
    Ranked,
    Run,
)
from archlab.registry.store import Location, Registry, RegistryError, RunHandle, locate

__all__ = [
    "Aggregate",
    "Artifact",
    "CVGroup",
    "CVInfo",
    "Change",
    "Location",
    "MetricSummary",
    "MixupSetting",
    "Ranked",
    "Registry",
    "RegistryError",
    "Run",
    "RunHandle",
    "locate",
]
