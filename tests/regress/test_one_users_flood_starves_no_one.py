"""#12 §3.3: work no online worker can take blocks nothing; users take turns; users' priorities are capped.

One user's task at priority 1,000,000 with a tag no worker offers used to keep every
other task queued until it was deleted (the claim looked at the best 8 items per free
slot, all of them unfit); at equal priority, one user's flood of tasks was served
entirely before another user's single task. Now the claim passes over the tag sets no
online worker offers, the task says why it waits, owners take turns at equal
priority, and a user (not an admin) may not give a priority above the manager's cap.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from herder.auth import init_keys
from herder.manager.server import Manager
from herder.rpc.client import connect
from tests.helpers import wait_http
from tests.manager.conftest import ManagerFactory

TRUE = {"type": "command", "settings": {"argv": ["true"]}}


def rpc_url(manager: Manager) -> str:
    return "ws" + manager.url[4:] + "/rpc"


async def next_item(queue: asyncio.Queue[dict[str, Any]], timeout_s: float = 5) -> dict[str, Any]:
    return await asyncio.wait_for(queue.get(), timeout_s)


async def test_work_no_online_worker_can_take_blocks_nothing(manager: Manager) -> None:
    pushed: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    async with (
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
        connect(rpc_url(manager), handlers={"assign": pushed.put_nowait}) as peer,
    ):
        gpu = {**TRUE, "priority": 1_000_000, "tags": ["gpu"]}
        flood = [(await client.post("/tasks", json=gpu)).json()["id"] for _ in range(20)]
        plain = (await client.post("/tasks", json=TRUE)).json()["id"]
        worker_id = (await peer.call("register", {"hostname": "cpu-only", "slots": 1, "tags": ["linux"]}))[
            "worker_id"
        ]
        item = await next_item(pushed)
        assert item["task_id"] == plain
        await peer.call("finished", worker_id, item["id"], item["attempt"], 0)
        await wait_http(client, f"/tasks/{plain}", lambda doc: doc["status"] == "completed")
        waiting = (await client.get(f"/tasks/{flood[0]}")).json()
        assert (waiting["status"], waiting["waiting"]) == ("queued", "no online worker has tag gpu")
        assert (await client.get(f"/tasks/{plain}")).json()["waiting"] is None


async def tokens(manager: Manager, client: httpx.AsyncClient, *users: tuple[str, str]) -> dict[str, str]:
    """An access token per (user, role)."""
    assert manager.runtime is not None
    assert manager.authority is not None
    found = {}
    for user, role in users:
        async with manager.runtime.transaction() as db:
            key = (await manager.authority.issue_key(db, user, role, 3600)).key
        answer = await client.post("/auth/token", headers={"Authorization": f"Bearer {key}"})
        found[user] = answer.json()["token"]
    return found


async def test_users_priorities_are_capped_and_admins_are_not(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")
    async with (
        make_manager(max_user_priority=100) as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
    ):
        token = await tokens(manager, client, ("alice", "user"), ("root", "admin"))
        alice = {"Authorization": f"Bearer {token['alice']}"}
        root = {"Authorization": f"Bearer {token['root']}"}
        refused = await client.post("/tasks", json={**TRUE, "priority": 101}, headers=alice)
        assert refused.status_code == 403
        assert (refused.json()["error"], refused.json()["field"]) == ("forbidden", "priority")
        task = (await client.post("/tasks", json={**TRUE, "priority": 100}, headers=alice)).json()
        raised = await client.patch(f"/tasks/{task['id']}", json={"priority": 5000}, headers=alice)
        assert (raised.status_code, raised.json()["field"]) == (403, "priority")
        assert (
            await client.patch(f"/tasks/{task['id']}", json={"priority": 5000}, headers=root)
        ).status_code == 204
        assert (
            await client.post("/tasks", json={**TRUE, "priority": 1_000_000}, headers=root)
        ).status_code == 202


async def test_at_equal_priority_owners_take_turns(make_manager: ManagerFactory, tmp_path: Path) -> None:
    init_keys(tmp_path / "manager")
    pushed: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    async with (
        make_manager() as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
    ):
        token = await tokens(manager, client, ("alice", "user"), ("bob", "user"), ("root", "admin"))
        alice = {"Authorization": f"Bearer {token['alice']}"}
        for start in range(0, 200, 20):  # alice's flood: 200 tasks
            await asyncio.gather(
                *(client.post("/tasks", json=TRUE, headers=alice) for _ in range(start, start + 20))
            )
        bobs = (
            await client.post("/tasks", json=TRUE, headers={"Authorization": f"Bearer {token['bob']}"})
        ).json()
        async with connect(
            rpc_url(manager), token=token["root"], handlers={"assign": pushed.put_nowait}
        ) as peer:
            worker_id = (await peer.call("register", {"hostname": "one-slot", "slots": 1}))["worker_id"]
            served: list[int] = []
            while bobs["id"] not in served and len(served) < 20:
                item = await next_item(pushed)
                served.append(item["task_id"])
                await peer.call("finished", worker_id, item["id"], item["attempt"], 0)
        assert bobs["id"] in served[:3], f"bob's task was not among the first {len(served)} served"


async def test_many_distinct_tag_sets_no_worker_offers_block_nothing(manager: Manager) -> None:
    """A flood of unrunnable work, each task with a tag of its own, at the top of the queue:
    passing over one tag set at a time would give up before reaching the runnable task."""
    pushed: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    async with (
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
        connect(rpc_url(manager), handlers={"assign": pushed.put_nowait}) as peer,
    ):
        # More distinct tag sets than the claim's pages reach for one free slot (8 x 8).
        for start in range(0, 100, 25):
            await asyncio.gather(
                *(
                    client.post("/tasks", json={**TRUE, "priority": 100, "tags": [f"t{n}"]})
                    for n in range(start, start + 25)
                )
            )
        plain = (await client.post("/tasks", json=TRUE)).json()["id"]
        await peer.call("register", {"hostname": "cpu-only", "slots": 1, "tags": ["linux"]})
        item = await next_item(pushed)
        assert item["task_id"] == plain
