"""The manager does what its OpenAPI document says, and the document says all of it (#15).

What schemathesis found (``tests/test_schemathesis.py``), each pinned here: a PATCH of
``/tasks/counts`` answered as a task named "counts"; a PATCH body of nulls the document
admitted; numbers past the databases' INTEGER (or digits ``int`` refuses) reached the
database. And what smartmob-agent's clients rely on: a 201's ``Location``, the
``X-Request-Id`` echoed. A walk through the API checks each real answer against the
document the manager serves.
"""

from __future__ import annotations

import re

import httpx
import pytest

from herder.manager.answers import TaskStatusName
from herder.manager.models import MAX_ID
from herder.manager.states import TaskStatus
from tests.openapi_contract import Document, Recorder, conforms, is_valid_body, served_document
from tests.regress.test_405_answers_carry_allow import methods


@pytest.fixture
async def document(client: httpx.AsyncClient) -> Document:
    return await served_document(client)


async def test_every_path_parameter_is_declared_and_every_json_answer_has_a_schema(
    document: Document,
) -> None:
    for path, item in document["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "path"}
            assert declared == names, f"{method.upper()} {path} declares {declared}, not {names}"
            for status, answer in operation["responses"].items():
                for media, content in answer.get("content", {}).items():
                    assert content.get("schema"), f"{method.upper()} {path} {status} {media}: no schema"


async def test_task_counts_takes_get_alone(client: httpx.AsyncClient) -> None:
    """It was a PATCH (and DELETE) of a task whose id is "counts": 422 naming id."""
    assert methods(await client.patch("/tasks/counts", json={"priority": 1})) == {"GET"}
    assert methods(await client.delete("/tasks/counts")) == {"GET"}
    answer = await client.get("/tasks/not-a-number")  # any other segment is still a task id
    assert (answer.status_code, answer.json()["field"]) == (422, "id")


@pytest.mark.parametrize("segment", [str(MAX_ID + 1), "99999999999999999999", "%C2%B2", "%D9%A1"])
async def test_an_id_the_database_cannot_hold_is_a_422(client: httpx.AsyncClient, segment: str) -> None:
    """Past INTEGER (PostgreSQL: 32 bits), and digits that are not ASCII ('²' made int() fail)."""
    for answer in (
        await client.get(f"/tasks/{segment}"),
        await client.get(f"/workers/{segment}"),
        await client.get(f"/tasks?before={segment}"),
    ):
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] in ("id", "before")


async def test_numbers_kept_in_the_database_are_bounded(client: httpx.AsyncClient) -> None:
    big = MAX_ID + 1
    report = {"worker_id": 1, "attempt": 1, "exit_code": big}
    answer = await client.post("/work-items/1/finished", json=report)
    assert (answer.status_code, answer.json()["field"]) == (422, "exit_code")
    task = {"type": "command", "settings": {"argv": ["true"]}, "task_id": big}
    answer = await client.post("/tasks", json=task)
    assert (answer.status_code, answer.json()["field"]) == (422, "task_id")


async def test_an_unknown_status_filter_is_a_422(client: httpx.AsyncClient) -> None:
    """It listed nothing, as if no task had that status."""
    answer = await client.get("/tasks", params={"status": "runing"})
    assert (answer.status_code, answer.json()["field"]) == (422, "status")
    assert (await client.get("/tasks", params={"status": "queued"})).status_code == 200


async def test_the_document_refuses_what_the_server_refuses(
    client: httpx.AsyncClient, document: Document
) -> None:
    for body in ({}, {"priority": None, "status": None}):
        assert not is_valid_body(document, "TaskUpdate", body)
        assert (await client.patch("/tasks/1", json=body)).status_code == 422
    assert is_valid_body(document, "TaskUpdate", {"status": "paused"})
    assert is_valid_body(document, "TaskUpdate", {"priority": 3, "status": None})
    query = next(p for p in document["paths"]["/services"]["get"]["parameters"] if p["name"] == "query")
    assert query["required"]
    assert query["schema"]["pattern"] == "^/"


def test_the_documents_statuses_are_the_managers() -> None:
    assert set(TaskStatusName.__args__) == {s.value for s in TaskStatus}


async def test_created_answers_say_where(client: httpx.AsyncClient, document: Document) -> None:
    """smartmob-agent's clients follow a 201's Location to the status document."""
    created = await client.post("/workers", json={"hostname": "render-1", "system": "Linux"})
    assert created.status_code == 201
    conforms(document, created)
    worker = await client.get(created.headers["location"])
    assert worker.json()["id"] == created.json()["render-1"]["id"]
    again = await client.post("/workers", json={"hostname": "render-1"})
    assert again.status_code == 200
    assert "location" not in again.headers
    submitted = await client.post("/tasks", json={"type": "command", "settings": {"argv": ["true"]}})
    assert submitted.status_code == 202
    task = await client.get(submitted.headers["location"])
    assert task.json()["id"] == submitted.json()["id"]
    assert submitted.headers["location"].startswith(str(client.base_url).rstrip("/") + "/tasks/")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/tasks", 200), ("POST", "/workers", 201), ("GET", "/tasks/9", 404), ("GET", "/tasks/x", 422)],
)
async def test_the_request_id_is_echoed(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    body = {"hostname": "h1"} if method == "POST" else None
    answer = await client.request(method, path, json=body, headers={"X-Request-Id": "req-7f3a"})
    assert (answer.status_code, answer.headers.get("x-request-id")) == (status, "req-7f3a")
    assert "x-request-id" not in (await client.request(method, path, json=body)).headers


@pytest.mark.parametrize("value", ["", "has space", "x" * 201, "caf\u00e9"])
async def test_an_unusable_request_id_is_not_echoed(client: httpx.AsyncClient, value: str) -> None:
    answer = await client.get("/tasks", headers=[("X-Request-Id", value.encode())])
    assert answer.status_code == 200
    assert "x-request-id" not in answer.headers


async def test_a_walk_through_the_api_answers_as_documented(
    client: httpx.AsyncClient, document: Document
) -> None:
    """Real documents (a worker with work, a task with items, reports) match their schemas."""
    call = Recorder(client)
    worker = (await call("POST", "/workers", json={"hostname": "w1", "tags": ["gpu"], "slots": 2})).json()
    worker_id = worker["w1"]["id"]
    settings = {"command": ["echo", "{frame}"], "frame_start": 1, "frame_end": 2}
    body = {"type": "frames", "parser": "frames", "settings": settings, "tags": ["gpu"], "task_id": 7}
    submitted = await call("POST", "/tasks", json=body)
    assert submitted.status_code == 202, submitted.text
    task = submitted.json()
    pulled = (await call("PATCH", f"/workers/{worker_id}", json={"status": "available"})).json()
    item = pulled["work_item"]
    assert item is not None, pulled
    fence = {"worker_id": worker_id, "attempt": item["attempt"]}
    await call("POST", f"/work-items/{item['id']}/started", json=fence)
    await call("POST", f"/work-items/{item['id']}/progress", json={**fence, "frame": 1, "percent": 50})
    await call("POST", f"/work-items/{item['id']}/finished", json={**fence, "exit_code": 0})
    stale = await call(
        "POST", f"/work-items/{item['id']}/finished", json={**fence, "attempt": 99, "exit_code": 0}
    )
    assert stale.status_code == 409
    for path in ("/workers", f"/workers/{worker_id}", "/tasks", "/tasks/counts", f"/tasks/{task['id']}"):
        await call("GET", path)
    await call("GET", f"/tasks/{task['id']}/log")
    await call("PATCH", f"/tasks/{task['id']}", json={"priority": 5})
    await call("PATCH", f"/tasks/{task['id']}", json={"status": "canceled"})
    await call("PATCH", f"/tasks/{task['id']}", json={"status": "paused"})  # ended: 409
    await call("DELETE", f"/tasks/{task['id']}")
    await call("GET", "/services", params={"query": "/alice"})
    await call("GET", "/proxy/nope/x")
    await call("GET", "/auth/jwks.json")  # no keys: 404
    await call("GET", "/healthz")
    every = {"interval_s": 60, "task": {"type": "command", "settings": {"argv": ["true"]}}}
    schedule = (await call("POST", "/schedules", json=every)).json()
    for path in ("/schedules", f"/schedules/{schedule['id']}"):
        await call("GET", path)
    await call("PATCH", f"/schedules/{schedule['id']}", json={"enabled": False})
    await call("DELETE", f"/schedules/{schedule['id']}")
    call.check(document)
