"""Alembic environment: DevStream hands in an open connection (see devstream.db.migrate)."""

from __future__ import annotations

from alembic import context

from devstream.db.schema import metadata


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through `devstream init` (devstream.db.migrate)")
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


_run()
