"""The shared group commit (``herder.groupcommit``): batches, answers, and callers that go away.

The agent's process records and the manager's rounds of writes are built on it (their own
tests are ``tests/test_store.py`` and ``tests/manager/test_batcher.py``); these tests are
about the mechanics: a writer task writes while requests wait, a batch in flight outlives a
cancelled caller, and no request is ever stranded whoever is cancelled.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from herder.groupcommit import GroupCommit


class Held:
    """A flush that records its batches and waits for ``release`` before answering."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def flush(self, requests: list[int]) -> list[int | BaseException]:
        self.batches.append(list(requests))
        self.entered.set()
        await self.release.wait()
        return [r * 10 for r in requests]


async def test_a_caller_cancelled_mid_write_leaves_the_write_running() -> None:
    held = Held()
    done: list[int] = []

    async def flush(requests: list[int]) -> list[int | BaseException]:
        answers = await held.flush(requests)
        done.extend(requests)
        return answers

    commit: GroupCommit[int, int] = GroupCommit("t", flush)
    caller = asyncio.ensure_future(commit.submit(1))
    await held.entered.wait()
    behind = [asyncio.ensure_future(commit.submit(n)) for n in (2, 3)]
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert commit.statistics().writers == 1  # the write in flight is the writer's, not abandoned
    held.release.set()
    assert await asyncio.wait_for(asyncio.gather(*behind), 5) == [20, 30]
    assert held.batches == [[1], [2, 3]]
    assert done == [1, 2, 3]
    await asyncio.wait_for(commit.wait_idle(), 5)
    assert commit.statistics().writers == 0


async def test_a_cancelled_caller_is_written_all_the_same_and_strands_no_one() -> None:
    held = Held()
    commit: GroupCommit[int, int] = GroupCommit("t", held.flush)
    first = asyncio.ensure_future(commit.submit(1))
    await held.entered.wait()
    gone = asyncio.ensure_future(commit.submit(2))
    rest = asyncio.ensure_future(commit.submit(3))
    await asyncio.sleep(0)
    gone.cancel()
    held.release.set()
    assert await first == 10
    assert await asyncio.wait_for(rest, 5) == 30
    assert gone.cancelled()
    assert held.batches == [[1], [2, 3]]


async def test_batches_are_bounded_and_several_writers_share_the_queue() -> None:
    held = Held()
    held.release.set()
    commit: GroupCommit[int, int] = GroupCommit("t", held.flush, max_batch=3, writers=2)
    answers = await asyncio.gather(*(commit.submit(n) for n in range(10)))
    assert answers == [n * 10 for n in range(10)]
    assert max(len(b) for b in held.batches) <= 3
    assert sorted(n for b in held.batches for n in b) == list(range(10))
    stats = commit.statistics()
    assert (stats.requests, stats.waiting, stats.writers) == (10, 0, 0)


async def test_a_failed_batch_fails_each_of_its_requests_and_not_the_next() -> None:
    calls = 0

    async def flaky(requests: list[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk full")
        return [ValueError("refused") if r < 0 else r for r in requests]

    commit: GroupCommit[int, int] = GroupCommit("t", flaky)
    first = await asyncio.gather(commit.submit(1), commit.submit(2), return_exceptions=True)
    assert [type(r) for r in first] == [OSError, OSError]
    second = await asyncio.gather(commit.submit(3), commit.submit(-1), return_exceptions=True)
    assert second[0] == 3
    assert isinstance(second[1], ValueError)


@pytest.mark.parametrize("writers", [1, 3])
async def test_callers_cancelled_at_random_never_strand_the_others(writers: int) -> None:
    """Stress: 300 callers, a third cancelled at random moments; the rest all get answers."""
    rng = random.Random(13)

    async def flush(requests: list[int]) -> list[int | BaseException]:
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
        return list(requests)

    commit: GroupCommit[int, int] = GroupCommit("t", flush, max_batch=7, writers=writers)
    callers = []
    for n in range(300):
        callers.append(asyncio.ensure_future(commit.submit(n)))
        if rng.random() < 0.3:
            await asyncio.sleep(0)
    for _ in range(100):
        rng.choice(callers).cancel()
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.wait(callers), 10)
    for n, caller in enumerate(callers):
        assert caller.cancelled() or caller.result() == n
    assert commit.statistics().writers == 0
    assert await asyncio.wait_for(commit.submit(1000), 5) == 1000
