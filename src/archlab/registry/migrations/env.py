"""Alembic environment of the registry: migrations run on the connection the store hands over."""

from __future__ import annotations

from alembic import context

from archlab.registry.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the store always passes its connection
    raise RuntimeError(
        "archlab registry migrations run through archlab.Registry, not the alembic CLI"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
