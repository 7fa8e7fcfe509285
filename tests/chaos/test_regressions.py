"""What the chaos suite found, each reproduced on its own (#17).

These need no namespaces: the managers and the agent run on loopback, and the partition
is a forwarder of the suite (``proxy.Route``) between the agent and a manager, which
holds the bytes of a cut and delivers them at the heal, as TCP does after a partition.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.chaos.attempt import __file__ as ATTEMPT
from tests.chaos.conftest import server_address, url_of
from tests.chaos.fleet import START_S, Daemon, until
from tests.chaos.proxy import Relay
from tests.helpers import HERDER, AgentProcess

pytestmark = pytest.mark.chaos

HEARTBEAT_S = 1.0  # lease 4 s (+1 s margin): the requeue comes within seconds
# An agent leaves a stalled manager within this (tests/chaos/test_chaos.py's bound).
STALL_BOUND_S = HEARTBEAT_S + max(HEARTBEAT_S, 3.0) + 2.0


@pytest.fixture
def relay() -> Iterator[Relay]:
    forwarders = Relay()
    try:
        yield forwarders
    finally:
        forwarders.close()


def manager(name: str, port: int, db_url: str, tmp_path: Path) -> Daemon:
    """``herder manager`` on ``port`` with a heartbeat of ``HEARTBEAT_S`` (not started)."""
    argv = [HERDER, "manager", "--port", str(port), "--data-dir", str(tmp_path / name), "--db", db_url]
    return Daemon(name, [*argv, "--heartbeat-interval", str(HEARTBEAT_S)], tmp_path / f"{name}.stderr")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_work_pushed_on_a_link_the_agent_gave_up_is_not_started(
    database: str, tmp_path: Path, relay: Relay
) -> None:
    """The agent is cut from manager A while A pushes it work; it moves to B, the work's
    lease runs out and B hands it out again (attempt 2, on this agent); then the cut
    heals and A's push, held all along, arrives on the link the agent gave up. Started,
    it was a second attempt alive at once (the chaos suite's OVERLAP); it is dropped."""
    db_url = url_of(database)
    a_port, b_port = free_port(), free_port()
    a, b = (manager(name, port, db_url, tmp_path) for name, port in (("a", a_port), ("b", b_port)))
    agent: AgentProcess | None = None
    try:
        a.start("herder manager listening on")
        cable = relay.route(None, ("127.0.0.1", 0), ("127.0.0.1", a_port))
        via_cable = f"http://127.0.0.1:{cable.address[1]}"
        # B is not up yet: whichever URL the agent tries first, it links through the cable.
        agent = AgentProcess(tmp_path / "agent", "--manager", f"{via_cable},http://127.0.0.1:{b_port}")
        agent.start(timeout_s=START_S)
        await until(lambda: f"linked to the manager {via_cable}" in agent.stderr(), 30, "linked to A")
        b.start("herder manager listening on")
        links = agent.stderr().count("linked to the manager")

        cable.cut()
        attempts = tmp_path / "attempts"
        attempts.mkdir()
        argv = [sys.executable, "-I", ATTEMPT, str(attempts), "t1", "30"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{a_port}", timeout=10) as to_a:
            answer = await to_a.post("/tasks", json={"type": "command", "settings": {"argv": argv}})
            assert answer.status_code == 202, answer.text
        log = attempts / "attempts.log"
        await until(lambda: agent.stderr().count("linked to the manager") > links, 15, "moved to B")
        await until(lambda: log.exists() and "start t1" in log.read_text(), 20, "attempt 2 started")
        cable.heal()
        # Started, A's push would log OVERLAP (attempt 2 holds the item's lock for 30 s).
        await until(lambda: "came on a link given up" in agent.stderr(), 15, "A's push arrived, not run")
        assert "OVERLAP" not in log.read_text(), log.read_text()
        assert log.read_text().count("start t1") == 1, log.read_text()
    finally:
        if agent is not None:
            agent.kill()
        a.kill()
        b.kill()


async def test_an_idle_agent_leaves_a_manager_cut_off_from_its_database(
    database: str, tmp_path: Path, relay: Relay
) -> None:
    """A manager answered the heartbeats of workers running nothing from memory, so one
    cut off from PostgreSQL kept its idle agents linked for the whole partition, giving
    them no work (and the other managers saw them offline). Their beats now wait for the
    database like the others: the agent moves within the stall bound."""
    cable = relay.route(None, ("127.0.0.1", 0), server_address())
    a_port, b_port = free_port(), free_port()
    urls = {"a": url_of(database, f"127.0.0.1:{cable.address[1]}"), "b": url_of(database)}
    a, b = (manager(name, port, urls[name], tmp_path) for name, port in (("a", a_port), ("b", b_port)))
    agent: AgentProcess | None = None
    try:
        a.start("herder manager listening on")
        a_url, b_url = f"http://127.0.0.1:{a_port}", f"http://127.0.0.1:{b_port}"
        agent = AgentProcess(tmp_path / "agent", "--manager", f"{a_url},{b_url}")  # B not up yet: A
        agent.start(timeout_s=START_S)
        await until(lambda: f"linked to the manager {a_url}" in agent.stderr(), 30, "linked to A")
        b.start("herder manager listening on")
        cable.cut()
        cut = time.monotonic()
        await until(
            lambda: f"linked to the manager {b_url}" in agent.stderr(), STALL_BOUND_S + 5, "moved to B"
        )
        assert time.monotonic() - cut < STALL_BOUND_S
    finally:
        cable.heal()
        if agent is not None:
            agent.kill()
        a.kill()
        b.kill()


async def test_a_transaction_left_idle_by_a_manager_cut_off_releases_its_locks(database: str) -> None:
    """A manager cut off from PostgreSQL (or SIGSTOPped) in the middle of a transaction
    kept its row locks for as long as the server saw the connection open, and the other
    managers waited on them: the chaos suite's three managers all stalled while one was
    cut off. The manager's engine has PostgreSQL end such a session (and free its locks)
    after ``idle_in_transaction_s`` (two heartbeat intervals, 3 s at least: this suite's
    1 s interval gives 3 s)."""
    import asyncpg
    from sqlalchemy import text

    from herder.manager.store.db import create_engine, idle_in_transaction_s

    idle_s = idle_in_transaction_s(HEARTBEAT_S)
    engine = create_engine(url_of(database), idle_in_transaction=idle_s)
    other = await asyncpg.connect(url_of(database))
    try:
        await other.execute(
            "CREATE TABLE chaos_lock (id int PRIMARY KEY, v int); INSERT INTO chaos_lock VALUES (1, 0)"
        )
        async with engine.connect() as cut_off:
            await cut_off.begin()
            await cut_off.execute(text("UPDATE chaos_lock SET v = 1 WHERE id = 1"))  # the row is locked
            began = time.monotonic()  # ...and the session says nothing more, as a cut-off manager
            await other.execute("UPDATE chaos_lock SET v = 2 WHERE id = 1", timeout=idle_s + 10)
            waited = time.monotonic() - began
            assert waited < idle_s + 2.0, f"the lock was held {waited:.1f} s"
            with pytest.raises(Exception):  # noqa: B017, PT011 - the session was ended: any error of the driver's
                await cut_off.execute(text("SELECT 1"))
        assert await other.fetchval("SELECT v FROM chaos_lock WHERE id = 1") == 2
    finally:
        await other.close()
        await engine.dispose()


async def test_registrations_that_waited_for_the_database_stay_in_their_managers_index(
    database: str, tmp_path: Path, relay: Relay
) -> None:
    """Registrations sent to a manager cut off from PostgreSQL wait, and are acknowledged
    when it comes back, as its LISTEN connection's return reads every row again. A read
    taken just before they committed removed them from the manager's own index, for good
    (its own NOTIFYs are not read back): acknowledged, and not found through it."""
    from herder.rpc.client import connect

    cable = relay.route(None, ("127.0.0.1", 0), server_address())
    port = free_port()
    a = manager("a", port, url_of(database, f"127.0.0.1:{cable.address[1]}"), tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        a.start("herder manager listening on")
        acked: list[str] = []

        async def register(n: int) -> None:
            key = f"/chaos/prod/svc/1.0.0/eu/h{n}/svc-{n}"
            async with connect(url.replace("http://", "ws://") + "/rpc") as peer:
                await peer.call("register_service", key, "http://192.0.2.10:8080/", {}, 3600)
            acked.append(key)

        for round_ in range(3):  # the race is in the heal's moment: a few heals
            cable.cut()
            cut_at = time.monotonic()
            waiting = [asyncio.ensure_future(register(100 * round_ + n)) for n in range(40)]
            # Past the LISTEN probe (2 s) and its timeout (2 s): lost, read again at the heal.
            await until(lambda t=cut_at: time.monotonic() - t > 5.0, 10, "the probe gave up")
            cable.heal()
            await asyncio.wait_for(asyncio.gather(*waiting), 30)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:

            async def finds_all() -> bool:
                found = (await client.get("/services", params={"query": "/chaos", "limit": 1000})).json()
                return set(acked) <= {s["key"] for s in found["services"]}

            await until(finds_all, 5, "the manager finds every registration it acknowledged")
    finally:
        cable.heal()
        a.kill()
