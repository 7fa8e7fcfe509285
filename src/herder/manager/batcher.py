"""Group commit: requests that arrive while a batch is being written share the next one.

One transaction (and, on SQLite, one fsync-free WAL commit; on PostgreSQL, one round
trip per statement) then serves a hundred heartbeats or reports instead of one. No
timer decides when to write: a batch starts as soon as the previous one ended, so a
lone request waits for nothing, and under load batches grow by themselves to what
arrived during one write (bounded by ``max_batch``).

Each request gets its own answer, or its own exception (a fenced report fails alone;
the others of its batch are committed). A batch that fails as a whole because the
database was briefly unavailable, or because PostgreSQL chose it as a deadlock victim,
is retried a few times before its requests see the error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 512
RETRIES = 3
RETRY_DELAY_S = 0.05
# PostgreSQL: serialization failure and deadlock detected: the transaction may simply run again.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def retryable(exc: BaseException) -> bool:
    """Whether a failed transaction may be run again unchanged."""
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError):
        state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return state in RETRYABLE_SQLSTATES
    return False


class Batcher(Generic[T, R]):
    """Requests of one kind, written in batches by ``flush`` (one transaction each).

    ``flush`` gets the batch's requests and returns, in the same order, each one's
    answer or an exception instance to raise to that request alone.
    """

    def __init__(
        self,
        name: str,
        flush: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_batch: int = MAX_BATCH,
        writers: int = 1,
    ) -> None:
        self.name = name
        self._flush = flush
        self._max_batch = max_batch
        self._max_writers = writers
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._writers = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle_writers = 0
        self.batches = 0
        self.requests = 0

    async def submit(self, request: T) -> R:
        """Queue the request for the next batch and wait for its answer."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if not self._idle_writers and self._writers < self._max_writers:
            # Every writer is busy (or there is none): one more batch may be written at once.
            self._writers += 1
            self._idle_writers += 1
            task = asyncio.get_running_loop().create_task(self._write(), name=f"batch:{self.name}")
            self._tasks.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _write(self) -> None:
        try:
            await self._write_while_waiting()
        finally:
            # Counted off here, not in a done callback: a request queued between this
            # writer's last look at the queue and such a callback would find no writer.
            self._idle_writers -= 1
            self._writers -= 1

    async def _write_while_waiting(self) -> None:
        while self._waiting:
            self._idle_writers -= 1
            try:
                await self._write_one()
            finally:
                self._idle_writers += 1

    async def _write_one(self) -> None:
        if self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            self.batches += 1
            self.requests += len(batch)
            try:
                answers = await self._flush_with_retries([request for request, _ in batch])
            except BaseException as exc:  # every request of the batch learns why
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                if not isinstance(exc, Exception):
                    raise
                return
            for (_, future), answer in zip(batch, answers, strict=True):
                if future.done():  # its requester went away; the work is done anyway
                    continue
                if isinstance(answer, BaseException):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    async def _flush_with_retries(self, requests: list[T]) -> Sequence[R | BaseException]:
        for attempt in range(1, RETRIES + 1):
            try:
                return await self._flush(requests)
            except Exception as exc:
                if attempt == RETRIES or not retryable(exc):
                    raise
                log.warning("%s: a batch of %d failed (%s); trying again", self.name, len(requests), exc)
                await asyncio.sleep(RETRY_DELAY_S * attempt)
        raise AssertionError("unreachable")
