"""The registry's tables, as SQLAlchemy 2.0 typed declarative models.

Schema changes are alembic migrations (``registry/migrations``), never edits here alone. ORM rows
stay inside ``registry/``: the store turns them into the plain records of ``registry/records.py``.

Keys are narrow on purpose: runs carry an integer ``pk`` for joins next to the short public ``id``
users type, and metric names are interned in ``metric_keys`` so the two million rows of a large
registry hold three integers and a float each.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from archlab.metrics import default_direction

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class SpecRow(Base):
    """One architecture, by the SHA-256 of its canonical form."""

    __tablename__ = "specs"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    canonical: Mapped[str] = mapped_column(Text)  # canonical JSON, as archlab.canonical_json
    created: Mapped[float] = mapped_column(Float)


class CVGroupRow(Base):
    """A cross-validation group: the split, not a run. Its folds are runs."""

    __tablename__ = "cv_groups"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(16), unique=True)
    spec_hash: Mapped[str] = mapped_column(ForeignKey("specs.hash"), index=True)
    k: Mapped[int] = mapped_column(Integer)
    splitter: Mapped[str] = mapped_column(String(64))
    shuffle: Mapped[bool] = mapped_column(Boolean, default=True)
    seed: Mapped[int | None] = mapped_column(Integer)
    stratified: Mapped[bool] = mapped_column(Boolean, default=False)
    grouped: Mapped[bool] = mapped_column(Boolean, default=False)
    repeats: Mapped[int] = mapped_column(Integer, default=1)
    library: Mapped[str | None] = mapped_column(String(100))  # e.g. "scikit-learn 1.7.2"
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created: Mapped[float] = mapped_column(Float)

    runs: Mapped[list[RunRow]] = relationship(back_populates="cv_group", lazy="raise")


class RunRow(Base):
    """One train, eval or bench run (a CV fold is a run too)."""

    __tablename__ = "runs"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(16), unique=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    status: Mapped[str] = mapped_column(String(16))  # indexed with heartbeat, below
    spec_hash: Mapped[str] = mapped_column(ForeignKey("specs.hash"), index=True)
    # the name the spec had when this run started: specs that differ only in their name share a
    # hash (and a ``specs`` row, which keeps the first name recorded)
    spec_name: Mapped[str | None] = mapped_column(String(200), index=True)
    cv_group_pk: Mapped[int | None] = mapped_column(ForeignKey("cv_groups.pk"), index=True)
    fold: Mapped[int | None] = mapped_column(Integer)
    n_train: Mapped[int | None] = mapped_column(Integer)
    n_val: Mapped[int | None] = mapped_column(Integer)
    train_sha256: Mapped[str | None] = mapped_column(String(64))
    val_sha256: Mapped[str | None] = mapped_column(String(64))
    started: Mapped[float] = mapped_column(Float, index=True)
    ended: Mapped[float | None] = mapped_column(Float)
    heartbeat: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)

    cv_group: Mapped[CVGroupRow | None] = relationship(back_populates="runs", lazy="raise")

    __table_args__ = (Index("ix_runs_status_heartbeat", "status", "heartbeat"),)


class TagRow(Base):
    __tablename__ = "run_tags"

    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.pk", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_run_tags_key_value", "key", "value"),)


class MixupRow(Base):
    """The mixup / cutmix setting of a run (absent when neither was applied)."""

    __tablename__ = "mixup"

    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.pk", ondelete="CASCADE"), primary_key=True)
    alpha: Mapped[float] = mapped_column(Float, default=0.0)
    cutmix_alpha: Mapped[float] = mapped_column(Float, default=0.0)
    cutmix_min: Mapped[float | None] = mapped_column(Float)
    cutmix_max: Mapped[float | None] = mapped_column(Float)
    prob: Mapped[float] = mapped_column(Float, default=1.0)
    switch_prob: Mapped[float] = mapped_column(Float, default=0.5)
    mode: Mapped[str] = mapped_column(String(8), default="batch")
    label_smoothing: Mapped[float] = mapped_column(Float, default=0.0)
    off_epoch: Mapped[int | None] = mapped_column(Integer)


def _name_default(context: Any) -> str:
    """A metric key inserted without a direction gets its name's default."""
    return default_direction(context.get_current_parameters()["name"])


class MetricKeyRow(Base):
    """A metric name and its direction, ``"min"`` (lower is better) or ``"max"``: declared by the
    writer that first logged the metric, else ``archlab.metrics.default_direction`` of the name."""

    __tablename__ = "metric_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    direction: Mapped[str] = mapped_column(String(3), default=_name_default)


class MetricRow(Base):
    """One point of a metric's time series.

    On SQLite a WITHOUT ROWID table: the rows live in the B-tree of their key, written once."""

    __tablename__ = "metrics"
    __table_args__ = ({"sqlite_with_rowid": False},)

    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.pk", ondelete="CASCADE"), primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("metric_keys.id"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[float | None] = mapped_column(Float)
    value: Mapped[float | None] = mapped_column(Float)  # NULL is NaN (SQLite cannot store NaN)
    time: Mapped[float] = mapped_column(Float)


class SummaryRow(Base):
    """Per run and metric: the final and best values, kept current on every write.

    ``last_value`` is NULL when the final value is NaN; ``best_value`` and ``best_step`` are NULL
    while every value is NaN (NaN is never the best)."""

    __tablename__ = "metric_summaries"

    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.pk", ondelete="CASCADE"), primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("metric_keys.id"), primary_key=True)
    last_value: Mapped[float | None] = mapped_column(Float)
    last_step: Mapped[int] = mapped_column(Integer)
    best_value: Mapped[float | None] = mapped_column(Float)
    best_step: Mapped[int | None] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_metric_summaries_key_last", "key_id", "last_value"),
        Index("ix_metric_summaries_key_best", "key_id", "best_value"),
    )


class AggregateRow(Base):
    """Per CV group and metric: mean, std, n, min, max of the folds' final values."""

    __tablename__ = "cv_aggregates"

    group_pk: Mapped[int] = mapped_column(
        ForeignKey("cv_groups.pk", ondelete="CASCADE"), primary_key=True
    )
    key_id: Mapped[int] = mapped_column(ForeignKey("metric_keys.id"), primary_key=True)
    mean: Mapped[float] = mapped_column(Float)
    std: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    min: Mapped[float] = mapped_column(Float)
    max: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_cv_aggregates_key_mean", "key_id", "mean"),)


class ArtifactRow(Base):
    """A file a run produced (checkpoint, plot), stored under the registry's artifact folder."""

    __tablename__ = "artifacts"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.pk", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)  # relative to the artifact folder
    kind: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(BigInteger)  # checkpoints outgrow 32 bits
    sha256: Mapped[str] = mapped_column(String(64))
    created: Mapped[float] = mapped_column(Float)


class SettingRow(Base):
    """A registry-wide setting, such as ``artifact_root``: where a PostgreSQL registry keeps its
    artifacts, so every user of the registry finds them, whatever their current directory."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
