"""The status reads answered below FastAPI (``herder.agent.api.fastreads``, issue 19).

Each answer of the fast path is compared, byte for byte, with the route's own answer
to the same request for the same state (the fast path switched off); the front door's
refusals still come, through it; keep-alive, pipelining and other methods work as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from herder.agent import Agent
from herder.agent.api.fastreads import FastReads
from herder.certs import init
from tests.conftest import AgentFactory
from tests.helpers import wait_http
from tests.rawhttp import Connection

SLEEPERS = [{"app": "fp", "node": f"n.{i}", "command": "exec sleep 300"} for i in range(3)]
MOVING = ("uptime_s", "cpu_percent", "rss_bytes")


def fast_reads(agent: Agent) -> FastReads:
    """The agent's fast path (its protocol class carries it)."""
    fast = agent._server.config.http.fast_reads
    assert isinstance(fast, FastReads)
    return fast


def get(path: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def both_ways(agent: Agent, request: bytes) -> tuple[Any, Any]:
    """The answer to ``request`` with the fast path on, then off (and whether it was taken)."""
    fast = fast_reads(agent)
    conn = await Connection.open(agent)
    try:
        before = fast.answered
        quick = await conn.ask(request)
        taken = fast.answered - before
        fast.enabled = False
        try:
            usual = await conn.ask(request)
        finally:
            fast.enabled = True
    finally:
        conn.close()
    return (quick, taken), usual


async def create(client: httpx.AsyncClient) -> list[str]:
    slugs = []
    for body in SLEEPERS:
        created = await client.post("/create-process", json=body)
        assert created.status_code == 201, created.text
        await wait_http(client, created.json()["details"], lambda d: d["state"] == "running")
        slugs.append(created.json()["slug"])
    return slugs


async def test_answers_are_the_routes_own_byte_for_byte(agent: Agent, client: httpx.AsyncClient) -> None:
    slugs = await create(client)
    for slug in slugs:  # stopped: nothing in the documents moves between two reads
        assert (await client.post(f"/stop-process/{slug}")).status_code == 200
    requests = [
        get("/list-processes"),
        get(f"/process-status/{slugs[1]}"),
        get(f"/process-status/{slugs[0]}", "X-Request-Id: abc-123", "Accept: application/json"),
    ]
    for request in requests:
        (quick, taken), usual = await both_ways(agent, request)
        assert taken == 1
        assert quick == usual
        assert quick[0] == b"HTTP/1.1 200 OK"
    (quick, _), _ = await both_ways(agent, requests[2])
    assert b"x-request-id: abc-123" in quick[1]


async def test_running_processes_same_documents_but_the_moving_figures(
    agent: Agent, client: httpx.AsyncClient
) -> None:
    slugs = await create(client)
    for request in (get("/list-processes"), get(f"/process-status/{slugs[2]}")):
        for _ in range(2):  # the second read reuses what the first one encoded
            ((status, headers, body), taken), usual = await both_ways(agent, request)
            assert taken == 1
            assert (status, len(headers)) == (usual[0], len(usual[1]))
            quick_doc, usual_doc = json.loads(body), json.loads(usual[2])
            docs = quick_doc.get("processes", [quick_doc])
            assert all(isinstance(doc["uptime_s"], float) for doc in docs)
            assert _steady(quick_doc) == _steady(usual_doc)
            assert body.startswith(b'{"')
            assert b'": ' not in body  # compact, as JSONResponse


def _steady(doc: dict[str, Any]) -> Any:
    if "processes" in doc:
        return [_steady(p) for p in doc["processes"]]
    return {k: v for k, v in doc.items() if k not in MOVING}


async def test_a_state_change_is_seen_at_once(agent: Agent, client: httpx.AsyncClient) -> None:
    slugs = await create(client)
    conn = await Connection.open(agent)
    try:
        _, _, body = await conn.ask(get(f"/process-status/{slugs[0]}"))
        assert json.loads(body)["state"] == "running"
        assert (await client.post(f"/stop-process/{slugs[0]}")).status_code == 200
        _, _, body = await conn.ask(get(f"/process-status/{slugs[0]}"))
        assert json.loads(body)["state"] == "stopped"
    finally:
        conn.close()


async def test_unknown_slug_and_other_hosts(agent: Agent, client: httpx.AsyncClient) -> None:
    for slug in await create(client):
        assert (await client.post(f"/stop-process/{slug}")).status_code == 200
    cases = {
        get("/process-status/fp.nope"): b"HTTP/1.1 404 Not Found",
        get("/process-status/fp.n.0", "Host: evil.example").replace(
            b"Host: 127.0.0.1\r\n", b""
        ): b"HTTP/1.1 403 Forbidden",
        get("/list-processes", "Host: localhost"): b"HTTP/1.1 200 OK",  # two Hosts: FastAPI's call
    }
    for request, status in cases.items():
        (quick, taken), usual = await both_ways(agent, request)
        assert (taken, quick[0]) == (0, status), quick
        assert quick == usual
    # Another name of this host: links under the Host the client used.
    (quick, taken), usual = await both_ways(agent, get("/list-processes").replace(b"127.0.0.1", b"localhost"))
    assert taken == 1
    assert json.loads(quick[2])["processes"][0]["details"].startswith("http://localhost/")


async def test_credentials_are_checked_on_the_fast_path(
    make_agent: AgentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_agent(auth_token="s3cret") as agent:
        async with httpx.AsyncClient(
            base_url=agent.url, headers={"Authorization": "Bearer s3cret"}
        ) as client:
            slugs = await create(client)
        fast = fast_reads(agent)
        for path in ("/list-processes", f"/process-status/{slugs[0]}"):
            for credentials in ((), ("Authorization: Bearer wrong",)):
                caplog.clear()
                with caplog.at_level(logging.WARNING, logger="herder.auth"):
                    (quick, taken), usual = await both_ways(agent, get(path, *credentials))
                assert (taken, quick[0]) == (0, b"HTTP/1.1 401 Unauthorized")
                assert quick == usual
                assert any(h.lower().startswith(b"www-authenticate:") for h in quick[1])
                # Logged once per refused request: not by the fast path, then the route.
                assert len([r for r in caplog.records if r.name == "herder.auth"]) == 2
            (quick, taken), usual = await both_ways(agent, get(path, "Authorization: Bearer s3cret"))
            assert (taken, quick[0]) == (1, b"HTTP/1.1 200 OK")
        assert fast.answered > 0


async def test_keep_alive_and_pipelining_keep_the_order(agent: Agent, client: httpx.AsyncClient) -> None:
    slugs = await create(client)
    fast = fast_reads(agent)
    create_body = json.dumps({"app": "fp", "node": "late.0", "command": "exec sleep 300"}).encode()
    post = (
        b"POST /create-process HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(create_body)}\r\n\r\n".encode()
        + create_body
    )
    conn = await Connection.open(agent)
    try:
        before = fast.answered
        # A read, a create (the usual way, slower), then reads that must wait for it.
        await conn.send(get(f"/process-status/{slugs[0]}"), post, get("/list-processes"), get("/info"))
        answers = [await conn.answer() for _ in range(4)]
        assert [a[0] for a in answers] == [
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 201 Created",
            *[b"HTTP/1.1 200 OK"] * 2,
        ]
        assert json.loads(answers[0][2])["slug"] == slugs[0]
        assert json.loads(answers[1][2])["slug"] == "fp.late.0"
        assert [p["slug"] for p in json.loads(answers[2][2])["processes"]] == [*slugs, "fp.late.0"]
        assert isinstance(json.loads(answers[3][2]), dict)
        assert fast.answered - before == 1  # the list came after a request still being answered
        # Many reads in one write, all on the fast path, in order.
        before = fast.answered
        await conn.send(*(get(f"/process-status/{slugs[i % 3]}") for i in range(30)))
        for i in range(30):
            status, _, body = await conn.answer()
            assert (status, json.loads(body)["slug"]) == (b"HTTP/1.1 200 OK", slugs[i % 3])
        assert fast.answered - before == 30
    finally:
        conn.close()


async def test_other_methods_and_shapes_go_the_usual_way(agent: Agent, client: httpx.AsyncClient) -> None:
    slugs = await create(client)
    fast = fast_reads(agent)
    conn = await Connection.open(agent)
    try:
        before = fast.answered
        await conn.send(get("/list-processes", method="HEAD"))
        async with asyncio.timeout(10):
            head = await conn.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 ")
        for request in (
            get("/list-processes?x=1"),
            get("/list-processes/"),
            get(f"/process-status/{slugs[0]}/x"),
            get(f"/process-status/{slugs[0]}".replace(".", "%2E")),
            get("/process-status/"),
        ):
            await conn.send(request)
            await conn.answer()
        assert fast.answered == before
    finally:
        conn.close()
    # A body, a HTTP/1.0 request: the usual way too (and the connection closes after 1.0).
    conn = await Connection.open(agent)
    try:
        request = get("/list-processes", "Content-Length: 0").replace(b"HTTP/1.1", b"HTTP/1.0")
        status, _, _ = await conn.ask(request)
        assert status == b"HTTP/1.1 200 OK"
        assert fast.answered == before
    finally:
        conn.close()


async def test_counted_in_the_metrics(agent: Agent, client: httpx.AsyncClient) -> None:
    slugs = await create(client)
    conn = await Connection.open(agent)
    try:
        for _ in range(3):
            await conn.ask(get(f"/process-status/{slugs[0]}"))
        await conn.ask(get("/list-processes"))
    finally:
        conn.close()
    text = (await client.get("/metrics")).text
    status_line = next(
        ln for ln in text.splitlines() if 'route="/process-status/{slug}"' in ln and 'status="200"' in ln
    )
    assert float(status_line.rsplit(" ", 1)[1]) >= 3


async def test_over_tls_links_are_https(make_agent: AgentFactory, tmp_path: Path) -> None:
    certs = tmp_path / "tls"
    init(certs, [])
    tls = {"cert": certs / "server.crt", "key": certs / "server.key"}
    trust = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    async with make_agent(tls=tls) as agent, httpx.AsyncClient(base_url=agent.url, verify=trust) as client:
        assert agent.url.startswith("https://")
        slugs = await create(client)
        fast = fast_reads(agent)
        before = fast.answered
        status = (await client.get(f"/process-status/{slugs[0]}")).json()
        listing = (await client.get("/list-processes")).json()["processes"]
        assert fast.answered - before == 2
        assert status["details"] == f"{agent.url}/process-status/{slugs[0]}"
        assert status["attach"].startswith("wss://")
        assert [p["slug"] for p in listing] == slugs
