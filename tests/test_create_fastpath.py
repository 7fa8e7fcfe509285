"""``POST /create-process`` answered below FastAPI (``herder.agent.api.fastcreate``, issue 19).

The fast path's answer is compared with the route's own for the same request (the fast
path switched off, or a ``?`` that sends the request the usual way): the same status and
headers but ``date``, and bodies that are the route's rendering of the same document
(only what differs between two creates of one body differs: the pid, the times, the
figures). Every error is the route's, byte for byte: the fast path leaves what it is
not sure of to the app, or hands it a create that failed. The front door's refusals
come through it; pipelined creates keep their order; what is created runs, is counted
and is restored after a restart.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from herder.agent import Agent
from herder.agent.api.fastcreate import FastCreate
from herder.agent.models import CreateRequest
from herder.agent.router import front
from tests.conftest import AgentFactory
from tests.helpers import poll, wait_http
from tests.rawhttp import Answer, Connection

# What differs between two creates of the same body.
VARYING = ("pid", "started_at", "created_at", "uptime_s", "cpu_percent", "rss_bytes", "port", "state")


def fast_create(agent: Agent) -> FastCreate:
    """The agent's create fast path (its protocol class carries it)."""
    fast = agent._server.config.http.fast_create
    assert isinstance(fast, FastCreate)
    return fast


def post(body: bytes | dict[str, Any], *headers: str, path: str = "/create-process") -> bytes:
    """A create request: ``Content-Length`` from the body unless ``headers`` name a framing."""
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if not any(h.lower().startswith(("content-length:", "transfer-encoding:")) for h in headers):
        lines.append(f"Content-Length: {len(raw)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw


def sleeper(node: str, **more: Any) -> dict[str, Any]:
    return {"app": "fc", "node": node, "command": ["sleep", "300"], **more}


async def ask_once(agent: Agent, request: bytes, *, fast: bool) -> tuple[Answer, int]:
    """The answer to ``request`` on a new connection, the fast path on or off; and how many
    creates the fast path answered meanwhile."""
    creates = fast_create(agent)
    before = creates.answered
    creates.enabled = fast
    conn = await Connection.open(agent)
    try:
        answer = await conn.ask(request)
    finally:
        conn.close()
        creates.enabled = True
    return answer, creates.answered - before


async def both_ways(agent: Agent, request: bytes) -> tuple[Answer, int, Answer]:
    """The answer with the fast path on (and whether it answered), then off."""
    quick, taken = await ask_once(agent, request, fast=True)
    usual, _ = await ask_once(agent, request, fast=False)
    return quick, taken, usual


def _steady(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in VARYING}


def assert_same_create(quick: Answer, usual: Answer) -> None:
    """Two answers to the same create: the same status and headers (but the body's
    length), bodies that are each ``JSONResponse``'s rendering of their document, and the
    same document but what varies between two creates."""
    assert quick[0] == usual[0] == b"HTTP/1.1 201 Created"

    def without_length(headers: list[bytes]) -> list[bytes]:
        return [h for h in headers if not h.startswith(b"content-length:")]

    assert without_length(quick[1]) == without_length(usual[1])
    for _, headers, body in (quick, usual):
        doc = json.loads(body)
        assert JSONResponse(doc).body == body
        assert f"content-length: {len(body)}".encode() in headers
        assert f"location: {doc['details']}".encode() in headers
    assert _steady(json.loads(quick[2])) == _steady(json.loads(usual[2]))


async def delete(client: httpx.AsyncClient, slug: str) -> None:
    assert (await client.post(f"/delete-process/{slug}")).status_code == 200


async def test_a_create_is_answered_as_the_route_answers(agent: Agent, client: httpx.AsyncClient) -> None:
    bodies = [
        sleeper("a.0"),
        sleeper("b.0", env={"K": "vé"}, restart="on-failure"),
        {"app": "fc", "node": "c.0", "command": "exec sleep 300", "port": False, "logs": "discard"},
    ]
    extra = [(), ("X-Request-Id: req-42", "Content-Type: application/json", "Accept: */*")]
    for body in bodies:
        for headers in extra:
            slug = f"{body['app']}.{body['node']}"
            quick, taken = await ask_once(agent, post(body, *headers), fast=True)
            assert taken == 1
            await delete(client, slug)
            usual, _ = await ask_once(agent, post(body, *headers), fast=False)
            await delete(client, slug)
            assert_same_create(quick, usual)
            # A query string takes the usual way too.
            asked, taken = await ask_once(agent, post(body, *headers, path="/create-process?"), fast=True)
            assert taken == 0
            await delete(client, slug)
            assert_same_create(quick, asked)
            if headers:
                assert b"x-request-id: req-42" in quick[1]


async def test_what_is_created_runs_and_is_the_same_process(agent: Agent, client: httpx.AsyncClient) -> None:
    conn = await Connection.open(agent)
    try:
        status, _, body = await conn.ask(post(sleeper("run.0", env={"A": "1"})))
    finally:
        conn.close()
    assert status == b"HTTP/1.1 201 Created"
    assert fast_create(agent).answered == 1
    slug = json.loads(body)["slug"]
    doc = await wait_http(client, f"/process-status/{slug}", lambda d: d["state"] == "running")
    assert doc["command"] == ["sleep", "300"]
    assert doc["env"] == {"A": "1"}
    unit = agent.runtime.supervisor.units["fc.run.0"]
    assert unit.spec.owner is None
    assert isinstance(unit.spec.created_at, float)


BAD_BODIES: list[bytes] = [
    b"{not json",
    b"[1, 2]",
    b'"a string"',
    b"null",
    b"   ",
    json.dumps({"node": "x.0", "command": "true"}).encode(),  # app missing
    json.dumps({"app": "fc", "node": "bad node", "command": "true"}).encode(),
    json.dumps({"app": "fc", "node": "x.0", "command": ""}).encode(),
    json.dumps({"app": "fc", "node": "x.0", "command": [1, 2]}).encode(),
    json.dumps({"app": "fc", "node": "x.0", "command": "true", "extra": 1}).encode(),
    json.dumps({"app": "fc", "node": "x.0", "command": "true", "env": {"1A": "x"}}).encode(),
    json.dumps({"app": "fc", "node": "x.0", "command": "true", "restart": "sometimes"}).encode(),
    json.dumps({"app": "fc", "node": "x.0", "command": "true", "limits": {"nofile": 0}}).encode(),
    json.dumps({"app": "fc", "node": "x.0"}).encode(),  # neither command nor app source
    json.dumps({"app": "fc", "node": "x.0", "command": "true", "source_url": "ftp://x/y"}).encode(),
    b'{"app": "fc", "node": "x.0", "command": "true", "ready_after_s": NaN}',
    b'{"app": "fc", "node": "x.0", "command": "true"} trailing',
    b'{"app": "fc", "node": "x.0", "command": ' + b"[" * 40 + b'"x"' + b"]" * 40 + b"}",  # too deep
    "\ufeff".encode() + json.dumps(sleeper("x.0")).encode(),  # a BOM: Python's reading takes it
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
async def test_bad_bodies_are_answered_by_the_route(
    agent: Agent, client: httpx.AsyncClient, body: bytes
) -> None:
    quick, taken = await ask_once(agent, post(body), fast=True)
    assert taken == 0
    if quick[0] == b"HTTP/1.1 201 Created":  # what only Python's reading takes: the route's create
        await delete(client, "fc.x.0")
        usual, _ = await ask_once(agent, post(body), fast=False)
        await delete(client, "fc.x.0")
        assert_same_create(quick, usual)
        return
    usual, _ = await ask_once(agent, post(body), fast=False)
    assert quick == usual
    assert quick[0].split(b" ")[1] in (b"400", b"422"), quick
    assert "field" in json.loads(quick[2])


def test_what_only_pythons_reading_takes_is_the_routes(agent: Agent) -> None:
    """A lone surrogate is JSON to Python's parser, not to pydantic's: the route decides
    (a 422 naming the field: tests/regress/test_lone_surrogates_are_a_422.py)."""
    assert fast_create(agent).read(b'{"app": "fc", "node": "x.0", "command": "\\ud800"}') is None
    assert fast_create(agent).read(json.dumps(sleeper("x.0")).encode()) is not None


async def test_other_shapes_are_answered_by_the_route(agent: Agent, client: httpx.AsyncClient) -> None:
    body = json.dumps(sleeper("shape.0")).encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    cases = [
        post(body, "Transfer-Encoding: chunked").replace(body, chunked),
        post(body, "Expect: 100-continue"),
        post(body).replace(b"HTTP/1.1", b"HTTP/1.0"),
        post(body, "Connection: close"),
        post(body, f"Content-Length: {len(body)}", f"Content-Length: {len(body)}"),
        post(b"", "Content-Length: 0"),
        post(body, path="/create-process/"),
        post(body, path="/create-process?x=1"),
        post(body).replace(b"POST", b"PUT"),
    ]
    for request in cases:
        quick, taken = await ask_once(agent, request, fast=True)
        assert taken == 0, request
        if quick[0] == b"HTTP/1.1 201 Created":
            await delete(client, "fc.shape.0")
            usual, _ = await ask_once(agent, request, fast=False)
            await delete(client, "fc.shape.0")
            assert_same_create(quick, usual)
        else:
            usual, _ = await ask_once(agent, request, fast=False)
            assert quick == usual


async def test_a_body_over_the_bound_and_one_that_is_late(make_agent: AgentFactory) -> None:
    async with make_agent(limits={"max_body_bytes": 1000, "body_timeout_s": 0.3}) as agent:
        big = json.dumps(sleeper("big.0", env={"X": "y" * 2000})).encode()
        quick, taken, usual = await both_ways(agent, post(big))
        assert (taken, quick[0]) == (0, b"HTTP/1.1 413 Request Entity Too Large")
        assert quick == usual
        # A body that never all comes: the route's 408, after the grace and its deadline.
        body = json.dumps(sleeper("late.0")).encode()
        partial = post(body)[:-10]
        quick, taken, usual = await both_ways(agent, partial)
        assert (taken, quick[0]) == (0, b"HTTP/1.1 408 Request Timeout")
        assert quick == usual


async def test_a_body_after_its_head(agent: Agent, client: httpx.AsyncClient, monkeypatch: Any) -> None:
    fast = fast_create(agent)
    body = json.dumps(sleeper("split.0")).encode()
    request = post(body)
    head, rest = request[: -len(body)], request[-len(body) :]
    conn = await Connection.open(agent)
    try:
        # The body in the next read: the fast path waits for it.
        await conn.send(head)
        status, _, _ = await conn.ask(rest)
        assert (status, fast.answered) == (b"HTTP/1.1 201 Created", 1)
        # Not all of it within the grace: handed to the app, which reads the rest.
        monkeypatch.setattr(front, "BODY_GRACE_S", 0.0)
        again = post(json.dumps(sleeper("split.1")).encode())
        await conn.send(again[:-5])
        await poll(lambda: _handed_to_app(agent))
        status, _, doc = await conn.ask(again[-5:])
        assert (status, fast.answered) == (b"HTTP/1.1 201 Created", 1)
        assert json.loads(doc)["slug"] == "fc.split.1"
    finally:
        conn.close()


def _handed_to_app(agent: Agent) -> bool:
    """Whether a connection's create is with the app, reading its body."""
    return any(
        isinstance(p.cycle, RequestResponseCycle) and p.cycle.more_body and not p.cycle.response_complete
        for p in agent._server.server_state.connections
    )


async def test_a_conflict_and_a_create_that_fails_once_started(
    agent: Agent, client: httpx.AsyncClient
) -> None:
    fast = fast_create(agent)
    conn = await Connection.open(agent)
    try:
        assert (await conn.ask(post(sleeper("one.0"))))[0] == b"HTTP/1.1 201 Created"
    finally:
        conn.close()
    # The slug exists: the route's 409.
    quick, taken, usual = await both_ways(agent, post(sleeper("one.0")))
    assert (taken, quick[0]) == (0, b"HTTP/1.1 409 Conflict")
    assert quick == usual
    # A dependency on nothing: the fast path runs the create, which fails; the route
    # answers the failure as its own (and the create is not run a second time).
    answered = fast.answered
    quick, taken, usual = await both_ways(agent, post(sleeper("two.0", depends_on=["nothing.0"])))
    assert (taken, quick[0]) == (0, b"HTTP/1.1 422 Unprocessable Entity")
    assert quick == usual
    assert fast.answered == answered
    assert "fc.two.0" not in agent.runtime.supervisor.units
    # Another client takes the slug between the body's reading and the create: the
    # route's 409, for the create the fast path ran.
    orig = fast.create

    async def another_first(scope: Any, req: CreateRequest, ticket: Any) -> bytes:
        taken = await client.post("/create-process", params={"q": "1"}, json=sleeper("three.0"))
        assert taken.status_code == 201
        return await orig(scope, req, ticket)

    fast.create = another_first  # type: ignore[method-assign]
    try:
        quick, taken = await ask_once(agent, post(sleeper("three.0")), fast=True)
    finally:
        fast.create = orig  # type: ignore[method-assign]
    assert (taken, quick[0]) == (0, b"HTTP/1.1 409 Conflict")
    usual, _ = await ask_once(agent, post(sleeper("three.0")), fast=False)
    assert quick == usual


async def test_credentials_origin_and_host(
    make_agent: AgentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_agent(auth_token="s3cret") as agent:
        fast = fast_create(agent)
        for credentials in ((), ("Authorization: Bearer wrong",)):
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="herder.auth"):
                quick, taken, usual = await both_ways(agent, post(sleeper("auth.0"), *credentials))
            assert (taken, quick[0]) == (0, b"HTTP/1.1 401 Unauthorized")
            assert quick == usual
            # Logged once per refused request: not by the fast path, then the route.
            assert len([r for r in caplog.records if r.name == "herder.auth"]) == 2
        good = "Authorization: Bearer s3cret"
        for refused in (("Origin: http://evil.example",), ("Host: evil.example",)):
            request = post(sleeper("auth.0"), good, *refused)
            if refused[0].startswith("Host"):
                request = request.replace(b"Host: 127.0.0.1\r\n", b"", 1)
            quick, taken, usual = await both_ways(agent, request)
            assert (taken, quick[0]) == (0, b"HTTP/1.1 403 Forbidden")
            assert quick == usual
        quick, taken = await ask_once(agent, post(sleeper("auth.0"), good), fast=True)
        assert (taken, quick[0]) == (1, b"HTTP/1.1 201 Created")
        assert fast.answered == 1


async def test_pipelined_creates_keep_their_order(agent: Agent, client: httpx.AsyncClient) -> None:
    fast = fast_create(agent)
    creates = [post(sleeper(f"p.{i}")) for i in range(8)]
    listing = b"GET /list-processes HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    conn = await Connection.open(agent)
    try:
        await conn.send(*creates[:4], listing, *creates[4:])
        answers = [await conn.answer() for _ in range(9)]
        # One after another on one connection: each on the fast path.
        for i in range(8, 12):
            status, _, body = await conn.ask(post(sleeper(f"p.{i}")))
            assert (status, json.loads(body)["slug"]) == (b"HTTP/1.1 201 Created", f"fc.p.{i}")
    finally:
        conn.close()
    slugs = [json.loads(a[2]).get("slug") for a in answers]
    assert slugs == [*(f"fc.p.{i}" for i in range(4)), None, *(f"fc.p.{i}" for i in range(4, 8))]
    assert [a[0] for a in answers] == [b"HTTP/1.1 201 Created"] * 4 + [b"HTTP/1.1 200 OK"] + [
        b"HTTP/1.1 201 Created"
    ] * 4
    # The listing came after the four creates before it.
    assert [p["slug"] for p in json.loads(answers[4][2])["processes"]] == [f"fc.p.{i}" for i in range(4)]
    assert fast.answered >= 5  # the first of the batch, and the four asked one at a time


async def test_counted_in_the_metrics(agent: Agent, client: httpx.AsyncClient) -> None:
    conn = await Connection.open(agent)
    try:
        for i in range(3):
            assert (await conn.ask(post(sleeper(f"m.{i}"))))[0] == b"HTTP/1.1 201 Created"
    finally:
        conn.close()
    assert fast_create(agent).answered == 3
    text = (await client.get("/metrics")).text
    line = next(ln for ln in text.splitlines() if 'route="/create-process"' in ln and 'status="201"' in ln)
    assert 'method="POST"' in line
    assert float(line.rsplit(" ", 1)[1]) == 3


async def test_created_processes_are_restored_after_a_restart(
    make_agent: AgentFactory,
) -> None:
    async with make_agent() as agent:
        conn = await Connection.open(agent)
        try:
            for i in range(3):
                assert (await conn.ask(post(sleeper(f"r.{i}"))))[0] == b"HTTP/1.1 201 Created"
        finally:
            conn.close()
        assert fast_create(agent).answered == 3
    async with make_agent() as again, httpx.AsyncClient(base_url=again.url) as client:
        for i in range(3):
            doc = await wait_http(client, f"/process-status/fc.r.{i}", lambda d: d["state"] == "running")
            assert doc["command"] == ["sleep", "300"]


JSON_ONLY_DIFFERENCES = [
    sleeper("j.0", rebuild=1),
    sleeper("j.0", ready_after_s="5"),
    sleeper("j.0", limits={"nofile": 1e3, "cpu_max": 1}),
    {**sleeper("j.0"), "command": "x\ty\u00e9\U0001f600"},
    sleeper("j.0", restart="ALWAYS"),
    sleeper("j.0", env={"A": 1}),
    sleeper("j.0", health={"type": "tcp", "interval_s": "2"}),
]


@pytest.mark.parametrize("data", JSON_ONLY_DIFFERENCES, ids=range(len(JSON_ONLY_DIFFERENCES)))
def test_the_model_reads_json_as_the_route_reads_python(data: dict[str, Any]) -> None:
    """What the fast path's reading takes, the route's takes, as the same request."""
    body = json.dumps(data).encode()
    try:
        fast = CreateRequest.model_validate_json(body)
    except ValidationError:
        with pytest.raises(ValidationError):
            CreateRequest.model_validate(json.loads(body))
        return
    assert CreateRequest.model_validate(json.loads(body)) == fast
