"""Two manager processes on one PostgreSQL share the registry (#17).

A registration through A is found through B within a second and B's watches hear it;
a deregistration through B reaches A; when A is SIGKILLed, what A's links kept leaves
B within the documented bound while what has a TTL stays; when A stalls (SIGSTOP) past
that bound, B drops it too, and A writes it back when it runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from herder.manager.registry_store import BEAT_S, DEAD_AFTER_S
from herder.rpc.client import connect
from tests.helpers import poll
from tests.manager.conftest import ManagerProcess

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

MATH = "/alice/prod/math/1.2.0/eu/host-1/math-1"
TIMED = "/alice/prod/math/1.2.0/eu/host-2/math-2"
URL = (
    "http://192.0.2.10:8080/"  # TEST-NET-1: an address the proxy allows, no name to resolve (a slow resolver)
)
# A SIGKILLed manager's link-held registrations leave the others within this (registry_store).
DEAD_BOUND_S = DEAD_AFTER_S + BEAT_S + 1.0


@pytest.fixture
def managers(db_url: str, tmp_path: Path) -> Iterator[tuple[ManagerProcess, ManagerProcess]]:
    a = ManagerProcess(tmp_path / "a", db_url)
    b = ManagerProcess(tmp_path / "b", db_url)
    try:
        yield a.start(), b.start()
    finally:
        a.kill()
        b.kill()


def rpc_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/rpc"


def watch_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/services/watch?query=/alice"


async def keys_on(url: str) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        answer = await client.get("/services", params={"query": "/alice"})
    return sorted(s["key"] for s in answer.json()["services"])


async def next_event(ws: Any, timeout_s: float) -> tuple[str, str]:
    event = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    return event["event"], event["service"]["key"]


async def test_a_registration_through_a_is_found_and_watched_through_b_and_deregistered_back(
    managers: tuple[ManagerProcess, ManagerProcess],
) -> None:
    a, b = managers
    async with (
        websockets.connect(watch_url(b.url)) as on_b,
        websockets.connect(watch_url(a.url)) as on_a,
        connect(rpc_url(a.url)) as through_a,
        connect(rpc_url(b.url)) as through_b,
    ):
        started = time.monotonic()
        await through_a.call("register_service", MATH, URL, {"zone": "a"}, 0)
        assert await next_event(on_b, 1.0) == ("registered", MATH)
        await poll(lambda: _has(b.url, MATH), timeout_s=1.0)
        assert time.monotonic() - started < 1.0
        assert [s["key"] for s in await through_b.call("find_services", "/alice/prod")] == [MATH]
        assert await next_event(on_a, 1.0) == ("registered", MATH)

        await through_b.call("deregister_service", "math-1")
        assert await next_event(on_a, 1.0) == ("deregistered", MATH)
        assert await keys_on(a.url) == []
        assert await next_event(on_b, 1.0) == ("deregistered", MATH)


async def test_renewals_through_one_manager_keep_a_service_alive_on_the_other(
    managers: tuple[ManagerProcess, ManagerProcess],
) -> None:
    a, b = managers
    ttl_s, heartbeat_s = 3.0, 0.5  # a heartbeat a sixth of the TTL, as services are told to
    async with connect(rpc_url(a.url)) as through_a:
        await through_a.call("register_service", TIMED, URL, {}, ttl_s)
        await poll(lambda: _has(b.url, TIMED), timeout_s=1.0)
        deadline = time.monotonic() + 2.5 * ttl_s  # past two TTLs: alive only by renewals
        while time.monotonic() < deadline:
            await through_a.call("renew_service", "math-2", ttl_s)
            assert await keys_on(b.url) == [TIMED]
            await asyncio.sleep(heartbeat_s)  # the service's heartbeat interval
    await poll(lambda: _gone(b.url, TIMED), timeout_s=ttl_s + 5.0)  # then it runs out on B too


async def test_a_sigkilled_managers_link_held_registrations_leave_the_other_within_the_bound(
    managers: tuple[ManagerProcess, ManagerProcess],
) -> None:
    a, b = managers
    peer_cm = connect(rpc_url(a.url))
    through_a = await peer_cm.__aenter__()
    try:
        await through_a.call("register_service", MATH, URL, {}, 0)
        await through_a.call("register_service", TIMED, URL, {}, 60)
        await poll(lambda: _has(b.url, MATH), timeout_s=1.0)
        async with websockets.connect(watch_url(b.url)) as on_b:
            a.kill()
            killed = time.monotonic()
            assert await next_event(on_b, DEAD_BOUND_S) == ("deregistered", MATH)
            assert time.monotonic() - killed < DEAD_BOUND_S
        assert await keys_on(b.url) == [TIMED]  # a TTL keeps it, whoever died
    finally:
        a.kill()
        with contextlib.suppress(Exception):  # its manager is gone: the link is broken
            await peer_cm.__aexit__(None, None, None)


async def _has(url: str, key: str) -> bool:
    return key in await keys_on(url)


async def _gone(url: str, key: str) -> bool:
    return key not in await keys_on(url)


async def test_a_stalled_manager_loses_its_links_registrations_then_writes_them_back(
    managers: tuple[ManagerProcess, ManagerProcess],
) -> None:
    """SIGSTOP: A's pid lives on but A stops beating; B takes it for dead, A comes back."""
    a, b = managers
    assert a.proc is not None
    async with connect(rpc_url(a.url)) as through_a:
        await through_a.call("register_service", MATH, URL, {}, 0)
        await poll(lambda: _has(b.url, MATH), timeout_s=1.0)
        async with websockets.connect(watch_url(b.url)) as on_b:
            os.kill(a.proc.pid, signal.SIGSTOP)
            try:
                stopped = time.monotonic()
                assert await next_event(on_b, DEAD_BOUND_S) == ("deregistered", MATH)
                assert time.monotonic() - stopped > DEAD_AFTER_S - 1.0  # by the heartbeat's bound
            finally:
                os.kill(a.proc.pid, signal.SIGCONT)
            # A's next beat finds its record gone: it joins again with what its link keeps.
            assert await next_event(on_b, 5.0) == ("registered", MATH)
        assert [s["key"] for s in await through_a.call("find_services", "/alice")] == [MATH]
