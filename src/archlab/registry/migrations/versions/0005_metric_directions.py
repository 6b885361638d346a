"""Each metric declares its direction: ``metric_keys.direction``, ``"min"`` or ``"max"``.

Which way a metric improves was guessed from its name wherever a best value was chosen (only
``loss``, ``err`` and ``perplexity`` counted as lower-is-better), so ``best`` of ``latency_ms``
was the slowest run. Now a writer declares a metric's direction when it first logs it, and the
registry keeps it. Existing metrics get the direction archlab gives a new metric of that name
(``archlab.metrics.default_direction``), so an upgraded registry and a new one agree; the runs'
best values (``metric_summaries``) of a metric whose direction changed are recomputed from its
stored points. The downgrade drops the column and recomputes those best values the way earlier revisions
guess them, from the name.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 07:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from archlab.metrics import default_direction

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _guessed_min(name: str) -> bool:
    """Lower is better as revisions up to 0004 guessed it: what their best values were chosen by."""
    return any(word in name.lower() for word in ("loss", "err", "perplexity", "ppl"))


def upgrade() -> None:
    # Added in place, NOT NULL with a placeholder default that the back-fill below overwrites:
    # on SQLite, making a column NOT NULL afterwards rebuilds the table, and ``metric_keys`` is
    # referenced by three others. (SQLite keeps the unused default in its schema; archlab
    # always writes the direction.)
    op.add_column(
        "metric_keys",
        sa.Column("direction", sa.String(length=3), nullable=False, server_default="max"),
    )
    conn = op.get_bind()
    for key_id, name in conn.execute(sa.text("SELECT id, name FROM metric_keys")).all():
        direction = default_direction(name)
        conn.execute(
            sa.text("UPDATE metric_keys SET direction = :direction WHERE id = :key"),
            {"direction": direction, "key": key_id},
        )
        if (direction == "min") != _guessed_min(name):
            _recompute_best(conn, key_id, direction)
    if conn.dialect.name != "sqlite":
        op.alter_column("metric_keys", "direction", server_default=None)


def _recompute_best(conn: sa.Connection, key_id: int, direction: str) -> None:
    """The best value and step of every run's series of metric ``key_id``, the first step of
    the best value (NaN, stored as NULL, is never the best)."""
    order = "ASC" if direction == "min" else "DESC"
    best = (
        "SELECT {column} FROM metrics m WHERE m.run_pk = metric_summaries.run_pk"
        " AND m.key_id = metric_summaries.key_id AND m.value IS NOT NULL"
        f" ORDER BY m.value {order}, m.step LIMIT 1"
    )
    conn.execute(
        sa.text(
            f"UPDATE metric_summaries SET best_value = ({best.format(column='m.value')}),"
            f" best_step = ({best.format(column='m.step')}) WHERE key_id = :key"
        ),
        {"key": key_id},
    )


def downgrade() -> None:
    conn = op.get_bind()
    keys = conn.execute(sa.text("SELECT id, name, direction FROM metric_keys")).all()
    for key_id, name, direction in keys:
        if (direction == "min") != _guessed_min(name):
            _recompute_best(conn, key_id, "min" if _guessed_min(name) else "max")
    if conn.dialect.name == "sqlite":  # in place (SQLite 3.35+), not by rebuilding the table
        op.execute("ALTER TABLE metric_keys DROP COLUMN direction")
    else:
        op.drop_column("metric_keys", "direction")
