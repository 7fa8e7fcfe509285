"""The agent's link to a manager: registration, heartbeats, leased work, and what it trusts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from herder.lazy import lazy_exports

if TYPE_CHECKING:
    from herder.agent.link.trust import Trust, TrustVerifier
    from herder.agent.link.worker import WorkerLink

_HOMES = {
    "WorkerLink": "worker",
    "Trust": "trust",
    "TrustVerifier": "trust",
}

__getattr__ = lazy_exports(__name__, _HOMES)
__all__ = [
    "Trust",
    "TrustVerifier",
    "WorkerLink",
]
