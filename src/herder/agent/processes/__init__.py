"""Supervised processes: their lifecycle table, spawning, output and restarts.

Also the descendants' ledger and the keeper that cleans up if the agent dies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from herder.lazy import lazy_exports

if TYPE_CHECKING:
    from herder.agent.processes.descendants import TRACKER
    from herder.agent.processes.keeper import Keeper
    from herder.agent.processes.logs import OutputLog, Stream, Subscriber
    from herder.agent.processes.states import Event, State, TransitionError, apply
    from herder.agent.processes.store import RecordStore
    from herder.agent.processes.supervisor import Supervisor, Unit

_HOMES = {
    "Supervisor": "supervisor",
    "Unit": "supervisor",
    "State": "states",
    "Event": "states",
    "TransitionError": "states",
    "apply": "states",
    "OutputLog": "logs",
    "Stream": "logs",
    "Subscriber": "logs",
    "RecordStore": "store",
    "Keeper": "keeper",
    "TRACKER": "descendants",
}

__getattr__ = lazy_exports(__name__, _HOMES)
__all__ = [
    "TRACKER",
    "Event",
    "Keeper",
    "OutputLog",
    "RecordStore",
    "State",
    "Stream",
    "Subscriber",
    "Supervisor",
    "TransitionError",
    "Unit",
    "apply",
]
