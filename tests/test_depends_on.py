"""Start order (issue 16): ``depends_on`` against a real agent and real processes.

Each process appends to one file when it starts and ends; the test reads the order.
A process starts once what it depends on is ready (passing its check, running for
``ready_after_s``, or exited 0 for good); the agent's shutdown stops dependants first.
Unknown names, a process depending on itself and cycles are 422s naming ``depends_on``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import AgentFactory
from tests.helpers import poll, wait_http
from tests.test_health_checks import APP, create, read_events, unix


def body(node: str, events: Path, **fields: Any) -> dict[str, Any]:
    env = {"EVENTS": str(events), "NAME": node, **fields.pop("env", {})}
    return {"app": "shop", "node": node, "command": [sys.executable, APP], "env": env, **fields}


async def test_start_in_order_and_stop_in_reverse(make_agent: AgentFactory, tmp_path: Path) -> None:
    events = tmp_path / "events"
    db_check = {"type": "http", "path": "/ready", "interval_s": 0.1, "grace_s": 0, "failures": 100}
    async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        # The database listens only after a second: until its check passes, web waits.
        db = await create(client, body("db", events, health=db_check, env={"LISTEN_AFTER_S": "1.0"}))
        web = await create(client, body("web", events, depends_on=["db"], ready_after_s=0.3))
        assert web["depends_on"] == ["shop.db"]  # a node of the same app, stored as a slug
        worker = await create(client, body("worker", events, depends_on=["shop.web"], port=False))
        waiting = await wait_http(client, web["details"], lambda d: d["waiting_for"] == ["shop.db"])
        assert (waiting["state"], waiting["pid"]) == ("starting", None)
        assert "web" not in [name for _, name, what, _ in read_events(events) if what == "start"]
        running = await wait_http(client, worker["details"], lambda d: d["state"] == "running", timeout_s=15)
        ready = await wait_http(client, db["details"], lambda d: d["health"]["status"] == "passing")
        assert ready["waiting_for"] == []
        web_running = (await client.get(web["details"])).json()
        # Spawned after web ran for its ready_after_s (the agent's clock, not the apps' lines).
        assert unix(running["started_at"]) >= unix(web_running["started_at"]) + 0.3 - 0.01
        # Every app has said it started (and set its SIGTERM handler) before the shutdown.
        await poll(lambda: len([1 for _, _, what, _ in read_events(events) if what == "start"]) == 3)
    lines = read_events(events)
    starts = [(at, name) for at, name, what, _ in lines if what == "start"]
    ends = [name for _, name, what, _ in lines if what == "end"]
    assert [name for _, name in starts] == ["db", "web", "worker"]
    assert ends == ["worker", "web", "db"]
    first_answer = min(at for at, name, what, _ in lines if name == "db" and what == "GET /ready")
    assert starts[1][0] > first_answer  # web started after db's check passed


async def test_a_one_shot_dependency_that_exited_0_is_ready(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    migrate = {"app": "shop", "node": "migrate", "command": "exit 0", "restart": "on-failure"}
    await create(client, migrate)
    web = await create(client, body("web", tmp_path / "events", depends_on=["migrate"]))
    running = await wait_http(client, web["details"], lambda d: d["state"] == "running")
    assert running["waiting_for"] == []


async def test_a_failed_dependency_holds_its_dependant_back(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    broken = {"app": "shop", "node": "db", "command": "exit 4", "restart": "never"}
    await create(client, broken)
    web = await create(client, body("web", tmp_path / "events", depends_on=["db"]))
    waiting = await wait_http(client, web["details"], lambda d: d["waiting_for"] == ["shop.db"])
    assert waiting["state"] == "starting"
    # Deleted, it holds nothing back any more.
    assert (await client.post("/delete-process/shop.db")).status_code == 200
    await wait_http(client, web["details"], lambda d: d["state"] == "running")


async def test_deleting_a_dependency_leaves_its_dependants_running(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    events = tmp_path / "events"
    await create(client, body("db", events, ready_after_s=0))
    web = await create(client, body("web", events, depends_on=["db"]))
    running = await wait_http(client, web["details"], lambda d: d["state"] == "running")
    assert (await client.post("/delete-process/shop.db")).status_code == 200
    after = (await client.get(web["details"])).json()
    assert (after["state"], after["pid"]) == ("running", running["pid"])


@pytest.mark.parametrize(
    ("depends_on", "field"),
    [
        (["nothing"], "depends_on"),
        (["shop.web"], "depends_on"),  # itself, as a slug
        (["web"], "depends_on"),  # itself, as a node
        (["db", "db"], "depends_on"),
        (["bad name"], "depends_on.0"),
        (["db"] * 40, "depends_on"),
        ("db", "depends_on"),
    ],
)
async def test_bad_dependencies_are_422s(client: httpx.AsyncClient, depends_on: Any, field: str) -> None:
    await create(client, {"app": "shop", "node": "db", "command": "exec sleep 300"})
    answer = await client.post(
        "/create-process",
        json={"app": "shop", "node": "web", "command": "exec sleep 300", "depends_on": depends_on},
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert [p["slug"] for p in (await client.get("/list-processes")).json()["processes"]] == ["shop.db"]


async def test_a_cycle_is_refused(client: httpx.AsyncClient) -> None:
    sleeper = {"app": "shop", "command": "exec sleep 300"}
    await create(client, {**sleeper, "node": "a"})
    await create(client, {**sleeper, "node": "b", "depends_on": ["a"]})
    await create(client, {**sleeper, "node": "c", "depends_on": ["b"]})
    # a is deleted and made again, depending on c: c -> b -> a -> c.
    assert (await client.post("/delete-process/shop.a")).status_code == 200
    answer = await client.post("/create-process", json={**sleeper, "node": "a", "depends_on": ["c"]})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "depends_on"
    assert "shop.a -> shop.c -> shop.b -> shop.a" in answer.json()["message"]


async def test_an_agent_restart_starts_in_order_again(make_agent: AgentFactory, tmp_path: Path) -> None:
    events = tmp_path / "events"
    db_check = {"type": "http", "interval_s": 0.1, "grace_s": 0, "failures": 100}
    db_body = body("db", events, health=db_check, env={"LISTEN_AFTER_S": "0.5"})
    async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        await create(client, db_body)
        web = await create(client, body("web", events, depends_on=["db"]))
        await wait_http(client, web["details"], lambda d: d["state"] == "running")
        await poll(lambda: [what for _, name, what, _ in read_events(events) if name == "web"] == ["start"])
    events.unlink()
    async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        details = f"{agent.url}/process-status/shop.web"
        waiting = await wait_http(client, details, lambda d: d["waiting_for"] == ["shop.db"] or d["pid"])
        assert waiting["waiting_for"] == ["shop.db"]  # restored, and waiting again
        await wait_http(client, details, lambda d: d["state"] == "running")
        await poll(lambda: "web" in [name for _, name, what, _ in read_events(events) if what == "start"])
    lines = read_events(events)
    first_answer = min(at for at, name, what, _ in lines if name == "db" and what == "GET /")
    web_start = min(at for at, name, what, _ in lines if name == "web" and what == "start")
    assert web_start > first_answer
