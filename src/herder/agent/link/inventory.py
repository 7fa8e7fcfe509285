"""What the agent runs, as the manager asks it over the link (``inventory``, docs/protocol.md §19).

The manager's dashboard shows a worker's processes, pools and sessions without the user
signing in to the agent: the manager asks the agent over the link it keeps. The documents
are the ones the agent's own API and ``WS /events`` send (``status_document``,
``pool_document``, ``SessionManager.documents``), cut to the contract's bounds by
``fleet.fit_inventory``; only their shape differs (no environment, no links).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from herder.fleet import Inventory, fit_inventory

if TYPE_CHECKING:
    from herder.agent.processes.supervisor import Supervisor
    from herder.agent.router.router import Router
    from herder.agent.sessions.manager import SessionManager


def take_inventory(
    supervisor: Supervisor,
    router: Router | None,
    sessions: SessionManager | None,
    base: str,
) -> Inventory:
    """Every process (work items' included), pool and session of this agent, now.

    ``base`` is the agent's URL (the documents' links are made under it, then left out).
    Made in one go on the event loop: what it says held at one moment.
    """
    # Imported here: the API's modules import FastAPI, which the link itself does not need.
    from herder.agent.api.pools import pool_document
    from herder.agent.api.routes import status_document

    processes = [status_document(unit, base) for unit in supervisor.units.values()]
    pools = [pool_document(pool, base) for pool in router.pools.values()] if router is not None else []
    documents = sessions.documents() if sessions is not None else []
    return fit_inventory(processes, pools, documents, time.time())


InventorySource = Callable[[], Inventory]

__all__ = ["InventorySource", "take_inventory"]
