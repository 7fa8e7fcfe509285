"""The manager: workers, tasks, compilers and parsers (the render-farm Manager API seed).

Embed it with ``async with Manager(ManagerConfig(...)) as manager`` or run ``herder manager``.
The names below are imported on first use, not with the package, so that ``herder keys``
and ``herder --help`` do not pay for the web framework and the database drivers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from herder.lazy import lazy_exports

if TYPE_CHECKING:
    from herder.manager.authority import ROLES, Authority
    from herder.manager.config import ManagerConfig, ManagerLimits, ServiceQuota
    from herder.manager.errors import (
        Conflict,
        DatabaseError,
        FencedOut,
        InvalidTask,
        ManagerError,
        NotFound,
        NotIssued,
        StartupError,
        TargetRefused,
        TaskTypeError,
        TransitionError,
        UnknownDatabase,
    )
    from herder.manager.server import Manager, ManagerRuntime
    from herder.manager.states import ItemEvent, ItemStatus, TaskEvent, TaskStatus
    from herder.manager.store.db import in_transaction

_HOMES = {
    "Manager": "server",
    "ManagerRuntime": "server",
    "ManagerConfig": "config",
    "ManagerLimits": "config",
    "ServiceQuota": "config",
    "Authority": "authority",
    "ROLES": "authority",
    "ManagerError": "errors",
    "StartupError": "errors",
    "DatabaseError": "errors",
    "UnknownDatabase": "errors",
    "NotFound": "errors",
    "Conflict": "errors",
    "FencedOut": "errors",
    "InvalidTask": "errors",
    "TaskTypeError": "errors",
    "TargetRefused": "errors",
    "NotIssued": "errors",
    "TransitionError": "errors",
    "ItemStatus": "states",
    "ItemEvent": "states",
    "TaskStatus": "states",
    "TaskEvent": "states",
    "in_transaction": "store.db",
}

__getattr__ = lazy_exports(__name__, _HOMES)
__all__ = [
    "ROLES",
    "Authority",
    "Conflict",
    "DatabaseError",
    "FencedOut",
    "InvalidTask",
    "ItemEvent",
    "ItemStatus",
    "Manager",
    "ManagerConfig",
    "ManagerError",
    "ManagerLimits",
    "ManagerRuntime",
    "NotFound",
    "NotIssued",
    "ServiceQuota",
    "StartupError",
    "TargetRefused",
    "TaskEvent",
    "TaskStatus",
    "TaskTypeError",
    "TransitionError",
    "UnknownDatabase",
    "in_transaction",
]
