"""The agent's ``GET /metrics`` (#16), parsed by Prometheus's own text parser.

A real agent in this process, real processes and a real pool instance: each test does
something, scrapes, and checks that the figures follow (processes running, a crash
counted once, a pool request in the latency histogram, an RPC call counted, HTTP
requests by route template with the label set bounded, 401 without a token).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from herder.agent import Agent
from herder.rpc import RemoteError, connect
from tests.conftest import AgentFactory
from tests.helpers import poll, wait_http

POOL_APP = str(Path(__file__).parent / "apps" / "pool_app.py")

Samples = list[tuple[str, dict[str, str], float]]


async def scrape(client: httpx.AsyncClient, **request: Any) -> Samples:
    """Every sample of one scrape: (sample name, labels, value)."""
    response = await client.get("/metrics", **request)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the one sample ``name`` whose labels include ``labels`` (None: absent)."""
    found = [v for n, got, v in samples if n == name and labels.items() <= got.items()]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else None


async def create(client: httpx.AsyncClient, node: str, command: str) -> dict[str, Any]:
    response = await client.post("/create-process", json={"app": "m", "node": node, "command": command})
    assert response.status_code == 201, response.text
    doc: dict[str, Any] = response.json()
    return doc


async def test_processes_by_state_restarts_and_figures(client: httpx.AsyncClient, tmp_path: Path) -> None:
    for node in ("a.0", "b.0"):
        doc = await create(client, node, "exec sleep 100")
        # Running, and sampled once it runs its program: the figures are read at most once a
        # second, and a read in the instant of the exec finds no memory yet.
        await wait_http(
            client, doc["status"], lambda d: d["state"] == "running" and (d["rss_bytes"] or 0) > 0
        )
    samples = await scrape(client)
    assert value(samples, "herder_processes", state="running") == 2
    assert value(samples, "herder_processes", state="backoff") == 0
    assert value(samples, "herder_process_state", slug="m.a.0", state="running") == 1
    assert value(samples, "herder_process_state", slug="m.a.0", state="stopped") == 0
    assert value(samples, "herder_process_restarts_total", slug="m.a.0") == 0
    rss = value(samples, "herder_process_resident_memory_bytes", slug="m.b.0")
    assert rss is not None
    assert rss > 0
    uptime = value(samples, "herder_process_uptime_seconds", slug="m.b.0")
    assert uptime is not None
    assert uptime >= 0
    assert value(samples, "herder_process_cpu_percent", slug="m.b.0") is not None

    marker = tmp_path / "crashed-once"
    crash_once = f"test -e {marker} || {{ touch {marker}; exit 3; }}; exec sleep 100"
    doc = await create(client, "c.0", crash_once)
    await wait_http(client, doc["status"], lambda d: d["state"] == "running" and d["restarts"] == 1)
    samples = await scrape(client)
    assert value(samples, "herder_process_restarts_total", slug="m.c.0") == 1
    assert value(samples, "herder_processes", state="running") == 3

    assert (await client.post("/delete-process/m.a.0")).status_code == 200
    samples = await scrape(client)
    assert value(samples, "herder_process_state", slug="m.a.0", state="running") is None  # gone, not 0


async def test_a_pool_request_moves_instances_latency_and_cold_starts(client: httpx.AsyncClient) -> None:
    body = {"name": "web", "command": [sys.executable, POOL_APP, "--port", "{port}"], "listen": "127.0.0.1:0"}
    created = await client.post("/pools", json=body)
    assert created.status_code == 201, created.text
    pool = created.json()
    samples = await scrape(client)
    assert value(samples, "herder_pool_upstream_latency_seconds_count", pool="web") == 0
    assert value(samples, "herder_pool_instances", pool="web", state="ready") == 0

    async with httpx.AsyncClient(base_url=pool["url"], timeout=30.0) as through:
        assert (await through.get("/pid")).status_code == 200
        samples = await scrape(client)
        assert value(samples, "herder_pool_upstream_latency_seconds_count", pool="web") == 1
        assert value(samples, "herder_pool_upstream_latency_seconds_bucket", pool="web", le="+Inf") == 1
        latency_sum = value(samples, "herder_pool_upstream_latency_seconds_sum", pool="web")
        assert latency_sum is not None
        assert 0 < latency_sum < 30
        assert value(samples, "herder_pool_cold_starts_total", pool="web") == 1
        assert value(samples, "herder_pool_instances", pool="web", state="ready") == 1
        assert value(samples, "herder_pool_requests_in_flight", pool="web") == 0

        # A slow request is in flight while it lasts, and lands in a bucket above 0.25 s.
        pending = asyncio.ensure_future(through.get("/slow", params={"s": "0.4"}))

        async def in_flight() -> bool:
            return value(await scrape(client), "herder_pool_requests_in_flight", pool="web") == 1

        await poll(in_flight)
        assert (await pending).status_code == 200
    samples = await scrape(client)
    assert value(samples, "herder_pool_requests_in_flight", pool="web") == 0
    assert value(samples, "herder_pool_upstream_latency_seconds_count", pool="web") == 2
    assert value(samples, "herder_pool_upstream_latency_seconds_bucket", pool="web", le="0.25") == 1
    assert value(samples, "herder_pool_upstream_latency_seconds_bucket", pool="web", le="0.5") == 2


async def test_rpc_calls_by_method_and_outcome(agent: Agent, client: httpx.AsyncClient) -> None:
    async with connect(agent.rpc_url) as peer:
        assert await peer.call("ping", target="meta") == "pong"
        await peer.call("list_sessions", target="meta")
        with pytest.raises(RemoteError):
            await peer.call("no_such_method_1")
        with pytest.raises(RemoteError):
            await peer.call("no_such_method_2")
    samples = await scrape(client)
    assert value(samples, "herder_rpc_calls_total", method="meta.ping", outcome="ok") == 1
    assert value(samples, "herder_rpc_calls_total", method="meta.list_sessions", outcome="ok") == 1
    # Made-up names all count as one series: the label set is what the agent serves.
    assert value(samples, "herder_rpc_calls_total", method="unknown", outcome="unknown_method") == 2
    assert value(samples, "herder_rpc_call_duration_seconds_count", method="meta.ping") == 1
    assert not [labels for name, labels, _ in samples if "no_such_method" in str(labels)]


async def test_http_requests_by_route_template_with_bounded_labels(client: httpx.AsyncClient) -> None:
    for n in range(40):  # a hostile client's made-up paths and slugs
        await client.get(f"/made-up/{n}")
        await client.get(f"/process-status/nobody-{n}")
    await client.request("PROPFIND", "/list-processes")
    samples = await scrape(client)
    requests = [(labels, v) for name, labels, v in samples if name == "herder_http_requests_total"]
    assert value(samples, "herder_http_requests_total", method="GET", route="unmatched", status="404") == 40
    assert value(samples, "herder_http_requests_total", route="/process-status/{slug}", status="404") == 40
    assert value(samples, "herder_http_requests_total", method="other", route="/list-processes") == 1
    assert not [
        labels for labels, _ in requests if "nobody" in labels["route"] or "made-up" in labels["route"]
    ]
    assert len(requests) <= 3  # the two templates, PROPFIND: no more, whatever the paths were
    samples = await scrape(client)  # the first scrape is counted by the next one
    assert value(samples, "herder_http_requests_total", method="GET", route="/metrics", status="200") == 1


async def test_metrics_need_the_token_when_auth_is_on(make_agent: AgentFactory) -> None:
    async with (
        make_agent(auth_token="s3cret-metrics-token") as agent,
        httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client,
    ):
        refused = await client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"] == "unauthorized"
        samples = await scrape(client, headers={"Authorization": "Bearer s3cret-metrics-token"})
    # The refusal happened before any route matched: counted, and not under the path.
    assert value(samples, "herder_http_requests_total", route="unmatched", status="401") == 1
