"""The service registry's core: keys, versions, prefix queries, and an in-memory index.

Pure and storage-independent (no I/O, no asyncio): the manager persists registrations
and serves them over HTTP and RPC; this package decides what a name is, what a query
matches and which watches hear of a change.
"""

from herder.registry.index import DEFAULT_WATCH_BUFFER, Event, EventKind, Index, Registration, Watch
from herder.registry.names import (
    FIELDS,
    MAX_PART_LENGTH,
    MAX_TEXT_LENGTH,
    WILDCARD,
    BadName,
    Clause,
    Query,
    ServiceKey,
    Version,
    VersionRange,
)

__all__ = [
    "DEFAULT_WATCH_BUFFER",
    "FIELDS",
    "MAX_PART_LENGTH",
    "MAX_TEXT_LENGTH",
    "WILDCARD",
    "BadName",
    "Clause",
    "Event",
    "EventKind",
    "Index",
    "Query",
    "Registration",
    "ServiceKey",
    "Version",
    "VersionRange",
    "Watch",
]
