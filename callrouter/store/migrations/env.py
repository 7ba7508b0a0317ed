"""Alembic environment: migrations run on a connection handed over by `callrouter.store.db`."""

from __future__ import annotations

from alembic import context

from callrouter.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `callrouter db upgrade`, which supplies the database connection")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things in place
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
