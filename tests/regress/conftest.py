"""The manager's fixtures (both databases) for the regression modules.

``client`` stays the agent's (from ``tests/conftest.py``); a regression module that
needs an HTTP client for a manager builds one from ``manager.url``.
"""

from tests.manager.conftest import db_url, make_manager, manager

__all__ = ["db_url", "make_manager", "manager"]
