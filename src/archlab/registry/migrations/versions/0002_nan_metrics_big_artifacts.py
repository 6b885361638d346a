"""NaN metric values as NULL; 64-bit artifact sizes.

- ``metrics.value``, ``metric_summaries.last_value`` / ``best_value`` / ``best_step`` become
  nullable: NULL stands for NaN (SQLite cannot store NaN at all, and PostgreSQL sorts NaN above
  every number, so a diverged run would top ``best`` listings). On PostgreSQL, NaN values that
  revision 0001 stored are turned into NULL, and best values that were NaN are recomputed.
- ``artifacts.size`` becomes BIGINT: PostgreSQL's INTEGER stops at 2 GiB, below many checkpoints.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 19:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _minimize(name: str) -> bool:
    """Lower is better: frozen here as revision 0002 knew it (the store's ``minimize``)."""
    lowered = name.lower()
    return any(word in lowered for word in ("loss", "err", "perplexity", "ppl"))


def upgrade() -> None:
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.alter_column("value", existing_type=sa.Float(), nullable=True)
    with op.batch_alter_table("metric_summaries", schema=None) as batch_op:
        batch_op.alter_column("last_value", existing_type=sa.Float(), nullable=True)
        batch_op.alter_column("best_value", existing_type=sa.Float(), nullable=True)
        batch_op.alter_column("best_step", existing_type=sa.Integer(), nullable=True)
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.alter_column(
            "size", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False
        )
    if op.get_bind().dialect.name == "postgresql":
        _nan_to_null()


def _nan_to_null() -> None:
    """Revision 0001 stored NaN as such on PostgreSQL (where NaN = NaN is true)."""
    conn = op.get_bind()
    conn.execute(sa.text("UPDATE metrics SET value = NULL WHERE value = 'NaN'"))
    conn.execute(sa.text("UPDATE metric_summaries SET last_value = NULL WHERE last_value = 'NaN'"))
    stale = conn.execute(
        sa.text(
            "SELECT s.run_pk, s.key_id, k.name FROM metric_summaries s"
            " JOIN metric_keys k ON k.id = s.key_id WHERE s.best_value = 'NaN'"
        )
    ).all()
    for run_pk, key_id, name in stale:
        order = "ASC" if _minimize(name) else "DESC"
        best = conn.execute(
            sa.text(
                "SELECT value, step FROM metrics WHERE run_pk = :run AND key_id = :key"
                f" AND value IS NOT NULL ORDER BY value {order}, step LIMIT 1"
            ),
            {"run": run_pk, "key": key_id},
        ).first()
        conn.execute(
            sa.text(
                "UPDATE metric_summaries SET best_value = :value, best_step = :step"
                " WHERE run_pk = :run AND key_id = :key"
            ),
            {
                "value": best[0] if best else None,
                "step": best[1] if best else None,
                "run": run_pk,
                "key": key_id,
            },
        )


def downgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.alter_column(
            "size", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False
        )
    # NaN cannot go back into NOT NULL columns: such points and summaries are dropped
    op.execute("DELETE FROM metrics WHERE value IS NULL")
    op.execute(
        "DELETE FROM metric_summaries"
        " WHERE last_value IS NULL OR best_value IS NULL OR best_step IS NULL"
    )
    with op.batch_alter_table("metric_summaries", schema=None) as batch_op:
        batch_op.alter_column("best_step", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("best_value", existing_type=sa.Float(), nullable=False)
        batch_op.alter_column("last_value", existing_type=sa.Float(), nullable=False)
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.alter_column("value", existing_type=sa.Float(), nullable=False)
