"""A task's output followed through any manager on one PostgreSQL; deletions on every tab (#17).

Two manager processes A and B share a database; an agent is linked to A, so its lines
arrive at A. Through B, ``GET /tasks/{id}/log`` shows what was written so far, ``WS
/tasks/{id}/log`` the lines as they come, each once and in order, closed when the task
ends; a flood is forwarded within its bound (a marker says lines are missing); a follow
B stops renewing (B killed) expires at A. A ``WS /events`` tab on B hears of a deletion
made through A. The test LISTENs on the channel itself to see what crosses the database.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
import websockets

from herder.manager import outputshare
from tests.conftest import AgentFactory
from tests.helpers import POLL_S
from tests.manager.conftest import ManagerProcess
from tests.manager.test_link import wait_task

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


async def start(*managers: ManagerProcess) -> None:
    """Started at once: each start waits for its banner in a thread."""
    await asyncio.gather(*(asyncio.to_thread(m.start) for m in managers))


Pair = tuple[ManagerProcess, ManagerProcess]


@pytest.fixture
async def pair(db_url: str, tmp_path: Path, make_agent: AgentFactory) -> AsyncIterator[Pair]:
    """Managers A and B on one database, an agent linked to A."""
    a = ManagerProcess(tmp_path / "a", db_url)
    b = ManagerProcess(tmp_path / "b", db_url)
    try:
        await start(a, b)
        async with make_agent(manager={"url": a.url, "slots": 1, "name": "linked-to-a"}) as agent:
            worker = agent.runtime.worker if agent.runtime is not None else None
            assert worker is not None
            await asyncio.wait_for(worker.connected.wait(), 20)
            yield a, b
    finally:
        a.kill()
        b.kill()


@asynccontextmanager
async def heard(db_url: str, channel: str) -> AsyncIterator[list[tuple[float, dict[str, Any], int]]]:
    """What is NOTIFYed on ``channel`` meanwhile: (when, message, payload bytes) each."""
    messages: list[tuple[float, dict[str, Any], int]] = []

    def arrived(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        messages.append((time.monotonic(), json.loads(payload), len(payload.encode())))

    conn = await asyncpg.connect(db_url)
    try:
        await conn.add_listener(channel, arrived)
        yield messages
    finally:
        await conn.close()


async def submit(client: httpx.AsyncClient, shell: str) -> int:
    answer = await client.post("/tasks", json={"type": "command", "settings": {"shell": shell}})
    assert answer.status_code == 202, answer.text
    return int(answer.json()["id"])


async def wait_log(client: httpx.AsyncClient, task_id: int, wanted: str, timeout_s: float = 10.0) -> str:
    """``GET /tasks/{id}/log`` once it shows ``wanted``."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = await client.get(f"/tasks/{task_id}/log")
        assert answer.status_code == 200, answer.text
        if wanted in answer.text:
            return answer.text
        assert time.monotonic() < deadline, f"the log never showed {wanted!r}: {answer.text[-500:]!r}"
        await asyncio.sleep(POLL_S)


def ws_url(url: str, path: str) -> str:
    return url.replace("http://", "ws://") + path


async def read_stream(
    url: str, task_id: int, timeout_s: float = 30.0
) -> tuple[list[tuple[float, Any]], tuple[int | None, str | None]]:
    """The frames of ``WS /tasks/{id}/log`` (with their arrival) until closed, and the close."""
    frames: list[tuple[float, Any]] = []
    async with asyncio.timeout(timeout_s), websockets.connect(ws_url(url, f"/tasks/{task_id}/log")) as ws:
        async for message in ws:
            frames.append((time.monotonic(), json.loads(message)))
        return frames, (ws.close_code, ws.close_reason)


TICKS = 50  # 5 s: time enough, on a loaded machine, to see them through B while it runs
TICKING = f"for i in $(seq 1 {TICKS}); do echo tick-$i; sleep 0.1; done"


async def test_a_tasks_live_output_on_a_is_followed_through_b(pair: Pair, db_url: str) -> None:
    a, b = pair
    async with (
        httpx.AsyncClient(base_url=a.url) as to_a,
        httpx.AsyncClient(base_url=b.url) as to_b,
    ):
        task_id = await submit(to_a, TICKING)
        stream = asyncio.create_task(read_stream(b.url, task_id))
        text = await wait_log(to_b, task_id, "tick-3")  # while it runs, held by A only
        assert (await to_b.get(f"/tasks/{task_id}")).json()["status"] == "rendering"
        shown = [line.split("] ", 1)[1] for line in text.splitlines()]
        assert shown == [f"tick-{i}" for i in range(1, len(shown) + 1)]
        frames, close = await stream
        assert close == (1000, "the task has ended")
        lines = [frame["line"] for _, frame in frames]
        assert lines == [f"tick-{i}" for i in range(1, TICKS + 1)]  # each once, in order
        assert {frame["stream"] for _, frame in frames} == {"stdout"}
        # Live: they came as written (5 s), not all at the end.
        assert frames[-1][0] - frames[0][0] > 1.5
        await wait_task(to_b, task_id, "completed")
        after = (await to_b.get(f"/tasks/{task_id}/log")).text  # from the database now
        assert [line.split("] ", 1)[1] for line in after.splitlines()] == lines


FLOOD = 50_000
FLOODING = f"seq -f 'flood line %06g of a task that writes far more than anyone reads' 1 {FLOOD}; sleep 1"


async def test_a_flood_of_output_is_forwarded_within_its_bound_and_the_gap_is_said(
    pair: Pair, db_url: str
) -> None:
    a, b = pair
    async with (
        httpx.AsyncClient(base_url=a.url) as to_a,
        heard(db_url, outputshare.CHANNEL) as messages,
    ):
        task_id = await submit(to_a, "sleep 1; " + FLOODING)
        await wait_task(to_a, task_id, "rendering")
        started = time.monotonic()
        frames, close = await read_stream(b.url, task_id)
        elapsed = time.monotonic() - started
        assert close == (1000, "the task has ended")
        forwarded = sum(size for _, message, size in messages if message["k"] == "l")
        assert max(size for _, _, size in messages) <= outputshare.PAYLOAD_BYTES
        bound = outputshare.BURST_BYTES + outputshare.RATE_BYTES_S * elapsed + outputshare.SNAPSHOT_BYTES
        assert forwarded <= bound, f"{forwarded} bytes forwarded in {elapsed:.1f}s"
        assert forwarded < FLOOD * 60 / 4  # a fraction of what was written (~3.4 MB)
        markers = [frame["line"] for _, frame in frames if frame["stream"] == outputshare.MARKER_STREAM]
        assert markers
        assert all("lines not shown here" in line for line in markers)
        lines = [frame["line"] for _, frame in frames if frame["stream"] == "stdout"]
        numbers = [int(line.split()[2]) for line in lines]
        assert numbers == sorted(set(numbers))  # each once, in order, with gaps
        assert numbers[-1] == FLOOD  # the end, from the database
        assert len(numbers) < FLOOD
        assert (await to_a.get("/healthz")).status_code == 200


async def test_a_follow_no_longer_renewed_expires_at_the_holder(pair: Pair, db_url: str) -> None:
    a, b = pair
    async with (
        httpx.AsyncClient(base_url=a.url) as to_a,
        heard(db_url, outputshare.CHANNEL) as messages,
    ):
        task_id = await submit(to_a, "for i in $(seq 1 400); do echo tick-$i; sleep 0.05; done")
        await wait_task(to_a, task_id, "rendering")
        async with websockets.connect(ws_url(b.url, f"/tasks/{task_id}/log")) as ws:
            await ws.recv()
            deadline = time.monotonic() + 5
            while not any(m["k"] == "l" for _, m, _ in messages):  # A forwards to B
                assert time.monotonic() < deadline, "A forwarded nothing"
                await asyncio.sleep(POLL_S)
            b.kill()  # no unfollow, no renewal: only the expiry stops A
            killed = time.monotonic()
        quiet_s = 1.0
        deadline = killed + outputshare.FOLLOW_TTL_S + outputshare.RENEW_S + 5
        while True:
            last = max(at for at, m, _ in messages if m["k"] == "l")
            if time.monotonic() - last > quiet_s:
                break
            assert time.monotonic() < deadline, "A still forwards to a manager that is gone"
            await asyncio.sleep(POLL_S)
        # The follow's last renewal reached A at most RENEW_S before the kill.
        ttl, renew = outputshare.FOLLOW_TTL_S, outputshare.RENEW_S
        assert ttl - renew - 0.5 <= last - killed <= ttl + 0.5
        assert (await to_a.get(f"/tasks/{task_id}")).json()["status"] == "rendering"  # it still writes


async def test_a_deletion_through_a_reaches_a_tab_and_ends_a_log_stream_on_b(pair: Pair, db_url: str) -> None:
    a, b = pair
    async with (
        httpx.AsyncClient(base_url=a.url) as to_a,
        websockets.connect(ws_url(b.url, "/events")) as tab,
    ):
        assert json.loads(await tab.recv())["type"] == "snapshot"
        task_id = await submit(to_a, "echo started; sleep 60")
        async with websockets.connect(ws_url(b.url, f"/tasks/{task_id}/log")) as log:
            async with asyncio.timeout(10):
                assert json.loads(await log.recv())["line"] == "started"  # from A, running
            assert (await to_a.delete(f"/tasks/{task_id}")).status_code == 202
            deleted = time.monotonic()
            async with asyncio.timeout(5):
                while (message := json.loads(await tab.recv()))["type"] != "task_deleted":
                    pass
            assert message["id"] == task_id
            assert time.monotonic() - deleted < 1.0
            async with asyncio.timeout(5):
                async for frame in log:
                    raise AssertionError(f"a line after the deletion: {frame}")
            assert (log.close_code, log.close_reason) == (1000, "the task has ended")


async def test_a_cancel_through_b_keeps_the_lines_a_held(pair: Pair) -> None:
    """The lines of a piece of work canceled through another manager reach the database.

    B's cancel stores only what B kept (nothing: the agent is linked to A); A, told to stop
    the work, stores the lines it holds for the item, which has ended.
    """
    a, b = pair
    async with (
        httpx.AsyncClient(base_url=a.url) as to_a,
        httpx.AsyncClient(base_url=b.url) as to_b,
    ):
        task_id = await submit(to_a, "for i in 1 2 3; do echo kept-$i; done; sleep 30")
        await wait_log(to_a, task_id, "kept-3")
        answer = await to_b.patch(f"/tasks/{task_id}", json={"status": "canceled"})
        assert answer.status_code == 204, answer.text
        await wait_task(to_b, task_id, "canceled")
        for to in (to_b, to_a):  # each reads the database now: the item has ended
            text = await wait_log(to, task_id, "kept-3")
            assert [line.split("] ", 1)[1] for line in text.splitlines()] == ["kept-1", "kept-2", "kept-3"]
