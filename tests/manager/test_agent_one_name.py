"""One manager name with several addresses: the agent moves off a stalled one (#17).

Two real managers on one PostgreSQL listen on one port of two loopback addresses
(127.0.0.1 and 127.0.0.2), and one name resolves to both: a hosts file bound over
``/etc/hosts`` in a mount namespace of the agent's own (``unshare --mount``, as root), so
the agent's resolver is the system's. The manager holding the link is SIGSTOPped: its
kernel still accepts connections, so a link that reconnected to the resolver's first
address would connect to it again and again. The agent must link through the other
address, within the stall bound, and the work it runs must go on.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from herder.agent.link.addresses import in_order
from tests.helpers import HERDER, poll, wait_banner
from tests.manager.conftest import ManagerProcess
from tests.manager.test_agent_failover import ran_once, submit_logged_work

NAME = "managers.herder.test"
# A stalled manager is left two heartbeat intervals (5 s) after the last acknowledged
# heartbeat; the next address is then tried at once (docs/operations.md, "Several managers").
STALL_BOUND_S = 2 * 5.0 + 2.0


def test_addresses_that_failed_go_last_the_oldest_failure_first() -> None:
    addresses = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert in_order(addresses, {}) == addresses
    assert in_order(addresses, {"10.0.0.1": 5.0}) == ["10.0.0.2", "10.0.0.3", "10.0.0.1"]
    assert in_order(addresses, {"10.0.0.1": 5.0, "10.0.0.3": 2.0, "10.0.0.2": 9.0}) == [
        "10.0.0.3",
        "10.0.0.1",
        "10.0.0.2",
    ]


def free_port_on_both() -> int:
    """A port free on 127.0.0.1 and on 127.0.0.2 (bounded tries)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        with socket.socket() as other:
            try:
                other.bind(("127.0.0.2", port))
            except OSError:
                continue
        return port
    raise AssertionError("no port free on both loopback addresses")


@pytest.fixture
def managers(db_url: str, tmp_path: Path) -> Iterator[tuple[ManagerProcess, ManagerProcess]]:
    port = free_port_on_both()
    a = ManagerProcess(tmp_path / "a", db_url, "--allowed-host", NAME, host="127.0.0.1", port=port)
    b = ManagerProcess(tmp_path / "b", db_url, "--allowed-host", NAME, host="127.0.0.2", port=port)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        for manager in (a, b):
            if manager.proc is not None and manager.proc.poll() is None:
                manager.proc.send_signal(signal.SIGCONT)  # a stalled one, so that it can die
            manager.kill()


def agent_in_own_hosts(tmp_path: Path, hosts: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    """``herder agent`` whose ``/etc/hosts`` is ``hosts`` (its own mount namespace)."""
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text(hosts)
    stderr_path = tmp_path / "agent.stderr"
    command = [HERDER, "agent", "--port", "0", "--data-dir", str(tmp_path / "agent"), "--grace", "2", *args]
    with open(stderr_path, "wb") as err:
        # unshare and sh exec: the pid is the agent's.
        proc = subprocess.Popen(
            [
                *("unshare", "--mount", "--propagation", "private", "sh", "-c"),
                *('mount --bind "$0" /etc/hosts && exec "$@"', str(hosts_file), *command),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    if wait_banner(proc, stderr_path, r"herder agent listening on (http://\S+)", 20.0) is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise AssertionError("agent did not start:\n" + stderr_path.read_text())
    return proc, stderr_path


async def holder(worker_id: int, *managers: ManagerProcess) -> ManagerProcess | None:
    """Which of ``managers`` holds the worker's link (the others answer 409 ``not_linked``)."""
    for manager in managers:
        async with httpx.AsyncClient(base_url=manager.url, timeout=5) as client:
            answer = await client.get(f"/workers/{worker_id}/inventory")
            if answer.status_code == 200:
                return manager
    return None


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_an_agent_on_one_name_moves_to_the_next_address_when_its_manager_stalls(
    managers: tuple[ManagerProcess, ManagerProcess], tmp_path: Path
) -> None:
    began = time.monotonic()
    a, b = managers
    port = a.port
    attempts = tmp_path / "attempts.log"
    hosts = f"127.0.0.1 localhost\n127.0.0.1 {NAME}\n127.0.0.2 {NAME}\n"
    named = ("--manager", f"http://{NAME}:{port}", "--name", "named")
    proc, stderr_path = agent_in_own_hosts(tmp_path, hosts, *named)
    stalled: ManagerProcess | None = None
    try:

        def links() -> list[str]:
            return re.findall(r"linked to the manager \S+ as worker (\d+)", stderr_path.read_text())

        await poll(lambda: len(links()) == 1)
        worker_id = int(links()[0])
        own = await holder(worker_id, a, b)
        assert own is not None, "neither manager holds the link"
        other = b if own is a else a
        work_s = 14  # outlives the move
        task_id = await submit_logged_work(other.url, attempts, work_s)

        assert own.proc is not None
        own.proc.send_signal(signal.SIGSTOP)
        stalled = own
        stopped = time.monotonic()
        await poll(lambda: len(links()) == 2, timeout_s=STALL_BOUND_S + 5)
        moved_in = time.monotonic() - stopped
        assert moved_in < STALL_BOUND_S, f"linked again after {moved_in:.2f} s:\n{stderr_path.read_text()}"
        assert await holder(worker_id, other) is other  # through the other address (own is stopped)

        await ran_once(other.url, task_id, attempts, work_s + 10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
        if stalled is not None and stalled.proc is not None and stalled.proc.poll() is None:
            stalled.proc.send_signal(signal.SIGCONT)
    assert time.monotonic() - began < 45
