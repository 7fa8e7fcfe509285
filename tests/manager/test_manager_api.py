"""The Manager API seed's endpoints and shapes, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from tests.manager.conftest import ManagerFactory

SEED_WORKER_FIELDS = {
    "activity", "connection", "current_task", "hostname", "id", "ip_address",
    "log", "port", "status", "system", "time_cost",
}  # fmt: skip
SEED_TASK_FIELDS = {
    "id",
    "worker_id",
    "priority",
    "frame_start",
    "frame_end",
    "frame_current",
    "status",
    "format",
}


async def register(client: httpx.AsyncClient, hostname: str, **extra: Any) -> dict[str, Any]:
    response = await client.post("/workers", json={"hostname": hostname, "system": "Linux 6.1", **extra})
    assert response.status_code in (200, 201), response.text
    doc: dict[str, Any] = response.json()[hostname]
    return doc


async def submit(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("type", "command")
    body.setdefault("settings", {"argv": ["true"]})
    response = await client.post("/tasks", json=body)
    assert response.status_code == 202, response.text
    doc: dict[str, Any] = response.json()
    return doc


async def pull(client: httpx.AsyncClient, worker_id: int) -> dict[str, Any]:
    response = await client.patch(f"/workers/{worker_id}", json={"status": "available"})
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


async def test_workers_register_and_list_in_the_seeds_shape(client: httpx.AsyncClient) -> None:
    worker = await register(client, "render-1", port=5000, mac_address=158929712651)
    assert set(worker) >= SEED_WORKER_FIELDS
    assert worker["connection"] == "online"
    assert worker["status"] == "enabled"
    assert worker["ip_address"] == "127.0.0.1"
    listing = (await client.get("/workers")).json()
    assert list(listing) == ["render-1"]
    detail = (await client.get(f"/workers/{worker['id']}")).json()
    assert set(detail) >= {"hostname", "mac_address", "system", "update_frequent", "update_less_frequent"}
    assert detail["mac_address"] == "158929712651"
    again = await client.post("/workers", json={"hostname": "render-1", "system": "Linux 6.2"})
    assert again.status_code == 200  # known hostname: updated, same id
    assert again.json()["render-1"]["id"] == worker["id"]


async def test_worker_figures_and_the_pull_path(client: httpx.AsyncClient) -> None:
    worker = await register(client, "w")
    figures = {
        "update_frequent": {
            "load_average": {"1min": 0.5, "5min": 0.4, "15min": 0.3},
            "worker_cpu_percent": 7.0,
        },
        "update_less_frequent": {"worker_architecture": "x86_64", "worker_num_cpus": 2},
    }
    assert (
        await client.patch(f"/workers/{worker['id']}", json={"status": "rendering", **figures})
    ).json() == {
        "task_id": None,
        "work_item": None,
    }
    detail = (await client.get(f"/workers/{worker['id']}")).json()
    assert detail["update_frequent"] == figures["update_frequent"]
    task = await submit(client)
    answer = await pull(client, worker["id"])
    assert answer["task_id"] == task["id"]
    assert answer["work_item"]["argv"] == ["true"]
    assert answer["work_item"]["attempt"] == 1
    assert (await pull(client, worker["id"]))["task_id"] == task["id"]  # still its one slot
    listing = (await client.get("/workers")).json()
    assert listing["w"]["current_task"] == task["id"]


async def test_tasks_are_listed_in_pages_and_counted_by_status(client: httpx.AsyncClient) -> None:
    ids = [(await submit(client))["id"] for _ in range(5)]
    worker = await register(client, "pager")
    claimed = (await pull(client, worker["id"]))["task_id"]
    assert (await client.patch(f"/tasks/{ids[-1]}", json={"status": "canceled"})).status_code == 204
    first = (await client.get("/tasks", params={"limit": 2})).json()
    assert [t["id"] for t in first["tasks"]] == [ids[4], ids[3]]
    second = (await client.get("/tasks", params={"limit": 2, "before": first["next"]})).json()
    assert [t["id"] for t in second["tasks"]] == [ids[2], ids[1]]
    last = (await client.get("/tasks", params={"limit": 2, "before": second["next"]})).json()
    assert [t["id"] for t in last["tasks"]] == [ids[0]]
    assert last["next"] is None
    queued = (await client.get("/tasks", params={"status": "queued"})).json()
    assert sorted(t["id"] for t in queued["tasks"]) == sorted(set(ids[:4]) - {claimed})
    counts = (await client.get("/tasks/counts")).json()
    assert counts == {
        "queued": 3,
        "assigned": 1,
        "rendering": 0,
        "paused": 0,
        "completed": 0,
        "failed": 0,
        "canceled": 1,
        "total": 5,
    }
    for bad in ({"limit": "0"}, {"limit": "10001"}, {"limit": "x"}, {"before": "-1"}):
        answer = await client.get("/tasks", params=bad)
        assert answer.status_code == 422
        assert answer.json()["field"] == next(iter(bad))


async def test_tasks_in_the_seeds_shape(client: httpx.AsyncClient) -> None:
    task = await submit(
        client, priority=10, task_id=77, settings=json.dumps({"shell": "echo hi", "format": "PNG"})
    )
    assert set(task) >= SEED_TASK_FIELDS
    assert task["status"] == "queued"
    assert task["priority"] == 10
    assert task["format"] == "PNG"
    assert task["task_id"] == 77
    detail = (await client.get(f"/tasks/{task['id']}")).json()
    assert detail["work_items"][0]["argv"] == ["/bin/sh", "-c", "echo hi"]
    assert [t["id"] for t in (await client.get("/tasks")).json()["tasks"]] == [task["id"]]


async def test_a_frames_task_is_split_into_chunks(client: httpx.AsyncClient) -> None:
    settings = {
        "command": "render --from {start} --to {end}",
        "frame_start": 1,
        "frame_end": 10,
        "chunk_size": 4,
    }
    task = await submit(client, type="frames", parser="frames", settings=settings)
    assert (task["frame_start"], task["frame_end"]) == (1, 10)
    items = (await client.get(f"/tasks/{task['id']}")).json()["work_items"]
    assert [(i["frame_start"], i["frame_end"]) for i in items] == [(1, 4), (5, 8), (9, 10)]


async def test_priority_order_then_age(client: httpx.AsyncClient) -> None:
    worker = await register(client, "w", slots=10)
    low = await submit(client, priority=1)
    high = await submit(client, priority=5)
    later_high = await submit(client, priority=5)
    order = [(await pull(client, worker["id"]))["task_id"] for _ in range(3)]
    assert order == [high["id"], later_high["id"], low["id"]]


async def test_tags_must_be_offered_by_the_worker(client: httpx.AsyncClient) -> None:
    plain = await register(client, "plain")
    gpu = await register(client, "gpu", tags=["gpu", "linux"])
    task = await submit(client, tags=["gpu"])
    assert (await pull(client, plain["id"]))["task_id"] is None
    assert (await pull(client, gpu["id"]))["task_id"] == task["id"]


async def test_reports_complete_a_task_and_progress_moves_frame_current(client: httpx.AsyncClient) -> None:
    worker = await register(client, "w")
    settings = {"command": "render {frame}", "frame_start": 1, "frame_end": 3, "chunk_size": 3}
    task = await submit(client, type="frames", parser="frames", settings=settings)
    item = (await pull(client, worker["id"]))["work_item"]
    report = {"worker_id": worker["id"], "attempt": item["attempt"]}
    assert (await client.post(f"/work-items/{item['id']}/started", json=report)).status_code == 200
    assert (await client.get(f"/tasks/{task['id']}")).json()["status"] == "rendering"
    assert (
        await client.post(f"/work-items/{item['id']}/progress", json={**report, "frame": 2})
    ).status_code == 200
    assert (await client.get(f"/tasks/{task['id']}")).json()["frame_current"] == 2
    done = await client.post(f"/work-items/{item['id']}/finished", json={**report, "exit_code": 0})
    assert done.json()["status"] == "completed"
    final = (await client.get(f"/tasks/{task['id']}")).json()
    assert (final["status"], final["frame_current"]) == ("completed", 3)


async def test_a_failed_attempt_is_retried_then_the_task_fails(client: httpx.AsyncClient) -> None:
    worker = await register(client, "w")
    task = await submit(client, max_attempts=2)
    for attempt in (1, 2):
        item = (await pull(client, worker["id"]))["work_item"]
        assert item["attempt"] == attempt
        report = {"worker_id": worker["id"], "attempt": attempt, "exit_code": 1}
        await client.post(f"/work-items/{item['id']}/finished", json=report)
    final = (await client.get(f"/tasks/{task['id']}")).json()
    assert final["status"] == "failed"
    assert "failed after 2 attempts" in final["error"]


async def test_a_late_report_from_an_old_attempt_is_fenced(client: httpx.AsyncClient) -> None:
    first = await register(client, "first")
    second = await register(client, "second")
    task = await submit(client)
    item = (await pull(client, first["id"]))["work_item"]
    await client.patch(f"/tasks/{task['id']}", json={"status": "canceled"})
    late = await client.post(
        f"/work-items/{item['id']}/finished", json={"worker_id": first["id"], "attempt": 1, "exit_code": 0}
    )
    assert late.status_code == 409
    assert late.json()["field"] == "attempt"
    assert (await client.get(f"/tasks/{task['id']}")).json()["status"] == "canceled"
    assert (await pull(client, second["id"]))["task_id"] is None


async def test_pause_resume_cancel_and_delete(client: httpx.AsyncClient) -> None:
    worker = await register(client, "w")
    task = await submit(client)
    assert (await client.patch(f"/tasks/{task['id']}", json={"status": "paused"})).status_code == 204
    assert (await client.get(f"/tasks/{task['id']}")).json()["status"] == "paused"
    assert (await pull(client, worker["id"]))["task_id"] is None
    assert (
        await client.patch(f"/tasks/{task['id']}", json={"status": "queued", "priority": 3})
    ).status_code == 204
    assert (await client.get(f"/tasks/{task['id']}")).json()["priority"] == 3
    assert (await pull(client, worker["id"]))["task_id"] == task["id"]
    deleted = await client.delete(f"/tasks/{task['id']}")
    assert deleted.status_code == 202
    assert (await client.get(f"/tasks/{task['id']}")).status_code == 404


async def test_bad_input_names_the_field(client: httpx.AsyncClient) -> None:
    cases = [
        ("/workers", {"system": "x"}, 422, "hostname"),
        ("/workers", {"hostname": "h", "slots": 0}, 422, "slots"),
        ("/tasks", {"type": "nosuch", "settings": {}}, 422, "type"),
        ("/tasks", {"type": "command", "settings": {"argv": []}}, 422, "settings.argv"),
        ("/tasks", {"type": "command", "settings": "{not json"}, 422, "settings"),
        ("/tasks", {"type": "command", "parser": "nosuch", "settings": {"argv": ["true"]}}, 422, "parser"),
        ("/tasks", {"type": "command", "settings": {"argv": ["true"]}, "colour": 1}, 422, "colour"),
    ]
    for path, body, status, field in cases:
        response = await client.post(path, json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["field"] == field, (body, response.text)
    assert (await client.get("/tasks/abc")).json()["field"] == "id"
    assert (await client.get("/tasks/999")).status_code == 404
    assert (await client.patch("/tasks/999", json={"priority": 1})).status_code == 404
    assert (await client.post("/tasks", content=b"{oops")).status_code == 400


async def test_a_restarted_manager_has_lost_nothing(make_manager: ManagerFactory) -> None:
    async with make_manager() as manager, httpx.AsyncClient(base_url=manager.url) as client:
        task = await submit(client, priority=4)
    async with make_manager() as manager, httpx.AsyncClient(base_url=manager.url) as client:
        again = (await client.get(f"/tasks/{task['id']}")).json()
        assert (again["status"], again["priority"]) == ("queued", 4)


async def test_a_lost_worker_s_work_is_requeued(make_manager: ManagerFactory) -> None:
    async with (
        make_manager(heartbeat_interval_s=0.1, missed_heartbeats=2) as manager,
        httpx.AsyncClient(base_url=manager.url) as client,
    ):
        lost = await register(client, "lost")
        other = await register(client, "other")
        task = await submit(client)
        assert (await pull(client, lost["id"]))["task_id"] == task["id"]
        # "lost" sends nothing more; "other" keeps asking until the work comes back to it.
        deadline = time.monotonic() + 10
        answer = await pull(client, other["id"])
        while answer["task_id"] is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            answer = await pull(client, other["id"])
        assert answer["task_id"] == task["id"]
        assert answer["work_item"]["attempt"] == 2
        assert "was lost" in answer["work_item"]["error"]
        workers = (await client.get("/workers")).json()
        assert workers["lost"]["connection"] == "offline"


async def test_healthz_and_token(make_manager: ManagerFactory) -> None:
    async with (
        make_manager(auth_token="s3cret") as manager,
        httpx.AsyncClient(base_url=manager.url) as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        refused = await client.get("/workers")
        assert refused.status_code == 401
        assert refused.json()["field"] == "Authorization"
        allowed = await client.get("/workers", headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 200


async def test_two_managers_on_one_postgresql_never_hand_one_item_twice(
    make_manager: ManagerFactory, db_url: str
) -> None:
    if not db_url.startswith("postgresql"):
        return  # SQLite is one file for one manager; the claim is the same code, tested above
    async with (
        make_manager() as first,
        make_manager() as second,
        httpx.AsyncClient(base_url=first.url, timeout=60) as a,
        httpx.AsyncClient(base_url=second.url, timeout=60) as b,
    ):
        workers = [await register(a, f"w{i}", slots=100) for i in range(8)]
        for _ in range(60):
            await submit(a)

        async def drain(client: httpx.AsyncClient, worker_id: int) -> list[int]:
            got: list[int] = []
            while True:
                answer = await client.patch(f"/workers/{worker_id}", json={"status": "available"})
                item = answer.json()["work_item"]
                if item is None or item["id"] in got:
                    return got
                got.append(item["id"])

        results = await asyncio.gather(*(drain(a if i % 2 else b, w["id"]) for i, w in enumerate(workers)))
    handed = [item for got in results for item in got]
    assert len(handed) == 60
    assert len(set(handed)) == 60  # each item to exactly one worker, across both managers


async def test_foreign_hosts_and_origins_are_refused(client: httpx.AsyncClient) -> None:
    body = {"type": "command", "settings": {"argv": ["true"]}}
    evil = await client.post("/tasks", json=body, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    assert evil.json()["field"] == "Origin"
    rebound = await client.post("/tasks", json=body, headers={"Host": "evil.example"})
    assert rebound.status_code == 403
    assert rebound.json()["field"] == "Host"
    assert (await client.get("/tasks")).json()["tasks"] == []


async def test_ids_are_never_reused(client: httpx.AsyncClient) -> None:
    await submit(client)
    newest = await submit(client)
    assert (await client.delete(f"/tasks/{newest['id']}")).status_code == 202
    after = await submit(client)
    assert after["id"] > newest["id"]
    items = (await client.get(f"/tasks/{after['id']}")).json()["work_items"]
    assert items[0]["id"] > newest["id"]


async def test_a_failed_task_hands_out_no_more_work(client: httpx.AsyncClient) -> None:
    worker = await register(client, "w", slots=5)
    settings = {"command": "render {frame}", "frame_start": 1, "frame_end": 3}
    task = await submit(client, type="frames", settings=settings, max_attempts=1)
    item = (await pull(client, worker["id"]))["work_item"]
    report = {"worker_id": worker["id"], "attempt": 1, "exit_code": 2}
    await client.post(f"/work-items/{item['id']}/finished", json=report)
    final = (await client.get(f"/tasks/{task['id']}")).json()
    assert final["status"] == "failed"
    assert sorted(i["status"] for i in final["work_items"]) == ["canceled", "canceled", "failed"]
    assert (await pull(client, worker["id"]))["task_id"] is None


async def test_registering_again_keeps_what_is_not_given(client: httpx.AsyncClient) -> None:
    await register(client, "w", tags=["gpu"], slots=4, port=5000)
    again = (await client.post("/workers", json={"hostname": "w", "system": "Linux 6.9"})).json()["w"]
    assert (again["tags"], again["slots"], again["port"], again["system"]) == (["gpu"], 4, 5000, "Linux 6.9")
