"""The agent does what its OpenAPI document says, and the document says what it does (#15).

What schemathesis found (``tests/test_schemathesis.py``), each pinned here: a 405 of
``/pools`` named GET alone (``POST /pools`` is in an included router); the document
admitted create requests the agent refuses (neither ``command`` nor ``source_url``, a
blank command, bad variable names, a scheme the fetcher does not serve), ``{}`` to
``/pools/{name}/scale``, and called optional bodies required. And what smartmob-agent's
clients rely on: a 201's ``Location``, the ``X-Request-Id`` echoed and sent on with the
download of the process's archive. A walk checks real answers against the document.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from aiohttp import web

from herder.agent import Agent
from tests.fixtures.apps.appkit import ArchiveServer, app_members, tar_bytes
from tests.helpers import poll, wait_http
from tests.openapi_contract import Document, Recorder, is_valid_body, served_document
from tests.regress.test_405_answers_carry_allow import methods

SLEEP = ["sleep", "30"]


@pytest.fixture
async def document(client: httpx.AsyncClient) -> Document:
    return await served_document(client)


async def test_a_405_names_the_methods_of_every_router(client: httpx.AsyncClient) -> None:
    """FastAPI keeps an included router's routes in it: Allow named the first route's only."""
    assert methods(await client.put("/pools")) == {"GET", "POST"}
    assert methods(await client.options("/pools")) == {"GET", "POST"}


@pytest.mark.parametrize(
    "body",
    [
        {"app": "a", "node": "n"},  # neither a command nor an app
        {"app": "a", "node": "n", "command": SLEEP, "source_url": "file:///x", "process_type": "web"},
        {"app": "a", "node": "n", "source_url": "file:///x"},  # an app without its process type
        {"app": "a", "node": "n", "command": "  \x1c "},  # blank, as str.strip() sees it
        {"app": "a", "node": "n", "command": ["a\x00b"]},
        {"app": "a", "node": "n", "command": SLEEP, "env": {"1BAD": "x"}},
        {"app": "a", "node": "n", "command": SLEEP, "env": {"OK": "a\x00b"}},
        {"app": "a", "node": "n", "source_url": "ftp://h/app.tgz", "process_type": "web"},
    ],
)
async def test_the_document_refuses_the_creates_the_agent_refuses(
    client: httpx.AsyncClient, document: Document, body: dict[str, Any]
) -> None:
    assert not is_valid_body(document, "CreateRequest", body)
    assert (await client.post("/create-process", json=body)).status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {"app": "a", "node": "cmd", "command": SLEEP, "source_url": None, "env": {"_X1": ""}},
        {"app": "a", "node": "app", "source_url": "FILE:///nonexistent/app.tgz", "process_type": "web"},
    ],
)
async def test_the_document_admits_the_creates_the_agent_takes(
    client: httpx.AsyncClient, document: Document, body: dict[str, Any]
) -> None:
    assert is_valid_body(document, "CreateRequest", body)
    created = await client.post("/create-process", json=body)
    assert created.status_code == 201, created.text
    assert (await client.post(created.json()["delete"])).status_code == 200  # no body: optional


async def test_scale_needs_a_bound_in_the_document_too(client: httpx.AsyncClient, document: Document) -> None:
    pool = await client.post("/pools", json={"name": "web", "command": SLEEP})
    assert pool.status_code == 201, pool.text
    for body in ({}, {"min_instances": None, "max_instances": None}):
        assert not is_valid_body(document, "ScaleRequest", body)
        assert (await client.post("/pools/web/scale", json=body)).status_code == 422
    assert is_valid_body(document, "ScaleRequest", {"max_instances": 2})
    assert (await client.post("/pools/web/scale", json={"max_instances": 2})).status_code == 200


async def test_optional_bodies_are_optional_in_the_document(
    client: httpx.AsyncClient, document: Document
) -> None:
    for path in ("/delete-process/{slug}", "/pools/{name}/drain", "/pools/{name}/delete"):
        assert document["paths"][path]["post"]["requestBody"]["required"] is False
    assert document["paths"]["/create-process"]["post"]["requestBody"]["required"] is True
    pool = await client.post("/pools", json={"name": "api", "command": SLEEP})
    assert (await client.post(pool.json()["drain"])).status_code == 200
    assert (await client.post(pool.json()["delete"])).status_code == 200


async def test_created_answers_say_where(client: httpx.AsyncClient) -> None:
    """smartmob-agent's clients follow a 201's Location to the status document."""
    created = await client.post("/create-process", json={"app": "a", "node": "n", "command": SLEEP})
    assert created.status_code == 201
    assert created.headers["location"] == created.json()["details"]
    assert (await client.get(created.headers["location"])).json()["slug"] == "a.n"
    pool = await client.post("/pools", json={"name": "web", "command": SLEEP})
    assert pool.status_code == 201
    assert pool.headers["location"] == pool.json()["details"]
    assert (await client.get(pool.headers["location"])).json()["name"] == "web"


@pytest.mark.parametrize(("path", "status"), [("/", 200), ("/process-status/a.b", 404), ("/pools", 405)])
async def test_the_request_id_is_echoed(client: httpx.AsyncClient, path: str, status: int) -> None:
    method = "PUT" if status == 405 else "GET"
    answer = await client.request(method, path, headers={"X-Request-Id": "abc-123"})
    assert (answer.status_code, answer.headers.get("x-request-id")) == (status, "abc-123")
    assert "x-request-id" not in (await client.request(method, path)).headers


class RecordingServer(ArchiveServer):
    """The archive server, keeping each request's headers (names in lower case)."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[dict[str, str]] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.headers.append({name.lower(): value for name, value in request.headers.items()})
        return await super()._handle(request)


async def test_the_request_id_goes_with_the_download(client: httpx.AsyncClient) -> None:
    """The archive's server can tell which create asked for it."""
    async with RecordingServer() as server:
        url = server.serve("/shop.tgz", tar_bytes(app_members(), "gz"))
        body = {"app": "shop", "node": "web.0", "source_url": url, "process_type": "web"}
        created = await client.post("/create-process", json=body, headers={"X-Request-Id": "deploy-42"})
        assert created.status_code == 201, created.text
        await poll(lambda: server.hits["/shop.tgz"] >= 1)
        assert server.headers[0].get("x-request-id") == "deploy-42"
        await wait_http(client, created.json()["details"], lambda d: d["state"] == "running")
        plain = {**body, "node": "web.1", "source_url": server.url("/shop.tgz?again")}
        await client.post("/create-process", json=plain)
        await poll(lambda: server.hits["/shop.tgz"] >= 2)
        assert "x-request-id" not in server.headers[1]


async def test_a_walk_through_the_api_answers_as_documented(
    agent: Agent, client: httpx.AsyncClient, document: Document
) -> None:
    call = Recorder(client)
    await call("GET", "/")
    created = await call("POST", "/create-process", json={"app": "a", "node": "n", "command": SLEEP})
    await wait_http(client, created.json()["details"], lambda d: d["state"] == "running")
    await call("POST", "/create-process", json={"app": "a", "node": "n", "command": SLEEP})  # 409
    for path in ("/list-processes", "/process-status/a.n", "/info", "/healthz", "/build-log/a.n"):
        await call("GET", path)
    await call("POST", "/pools", json={"name": "web", "command": SLEEP})
    for path in ("/pools", "/pools/web", "/pools/nope"):
        await call("GET", path)
    await call("POST", "/pools/web/scale", json={"max_instances": 3})
    await call("POST", "/pools/web/drain", json={"timeout": 1})
    await call("POST", "/pools/web/resume")
    await call("POST", "/pools/web/delete")
    await call("POST", "/delete-process/a.n", json={})
    call.check(document)
