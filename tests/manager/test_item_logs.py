"""An ended work item's output moves from the manager's memory to the database (#13).

A real manager and a real agent linked to it, on both databases: the log of a task that
ended is read from ``item_logs`` (after a restart too), its lines are no longer held in
memory, a cancel stores what was kept, a task without output stores nothing, and a
deleted task's stored log goes with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from sqlalchemy import select

from herder.agent import Agent
from herder.manager.server import Manager
from herder.manager.store.tables import ItemLog
from tests.conftest import AgentFactory
from tests.manager.conftest import ManagerFactory
from tests.manager.test_link import wait_task

Linked = tuple[Manager, httpx.AsyncClient]


@pytest.fixture
async def linked(make_manager: ManagerFactory, make_agent: AgentFactory) -> AsyncIterator[Linked]:
    async with make_manager(heartbeat_interval_s=0.2) as manager:
        link = {"url": manager.url, "slots": 2, "name": "logging-agent"}
        async with (
            make_agent(manager=link) as agent,
            httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
        ):
            await asyncio.wait_for(connected(agent).wait(), 20)
            yield manager, client


def connected(agent: Agent) -> asyncio.Event:
    assert agent.runtime is not None
    assert agent.runtime.worker is not None
    return agent.runtime.worker.connected


async def stored_logs(manager: Manager) -> dict[int, ItemLog]:
    """The rows of ``item_logs``, by item."""
    assert manager.runtime is not None
    async with manager.runtime.transaction() as db:
        return {row.item_id: row for row in (await db.scalars(select(ItemLog))).all()}


async def wait_memory_empty(manager: Manager, timeout_s: float = 10) -> None:
    """Until no live item's lines are held (the finished report's round, then its end)."""
    assert manager.runtime is not None
    output = manager.runtime.output
    deadline = time.monotonic() + timeout_s
    while (output.statistics().items, output.statistics().lines) != (0, 0):
        assert time.monotonic() < deadline, output.statistics()
        await asyncio.sleep(0.02)


async def replay(manager: Manager, task_id: int) -> list[dict[str, Any]]:
    """The frames of ``WS /tasks/{id}/log`` for a task that has ended."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{manager.url}/tasks/{task_id}/log") as ws,
    ):
        return [message.json() async for message in ws]


async def test_a_finished_tasks_log_answers_after_the_manager_restarts(
    make_manager: ManagerFactory, make_agent: AgentFactory
) -> None:
    async with make_manager(heartbeat_interval_s=0.2) as manager:
        link = {"url": manager.url, "slots": 1, "name": "restarting"}
        async with make_agent(manager=link) as agent, httpx.AsyncClient(base_url=manager.url) as client:
            await asyncio.wait_for(connected(agent).wait(), 20)
            body = {"type": "command", "settings": {"shell": "echo one; echo two >&2; echo three"}}
            task = (await client.post("/tasks", json=body)).json()
            await wait_task(client, task["id"], "completed")
            await wait_memory_empty(manager)
            before = (await client.get(f"/tasks/{task['id']}/log")).text
            frames = await replay(manager, task["id"])
    assert "two" in before
    async with make_manager() as manager, httpx.AsyncClient(base_url=manager.url) as client:
        after = (await client.get(f"/tasks/{task['id']}/log")).text
        assert after == before
        assert await replay(manager, task["id"]) == frames
    assert [(f["stream"], f["line"]) for f in frames if f["stream"] == "stdout"] == [
        ("stdout", "one"),
        ("stdout", "three"),
    ]


async def test_an_ended_items_lines_leave_the_memory_and_its_delete_drops_them(linked: Linked) -> None:
    manager, client = linked
    body = {"type": "command", "settings": {"shell": "echo moved to the database"}}
    task = (await client.post("/tasks", json=body)).json()
    done = await wait_task(client, task["id"], "completed")
    await wait_memory_empty(manager)
    assert "moved to the database" in (await client.get(f"/tasks/{task['id']}/log")).text
    (item,) = done["work_items"]
    row = (await stored_logs(manager))[item["id"]]
    assert (row.attempt, row.lines, row.truncated) == (1, [[1, "stdout", "moved to the database"]], 0)
    assert (await client.delete(f"/tasks/{task['id']}")).status_code == 202
    assert item["id"] not in await stored_logs(manager)


async def test_every_attempts_lines_are_stored_in_order_when_the_last_fails(linked: Linked) -> None:
    manager, client = linked
    body = {
        "type": "command",
        "settings": {"shell": "echo out; echo err >&2; exit 3"},
        "max_attempts": 2,
    }
    task = (await client.post("/tasks", json=body)).json()
    await wait_task(client, task["id"], "failed")
    await wait_memory_empty(manager)
    log = (await client.get(f"/tasks/{task['id']}/log")).text.splitlines()
    assert [line.split("] ", 1)[1] for line in log] == ["out", "stderr: err", "out", "stderr: err"]
    assert [line.split(" #")[1][0] for line in log] == ["1", "1", "2", "2"]
    (row,) = (await stored_logs(manager)).values()
    assert row.attempt == 2


async def test_a_cancel_stores_what_was_kept(linked: Linked) -> None:
    manager, client = linked
    assert manager.runtime is not None
    body = {"type": "command", "settings": {"shell": "echo before the cancel; sleep 30"}}
    task = (await client.post("/tasks", json=body)).json()
    deadline = time.monotonic() + 20
    while "before the cancel" not in (await client.get(f"/tasks/{task['id']}/log")).text:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert manager.runtime.output.statistics().items == 1
    assert (await client.patch(f"/tasks/{task['id']}", json={"status": "canceled"})).status_code == 204
    stats = manager.runtime.output.statistics()
    assert (stats.items, stats.lines, stats.parsers) == (0, 0, 0)  # let go with the cancel's answer
    assert "before the cancel" in (await client.get(f"/tasks/{task['id']}/log")).text
    assert len(await stored_logs(manager)) == 1


async def test_a_task_without_output_stores_no_log(linked: Linked) -> None:
    manager, client = linked
    task = (await client.post("/tasks", json={"type": "command", "settings": {"argv": ["true"]}})).json()
    await wait_task(client, task["id"], "completed")
    assert (await client.get(f"/tasks/{task['id']}/log")).text == ""
    assert await stored_logs(manager) == {}


async def test_a_lost_workers_lines_are_stored_when_its_lease_fails_the_item(
    make_manager: ManagerFactory,
) -> None:
    from herder.rpc.client import connect

    # A lease of about a second (0.5 s heartbeats, two missed): long enough for the test to
    # see the item assigned and report for it on a loaded machine (with 0.1 s heartbeats the
    # item once failed before the test had seen it assigned), short enough to run out soon.
    async with (
        make_manager(heartbeat_interval_s=0.5, missed_heartbeats=2) as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
        connect("ws" + manager.url[4:] + "/rpc", handlers={"assign": lambda item: None}) as peer,
    ):
        worker_id = (await peer.call("register", {"hostname": "lost", "slots": 1}))["worker_id"]
        body = {"type": "command", "settings": {"argv": ["true"]}, "max_attempts": 1}
        task = (await client.post("/tasks", json=body)).json()
        deadline = time.monotonic() + 10
        while (item := (await client.get(f"/tasks/{task['id']}")).json()["work_items"][0])[
            "status"
        ] != "assigned":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await peer.call("started", worker_id, item["id"], 1)
        await peer.notify("output", worker_id, item["id"], 1, [["stdout", "the last words"]])
        # It goes silent: its lease runs out, and with its last attempt the item fails.
        await wait_task(client, task["id"], "failed", timeout_s=20)
        await wait_memory_empty(manager)
        assert "the last words" in (await client.get(f"/tasks/{task['id']}/log")).text
        assert (await stored_logs(manager))[item["id"]].lines == [[1, "stdout", "the last words"]]
