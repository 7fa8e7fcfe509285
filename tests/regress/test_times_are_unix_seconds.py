"""Issue 16: the agent gave times as ISO 8601 strings where the manager and sessions give
Unix seconds. Every time the agent sends is now a JSON number (seconds, UTC), as theirs.

Against a real agent on loopback: a process with a health check, a pool with one
instance, ``WS /events``'s snapshot and the inventory the manager asks a linked agent for.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from herder.agent.link.inventory import take_inventory
from herder.fleet import Inventory, InventoryProcess
from tests.conftest import AgentFactory
from tests.helpers import wait_http

HEALTH_APP = str(Path(__file__).parents[1] / "fixtures" / "health_app.py")
POOL_APP = str(Path(__file__).parents[1] / "apps" / "pool_app.py")
# From before the test began to now: generous for a loaded machine, yet no ISO string,
# millisecond count or monotonic clock reading falls in it.
SLACK_S = 120.0


def unix_now(value: Any, field: str) -> float:
    """``value`` as Unix seconds close to now, or an assertion naming ``field``."""
    assert type(value) in (float, int), f"{field} = {value!r}"
    assert abs(value - time.time()) < SLACK_S, f"{field} = {value!r} is not near now"
    return float(value)


def check_process(doc: dict[str, Any], where: str) -> None:
    unix_now(doc["created_at"], f"{where}.created_at")
    unix_now(doc["started_at"], f"{where}.started_at")
    unix_now(doc["health"]["last_check_at"], f"{where}.health.last_check_at")


def check_pool(doc: dict[str, Any], where: str) -> None:
    (instance,) = doc["instances"]
    unix_now(instance["started_at"], f"{where}.instances[0].started_at")


async def test_every_time_the_agent_sends_is_unix_seconds(make_agent: AgentFactory, tmp_path: Path) -> None:
    async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
        body = {
            "app": "times",
            "node": "0",
            "command": [sys.executable, HEALTH_APP],
            "env": {"EVENTS": str(tmp_path / "events"), "NAME": "0"},
            "health": {"type": "http", "interval_s": 0.1, "grace_s": 0, "failures": 1000},
        }
        created = await client.post("/create-process", json=body)
        assert created.status_code == 201, created.text
        unix_now(created.json()["created_at"], "create-process.created_at")
        process = await wait_http(
            client,
            created.json()["details"],
            lambda d: d["state"] == "running" and (d["health"] or {}).get("last_check_at") is not None,
        )
        check_process(process, "process-status")
        listing = (await client.get("/list-processes")).json()
        check_process(listing["processes"][0], "list-processes")

        pool_body = {
            "name": "web",
            "command": [sys.executable, POOL_APP, "--port", "{port}"],
            "listen": "127.0.0.1:0",
            "min_instances": 1,
            "max_instances": 1,
        }
        opened = await client.post("/pools", json=pool_body)
        assert opened.status_code == 201, opened.text
        pool = await wait_http(
            client,
            opened.json()["details"],
            lambda d: [i["state"] for i in d["instances"]] == ["ready"],
        )
        check_pool(pool, "pool")
        check_pool((await client.get("/pools")).json()["pools"][0], "pools")

        events_url = agent.url.replace("http://", "ws://") + "/events"
        async with aiohttp.ClientSession() as session, session.ws_connect(events_url) as ws:
            snapshot = json.loads(await ws.receive_str(timeout=30.0))
        assert snapshot["type"] == "snapshot"
        check_process(snapshot["processes"][0], "events.processes[0]")
        check_pool(snapshot["pools"][0], "events.pools[0]")

        runtime = agent.runtime
        assert runtime is not None
        inventory = take_inventory(runtime.supervisor, runtime.router, runtime.sessions, agent.url)
        answer = Inventory.model_validate_json(inventory.model_dump_json())  # as the manager reads it
        sent = answer.model_dump(mode="json")
        unix_now(sent["collected_at"], "inventory.collected_at")
        unix_now(sent["processes"][0]["started_at"], "inventory.processes[0].started_at")


def test_an_older_agents_iso_time_in_an_inventory_is_read_as_unix_seconds() -> None:
    """A manager upgraded before its agents still reads their inventories."""
    entry = InventoryProcess.model_validate(
        {"slug": "web.0", "state": "running", "started_at": "2026-12-07T12:00:00.250+00:00"}
    )
    assert entry.started_at == 1796644800.25
