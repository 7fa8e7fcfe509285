"""Sessions: isolated host processes that serve a product to the agent (Inedo seed).

Names are imported on first use: ``herder.agent.sessions.host`` must start in milliseconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from herder.lazy import lazy_exports

if TYPE_CHECKING:
    from herder.agent.sessions.host import main as serve_session_host
    from herder.agent.sessions.manager import SessionManager

_HOMES = {
    "SessionManager": "manager",
    "serve_session_host": "host:main",
}

__getattr__ = lazy_exports(__name__, _HOMES)
__all__ = [
    "SessionManager",
    "serve_session_host",
]
