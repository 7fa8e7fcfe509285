"""The Node builder: the app's ``node_modules`` installed with npm.

Detected by ``package.json``. ``npm ci`` when a lock (``package-lock.json`` or
``npm-shrinkwrap.json``) is present, ``npm install`` otherwise, in the build's copy of the
app, with npm's cache shared by every Node build. The processes get
``node_modules/.bin`` first on PATH and ``NODE_PATH``; ``node_modules`` is part of the
built tree each process copies.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from herder.agent.builds.builder import BuildContext, BuildError, BuiltEnv, run_for_output

LOCKS = ("package-lock.json", "npm-shrinkwrap.json")
BUILD_FORMAT = "1"


class NodeBuilder:
    """``herder.builders`` entry point ``node``."""

    name = "node"

    def detect(self, app_root: Path) -> bool:
        return (app_root / "package.json").is_file()

    def key(self, app_root: Path) -> str:
        node, npm = _tools()
        # Modules with native parts are built for one Node: another must not reuse them.
        return f"{BUILD_FORMAT} {node} {_version(node)} {npm}"

    async def build(self, ctx: BuildContext) -> BuiltEnv:
        _node, npm = _tools()
        locked = any((ctx.app_root / lock).is_file() for lock in LOCKS)
        argv = [npm, "ci" if locked else "install", "--no-audit", "--no-fund"]
        if ctx.index.index_url:
            argv += ["--registry", ctx.index.index_url]
        if ctx.index.no_index:
            argv.append("--offline")
        env = {"npm_config_cache": str(ctx.cache_dir / "npm"), "npm_config_update_notifier": "false"}
        await ctx.run(argv, env=env)
        modules = ctx.app_root / "node_modules"
        return BuiltEnv(path=(str(modules / ".bin"),), env={"NODE_PATH": str(modules)})


def _tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise BuildError("the app has a package.json, and node or npm is not installed on this host")
    return node, npm


def _version(node: str) -> str:
    """``node --version``, asked once per binary (by path and mtime): every start of a
    Node app computes its build's key, and starting node costs tens of milliseconds."""
    try:
        stamp = os.stat(node).st_mtime_ns
    except OSError:
        return "unknown"
    return _asked_version(node, stamp)


@functools.lru_cache(maxsize=16)
def _asked_version(node: str, _stamp: int) -> str:
    try:
        return run_for_output([node, "--version"], 10).strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
