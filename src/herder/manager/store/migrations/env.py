"""Alembic's environment for the manager: runs on the connection the manager hands it.

The manager applies migrations at start (``db.migrate``) on its own async engine; this
environment only receives the synchronous connection through ``config.attributes``.
Used from the ``alembic`` command line, it connects to ``sqlalchemy.url`` instead.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import engine_from_config, pool

from herder.manager.store.tables import Base

config = context.config
target_metadata = Base.metadata


def run(connection: Any) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = engine_from_config(config.get_section(config.config_ini_section) or {}, poolclass=pool.NullPool)
    with engine.connect() as own:
        run(own)
