"""The per-host agent: supervised processes, Twelve-Factor apps, and their REST API.

Embed it with ``async with Agent(AgentConfig(...)) as agent`` or run ``herder agent``.

The names below are imported on first use, not with the package: a session's host
process (``herder.agent.sessions.host``) lives in this package and must start in milliseconds,
without the agent's web framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herder.agent.config import AgentConfig, load_config
    from herder.agent.errors import AgentError, ConfigError, DataDirBusy
    from herder.agent.processes.states import State
    from herder.agent.server import Agent

_WHERE = {
    "Agent": "herder.agent.server",
    "AgentConfig": "herder.agent.config",
    "load_config": "herder.agent.config",
    "AgentError": "herder.agent.errors",
    "ConfigError": "herder.agent.errors",
    "DataDirBusy": "herder.agent.errors",
    "State": "herder.agent.processes.states",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'herder.agent' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Agent",
    "AgentConfig",
    "AgentError",
    "ConfigError",
    "DataDirBusy",
    "State",
    "load_config",
]
