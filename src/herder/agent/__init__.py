"""The per-host agent: supervised processes, Twelve-Factor apps, and their REST API.

Embed it with ``async with Agent(AgentConfig(...)) as agent`` or run ``herder agent``.

The names below are imported on first use, not with the package: a session's host
process (``herder.agent.sessions.host``) lives in this package and must start in milliseconds,
without the agent's web framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from herder.lazy import lazy_exports

if TYPE_CHECKING:
    from herder.agent.config import AgentConfig, load_config
    from herder.agent.declared import declared_problems, parse_concurrency
    from herder.agent.echo import ProcessEcho
    from herder.agent.errors import AgentError, ConfigError, DataDirBusy
    from herder.agent.processes.states import State
    from herder.agent.server import Agent
    from herder.agent.sessions.host import main as serve_session_host

_HOMES = {
    "Agent": "server",
    "AgentConfig": "config",
    "load_config": "config",
    "declared_problems": "declared",
    "parse_concurrency": "declared",
    "ProcessEcho": "echo",
    "AgentError": "errors",
    "ConfigError": "errors",
    "DataDirBusy": "errors",
    "State": "processes.states",
    "serve_session_host": "sessions.host:main",
}

__getattr__ = lazy_exports(__name__, _HOMES)
__all__ = [
    "Agent",
    "AgentConfig",
    "AgentError",
    "ConfigError",
    "DataDirBusy",
    "ProcessEcho",
    "State",
    "declared_problems",
    "load_config",
    "parse_concurrency",
    "serve_session_host",
]
