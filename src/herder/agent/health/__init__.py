"""Health checks of supervised processes, and the order they start and stop in.

``models`` holds what a create request says (``health``, ``depends_on``); ``probes``
does one check; ``monitor`` repeats them for one run of a process and says when it is
unhealthy; ``order`` resolves dependencies and gives the shutdown's order.
See docs/health.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from herder.lazy import lazy_exports

if TYPE_CHECKING:
    from herder.agent.health.models import CheckType, HealthCheck, HealthStatus

_HOMES = {
    "CheckType": "models",
    "HealthCheck": "models",
    "HealthStatus": "models",
}

__getattr__ = lazy_exports(__name__, _HOMES)
__all__ = ["CheckType", "HealthCheck", "HealthStatus"]
