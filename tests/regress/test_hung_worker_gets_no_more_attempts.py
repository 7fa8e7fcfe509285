"""#12 §3.1: a hung worker (its link open, its heartbeats stopped) gets no further attempt.

An agent stopped with SIGSTOP keeps its connection: the kernel still accepts what the
manager sends it. The manager used to requeue its work when the lease ran out, and to
claim it again for the same worker (it was linked, and had the lowest id), attempt
after attempt, until the task failed while another agent sat idle. Now claims skip
offline workers, and a worker that lost an attempt of a task gets no more of it while
another eligible worker exists (the task's blocklist).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from herder.rpc.client import connect
from tests.helpers import AgentProcess, poll, wait_http
from tests.manager.conftest import ManagerFactory


async def linked_agent(
    client: httpx.AsyncClient, data_dir: Path, url: str, name: str
) -> tuple[AgentProcess, int]:
    """A real ``herder agent`` process working for the manager at ``url``: (process, worker id).

    Started from a thread: the manager serves from this test's event loop meanwhile.
    """
    agent = AgentProcess(data_dir, "--manager", url, "--slots", "1", "--name", name)
    await asyncio.to_thread(agent.start)
    workers = await wait_http(
        client, "/workers", lambda doc: doc.get(name, {}).get("connection") == "online", timeout_s=20
    )
    return agent, int(workers[name]["id"])


async def item_of(client: httpx.AsyncClient, task_id: int) -> dict[str, Any]:
    item: dict[str, Any] = (await client.get(f"/tasks/{task_id}")).json()["work_items"][0]
    return item


async def test_work_of_a_stopped_agent_goes_to_the_idle_one(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    agents: list[AgentProcess] = []
    async with (
        make_manager(heartbeat_interval_s=0.2) as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
    ):
        try:
            hung, hung_id = await linked_agent(client, tmp_path / "hung", manager.url, "hung")
            agents.append(hung)
            idle, idle_id = await linked_agent(client, tmp_path / "idle", manager.url, "idle")
            agents.append(idle)
            assert hung_id < idle_id  # the claim's tie-break favoured the hung one
            body = {"type": "command", "settings": {"shell": "sleep 0.5"}}
            task = (await client.post("/tasks", json=body)).json()

            async def running_on_hung() -> bool:
                item = await item_of(client, task["id"])
                return bool(item["status"] == "running" and item["worker_id"] == hung_id)

            await poll(running_on_hung, timeout_s=20)
            hung.signal(signal.SIGSTOP)  # its link stays open; it heartbeats no more

            done = await wait_http(
                client, f"/tasks/{task['id']}", lambda doc: doc["status"] in ("completed", "failed"), 30
            )
            assert done["status"] == "completed", done
            assert done["work_items"][0]["worker_id"] == idle_id
            assert done["work_items"][0]["attempt"] >= 2, done
        finally:
            await stop_agents(agents)


async def stop_agents(agents: list[AgentProcess]) -> None:
    """Resume and stop each agent by its pid, while the manager still serves their links."""
    for agent in agents:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.signal(signal.SIGCONT)
            agent.signal(signal.SIGTERM)
    for agent in agents:
        try:
            await asyncio.to_thread(agent.wait, 20)
        finally:
            agent.kill()


async def test_a_worker_that_lost_an_attempt_gets_none_of_the_task_while_another_can(
    make_manager: ManagerFactory,
) -> None:
    """Both workers heartbeat; the one that lost attempt 1 (it forgot the work: its lease
    ran out) is passed over for attempt 2, though it has the lowest id and as much room."""
    assigned: dict[str, list[dict[str, Any]]] = {"flaky": [], "steady": []}
    async with (
        make_manager(heartbeat_interval_s=0.1, missed_heartbeats=3) as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
        connect("ws" + manager.url[4:] + "/rpc", handlers={"assign": assigned["flaky"].append}) as flaky,
        connect("ws" + manager.url[4:] + "/rpc", handlers={"assign": assigned["steady"].append}) as steady,
    ):
        flaky_id = (await flaky.call("register", {"hostname": "flaky", "slots": 1}))["worker_id"]
        steady_id = (await steady.call("register", {"hostname": "steady", "slots": 1}))["worker_id"]
        assert flaky_id < steady_id
        body = {"type": "command", "settings": {"argv": ["true"]}}
        task = (await client.post("/tasks", json=body)).json()
        deadline = time.monotonic() + 15
        while not assigned["steady"] and time.monotonic() < deadline:
            # Both alive; flaky says it runs nothing (it lost what it was given).
            await flaky.call("heartbeat", flaky_id, {}, [])
            await steady.call(
                "heartbeat", steady_id, {}, [[i["id"], i["attempt"]] for i in assigned["steady"]]
            )
            await asyncio.sleep(0.03)
        assert [i["attempt"] for i in assigned["flaky"]] == [1]
        assert [i["attempt"] for i in assigned["steady"]] == [2]
        item = assigned["steady"][0]
        await steady.call("finished", steady_id, item["id"], 2, 0)
        done = await wait_http(client, f"/tasks/{task['id']}", lambda doc: doc["status"] == "completed")
        assert done["work_items"][0]["worker_id"] == steady_id
