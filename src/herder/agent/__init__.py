"""The per-host agent: supervised processes, Twelve-Factor apps, and their REST API.

Embed it with ``async with Agent(AgentConfig(...)) as agent`` or run ``herder agent``.
"""

from herder.agent.config import AgentConfig, load_config
from herder.agent.errors import AgentError, ConfigError, DataDirBusy
from herder.agent.server import Agent
from herder.agent.states import State

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentError",
    "ConfigError",
    "DataDirBusy",
    "State",
    "load_config",
]
