"""An agent working for a manager over its RPC link, on both databases.

A real manager and a real agent (in this process), real programs run by the agent:
tasks pushed, output parsed into progress, cancel stopping a running program, and the
link coming back after the manager restarts.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from herder.agent import Agent
from herder.manager.server import Manager
from tests.conftest import AgentFactory
from tests.helpers import pid_alive, wait_dead
from tests.manager.conftest import ManagerFactory


async def wait_task(
    client: httpx.AsyncClient, task_id: int, status: str, timeout_s: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        doc: dict[str, Any] = (await client.get(f"/tasks/{task_id}")).json()
        if doc["status"] == status:
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} is {doc['status']}, not {status}: {doc}")
        await asyncio.sleep(0.02)


@pytest.fixture
def heartbeat_interval_s() -> float:
    """The manager's heartbeat (its lease: three of them); a test may ask for another."""
    return 0.2


@pytest.fixture
async def linked(
    make_manager: ManagerFactory, make_agent: AgentFactory, heartbeat_interval_s: float
) -> AsyncIterator[tuple[Manager, Agent, httpx.AsyncClient]]:
    async with make_manager(heartbeat_interval_s=heartbeat_interval_s) as manager:
        link = {"url": manager.url, "slots": 2, "name": "linked-agent", "tags": ["linux"]}
        async with (
            make_agent(manager=link) as agent,
            httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
        ):
            assert agent.runtime is not None
            assert agent.runtime.worker is not None
            await asyncio.wait_for(agent.runtime.worker.connected.wait(), 20)
            yield manager, agent, client


async def test_the_agent_registers_itself(linked: tuple[Manager, Agent, httpx.AsyncClient]) -> None:
    _, agent, client = linked
    workers = (await client.get("/workers")).json()
    worker = workers["linked-agent"]
    assert worker["connection"] == "online"
    assert worker["agent_url"] == agent.url
    assert worker["slots"] == 2
    assert worker["tags"] == ["linux"]
    detail = (await client.get(f"/workers/{worker['id']}")).json()
    deadline = time.monotonic() + 10
    while not detail["update_frequent"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        detail = (await client.get(f"/workers/{worker['id']}")).json()
    assert set(detail["update_frequent"]) == {"load_average", "worker_cpu_percent"}
    assert detail["update_less_frequent"]["worker_num_cpus"] >= 1


async def test_a_frames_task_runs_in_chunks_and_frame_current_follows_the_output(
    linked: tuple[Manager, Agent, httpx.AsyncClient],
) -> None:
    _, _, client = linked
    settings = {
        "command": f"{sys.executable} -c \"print('Fra:{{frame}} Mem:1M'); print('done {{frame}}')\"",
        "frame_start": 1,
        "frame_end": 6,
        "chunk_size": 2,
    }
    task = (
        await client.post("/tasks", json={"type": "frames", "parser": "frames", "settings": settings})
    ).json()
    done = await wait_task(client, task["id"], "completed")
    assert done["frame_current"] == 6
    assert [i["status"] for i in done["work_items"]] == ["completed"] * 3
    log = (await client.get(f"/tasks/{task['id']}/log")).text
    assert "Fra:3 Mem:1M" in log
    assert "done 6" in log


@pytest.mark.parametrize("heartbeat_interval_s", [0.4])
async def test_heartbeats_keep_the_lease_of_work_that_outlives_it(
    linked: tuple[Manager, Agent, httpx.AsyncClient],
) -> None:
    """The lease is three heartbeats (1.2 s here): work running 3 s keeps it by heartbeat
    (two pieces at once: a heartbeat then extends several leases in one statement). Not
    0.2 s heartbeats: a lease of 0.6 s was lost to a loop starved that long on a busy
    2-core machine running the suite in three workers."""
    _, _, client = linked
    body = {"type": "command", "settings": {"argv": ["sleep", "3"]}, "max_attempts": 1}
    tasks = [(await client.post("/tasks", json=body)).json() for _ in range(2)]
    for task in tasks:
        done = await wait_task(client, task["id"], "completed")
        assert done["work_items"][0]["attempt"] == 1


async def test_short_work_is_reported_once_with_the_time_it_started(
    linked: tuple[Manager, Agent, httpx.AsyncClient],
) -> None:
    """``true`` ends before a start report is due: its finished report says when it began."""
    _, _, client = linked
    task = (await client.post("/tasks", json={"type": "command", "settings": {"argv": ["true"]}})).json()
    (item,) = (await wait_task(client, task["id"], "completed"))["work_items"]
    assert item["attempt"] == 1
    assert item["exit_code"] == 0
    assert item["started_at"] is not None
    assert task["created_at"] <= item["started_at"] <= item["finished_at"]


async def test_a_failing_command_fails_its_task_after_its_attempts(
    linked: tuple[Manager, Agent, httpx.AsyncClient],
) -> None:
    _, _, client = linked
    body = {"type": "command", "settings": {"shell": "echo nope >&2; exit 3"}, "max_attempts": 2}
    task = (await client.post("/tasks", json=body)).json()
    failed = await wait_task(client, task["id"], "failed")
    assert "failed after 2 attempts" in failed["error"]
    assert failed["work_items"][0]["exit_code"] == 3


async def test_cancel_and_delete_stop_running_work(linked: tuple[Manager, Agent, httpx.AsyncClient]) -> None:
    _, agent, client = linked
    assert agent.runtime is not None
    assert agent.runtime.worker is not None
    worker = agent.runtime.worker
    pids: list[int] = []
    for action in ("cancel", "delete"):
        task = (
            await client.post("/tasks", json={"type": "command", "settings": {"argv": ["sleep", "60"]}})
        ).json()
        await wait_task(client, task["id"], "rendering")
        (run,) = [r for r in worker.runs.values() if r.unit.pid is not None and r.unit.pid not in pids]
        pid = run.unit.pid
        assert pid is not None
        assert pid_alive(pid)
        pids.append(pid)
        if action == "cancel":
            assert (
                await client.patch(f"/tasks/{task['id']}", json={"status": "canceled"})
            ).status_code == 204
            assert (await client.get(f"/tasks/{task['id']}")).json()["status"] == "canceled"
        else:
            assert (await client.delete(f"/tasks/{task['id']}")).status_code == 202
        await wait_dead([pid])


async def test_work_keeps_running_while_the_manager_is_away_and_reports_when_back(
    make_manager: ManagerFactory, make_agent: AgentFactory
) -> None:
    async with make_manager(heartbeat_interval_s=0.2) as manager:
        port = int(manager.url.rsplit(":", 1)[1])
    settings = {"heartbeat_interval_s": 0.2, "missed_heartbeats": 50, "port": port}  # a 10 s lease
    link = {"url": f"http://127.0.0.1:{port}", "slots": 1, "name": "comeback"}
    async with make_agent(manager=link) as agent:
        worker = agent.runtime.worker if agent.runtime is not None else None
        assert worker is not None
        async with make_manager(**settings) as manager, httpx.AsyncClient(base_url=manager.url) as client:
            await asyncio.wait_for(worker.connected.wait(), 20)
            body = {"type": "command", "settings": {"shell": "sleep 1; echo finished"}}
            task = (await client.post("/tasks", json=body)).json()
            await wait_task(client, task["id"], "rendering")
        # The manager is gone; the work goes on, and its report waits for the link.
        assert not worker.connected.is_set() or worker.peer is None or worker.peer.closed
        async with make_manager(**settings) as manager, httpx.AsyncClient(base_url=manager.url) as client:
            done = await wait_task(client, task["id"], "completed")
            assert done["work_items"][0]["attempt"] == 1  # the same attempt, reported late


async def test_a_tasks_output_is_let_go_when_it_ends_and_its_log_still_answers(
    linked: tuple[Manager, Agent, httpx.AsyncClient],
) -> None:
    """Output kept per work item is bounded and let go with its task: at its end the parsers
    go and the lines move to the database, where the log reads them; at its delete, gone."""
    manager, _, client = linked
    assert manager.runtime is not None
    output = manager.runtime.output
    body = {"type": "command", "settings": {"shell": "echo kept for the log"}}
    task = (await client.post("/tasks", json=body)).json()
    await wait_task(client, task["id"], "completed")
    deadline = time.monotonic() + 10
    # The finished report's round lets the lines go; its end, once the round is written, the parsers.
    while (output.statistics().items, output.statistics().parsers) != (0, 0):
        assert time.monotonic() < deadline, output.statistics()
        await asyncio.sleep(0.02)
    assert "kept for the log" in (await client.get(f"/tasks/{task['id']}/log")).text
    assert (await client.delete(f"/tasks/{task['id']}")).status_code == 202
    stats = output.statistics()
    assert (stats.items, stats.lines, stats.readers) == (0, 0, 0)


async def test_the_log_streams_over_a_websocket(linked: tuple[Manager, Agent, httpx.AsyncClient]) -> None:
    import aiohttp

    manager, _, client = linked
    body = {
        "type": "command",
        "settings": {"shell": "sleep 0.3; for i in 1 2 3; do echo line $i; done; echo oops >&2"},
    }
    task = (await client.post("/tasks", json=body)).json()
    received: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{manager.url}/tasks/{task['id']}/log") as ws:
            async for message in ws:
                received.append(message.json())
        assert ws.close_code == 1000
    assert [r["line"] for r in received if r["stream"] == "stdout"] == ["line 1", "line 2", "line 3"]
    assert {"stream": "stderr", "line": "oops"}.items() <= next(
        r for r in received if r["stream"] == "stderr"
    ).items()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{manager.url}/tasks/{task['id']}/log") as ws,
    ):
        replayed = [m.json() async for m in ws]
    assert [r["line"] for r in replayed] == [r["line"] for r in received]


async def test_a_worker_that_comes_back_is_told_to_stop_what_it_no_longer_owns(
    make_manager: ManagerFactory,
) -> None:
    from herder.rpc.client import connect

    pushed: list[Any] = []
    async with (
        make_manager(heartbeat_interval_s=0.1, missed_heartbeats=2) as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
        connect("ws" + manager.url[4:] + "/rpc", handlers={"assign": pushed.append}) as peer,
    ):
        registered = await peer.call("register", {"hostname": "flaky", "slots": 1})
        worker_id = registered["worker_id"]
        task = (await client.post("/tasks", json={"type": "command", "settings": {"argv": ["true"]}})).json()
        # The dispatcher pushes the item to "flaky"; it then goes silent past its lease
        # (disabled, so that the item, once requeued, is not pushed to it again)...
        deadline = time.monotonic() + 10
        item: dict[str, Any] = {}
        while time.monotonic() < deadline:
            item = (await client.get(f"/tasks/{task['id']}")).json()["work_items"][0]
            if item["status"] == "assigned" or pushed:
                break
            # Online until the item is pushed (two intervals of silence make it offline,
            # which a loaded machine can take before the dispatcher's first tick).
            await peer.call("heartbeat", worker_id, {}, [])
            await asyncio.sleep(0.02)
        assert await client.patch(f"/workers/{worker_id}", json={"status": "disabled"})
        while time.monotonic() < deadline:
            item = (await client.get(f"/tasks/{task['id']}")).json()["work_items"][0]
            if item["attempt"] == 1 and item["status"] == "queued":
                break  # requeued: the lease ran out
            await asyncio.sleep(0.05)
        assert (item["attempt"], item["status"]) == (1, "queued")
        # ...and comes back believing it still runs attempt 1.
        answer = await peer.call("heartbeat", worker_id, {}, [[item["id"], 1]])
        assert answer == {"stop": [[item["id"], 1]]}
        late = await client.post(
            f"/work-items/{item['id']}/finished", json={"worker_id": worker_id, "attempt": 1, "exit_code": 0}
        )
        assert late.status_code == 409


async def test_work_an_agent_no_longer_runs_goes_back_to_the_queue(make_manager: ManagerFactory) -> None:
    from herder.rpc.client import connect

    async with (
        make_manager(heartbeat_interval_s=0.1, missed_heartbeats=3) as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
        connect("ws" + manager.url[4:] + "/rpc", handlers={"assign": lambda item: None}) as peer,
    ):
        worker_id = (await peer.call("register", {"hostname": "amnesiac", "slots": 1}))["worker_id"]
        task = (await client.post("/tasks", json={"type": "command", "settings": {"argv": ["true"]}})).json()
        # It heartbeats on time, but says it runs nothing (as an agent that restarted would):
        # what the manager gave it must come back to the queue, and be given out again.
        deadline = time.monotonic() + 10
        attempt = 0
        while attempt < 2 and time.monotonic() < deadline:
            await peer.call("heartbeat", worker_id, {}, [])
            attempt = (await client.get(f"/tasks/{task['id']}")).json()["work_items"][0]["attempt"]
            await asyncio.sleep(0.05)
        assert attempt >= 2


async def test_a_link_silent_for_two_heartbeat_intervals_gets_no_work_until_it_beats(
    make_manager: ManagerFactory,
) -> None:
    """An agent cut off from this manager may be linked to another one of the database
    (which keeps it online), its old link open and silent here: work pushed into it was
    lost until its lease ran out, then pushed into it again (#17, the chaos suite). A
    link silent for two intervals (3 s at least) gets no work; heard again, it does."""
    from herder.rpc.client import connect

    interval = 0.2
    assigned: list[Any] = []
    async with (
        # Online for 10 s without a beat: only the link's silence can keep work from it.
        make_manager(heartbeat_interval_s=interval, missed_heartbeats=50) as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
        connect("ws" + manager.url[4:] + "/rpc", handlers={"assign": assigned.append}) as peer,
    ):
        worker_id = (await peer.call("register", {"hostname": "silent", "slots": 1}))["worker_id"]
        silent_until = time.monotonic() + max(2 * interval, 3.0) + 0.2
        while time.monotonic() < silent_until:  # time passing is what is tested
            await asyncio.sleep(0.05)
        task = (await client.post("/tasks", json={"type": "command", "settings": {"argv": ["true"]}})).json()
        await wait_task(client, task["id"], "queued")
        assert manager.runtime is not None
        await manager.runtime.dispatcher.dispatch()  # a tick of the dispatcher: nothing for it
        assert (await client.get(f"/tasks/{task['id']}")).json()["status"] == "queued"
        assert assigned == []
        deadline = time.monotonic() + 10
        while not assigned:  # it beats again, as an agent does: work comes
            assert time.monotonic() < deadline, "no work for a link heard again"
            await peer.call("heartbeat", worker_id, {}, [])
            await asyncio.sleep(interval)
        assert assigned[0]["task_id"] == task["id"]
