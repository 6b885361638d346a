"""The first registry schema: specs, CV groups, runs, tags, mixup, metrics, summaries, aggregates, artifacts.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 18:30:11.288080
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_metric_keys_name")),
    )
    op.create_table(
        "specs",
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("canonical", sa.Text(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_specs")),
    )
    with op.batch_alter_table("specs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_specs_name"), ["name"], unique=False)

    op.create_table(
        "cv_groups",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("splitter", sa.String(length=64), nullable=False),
        sa.Column("shuffle", sa.Boolean(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("stratified", sa.Boolean(), nullable=False),
        sa.Column("grouped", sa.Boolean(), nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.Column("library", sa.String(length=100), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["spec_hash"], ["specs.hash"], name=op.f("fk_cv_groups_spec_hash_specs")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_cv_groups")),
        sa.UniqueConstraint("id", name=op.f("uq_cv_groups_id")),
    )
    with op.batch_alter_table("cv_groups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cv_groups_spec_hash"), ["spec_hash"], unique=False)

    op.create_table(
        "cv_aggregates",
        sa.Column("group_pk", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("mean", sa.Float(), nullable=False),
        sa.Column("std", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_pk"],
            ["cv_groups.pk"],
            name=op.f("fk_cv_aggregates_group_pk_cv_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["metric_keys.id"], name=op.f("fk_cv_aggregates_key_id_metric_keys")
        ),
        sa.PrimaryKeyConstraint("group_pk", "key_id", name=op.f("pk_cv_aggregates")),
    )
    with op.batch_alter_table("cv_aggregates", schema=None) as batch_op:
        batch_op.create_index("ix_cv_aggregates_key_mean", ["key_id", "mean"], unique=False)

    op.create_table(
        "runs",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("cv_group_pk", sa.Integer(), nullable=True),
        sa.Column("fold", sa.Integer(), nullable=True),
        sa.Column("n_train", sa.Integer(), nullable=True),
        sa.Column("n_val", sa.Integer(), nullable=True),
        sa.Column("train_sha256", sa.String(length=64), nullable=True),
        sa.Column("val_sha256", sa.String(length=64), nullable=True),
        sa.Column("started", sa.Float(), nullable=False),
        sa.Column("ended", sa.Float(), nullable=True),
        sa.Column("heartbeat", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["cv_group_pk"], ["cv_groups.pk"], name=op.f("fk_runs_cv_group_pk_cv_groups")
        ),
        sa.ForeignKeyConstraint(
            ["spec_hash"], ["specs.hash"], name=op.f("fk_runs_spec_hash_specs")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_runs")),
        sa.UniqueConstraint("id", name=op.f("uq_runs_id")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_cv_group_pk"), ["cv_group_pk"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_spec_hash"), ["spec_hash"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_started"), ["started"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_status"), ["status"], unique=False)
        batch_op.create_index("ix_runs_status_heartbeat", ["status", "heartbeat"], unique=False)

    op.create_table(
        "artifacts",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_pk"], ["runs.pk"], name=op.f("fk_artifacts_run_pk_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_artifacts")),
    )
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_artifacts_run_pk"), ["run_pk"], unique=False)

    op.create_table(
        "metric_summaries",
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("last_value", sa.Float(), nullable=False),
        sa.Column("last_step", sa.Integer(), nullable=False),
        sa.Column("best_value", sa.Float(), nullable=False),
        sa.Column("best_step", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["metric_keys.id"], name=op.f("fk_metric_summaries_key_id_metric_keys")
        ),
        sa.ForeignKeyConstraint(
            ["run_pk"],
            ["runs.pk"],
            name=op.f("fk_metric_summaries_run_pk_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_pk", "key_id", name=op.f("pk_metric_summaries")),
    )
    with op.batch_alter_table("metric_summaries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_metric_summaries_key_best", ["key_id", "best_value"], unique=False
        )
        batch_op.create_index(
            "ix_metric_summaries_key_last", ["key_id", "last_value"], unique=False
        )

    op.create_table(
        "metrics",
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Float(), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["metric_keys.id"], name=op.f("fk_metrics_key_id_metric_keys")
        ),
        sa.ForeignKeyConstraint(
            ["run_pk"], ["runs.pk"], name=op.f("fk_metrics_run_pk_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_pk", "key_id", "step", name=op.f("pk_metrics")),
    )
    op.create_table(
        "mixup",
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("cutmix_alpha", sa.Float(), nullable=False),
        sa.Column("cutmix_min", sa.Float(), nullable=True),
        sa.Column("cutmix_max", sa.Float(), nullable=True),
        sa.Column("prob", sa.Float(), nullable=False),
        sa.Column("switch_prob", sa.Float(), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("label_smoothing", sa.Float(), nullable=False),
        sa.Column("off_epoch", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_pk"], ["runs.pk"], name=op.f("fk_mixup_run_pk_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_pk", name=op.f("pk_mixup")),
    )
    op.create_table(
        "run_tags",
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_pk"], ["runs.pk"], name=op.f("fk_run_tags_run_pk_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_pk", "key", name=op.f("pk_run_tags")),
    )
    with op.batch_alter_table("run_tags", schema=None) as batch_op:
        batch_op.create_index("ix_run_tags_key_value", ["key", "value"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_run_tags_key_value")

    op.drop_table("run_tags")
    op.drop_table("mixup")
    op.drop_table("metrics")
    with op.batch_alter_table("metric_summaries", schema=None) as batch_op:
        batch_op.drop_index("ix_metric_summaries_key_last")
        batch_op.drop_index("ix_metric_summaries_key_best")

    op.drop_table("metric_summaries")
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_artifacts_run_pk"))

    op.drop_table("artifacts")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_status_heartbeat")
        batch_op.drop_index(batch_op.f("ix_runs_status"))
        batch_op.drop_index(batch_op.f("ix_runs_started"))
        batch_op.drop_index(batch_op.f("ix_runs_spec_hash"))
        batch_op.drop_index(batch_op.f("ix_runs_kind"))
        batch_op.drop_index(batch_op.f("ix_runs_cv_group_pk"))

    op.drop_table("runs")
    with op.batch_alter_table("cv_aggregates", schema=None) as batch_op:
        batch_op.drop_index("ix_cv_aggregates_key_mean")

    op.drop_table("cv_aggregates")
    with op.batch_alter_table("cv_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cv_groups_spec_hash"))

    op.drop_table("cv_groups")
    with op.batch_alter_table("specs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_specs_name"))

    op.drop_table("specs")
    op.drop_table("metric_keys")
