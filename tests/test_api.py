"""The REST API's documents and status codes (the seed's shapes plus herder's fields)."""

from __future__ import annotations

import httpx

from herder import __version__
from herder.agent import Agent
from tests.helpers import wait_http

SEED_STATUS_FIELDS = {"app", "node", "slug", "attach", "status", "delete", "details"}
HERDER_STATUS_FIELDS = {"state", "pid", "restarts", "exit_code", "started_at", "error"}


async def test_index_links(agent: Agent, client: httpx.AsyncClient) -> None:
    index = (await client.get("/")).json()
    assert index["create"] == f"{agent.url}/create-process"
    assert index["list"] == f"{agent.url}/list-processes"
    assert index["info"] == f"{agent.url}/info"


async def test_status_document_fields(agent: Agent, client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/create-process",
        json={"app": "api", "node": "web.0", "command": "exec sleep 100", "env": {"A": "1"}},
    )
    assert created.status_code == 201
    doc = created.json()
    assert doc.keys() >= SEED_STATUS_FIELDS | HERDER_STATUS_FIELDS
    assert doc["slug"] == "api.web.0"
    assert doc["details"] == doc["status"] == f"{agent.url}/process-status/api.web.0"
    assert doc["attach"] == f"ws://{agent.url.removeprefix('http://')}/attach-console/api.web.0"
    assert doc["delete"] == f"{agent.url}/delete-process/api.web.0"
    assert doc["env"] == {"A": "1"}
    assert doc["restart"] == "always"
    running = await wait_http(client, doc["status"], lambda d: d["state"] == "running")
    assert running["pid"] > 0
    assert running["restarts"] == 0
    assert running["exit_code"] is None
    assert isinstance(running["started_at"], float)  # Unix seconds (UTC), as every herder time
    assert running["error"] is None
    listing = (await client.get("/list-processes")).json()
    assert [p["slug"] for p in listing["processes"]] == ["api.web.0"]


async def test_duplicate_slug_is_409(client: httpx.AsyncClient) -> None:
    body = {"app": "api", "node": "dup.0", "command": ["sleep", "100"]}
    assert (await client.post("/create-process", json=body)).status_code == 201
    again = await client.post("/create-process", json=body)
    assert again.status_code == 409
    assert again.json() == {
        "error": "conflict",
        "message": "a process with slug 'api.dup.0' exists already",
        "field": "node",
    }


async def test_unknown_slug_is_404_everywhere(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/process-status/no.such"),
        await client.post("/delete-process/no.such", content="{}"),
    ):
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
        assert response.json()["field"] == "slug"


async def test_delete_body_rules(client: httpx.AsyncClient) -> None:
    body = {"app": "api", "node": "del.0", "command": ["sleep", "100"]}
    assert (await client.post("/create-process", json=body)).status_code == 201
    bad_json = await client.post("/delete-process/api.del.0", content="{nope")
    assert bad_json.status_code == 400
    assert bad_json.json()["error"] == "invalid_json"
    unknown = await client.post("/delete-process/api.del.0", json={"force": True})
    assert unknown.status_code == 422
    assert unknown.json()["field"] == "force"
    # An empty body is accepted too (curl -X POST sends none).
    gone = await client.post("/delete-process/api.del.0")
    assert gone.status_code == 200
    assert gone.json()["state"] == "exited"


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong = await client.get("/create-process")
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"


async def test_info(client: httpx.AsyncClient) -> None:
    info = (await client.get("/info")).json()
    assert info["version"] == __version__
    assert info["cpus"] >= 1
    assert len(info["load_average"]) == 3
    for key in ("cpu_percent", "memory_percent", "disk_percent"):
        assert 0 <= info[key] <= 100
    assert info["uptime_s"] >= 0
    assert info["hostname"]
    assert info["system"] == "Linux"
    assert info["architecture"]


async def test_openapi_is_served(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "/create-process" in spec["paths"]
    assert "CreateRequest" in spec["components"]["schemas"]


async def test_cross_field_errors_name_the_field(client: httpx.AsyncClient) -> None:
    missing = await client.post("/create-process", json={"app": "a", "node": "n", "source_url": "file:///x"})
    assert missing.status_code == 422
    assert missing.json()["field"] == "process_type"
    both = await client.post(
        "/create-process",
        json={"app": "a", "node": "n", "command": "true", "source_url": "file:///x", "process_type": "web"},
    )
    assert both.status_code == 422
    assert both.json()["field"] == "command"


async def test_backoff_status_says_why(agent: Agent, client: httpx.AsyncClient) -> None:
    created = await client.post("/create-process", json={"app": "a", "node": "crash.0", "command": "exit 4"})
    doc = await wait_http(client, created.json()["details"], lambda d: d["state"] == "backoff")
    assert doc["error"].startswith("exited with code 4; restarting in")
