"""The manager's frequent writes, each kind gathered into batches (group commit).

Submissions, heartbeats and workers' reports go through one ``Batcher`` per kind;
each batch is one transaction of a few Core statements (``store.batch``), whatever
its size. The REST routes and the agents' RPC links share these: a report is
written the same way whichever door it came in by.

A heartbeat from a worker that runs nothing (most of them, on a big fleet) is soft
state: it is answered at once and written with the others of its tick (a quarter of
the heartbeat interval at most). A manager killed meanwhile loses a fraction of one
interval of "last seen" and load figures, which the next beat brings back; a lease
is never at stake (nothing runs). Beats that name running work are written before
they are answered, since the answer says which of it to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from herder.manager.batcher import Batcher
from herder.manager.store import batch
from herder.manager.store.batch import Beat, Finished, FreeWorker, NewTask, Report

log = logging.getLogger(__name__)

MAX_BEAT_FLUSH_S = 1.0

T = TypeVar("T")
R = TypeVar("R")


class Writes:
    """Batched writes to one database; ``lease_s`` is how long a worker's silence is tolerated."""

    def __init__(self, engine: AsyncEngine, lease_s: float, heartbeat_interval_s: float) -> None:
        self.engine = engine
        self.lease_s = lease_s
        self._beat_flush_s = min(MAX_BEAT_FLUSH_S, heartbeat_interval_s / 4)
        self._quiet_beats: dict[int, Beat] = {}
        self._beat_flusher: asyncio.Task[None] | None = None
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

    async def heartbeat(self, beat: Beat) -> list[list[int]]:
        """Note a heartbeat; the attempts it names that its worker must stop."""
        if beat.running == ():  # runs nothing: soft state, written with its tick
            self._quiet_beats[beat.worker_id] = beat
            if self._beat_flusher is None or self._beat_flusher.done():
                self._beat_flusher = asyncio.get_running_loop().create_task(
                    self._flush_quiet_beats(), name="quiet-heartbeats"
                )
            return []
        self._quiet_beats.pop(beat.worker_id, None)  # this one is newer
        return await self.beats.submit(beat)

    async def _flush_quiet_beats(self) -> None:
        while self._quiet_beats:
            await asyncio.sleep(self._beat_flush_s)
            await self._write_quiet_beats()

    async def _write_quiet_beats(self) -> None:
        beats, self._quiet_beats = self._quiet_beats, {}
        try:
            async with self.engine.begin() as conn:
                await batch.beat(conn, list(beats.values()), self.lease_s)
        except Exception:  # the database is away for a moment: keep them for the next tick
            log.exception("writing %d heartbeats failed", len(beats))
            self._quiet_beats = {**beats, **self._quiet_beats}

    async def close(self) -> None:
        """Write what is still held in memory (the manager is stopping)."""
        if self._beat_flusher is not None:
            self._beat_flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat_flusher
        if self._quiet_beats:
            await self._write_quiet_beats()

    async def claim(self, worker_ids: list[int], most: int | None = None) -> list[Row[Any]]:
        """Work for every free slot of these workers (or ``most`` pieces), in one transaction."""
        async with self.engine.begin() as conn:
            free: list[FreeWorker] = await batch.free_slots(conn, worker_ids)
            if not free:
                return []
            return await batch.claim(conn, free, self.lease_s, most=most)
