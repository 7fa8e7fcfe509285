"""``GET /tasks?tag=&owner=``: the dashboard's filters, on both databases (each has its own
JSON test for a tag), within what the viewer may see."""

from __future__ import annotations

from typing import Any

import httpx

from herder.auth.keys import SigningKey
from herder.manager.server import Manager
from tests.manager.test_auth import bearer, buy, issue, secured

__all__ = ["secured"]  # a fixture, used by name


async def submit(client: httpx.AsyncClient, headers: dict[str, str] | None = None, **body: Any) -> int:
    body = {"type": "command", "settings": {"argv": ["true"]}, **body}
    answer = await client.post("/tasks", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    task_id: int = answer.json()["id"]
    return task_id


async def listed(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: Any
) -> list[int]:
    answer = await client.get("/tasks", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return [t["id"] for t in answer.json()["tasks"]]


async def test_tasks_are_found_by_tag_and_paged(client: httpx.AsyncClient) -> None:
    gpu = [await submit(client, tags=["gpu", "linux"]) for _ in range(3)]
    cpu = await submit(client, tags=["linux"])
    bare = await submit(client)
    assert await listed(client, tag="gpu") == gpu[::-1]
    assert await listed(client, tag="linux") == [cpu, *gpu[::-1]]
    assert await listed(client, tag="gp") == []  # a whole tag, not a part of one
    assert await listed(client, tag="windows") == []
    page = (await client.get("/tasks", params={"tag": "gpu", "limit": 2})).json()
    assert [t["id"] for t in page["tasks"]] == [gpu[2], gpu[1]]
    assert await listed(client, tag="gpu", before=page["next"]) == [gpu[0]]
    assert await listed(client, tag="linux", status="queued") == [cpu, *gpu[::-1]]
    assert bare in await listed(client)
    # Without keys nobody owns a task.
    assert await listed(client, owner="alice") == []
    for bad in ({"tag": ""}, {"tag": "x" * 65}, {"owner": ""}, {"owner": "y" * 256}):
        answer = await client.get("/tasks", params=bad)
        assert answer.status_code == 422, bad
        assert answer.json()["field"] == next(iter(bad))


async def test_an_admin_filters_by_owner_and_a_user_sees_only_their_own(
    secured: tuple[Manager, SigningKey],
) -> None:
    manager, _ = secured
    keys = {
        user: (await issue(manager, user, role))[0]
        for user, role in (("root", "admin"), ("alice", "user"), ("bob", "user"))
    }
    async with httpx.AsyncClient(base_url=manager.url) as client:
        who = {user: bearer((await buy(client, key)).json()["token"]) for user, key in keys.items()}
        alices = [await submit(client, who["alice"], tags=["red"]) for _ in range(2)]
        bobs = await submit(client, who["bob"], tags=["red"])
        assert await listed(client, who["root"], owner="alice") == alices[::-1]
        assert await listed(client, who["root"], owner="bob", tag="red") == [bobs]
        assert await listed(client, who["root"], tag="red") == [bobs, *alices[::-1]]
        # A user asking for another's tasks sees none of them (nor learns they exist).
        assert await listed(client, who["bob"], owner="alice") == []
        assert await listed(client, who["bob"], tag="red") == [bobs]


async def test_an_ended_task_is_requeued_as_a_new_one(client: httpx.AsyncClient) -> None:
    """Requeue (Flamenco's word): a new task with the old one's settings; the old one and
    its attempts stay as they ended."""
    old = await submit(client, tags=["linux"], priority=7, task_id=42, settings={"argv": ["true"]})
    early = await client.post(f"/tasks/{old}/requeue")
    assert early.status_code == 409
    assert early.json()["field"] == "id"
    assert (await client.patch(f"/tasks/{old}", json={"status": "canceled"})).status_code == 204
    again = await client.post(f"/tasks/{old}/requeue")
    assert again.status_code == 202, again.text
    doc = again.json()
    assert doc["id"] != old
    assert again.headers["Location"].endswith(f"/tasks/{doc['id']}")
    assert (doc["status"], doc["priority"], doc["tags"], doc["task_id"]) == ("queued", 7, ["linux"], 42)
    assert (await client.get(f"/tasks/{old}")).json()["status"] == "canceled"
    assert (await client.post("/tasks/999999/requeue")).status_code == 404
    assert (await client.post("/tasks/x/requeue")).status_code in (404, 422)
