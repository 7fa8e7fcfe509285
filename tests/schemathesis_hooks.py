"""schemathesis hooks for ``tests/test_schemathesis.py``: what the agent would run is made harmless.

Loaded by the ``st`` process (its config's ``hooks``), not by pytest. A generated
``command`` becomes ``sleep``, a generated ``source_url`` a file that does not exist (the
process then fails, as documented), a ``listen`` address an ephemeral loopback port, and
a pool starts at most one instance at once (not up to 256 on a 2-core machine).
Only a value the server would take is replaced, by another it takes: a request stays as
valid, or as invalid, as schemathesis made it.
"""

from __future__ import annotations

import os
import re
import resource
from typing import Any

import schemathesis

from herder.agent.health.models import DEPENDENCY_PATTERN, MAX_DEPENDENCIES
from herder.agent.limits import NAME_PATTERN

HARMLESS_COMMAND = ["sleep", "30"]
MISSING_ARCHIVE = "file:///nonexistent/herder-schemathesis/app.tar.gz"
RUNNING_PATHS = ("/create-process", "/pools", "/pools/{name}/scale", "/pools/{name}/deploy")
MOST_INSTANCES_AT_ONCE = 1


def _runnable(command: Any) -> bool:
    """A command the agent would take (and run)."""
    if isinstance(command, str):
        return bool(command.strip()) and "\0" not in command
    return (
        isinstance(command, list)
        and bool(command)
        and all(isinstance(part, str) and "\0" not in part for part in command)
    )


def make_harmless(body: dict[str, Any]) -> None:
    """Replace what would run or be fetched in a create request ``body``, in place."""
    if _runnable(body.get("command")):
        body["command"] = list(HARMLESS_COMMAND)
    source_url = body.get("source_url")
    if isinstance(source_url, str) and source_url.split(":", 1)[0].lower() in ("http", "https", "file"):
        body["source_url"] = MISSING_ARCHIVE
    listen = body.get("listen")
    if isinstance(listen, str) and listen.rpartition(":")[2].isdigit():
        body["listen"] = "127.0.0.1:0"  # never a port another test (or daemon) holds
    _host_takes(body)
    _agent_takes(body)
    low = body.get("min_instances")
    if isinstance(low, int) and not isinstance(low, bool) and low > MOST_INSTANCES_AT_ONCE:
        body["min_instances"] = MOST_INSTANCES_AT_ONCE  # still within the schema, still <= max


def _host_takes(body: dict[str, Any]) -> None:
    """Limits and identity the schema allows but this host may not (docs/limits.md): an
    rlimit above the agent's own, a cgroup limit without delegation, a user or group not
    on this host, an absolute cwd that does not exist, become values the host takes."""
    limits = body.get("limits")
    if isinstance(limits, dict):
        for name, res in (
            ("nofile", resource.RLIMIT_NOFILE),
            ("nproc", resource.RLIMIT_NPROC),
            ("as_bytes", resource.RLIMIT_AS),
            ("cpu_s", resource.RLIMIT_CPU),
        ):
            value, hard = limits.get(name), resource.getrlimit(res)[1]
            if _is_int(value) and hard != resource.RLIM_INFINITY and value > hard:
                limits[name] = hard
        for name in ("memory_max_bytes", "cpu_max"):
            if isinstance(limits.get(name), int | float) and not isinstance(limits.get(name), bool):
                limits[name] = None
    for name in ("user", "group"):
        if isinstance(body.get(name), str) and re.fullmatch(NAME_PATTERN, body[name]):
            body[name] = str(os.geteuid() if name == "user" else os.getegid())
    cwd = body.get("cwd")
    if isinstance(cwd, str) and cwd.startswith("/") and "\0" not in cwd:
        body["cwd"] = "/"


def _agent_takes(body: dict[str, Any]) -> None:
    """Health and order the schema allows but this agent may not (docs/health.md): names in
    ``depends_on`` of processes it does not have, an http or tcp check on a process with
    ``port: false``, become an empty list and a port."""
    depends_on = body.get("depends_on")
    if isinstance(depends_on, list) and depends_on and len(depends_on) <= MAX_DEPENDENCIES:
        valid = all(isinstance(n, str) and re.fullmatch(DEPENDENCY_PATTERN, n) for n in depends_on)
        if valid and len(set(depends_on)) == len(depends_on):
            body["depends_on"] = []
    health = body.get("health")
    if body.get("port") is False and isinstance(health, dict) and health.get("type") in ("http", "tcp"):
        body["port"] = True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.method.upper() == "POST" and case.path in RUNNING_PATHS and isinstance(case.body, dict):
        make_harmless(case.body)
