"""A pool counts its cold starts (issue 16): instances started because requests waited
with none free, not the minimum it keeps ready. A real agent, real instances of
``tests/apps/pool_app.py``."""

from __future__ import annotations

import asyncio

import httpx

from tests.helpers import wait_http
from tests.test_pools import create_pool, ready


async def test_the_minimum_is_no_cold_start_and_a_request_on_an_empty_pool_is(
    client: httpx.AsyncClient,
) -> None:
    kept = await create_pool(client, name="kept", min_instances=1)
    kept = await wait_http(client, kept["details"], lambda d: len(ready(d)) == 1)
    assert kept["cold_starts"] == 0
    async with httpx.AsyncClient(base_url=kept["url"], timeout=30.0) as through:
        assert (await through.get("/pid")).status_code == 200
    assert (await client.get(kept["details"])).json()["cold_starts"] == 0

    empty = await create_pool(client, name="empty")
    assert empty["cold_starts"] == 0
    async with httpx.AsyncClient(base_url=empty["url"], timeout=30.0) as through:
        assert (await through.get("/pid")).status_code == 200
        assert (await client.get(empty["details"])).json()["cold_starts"] == 1
        assert (await through.get("/pid")).status_code == 200  # served warm
    assert (await client.get(empty["details"])).json()["cold_starts"] == 1


async def test_a_busy_pool_growing_for_a_waiting_request_counts_it(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client, min_instances=1, max_instances=2, concurrency=1)
    doc = await wait_http(client, doc["details"], lambda d: len(ready(d)) == 1)
    async with httpx.AsyncClient(base_url=doc["url"], timeout=30.0) as through:
        both = await asyncio.gather(*(through.get("/slow", params={"s": "1"}) for _ in range(2)))
    assert {r.status_code for r in both} == {200}
    assert (await client.get(doc["details"])).json()["cold_starts"] == 1
