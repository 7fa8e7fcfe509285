"""Group commit (``herder.manager.batcher``): batches form by themselves, answers stay apart."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import OperationalError

from herder.manager.batcher import Batcher


class Recorder:
    """A flush that records each batch and can be held open until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.inside = 0
        self.most_inside = 0
        self.entered = asyncio.Event()

    async def flush(self, requests: list[int]) -> list[int | BaseException]:
        self.batches.append(list(requests))
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        self.entered.set()
        try:
            await self.release.wait()
        finally:
            self.inside -= 1
        return [ValueError(f"refused {r}") if r < 0 else r * 10 for r in requests]


async def test_requests_that_arrive_during_a_write_share_the_next_batch() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher: Batcher[int, int] = Batcher("t", recorder.flush)
    first = asyncio.ensure_future(batcher.submit(1))
    await recorder.entered.wait()
    rest = [asyncio.ensure_future(batcher.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    recorder.release.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40]
    assert recorder.batches == [[1], [2, 3, 4]]


async def test_one_refused_request_fails_alone() -> None:
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher("t", recorder.flush)
    results = await asyncio.gather(
        batcher.submit(5), batcher.submit(-1), batcher.submit(6), return_exceptions=True
    )
    assert results[0] == 50
    assert results[2] == 60
    assert isinstance(results[1], ValueError)


async def test_a_request_after_the_writer_went_idle_is_written() -> None:
    """The writer's exit and a new request in the same loop turn: no request is stranded."""
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher("t", recorder.flush)
    for n in range(20):
        assert await batcher.submit(n) == n * 10
        # submit again before the finished writer's task has been cleaned up
        assert await asyncio.wait_for(batcher.submit(n), 5) == n * 10


async def test_several_writers_write_at_once_up_to_their_number() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher: Batcher[int, int] = Batcher("t", recorder.flush, writers=2)
    pending = []
    for n in range(6):
        pending.append(asyncio.ensure_future(batcher.submit(n)))
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert recorder.inside == 2
    recorder.release.set()
    assert await asyncio.gather(*pending) == [n * 10 for n in range(6)]
    assert recorder.most_inside == 2


async def test_a_passing_database_failure_is_retried_and_a_lasting_one_reaches_everyone() -> None:
    calls: list[list[int]] = []

    async def flaky(requests: list[int]) -> list[int | BaseException]:
        calls.append(requests)
        if len(calls) == 1:
            raise OperationalError("BEGIN", {}, Exception("database is locked"))
        return list(requests)

    assert await Batcher("t", flaky).submit(7) == 7
    assert len(calls) == 2

    async def broken(requests: list[int]) -> list[int | BaseException]:
        raise RuntimeError("a bug")

    batcher: Batcher[int, int] = Batcher("t", broken)
    results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    with pytest.raises(RuntimeError):
        await batcher.submit(3)
