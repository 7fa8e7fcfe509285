"""Pools of instances behind the agent's port (the Kit seed): the HTTP/1.1 proxy and its pools."""

from __future__ import annotations

from typing import TYPE_CHECKING

from herder.lazy import lazy_exports

if TYPE_CHECKING:
    from herder.agent.router.front import front_protocol
    from herder.agent.router.models import PoolSpec
    from herder.agent.router.pools import Pool
    from herder.agent.router.router import ListenError, Router, config_pools

_HOMES = {
    "Router": "router",
    "Pool": "pools",
    "PoolSpec": "models",
    "ListenError": "router",
    "config_pools": "router",
    "front_protocol": "front",
}

__getattr__ = lazy_exports(__name__, _HOMES)
__all__ = [
    "ListenError",
    "Pool",
    "PoolSpec",
    "Router",
    "config_pools",
    "front_protocol",
]
