"""Alembic environment: runs on the connection :mod:`its.db.migrate` hands it."""

from __future__ import annotations

from alembic import context

from its.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - always called through its.db.migrate
    raise RuntimeError("run migrations through `its db upgrade` (its.db.migrate)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
