"""Each run keeps its spec's name; a ``settings`` table for registry-wide settings.

- ``runs.spec_name``: specs that differ only in their name share a hash and a ``specs`` row, which
  keeps the first name ever recorded, so a later run of the renamed spec was listed (and queried,
  ``spec.name == ...``) under the old name. Runs recorded before this revision get the name of
  their spec row: the best that is known of them.
- ``settings`` (key, value): ``artifact_root`` says where a PostgreSQL registry's artifacts live,
  so a run's files are found from any directory and by every user of the registry.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 06:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spec_name", sa.String(length=200), nullable=True))
        batch_op.create_index("ix_runs_spec_name", ["spec_name"], unique=False)
    op.execute(
        "UPDATE runs SET spec_name = (SELECT specs.name FROM specs WHERE specs.hash = runs.spec_hash)"
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_settings"),
    )


def downgrade() -> None:
    op.drop_table("settings")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_spec_name")
        batch_op.drop_column("spec_name")
