"""The chaos suite's fleet: a fresh PostgreSQL database, a network of namespaces, the daemons.

Skipped with the reason when this host cannot build the network (not root, no ``ip
netns``) or has no PostgreSQL; under ``CI=true`` as root it must run, so a missing piece
there is a failure, never a skip. Everything is torn down in ``finally`` blocks, in the
order that leaves nothing behind: the daemons (by pid), the forwarders, the namespaces
(with whatever still runs in them), the database.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.chaos import netns
from tests.chaos.fleet import Fleet
from tests.chaos.proxy import Relay

POSTGRES_URL = os.environ.get("HERDER_TEST_POSTGRES_URL")
HEARTBEAT_S = 1.0  # the managers' heartbeat interval: the bounds below scale with it


def _must_run() -> bool:
    return os.environ.get("CI") == "true" and os.geteuid() == 0


async def _admin(statement: str) -> None:
    import asyncpg

    assert POSTGRES_URL is not None
    conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _database_cm() -> AsyncIterator[str]:
    if not POSTGRES_URL:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but HERDER_TEST_POSTGRES_URL is not set: the chaos suite must run")
        pytest.skip("HERDER_TEST_POSTGRES_URL is not set")
    name = f"herder_chaos_{secrets.token_hex(6)}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database of this test's, dropped after it: its name."""
    async with _database_cm() as name:
        yield name


def url_of(database: str, where: str | None = None) -> str:
    """The URL of ``database`` on the test server (reached at ``where``, host:port, if given)."""
    assert POSTGRES_URL is not None
    server = POSTGRES_URL.split("://", 1)[1].split("/", 1)[0]
    auth, _, address = server.rpartition("@")
    return f"postgresql://{auth + '@' if auth else ''}{where or address}/{database}"


def server_address() -> tuple[str, int]:
    """The PostgreSQL server's address (the far end of the suite's cables)."""
    assert POSTGRES_URL is not None
    hostport = POSTGRES_URL.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    host, _, port = hostport.partition(":")
    return host or "127.0.0.1", int(port or 5432)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """Three managers and six agents on a database of their own, in namespaces, all linked."""
    why = netns.available()
    if why is not None:
        if _must_run():
            pytest.fail(f"CI=true as root, but the chaos suite cannot build its network: {why}")
        pytest.skip(f"the chaos suite needs network namespaces: {why}")
    async with _database_cm() as name:
        relay = Relay()
        try:
            with netns.Network() as net:
                work = tmp_path / "fleet"
                work.mkdir()
                # The managers reach PostgreSQL through their cables, on their namespace's loopback.
                db_url = url_of(name, "127.0.0.1:5432")
                chaos = Fleet(net, relay, work, db_url, HEARTBEAT_S, target=server_address())
                try:
                    await chaos.start()
                    yield chaos
                finally:
                    chaos.close()
        finally:
            relay.close()
