"""The manager's ``GET /metrics`` (#16), on both databases, parsed by Prometheus's parser.

A real manager (and, for heartbeats and claims, a real agent linked to it, both in this
process): tasks submitted show as tasks by status and as queued work with an age; the
agent's heartbeats and registration are counted RPC calls with durations; work run
counts as claims; made-up RPC names share one series; without a token, 401.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from herder.net import rpc_url
from herder.rpc import RemoteError, connect
from tests.conftest import AgentFactory
from tests.helpers import poll
from tests.manager import conftest as manager_conftest
from tests.manager.conftest import ManagerFactory
from tests.test_metrics import Samples, scrape, value

# The manager's fixtures (both databases), from its directory's conftest.
db_url = manager_conftest.db_url
make_manager = manager_conftest.make_manager


async def submit(client: httpx.AsyncClient, argv: list[str]) -> int:
    response = await client.post("/tasks", json={"type": "command", "settings": {"argv": argv}})
    assert response.status_code == 202, response.text
    task_id: int = response.json()["id"]
    return task_id


async def test_tasks_by_status_and_the_queue(make_manager: ManagerFactory) -> None:
    async with make_manager() as manager, httpx.AsyncClient(base_url=manager.url, timeout=30.0) as client:
        samples = await scrape(client)
        assert value(samples, "herder_manager_database_up") == 1
        assert value(samples, "herder_manager_tasks", status="queued") == 0
        assert value(samples, "herder_manager_queue_oldest_age_seconds") == 0
        for _ in range(3):
            await submit(client, ["true"])
        samples = await scrape(client)
        assert value(samples, "herder_manager_tasks", status="queued") == 3
        assert value(samples, "herder_manager_tasks", status="completed") == 0
        assert value(samples, "herder_manager_work_items", status="queued") == 3
        age = value(samples, "herder_manager_queue_oldest_age_seconds")
        assert age is not None
        assert 0 < age < 60
        assert value(samples, "herder_manager_linked_workers") == 0
        assert value(samples, "herder_manager_claims_total") == 0


async def test_heartbeats_claims_and_rpc_calls(
    make_manager: ManagerFactory, make_agent: AgentFactory
) -> None:
    async with make_manager(heartbeat_interval_s=0.2) as manager:
        link = {"url": manager.url, "slots": 1, "name": "metrics-agent"}
        async with (
            make_agent(manager=link) as agent,
            httpx.AsyncClient(base_url=manager.url, timeout=30.0) as client,
        ):
            assert agent.runtime is not None
            assert agent.runtime.worker is not None
            await asyncio.wait_for(agent.runtime.worker.connected.wait(), 20)

            async def beaten_twice() -> bool:
                found = value(
                    await scrape(client), "herder_rpc_calls_total", method="heartbeat", outcome="ok"
                )
                return found is not None and found >= 2

            await poll(beaten_twice)
            samples = await scrape(client)
            assert value(samples, "herder_rpc_calls_total", method="register", outcome="ok") == 1
            beats = value(samples, "herder_rpc_calls_total", method="heartbeat", outcome="ok")
            assert value(samples, "herder_rpc_call_duration_seconds_count", method="heartbeat") == beats
            assert value(samples, "herder_manager_linked_workers") == 1
            age = value(samples, "herder_manager_worker_last_heartbeat_age_seconds", worker="metrics-agent")
            assert age is not None
            assert age < 10

            task_id = await submit(client, ["true"])

            async def completed() -> bool:
                return (await client.get(f"/tasks/{task_id}")).json()["status"] == "completed"

            await poll(completed, timeout_s=30)
            samples = await scrape(client)
            assert value(samples, "herder_manager_claims_total") == 1
            assert value(samples, "herder_manager_tasks", status="completed") == 1
            assert value(samples, "herder_rpc_calls_total", method="finished", outcome="ok") == 1

            async with connect(rpc_url(manager.url)) as peer:
                assert await peer.call("ping", target="meta") == "pong"
                with pytest.raises(RemoteError):
                    await peer.call("made_up_method")
            samples = await scrape(client)
            assert value(samples, "herder_rpc_calls_total", method="meta.ping", outcome="ok") == 1
            assert value(samples, "herder_rpc_calls_total", method="unknown", outcome="unknown_method") == 1


async def test_a_silent_worker_is_a_lost_lease(make_manager: ManagerFactory) -> None:
    """A worker linked over RPC takes work, then goes silent past its lease: requeued, counted."""
    pushed: list[Any] = []
    async with (
        make_manager(heartbeat_interval_s=0.1, missed_heartbeats=2) as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30.0) as client,
        connect(rpc_url(manager.url), handlers={"assign": pushed.append}) as peer,
    ):
        worker_id = (await peer.call("register", {"hostname": "silent", "slots": 1}))["worker_id"]
        task_id = await submit(client, ["true"])

        async def item_is(status: str, attempt: int) -> bool:
            item = (await client.get(f"/tasks/{task_id}")).json()["work_items"][0]
            return bool(item["status"] == status and item["attempt"] == attempt)

        # It beats until the item is pushed, then beats for it until it is seen assigned:
        # two 0.1 s intervals of silence (a loaded machine's stall) would end either early.
        async def beating_until_assigned() -> bool:
            running = [[pushed[0]["id"], 1]] if pushed else []
            await peer.call("heartbeat", worker_id, {}, running)
            return bool(pushed) and await item_is("assigned", 1)

        await poll(beating_until_assigned)
        samples = await scrape(client)
        assert value(samples, "herder_manager_claims_total") == 1
        assert value(samples, "herder_manager_leases_lost_total") == 0
        # Disabled, so that the requeued item is not pushed to it again; then it says nothing.
        assert (await client.patch(f"/workers/{worker_id}", json={"status": "disabled"})).status_code == 200
        await poll(lambda: item_is("queued", 1))
        samples = await scrape(client)
        assert value(samples, "herder_manager_leases_lost_total") == 1
        assert value(samples, "herder_manager_work_items", status="queued") == 1
        age = value(
            samples, "herder_manager_worker_last_heartbeat_age_seconds", worker="silent", status="disabled"
        )
        assert age is not None


async def test_metrics_need_the_token_when_auth_is_on(make_manager: ManagerFactory) -> None:
    token = "s3cret-manager-metrics"
    async with (
        make_manager(auth_token=token) as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30.0) as client,
    ):
        refused = await client.get("/metrics")
        assert refused.status_code == 401
        samples: Samples = await scrape(client, headers={"Authorization": f"Bearer {token}"})
    assert value(samples, "herder_http_requests_total", route="unmatched", status="401") == 1
    assert value(samples, "herder_manager_database_up") == 1
