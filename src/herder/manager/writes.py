"""The manager's frequent writes, each kind gathered into batches (group commit).

Submissions, heartbeats and workers' reports go through one ``Batcher`` per kind;
each batch is one transaction of a few Core statements (``store.batch``), whatever
its size. The REST routes and the agents' RPC links share these: a report is
written the same way whichever door it came in by.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from herder.manager.batcher import Batcher
from herder.manager.store import batch
from herder.manager.store.batch import Beat, Finished, FreeWorker, NewTask, Report

T = TypeVar("T")
R = TypeVar("R")


class Writes:
    """Batched writes to one database; ``lease_s`` is how long a worker's silence is tolerated."""

    def __init__(self, engine: AsyncEngine, lease_s: float) -> None:
        self.engine = engine
        self.lease_s = lease_s
        self.submissions: Batcher[NewTask, int] = Batcher(
            "submissions", self._in_transaction(batch.insert_tasks)
        )
        self.beats: Batcher[Beat, list[list[int]]] = Batcher(
            "heartbeats", self._in_transaction(lambda conn, beats: batch.beat(conn, beats, self.lease_s))
        )
        self.starts: Batcher[Report, str] = Batcher(
            "started", self._in_transaction(lambda conn, reports: batch.start(conn, reports, self.lease_s))
        )
        self.finishes: Batcher[Finished, tuple[int, str]] = Batcher(
            "finished", self._in_transaction(batch.finish)
        )
        self.progresses: Batcher[tuple[Report, int | None, float | None], int] = Batcher(
            "progress", self._in_transaction(self._progress)
        )

    def _in_transaction(
        self, write: Callable[[AsyncConnection, list[T]], Awaitable[Sequence[R | BaseException]]]
    ) -> Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]:
        async def flush(requests: list[T]) -> Sequence[R | BaseException]:
            async with self.engine.begin() as conn:
                return await write(conn, requests)

        return flush

    @staticmethod
    async def _progress(
        conn: AsyncConnection, reports: list[tuple[Report, int | None, float | None]]
    ) -> list[int | batch.FencedOut]:
        return [await batch.progress(conn, report, frame, percent) for report, frame, percent in reports]

    async def claim(self, worker_ids: list[int], most: int | None = None) -> list[Row[Any]]:
        """Work for every free slot of these workers (or ``most`` pieces), in one transaction."""
        async with self.engine.begin() as conn:
            free: list[FreeWorker] = await batch.free_slots(conn, worker_ids)
            if not free:
                return []
            return await batch.claim(conn, free, self.lease_s, most=most)
