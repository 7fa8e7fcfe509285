"""#12 §3.2: at most one attempt of a piece of work runs at any moment.

A manager stalled past the leases (SIGSTOP here; a slow disk does the same) used to
requeue, on waking, the work of every healthy agent, and hand it out again while the
first attempts still ran; an agent cut off from its manager ran its work on forever,
whatever the manager did with it meanwhile. Now the agent stops work whose lease it
could not renew, by its own clock, before the manager may give it away; the manager
waits a margin more, and after a stall of its own gives every worker a fresh lease.

The work records, in a file, when each attempt started and ended (its pid, wall
time): the test checks that no two attempts overlap.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from herder.agent import Agent
from tests.conftest import AgentFactory
from tests.helpers import pid_alive, poll, wait_http

# An attempt: notes "start PID TIME" and "end PID TIME" (also when stopped by SIGTERM);
# the first attempt runs ``first`` seconds, any later one ``later``.
WORK = """
import os, signal, sys, time
path, first, later = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
seconds = later if os.path.exists(path) else first
def note(what):
    with open(path, "a") as f:
        f.write(f"{what} {os.getpid()} {time.time()}\\n")
def on_term(*_):
    note("end")
    os._exit(143)
signal.signal(signal.SIGTERM, on_term)
note("start")
time.sleep(seconds)
note("end")
"""

MANAGER = """
import asyncio, sys
from pathlib import Path
from herder.manager.config import ManagerConfig
from herder.manager.server import Manager

async def main():
    cfg = ManagerConfig(
        port=int(sys.argv[3]), data_dir=Path(sys.argv[1]), db=sys.argv[2],
        heartbeat_interval_s=float(sys.argv[4]), missed_heartbeats=int(sys.argv[5]),
    )
    async with Manager(cfg) as manager:
        print("listening on", manager.url, file=sys.stderr, flush=True)
        await manager.wait_stopped()

asyncio.run(main())
"""


class ManagerProcess:
    """A manager in a process of its own (so that it can be stopped with SIGSTOP); stopped by pid."""

    def __init__(self, tmp: Path, db_url: str, interval_s: float, missed: int) -> None:
        self.args = [str(tmp / "manager"), db_url, "0", str(interval_s), str(missed)]
        self.stderr_path = tmp / "manager.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    async def start(self) -> ManagerProcess:
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", MANAGER, *self.args], stdout=subprocess.DEVNULL, stderr=err
            )

        def listening() -> bool:
            match = re.search(r"listening on (http://\S+)", self.stderr_path.read_text())
            if match:
                self.url = match.group(1)
            assert self.proc is not None
            assert self.proc.poll() is None, self.stderr_path.read_text()
            return match is not None

        await poll(listening, timeout_s=30)
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def attempts(path: Path) -> list[tuple[int, float, float]]:
    """(pid, start, end) of each attempt the file records; a running one ends now."""
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        what, pid, at = line.split()
        (starts if what == "start" else ends)[int(pid)] = float(at)
    now = time.time()
    return [(pid, start, ends.get(pid, now if pid_alive(pid) else start)) for pid, start in starts.items()]


def assert_no_overlap(path: Path) -> None:
    runs = sorted(attempts(path), key=lambda r: r[1])
    for (pid_a, _, end_a), (pid_b, start_b, _) in itertools.pairwise(runs):
        assert end_a <= start_b, (
            f"attempts overlap: pid {pid_a} ran until {end_a}, pid {pid_b} began {start_b}"
        )


@pytest.fixture
async def linked(
    db_url: str, tmp_path: Path, make_agent: AgentFactory, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[ManagerProcess, Agent, httpx.AsyncClient]]:
    """A manager process (heartbeats every 0.2 s: offline after 0.6 s, lease 0.8 s) and an agent."""
    interval, missed = getattr(request, "param", (0.2, 3))
    manager = await ManagerProcess(tmp_path, db_url, interval, missed).start()
    try:
        link = {"url": manager.url, "slots": 2, "name": "steady"}
        async with (
            make_agent(manager=link) as agent,
            httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
        ):
            assert agent.runtime is not None
            assert agent.runtime.worker is not None
            await asyncio.wait_for(agent.runtime.worker.connected.wait(), 20)
            yield manager, agent, client
    finally:
        manager.kill()


async def submit(client: httpx.AsyncClient, record: Path, first: float, later: float | None = None) -> int:
    """A task whose work records its attempts in ``record``; its id, once the first began."""
    argv = [sys.executable, "-c", WORK, str(record), str(first), str(later if later is not None else first)]
    body = {"type": "command", "settings": {"argv": argv}}
    task_id: int = (await client.post("/tasks", json=body)).json()["id"]
    await poll(lambda: bool(attempts(record)), timeout_s=20)
    return task_id


async def held_still(seconds: float) -> None:
    """The stall under test lasts this long: wait it out (the manager is stopped; nothing to poll)."""
    deadline = time.monotonic() + seconds
    await poll(lambda: time.monotonic() >= deadline, timeout_s=seconds + 5)


async def test_a_manager_stalled_past_the_lease_never_runs_two_attempts_at_once(
    linked: tuple[ManagerProcess, Agent, httpx.AsyncClient], tmp_path: Path
) -> None:
    manager, _, client = linked
    record = tmp_path / "attempts"
    task_id = await submit(client, record, first=30.0, later=0.2)
    manager.signal(signal.SIGSTOP)
    # Past the lease (0.8 s) and its margin, and past the agent's wait for the answer to
    # its heartbeat (5 s): it drops the link, and only its new one is read on waking.
    await held_still(5.5)
    manager.signal(signal.SIGCONT)
    done = await wait_http(client, f"/tasks/{task_id}", lambda d: d["status"] in ("completed", "failed"), 30)
    assert_no_overlap(record)
    assert done["status"] == "completed", done


async def test_an_agent_cut_off_from_its_manager_stops_its_work_within_the_lease(
    linked: tuple[ManagerProcess, Agent, httpx.AsyncClient], tmp_path: Path
) -> None:
    manager, agent, _ = linked
    record = tmp_path / "attempts"
    await submit(linked[2], record, first=30.0)
    [(pid, _, _)] = attempts(record)
    cut_at = time.time()
    manager.kill()  # no manager: no heartbeat is acknowledged any more
    await poll(lambda: not pid_alive(pid), timeout_s=10)
    seen_dead = time.time()
    ends = [float(line.split()[2]) for line in record.read_text().splitlines() if line.startswith("end")]
    ended = ends[0] if ends else seen_dead  # killed (SIGKILL at the lease): it wrote nothing
    # Stopped at lease - margin: 0.6 s after the last acknowledged heartbeat (sent before
    # the cut). A manager would requeue the work 1.0 s after that heartbeat at the earliest.
    assert ended - cut_at < 1.0, f"the attempt ran {ended - cut_at:.2f} s past the cut"
    assert agent.runtime is not None
    assert agent.runtime.worker is not None
    assert not agent.runtime.worker.runs or all(r.lease_lost for r in agent.runtime.worker.runs.values())


@pytest.mark.parametrize("linked", [(0.2, 10)], indirect=True)
async def test_a_manager_stalled_within_the_lease_requeues_nothing(
    linked: tuple[ManagerProcess, Agent, httpx.AsyncClient], tmp_path: Path
) -> None:
    """Offline after 2 s here: a stall of 4 heartbeat intervals costs the attempt nothing."""
    manager, _, client = linked
    record = tmp_path / "attempts"
    task_id = await submit(client, record, first=1.5)
    manager.signal(signal.SIGSTOP)
    await held_still(0.8)
    manager.signal(signal.SIGCONT)
    done = await wait_http(client, f"/tasks/{task_id}", lambda d: d["status"] in ("completed", "failed"), 30)
    assert done["status"] == "completed", done
    assert done["work_items"][0]["attempt"] == 1
    assert len(attempts(record)) == 1
