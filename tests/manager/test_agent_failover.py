"""An agent with several managers moves to another when its manager dies (#17).

Two real managers on one PostgreSQL and one real agent given both URLs: it links to one
of them; that one is SIGKILLed while a piece of work runs; the agent links to the other
within the documented bound, the work goes on (its lease renewed by the other manager),
its report reaches the database through the other manager, and no attempt ran twice
(each attempt appends its start and end to a file this test reads).

The rotation itself (which URL next, and when) is sans-IO and tested on its own, and so
are the ways of naming several managers (the option, the file) and their errors.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from herder.agent.config import ManagerLinkConfig
from herder.agent.link.rotation import BACKOFF_INITIAL_S, BACKOFF_MAX_S, Rotation
from herder.rpc import ConnectionLost
from tests.conftest import AgentFactory
from tests.helpers import AgentProcess, poll, run_herder, wait_http
from tests.manager.conftest import ManagerFactory, ManagerProcess

# A manager killed closes the link: the agent links to the next one at once (docs/operations.md).
FAILOVER_BOUND_S = 3.0
WORK_S = 4  # long enough to be running when its manager dies
# A manager stalled keeps the link open: the agent moves once a heartbeat's answer is
# overdue, two default intervals (5 s) after its last acknowledged one at most.
STALL_BOUND_S = 2 * 5.0 + 1.0


# -- the rotation (sans-IO) -------------------------------------------------------------------


def test_the_first_manager_is_any_of_them_and_the_next_follows_in_order() -> None:
    urls = ["http://a:1", "http://b:2", "http://c:3"]
    firsts = {Rotation(urls).current for _ in range(200)}
    assert firsts == set(urls)  # spread: every manager gets agents
    rotation = Rotation(urls, start=1)
    assert rotation.current == "http://b:2"
    assert rotation.failed(now=100.0, up_for=60.0) == "http://c:3"
    assert rotation.wait_s(100.0) == 0.0  # the next manager is tried at once
    assert rotation.failed(now=100.1, up_for=0.0) == "http://a:1"
    assert rotation.failed(now=100.2, up_for=0.0) == "http://b:2"
    assert rotation.wait_s(100.2) == pytest.approx(BACKOFF_INITIAL_S - 0.2)


def test_each_manager_backs_off_on_its_own_and_one_manager_keeps_the_old_backoff() -> None:
    one = Rotation(["http://a:1"])
    waits = []
    now = 0.0
    for _ in range(8):
        one.failed(now, up_for=0.0)
        waits.append(one.wait_s(now))
        now += waits[-1]
    assert waits == pytest.approx([min(BACKOFF_INITIAL_S * 2**i, BACKOFF_MAX_S) for i in range(8)])
    one.failed(now, up_for=BACKOFF_MAX_S + 1)  # it worked for a while: quick again
    assert one.wait_s(now) == pytest.approx(BACKOFF_INITIAL_S)
    one.ended_cleanly()
    assert one.wait_s(now) == 0.0
    three = Rotation(["http://dead:1", "http://dead:2", "http://live:3"], start=0)
    now = 0.0
    for _ in range(4):  # the dead ones' backoffs grow; each is its own, none delays the live one
        now += 1.0  # a try of a dead manager costs a second (its connection times out)
        assert three.failed(now, up_for=1.0) == "http://dead:2"
        assert three.wait_s(now) == 0.0
        now += 1.0
        assert three.failed(now, up_for=1.0) == "http://live:3"
        assert three.wait_s(now) == 0.0
        now += 60.0  # the live one worked for a minute, then was lost
        assert three.failed(now, up_for=60.0) == "http://dead:1"
        now += three.wait_s(now)
    assert three.failed(now, up_for=0.0) == "http://dead:2"
    assert three.wait_s(now) == 0.0


# -- naming several managers ------------------------------------------------------------------


def test_url_and_urls_are_two_spellings_of_one_list() -> None:
    assert ManagerLinkConfig(url="http://a:1").urls == ["http://a:1"]
    both = ManagerLinkConfig(urls=["http://a:1", " http://b:2 "])
    assert (both.url, both.urls) == ("http://a:1", ["http://a:1", "http://b:2"])
    assert ManagerLinkConfig.model_validate(both.model_dump()).urls == both.urls
    for bad, words in [
        ({"urls": []}, "url (or urls) is needed"),
        ({"urls": ["http://a:1", ""]}, "urls"),
        ({"urls": ["a.example:8020"]}, "is not a manager URL"),
        ({"urls": ["http://a:1", "http://a:1"]}, "named twice"),
        ({"url": "http://a:1", "urls": ["http://b:2"]}, "not both"),
    ]:
        with pytest.raises(ValueError, match=re.escape(words)):
            ManagerLinkConfig.model_validate(bad)


async def test_a_bad_manager_list_is_refused_naming_the_field(tmp_path: Path) -> None:
    code, _, err = await run_herder(
        "agent", "--port", "0", "--data-dir", str(tmp_path / "d"), "--manager", "http://127.0.0.1:9,nope"
    )
    assert code == 2
    assert "manager.urls" in err, err
    assert "'nope' is not a manager URL" in err, err
    toml = tmp_path / "agent.toml"
    toml.write_text('[manager]\nurl = "http://127.0.0.1:9"\nurls = ["http://127.0.0.1:10"]\n')
    code, _, err = await run_herder("agent", "--config", str(toml), "--data-dir", str(tmp_path / "d"))
    assert code == 2
    assert "manager" in err, err
    assert "not both" in err, err


# -- reports that waited ---------------------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_reports_that_waited_are_kept_when_the_next_link_is_lost_while_sending_them(
    make_manager: ManagerFactory, make_agent: AgentFactory
) -> None:
    """The manager an agent moved to may die in turn while the waiting reports go out."""
    async with make_manager() as manager:  # a free port for the manager below
        port = int(manager.url.rsplit(":", 1)[1])
    async with make_agent(manager={"url": f"http://127.0.0.1:{port}", "name": "flusher"}) as agent:
        worker = agent.runtime.worker if agent.runtime is not None else None
        assert worker is not None
        async with make_manager(heartbeat_interval_s=0.2, port=port):
            await asyncio.wait_for(worker.connected.wait(), 20)
            peer = worker.peer
            assert peer is not None
        await asyncio.wait_for(peer.wait_closed(), 10)  # the manager stopped: the link closed
        waiting = [("finished", [7, 1, 0, None, time.time()]), ("started", [8, 1])]
        worker._pending = list(waiting)
        with pytest.raises(ConnectionLost):
            await worker._flush_pending(peer)
        assert worker._pending == waiting  # none lost: they go to the next link


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_waiting_report_the_manager_refuses_is_dropped_and_the_link_kept(
    make_manager: ManagerFactory, make_agent: AgentFactory
) -> None:
    """A refusal (``fenced``: the attempt is no longer this worker's) is the manager's
    answer, not a lost link. Taken for one, the report was kept and the link dropped, on
    every manager in turn: the chaos suite's agent never stayed linked again (#17)."""
    async with (
        make_manager() as manager,
        make_agent(manager={"url": manager.url, "name": "refused"}) as agent,
    ):
        worker = agent.runtime.worker if agent.runtime is not None else None
        assert worker is not None
        await asyncio.wait_for(worker.connected.wait(), 20)
        peer = worker.peer
        assert peer is not None
        worker._pending = [("finished", [424242, 1, 0, None, time.time()]), ("started", [424243, 1])]
        await worker._flush_pending(peer)  # refused, both: logged and dropped
        assert worker._pending == []
        assert not peer.closed


# -- two managers on one PostgreSQL ------------------------------------------------------------


@pytest.fixture
def managers(db_url: str, tmp_path: Path) -> Iterator[tuple[ManagerProcess, ManagerProcess]]:
    """A and B on one database, started one after the other (migrations at once collide)."""
    a = ManagerProcess(tmp_path / "a", db_url)
    b = ManagerProcess(tmp_path / "b", db_url)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.kill()
        b.kill()


async def submit_logged_work(manager_url: str, attempts: Path, work_s: float) -> int:
    """A task whose one attempt appends ``start PID`` and ``end PID`` to ``attempts``, once
    it has started; its id."""
    script = f'echo "start $$" >> {attempts}; sleep {work_s}; echo "end $$" >> {attempts}'
    task = {"type": "command", "settings": {"argv": ["/bin/sh", "-c", script]}, "max_attempts": 1}
    async with httpx.AsyncClient(base_url=manager_url, timeout=10) as client:
        answer = await client.post("/tasks", json=task)
        assert answer.status_code == 202, answer.text
        task_id = int(answer.json()["id"])
    await poll(lambda: attempts.exists() and "start" in attempts.read_text())
    return task_id


async def ran_once(manager_url: str, task_id: int, attempts: Path, within_s: float) -> None:
    """The task completed (read through ``manager_url``), its one attempt started and ended once."""
    async with httpx.AsyncClient(base_url=manager_url, timeout=10) as client:
        done = await wait_http(
            client, f"/tasks/{task_id}", lambda d: d["status"] in ("completed", "failed"), within_s
        )
    assert done["status"] == "completed", done
    lines = attempts.read_text().split()
    assert lines[0::2] == ["start", "end"], lines  # the one attempt, never stopped by its lease


def linked_to(agent: AgentProcess) -> list[str]:
    """The managers the agent linked to, in order (its log)."""
    return re.findall(r"linked to the manager (\S+) as worker", agent.stderr())


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_the_agent_moves_to_the_other_manager_when_its_own_is_killed(
    managers: tuple[ManagerProcess, ManagerProcess], tmp_path: Path
) -> None:
    began = time.monotonic()
    a, b = managers
    attempts = tmp_path / "attempts.log"
    agent = AgentProcess(tmp_path / "agent", "--manager", f"{a.url},{b.url}", "--name", "mover").start()
    try:
        await poll(lambda: len(linked_to(agent)) == 1)
        first = linked_to(agent)[0]
        own, other = (a, b) if first == a.url else (b, a)
        assert first == own.url
        task_id = await submit_logged_work(own.url, attempts, WORK_S)

        own.kill()  # SIGKILL by pid: its link closes without a word
        killed = time.monotonic()
        await poll(lambda: len(linked_to(agent)) == 2, timeout_s=FAILOVER_BOUND_S + 2)
        moved_in = time.monotonic() - killed
        assert linked_to(agent)[1] == other.url
        assert moved_in < FAILOVER_BOUND_S, f"linked to the other manager after {moved_in:.2f} s"

        await ran_once(other.url, task_id, attempts, WORK_S + 10)
        lines = attempts.read_text().split()
        assert lines[1] == lines[3], lines
        assert "refused" not in agent.stderr()  # no report of the attempt was turned away
    finally:
        agent.kill()
    assert time.monotonic() - began < 30


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_the_agent_moves_when_its_manager_stalls_without_closing_the_link(
    managers: tuple[ManagerProcess, ManagerProcess], tmp_path: Path
) -> None:
    """SIGSTOP: the link stays open and no answer comes; the overdue heartbeat moves the agent.

    With the default 5 s heartbeat it moves within two intervals of its last acknowledged
    heartbeat, before the lease (three intervals) would stop the work: the work goes on.
    """
    began = time.monotonic()
    a, b = managers
    attempts = tmp_path / "attempts.log"
    agent = AgentProcess(tmp_path / "agent", "--manager", f"{a.url},{b.url}", "--name", "staller").start()
    stalled: ManagerProcess | None = None
    try:
        await poll(lambda: len(linked_to(agent)) == 1)
        own, other = (a, b) if linked_to(agent)[0] == a.url else (b, a)
        work_s = 12  # outlives the move (at most 10 s after the stop)
        task_id = await submit_logged_work(own.url, attempts, work_s)

        assert own.proc is not None
        own.proc.send_signal(signal.SIGSTOP)
        stalled = own
        stopped = time.monotonic()
        await poll(lambda: len(linked_to(agent)) == 2, timeout_s=STALL_BOUND_S + 2)
        moved_in = time.monotonic() - stopped
        assert linked_to(agent)[1] == other.url
        assert moved_in < STALL_BOUND_S, f"linked to the other manager after {moved_in:.2f} s"
        assert "heartbeat" in agent.stderr() or "timed out" in agent.stderr().lower(), agent.stderr()

        await ran_once(other.url, task_id, attempts, work_s + 5)
        assert "lease could not be renewed" not in agent.stderr()
    finally:
        agent.kill()
        if stalled is not None and stalled.proc is not None and stalled.proc.poll() is None:
            stalled.proc.send_signal(signal.SIGCONT)  # then killed by the fixture
    assert time.monotonic() - began < 30
