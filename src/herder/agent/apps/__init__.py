"""Twelve-Factor apps: fetching source archives, unpacking them safely, reading the Procfile."""

from __future__ import annotations

from typing import TYPE_CHECKING

from herder.lazy import lazy_exports

if TYPE_CHECKING:
    from herder.agent.apps.archive import unpack
    from herder.agent.apps.fetch import Fetcher
    from herder.agent.apps.launch import Apps, Launch
    from herder.agent.apps.procfile import find_app_root, read_command

_HOMES = {
    "Apps": "launch",
    "Launch": "launch",
    "Fetcher": "fetch",
    "unpack": "archive",
    "read_command": "procfile",
    "find_app_root": "procfile",
}

__getattr__ = lazy_exports(__name__, _HOMES)
__all__ = [
    "Apps",
    "Fetcher",
    "Launch",
    "find_app_root",
    "read_command",
    "unpack",
]
