"""The registry in the database (#17): a restart keeps what has a TTL, expiry runs once.

On both databases with in-process managers; the cross-manager tests with two manager
processes are in ``test_registry_managers.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from herder.manager.server import Manager
from herder.rpc.client import connect
from tests.manager.conftest import ManagerFactory, ManagerProcess

KEPT = "/alice/prod/math/1.2.0/eu/host-1/kept"
LINKED = "/alice/prod/math/1.2.0/eu/host-1/linked"
URL = "http://svc.invalid:8080/"  # never resolves: the proxy's registration check lets it be


def rpc_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/rpc"


async def found(url: str, query: str = "/alice") -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        answer = await client.get("/services", params={"query": query})
    assert answer.status_code == 200, answer.text
    return sorted(s["key"] for s in answer.json()["services"])


async def test_a_ttl_registration_survives_a_restart_and_a_link_held_one_does_not(
    make_manager: ManagerFactory,
) -> None:
    async with make_manager() as manager, connect(rpc_url(manager.url)) as peer:
        await peer.call("register_service", KEPT, URL, {"zone": "a"}, 60)
        await peer.call("register_service", LINKED, URL, {}, 0)
        await peer.call("renew_service", "kept", 120)
        assert await found(manager.url) == [KEPT, LINKED]
    async with make_manager() as again:
        assert await found(again.url) == [KEPT]  # at once: read before serving
        async with httpx.AsyncClient(base_url=again.url) as client:
            (doc,) = (await client.get("/services", params={"query": "/alice"})).json()["services"]
        assert doc["metadata"] == {"zone": "a"}
        assert doc["expires_at"] - doc["registered_at"] >= 119  # the renewal was stored


async def test_a_killed_managers_link_held_registrations_are_gone_when_it_starts_again(
    db_url: str, tmp_path: Path
) -> None:
    first = ManagerProcess(tmp_path / "m", db_url).start()
    try:
        async with connect(rpc_url(first.url)) as peer:
            await peer.call("register_service", KEPT, URL, {}, 60)
            await peer.call("register_service", LINKED, URL, {}, 0)
            first.kill()  # SIGKILL: it never withdrew its link's registration
    finally:
        first.kill()
    second = ManagerProcess(tmp_path / "m", db_url).start()
    try:
        assert await found(second.url) == [KEPT]
    finally:
        second.kill()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_ttl_runs_out_once_and_every_managers_watch_hears_it(
    make_manager: ManagerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="herder.manager.services")
    async with (
        make_manager(data_dir=tmp_path / "a") as a,
        make_manager(data_dir=tmp_path / "b") as b,
        watching(a) as on_a,
        watching(b) as on_b,
        connect(rpc_url(a.url)) as peer,
    ):
        await peer.call("register_service", KEPT, URL, {}, 1)
        for ws in (on_a, on_b):
            assert await next_event(ws) == ("registered", KEPT)
        for ws in (on_a, on_b):
            assert await next_event(ws) == ("deregistered", KEPT)
        assert await found(a.url) == await found(b.url) == []
    dropped = [r for r in caplog.records if "its TTL ran out" in r.getMessage()]
    assert len(dropped) == 1, [r.getMessage() for r in dropped]


def watching(manager: Manager) -> Any:
    return websockets.connect(manager.url.replace("http://", "ws://") + "/services/watch?query=/alice")


async def next_event(ws: Any) -> tuple[str, str]:
    event = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return event["event"], event["service"]["key"]
