"""The agent's faces: HTTP/WebSocket routes, the pools API, the wire-protocol service and the front door."""

from __future__ import annotations

from typing import TYPE_CHECKING

from herder.lazy import lazy_exports

if TYPE_CHECKING:
    from herder.agent.api.guard import Guard
    from herder.agent.api.routes import build_app
    from herder.agent.api.rpc import build_service

_HOMES = {
    "build_app": "routes",
    "build_service": "rpc",
    "Guard": "guard",
}

__getattr__ = lazy_exports(__name__, _HOMES)
__all__ = [
    "Guard",
    "build_app",
    "build_service",
]
