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

import asyncpg
import httpx
import pytest
import websockets

from herder.manager.registry_store import LISTENER_NAME
from herder.manager.server import Manager
from herder.rpc.client import connect
from tests.helpers import poll
from tests.manager.conftest import POSTGRES_URL, ManagerFactory, ManagerProcess

KEPT = "/alice/prod/math/1.2.0/eu/host-1/kept"
LINKED = "/alice/prod/math/1.2.0/eu/host-1/linked"
URL = (
    "http://192.0.2.10:8080/"  # TEST-NET-1: an address the proxy allows, no name to resolve (a slow resolver)
)


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


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_manager_whose_listen_connection_was_lost_reads_what_it_missed(
    make_manager: ManagerFactory, db_url: str, tmp_path: Path
) -> None:
    """B's LISTEN connection is cut and cannot come back while A changes the registry."""
    gone = "/alice/prod/math/1.2.0/eu/host-1/gone"
    async with (
        make_manager(data_dir=tmp_path / "a") as a,
        make_manager(data_dir=tmp_path / "b") as b,
        connect(rpc_url(a.url)) as peer,
    ):
        await peer.call("register_service", gone, URL, {}, 60)
        await poll(lambda: _has(b, gone), timeout_s=5)
        assert b.runtime is not None
        assert b.runtime.services.store is not None
        store = b.runtime.services.store
        assert POSTGRES_URL is not None
        admin = await asyncpg.connect(POSTGRES_URL)  # another database: ours will refuse connections
        database = db_url.rsplit("/", 1)[1]
        try:
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')  # no one comes back
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                f"{LISTENER_NAME}-{store.manager_id}",
            )
            await poll(lambda: not store.statistics().listening, timeout_s=5)
            reloads = store.statistics().reloads
            async with watching(b) as on_b:
                await peer.call("register_service", KEPT, URL, {}, 60)  # NOTIFYs B cannot hear
                await peer.call("deregister_service", "gone")
                assert await found(a.url) == [KEPT]
                assert await found(b.url) == [gone]  # missed, for now
                await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
                assert {await next_event(on_b), await next_event(on_b)} == {
                    ("registered", KEPT),
                    ("deregistered", gone),
                }
            assert await found(b.url) == [KEPT]
            assert store.statistics().reloads == reloads + 1
        finally:
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            await admin.close()


def _has(manager: Manager, key: str) -> bool:
    return (
        manager.runtime is not None and manager.runtime.services.index.get(key.rsplit("/", 1)[1]) is not None
    )
