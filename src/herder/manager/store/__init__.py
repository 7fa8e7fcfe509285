"""The manager's storage: tables, migrations, and the queries that claim work.

Its modules are the manager's own; other packages reach the store through ``herder.manager``.
"""

from herder.manager.store.db import create_engine, in_transaction, migrate, sessions

__all__ = ["create_engine", "in_transaction", "migrate", "sessions"]
