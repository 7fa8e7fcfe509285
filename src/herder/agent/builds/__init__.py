"""Builds: apps that declare dependencies are built once, before their processes start."""

from __future__ import annotations

from typing import TYPE_CHECKING

from herder.lazy import lazy_exports

if TYPE_CHECKING:
    from herder.agent.builds.builder import BuildContext, Builder, BuildError, BuiltEnv, IndexSettings
    from herder.agent.builds.builds import Builds, Built, tree_hash
    from herder.agent.builds.envfile import parse_env, read_env_file

_HOMES = {
    "BuildContext": "builder",
    "BuildError": "builder",
    "Builder": "builder",
    "BuiltEnv": "builder",
    "IndexSettings": "builder",
    "Built": "builds",
    "Builds": "builds",
    "tree_hash": "builds",
    "parse_env": "envfile",
    "read_env_file": "envfile",
}

__getattr__ = lazy_exports(__name__, _HOMES)
__all__ = [
    "BuildContext",
    "BuildError",
    "Builder",
    "Builds",
    "Built",
    "BuiltEnv",
    "IndexSettings",
    "parse_env",
    "read_env_file",
    "tree_hash",
]
