"""The experiment registry: specs, runs, CV groups, mixup settings, metrics and artifacts.

``archlab.registry.views`` turns runs into plain data: CV groups, the compare table, exports;
``archlab.registry.ranking`` answers "which is best by a metric"; ``archlab.registry.comparison``
"is CV group B better than A" (``Registry.compare_groups``); ``archlab.registry.maintenance``
plans removals, tags CV groups' folds and sizes orphan artifact folders.

SQLAlchemy 2.0 on SQLite (the default, zero set-up) or PostgreSQL (by URL). Imports no torch.
"""

from archlab.registry import views
from archlab.registry.artifacts import ArtifactError
from archlab.registry.comparison import GroupComparison
from archlab.registry.engine import Location, RegistryError, locate
from archlab.registry.handle import RunHandle
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
from archlab.registry.store import Registry, indices_sha256

__all__ = [
    "Aggregate",
    "Artifact",
    "ArtifactError",
    "CVGroup",
    "CVInfo",
    "Change",
    "GroupComparison",
    "Location",
    "MetricSummary",
    "MixupSetting",
    "Ranked",
    "Registry",
    "RegistryError",
    "Run",
    "RunHandle",
    "indices_sha256",
    "locate",
    "views",
]
