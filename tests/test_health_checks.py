"""Health checks on processes (issue 16), against a real agent and real servers on loopback.

An http check that keeps failing restarts the process after ``failures`` checks in a
row and never before ``grace_s``; a tcp check passes on a listening process; a command
check runs in the process's environment, fails on a non-zero exit or a timeout. Bad
checks are refused with a 422 naming the field.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import pid_alive, poll, wait_http

APP = str(Path(__file__).parent / "fixtures" / "health_app.py")


def app_body(node: str, events: Path, health: dict[str, Any] | None, **env: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "app": "hc",
        "node": node,
        "command": [sys.executable, APP],
        "env": {"EVENTS": str(events), "NAME": node, **env},
    }
    if health is not None:
        body["health"] = health
    return body


def read_events(events: Path) -> list[tuple[float, str, str, int]]:
    """``(time, name, what, pid)`` for each line the app wrote."""
    if not events.exists():
        return []
    lines = []
    for line in events.read_text().splitlines():
        at, name, rest = line.split(" ", 2)
        what, pid = rest.rsplit(" ", 1)
        lines.append((float(at), name, what, int(pid)))
    return lines


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    created = await client.post("/create-process", json=body)
    assert created.status_code == 201, created.text
    doc: dict[str, Any] = created.json()
    return doc


def unix(at: object) -> float:
    """A time of the agent's documents: Unix seconds, a JSON number."""
    assert isinstance(at, float), at
    return at


async def test_a_failing_http_check_restarts_after_n_failures_not_before_grace(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    events = tmp_path / "events"
    check = {"type": "http", "path": "/healthz?deep=1", "interval_s": 0.2, "timeout_s": 1, "failures": 3}
    check["grace_s"] = 1.0
    doc = await create(client, app_body("web", events, check, HEALTH_STATUS="503"))
    assert doc["health"]["status"] in (None, "starting")  # spawned already, or about to be
    assert (doc["health"]["failures"], doc["health"]["last_check_at"]) == (0, None)
    first = await wait_http(client, doc["details"], lambda d: d["state"] == "running")
    first_pid = first["pid"]
    assert first["health"]["status"] == "starting"
    again = await wait_http(
        client, doc["details"], lambda d: d["restarts"] == 1 and d["state"] == "running", timeout_s=15
    )
    assert again["pid"] != first_pid
    assert not pid_alive(first_pid)
    assert again["health"]["last_error"] == "GET /healthz?deep=1: HTTP 503"
    assert again["error"] is None or "unhealthy" in again["error"]
    served = [(at, what) for at, _, what, pid in read_events(events) if pid == first_pid]
    gets = [at for at, what in served if what.startswith("GET")]
    # Exactly ``failures`` checks of the first run, none before its grace was over.
    assert [what for _, what in served] == ["start", *["GET /healthz?deep=1"] * 3, "end"]
    assert min(gets) >= unix(first["started_at"]) + 1.0 - 0.05


async def test_an_http_check_that_passes_then_fails_names_the_reason(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    events = tmp_path / "events"
    check = {"type": "http", "interval_s": 0.1, "failures": 1000, "grace_s": 0}
    doc = await create(client, app_body("web", events, check, HEALTH_STATUS="302"))
    passing = await wait_http(
        client, doc["details"], lambda d: (d["health"] or {}).get("status") == "passing"
    )
    assert passing["health"]["failures"] == 0
    assert passing["health"]["last_check_at"] is not None
    assert [what for _, _, what, _ in read_events(events)][1] == "GET /"  # the default path


async def test_a_tcp_check_passes_on_a_listening_process(client: httpx.AsyncClient, tmp_path: Path) -> None:
    check = {"type": "tcp", "interval_s": 0.1, "grace_s": 0, "failures": 100}
    doc = await create(client, app_body("tcp", tmp_path / "events", check, LISTEN_AFTER_S="0.5"))
    starting = await wait_http(client, doc["details"], lambda d: (d["health"] or {}).get("failures", 0) >= 1)
    assert starting["health"]["status"] == "failing"  # listening only after half a second
    assert starting["health"]["last_error"] == f"cannot connect to port {doc['port']}: Connection refused"
    passing = await wait_http(
        client, doc["details"], lambda d: (d["health"] or {}).get("status") == "passing"
    )
    assert passing["restarts"] == 0
    assert passing["health"]["failures"] == 0


async def test_a_tcp_check_on_a_closed_port_restarts(client: httpx.AsyncClient) -> None:
    check = {"type": "tcp", "interval_s": 0.1, "grace_s": 0, "failures": 2, "timeout_s": 0.5}
    doc = await create(client, {"app": "hc", "node": "mute", "command": "exec sleep 300", "health": check})
    restarted = await wait_http(client, doc["details"], lambda d: d["restarts"] >= 1)
    assert "cannot connect to port" in restarted["health"]["last_error"]


async def test_a_command_check_runs_in_the_process_environment(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    flag = tmp_path / "ready"
    check = {
        "type": "command",
        "command": 'test -n "$PORT" && test -f "$FLAG"',
        "interval_s": 0.1,
        "grace_s": 0,
        "failures": 1000,
    }
    body = {
        "app": "hc",
        "node": "cmd",
        "command": "exec sleep 300",
        "env": {"FLAG": str(flag)},
        "health": check,
    }
    doc = await create(client, body)
    failing = await wait_http(client, doc["details"], lambda d: (d["health"] or {}).get("failures", 0) >= 2)
    assert failing["health"]["status"] == "failing"
    assert failing["health"]["last_error"] == "the command exited 1"
    flag.touch()
    passing = await wait_http(client, doc["details"], lambda d: d["health"]["status"] == "passing")
    assert passing["health"]["failures"] == 0
    assert passing["restarts"] == 0


async def test_a_failing_command_check_restarts_and_says_what_it_printed(client: httpx.AsyncClient) -> None:
    check = {"type": "command", "command": ["sh", "-c", "echo not ready; exit 3"], "interval_s": 0.1}
    check.update(grace_s=0, failures=2)
    doc = await create(client, {"app": "hc", "node": "cmd", "command": "exec sleep 300", "health": check})
    restarted = await wait_http(client, doc["details"], lambda d: d["restarts"] >= 1)
    assert restarted["health"]["last_error"] == "the command exited 3: not ready"


async def test_a_command_check_that_hangs_is_killed_at_its_timeout(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    check = {"type": "command", "command": f"echo $$ >> {pids}; exec sleep 60", "timeout_s": 0.3}
    check.update(interval_s=0.1, grace_s=0, failures=1000)
    doc = await create(client, {"app": "hc", "node": "slow", "command": "exec sleep 300", "health": check})
    failing = await wait_http(client, doc["details"], lambda d: (d["health"] or {}).get("failures", 0) >= 2)
    assert failing["health"]["last_error"] == "the command took more than 0.3 s (killed)"
    first_check = int(pids.read_text().split()[0])
    await poll(lambda: not pid_alive(first_check))


@pytest.mark.parametrize(
    ("health", "port", "field"),
    [
        ({"type": "http", "path": "/a b"}, True, "health.path"),
        ({"type": "http", "path": "/x\r\nHost: evil"}, True, "health.path"),
        ({"type": "http", "path": "http://169.254.169.254/"}, True, "health.path"),
        ({"type": "http", "path": "relative"}, True, "health.path"),
        ({"type": "http", "path": "/" + "a" * 2000}, True, "health.path"),
        ({"type": "tcp", "path": "/"}, True, "health.path"),
        ({"type": "http"}, False, "health.type"),
        ({"type": "tcp"}, False, "health.type"),
        ({"type": "command"}, True, "health.command"),
        ({"type": "http", "command": "true"}, True, "health.command"),
        ({"type": "icmp"}, True, "health.type"),
        ({"type": "tcp", "interval_s": 0}, True, "health.interval_s"),
        ({"type": "tcp", "failures": 0}, True, "health.failures"),
        ({"type": "tcp", "url": "http://example.com/"}, True, "health.url"),
    ],
)
async def test_bad_checks_are_422s_naming_the_field(
    client: httpx.AsyncClient, health: dict[str, Any], port: bool, field: str
) -> None:
    body = {"app": "hc", "node": "bad", "command": "exec sleep 300", "port": port, "health": health}
    answer = await client.post("/create-process", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert (await client.get("/list-processes")).json()["processes"] == []


async def test_a_process_without_a_port_gets_none_and_may_have_a_command_check(
    client: httpx.AsyncClient,
) -> None:
    check = {"type": "command", "command": 'test -z "$PORT"', "interval_s": 0.1, "grace_s": 0}
    doc = await create(
        client, {"app": "hc", "node": "w", "command": "exec sleep 300", "port": False, "health": check}
    )
    passing = await wait_http(
        client, doc["details"], lambda d: (d["health"] or {}).get("status") == "passing"
    )
    assert passing["port"] is None


@pytest.mark.skipif(
    os.geteuid() != 0, reason="switching users needs a root agent (CI runs the tests as root)"
)
async def test_a_command_check_runs_as_the_process_user(client: httpx.AsyncClient, tmp_path: Path) -> None:
    """A root agent never runs a user's check as root: it runs as the process does."""
    check = {"type": "command", "command": 'test "$(id -u)" = "$(id -u nobody)"', "interval_s": 0.1}
    check.update(grace_s=0, failures=1000)
    body = {"app": "hc", "node": "nobody", "command": "exec sleep 300", "user": "nobody", "health": check}
    doc = await create(client, body)
    passing = await wait_http(
        client, doc["details"], lambda d: (d["health"] or {}).get("status") == "passing"
    )
    assert passing["health"]["failures"] == 0


async def test_unhealthy_under_restart_never_is_stopped_and_left_exited(client: httpx.AsyncClient) -> None:
    check = {"type": "tcp", "interval_s": 0.1, "grace_s": 0, "failures": 2, "timeout_s": 0.5}
    body = {"app": "hc", "node": "once", "command": "exec sleep 300", "restart": "never", "health": check}
    doc = await create(client, body)
    running = await wait_http(client, doc["details"], lambda d: d["state"] == "running")
    exited = await wait_http(client, doc["details"], lambda d: d["state"] == "exited")
    assert (exited["restarts"], exited["exit_code"], exited["pid"]) == (0, -15, None)
    assert exited["health"]["status"] is None
    assert exited["health"]["failures"] == 2
    assert not pid_alive(running["pid"])
