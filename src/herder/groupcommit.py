"""Group commit: requests that arrive while a batch is being written share the next one.

One write (an fsync of the agent's records directory, a transaction of the manager's
database) then serves many requests instead of one. No timer decides when to write: a
batch starts as soon as a writer is free, so a lone request waits for nothing, and under
load batches grow by themselves to what arrived during one write (up to ``max_batch``).

A batch is written by a writer task that the group commit starts when a request finds no
writer free (at most ``writers`` at once) and that writes batch after batch while requests
wait, then ends: under load the next batch starts the moment the last one is written,
with no hand-over between tasks in between (an earlier design that had each caller write
and hand on to the next caller cost three turns of the event loop per batch, and 12% of
the manager's submissions while its agents worked). The writers are the group commit's
own: it holds them, ``wait_idle()`` awaits them, and one lives only while requests wait.
A caller that is cancelled does not withdraw its request: the write is the writer's, not
the caller's, so it is never abandoned half way and no request behind it is stranded.

Each request gets its own answer, or its own exception (``flush`` returns an exception
instance for a request that fails alone). A batch that fails as a whole fails every request
in it with the same exception, unless ``retryable`` says the failure passes (a database
briefly away): then the batch is written again, up to ``attempts`` times in all.

Who calls which: ``herder.agent.processes.store.GroupCommit`` (process records) and
``herder.manager.batcher.Batcher`` (the manager's rounds of writes) are built on this.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# A batch this large is one transaction of a few statements on the manager; larger ones
# hold the database (and every request in them) for longer than they save.
MAX_BATCH = 512
ATTEMPTS = 3
RETRY_DELAY_S = 0.05  # times the attempt's number: 0.05 s, then 0.1 s

Flush = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


def never(exc: BaseException) -> bool:
    """The default ``retryable``: no failure is retried."""
    return False


class _Entry(Generic[T]):
    __slots__ = ("future", "request")

    def __init__(self, request: T, future: asyncio.Future[Any]) -> None:
        self.request = request
        self.future = future  # the answer; cancelled if its caller went away


@dataclass(frozen=True)
class GroupCommitStatistics:
    """Counts since the group commit was made."""

    batches: int
    requests: int
    waiting: int
    writers: int


class GroupCommit(Generic[T, R]):
    """Requests of one kind, written in batches by ``flush``.

    ``flush`` gets the batch's requests and returns, in the same order, each one's answer
    or an exception instance to raise to that request alone. If it raises, every request
    of the batch gets that exception (after the retries ``retryable`` allows).
    """

    def __init__(
        self,
        name: str,
        flush: Flush[T, R],
        *,
        max_batch: int = MAX_BATCH,
        writers: int = 1,
        retryable: Callable[[BaseException], bool] = never,
        attempts: int = ATTEMPTS,
        retry_delay_s: float = RETRY_DELAY_S,
    ) -> None:
        self.name = name
        self._flush = flush
        self._max_batch = max_batch
        self._max_writers = writers
        self._retryable = retryable
        self._attempts = max(1, attempts)
        self._retry_delay_s = retry_delay_s
        self._queue: collections.deque[_Entry[T]] = collections.deque()
        self._writers: set[asyncio.Task[None]] = set()  # alive while requests wait
        self._writing = 0  # writers inside a write (the others are about to look at the queue)
        self._batches = 0
        self._requests = 0

    def statistics(self) -> GroupCommitStatistics:
        return GroupCommitStatistics(self._batches, self._requests, len(self._queue), len(self._writers))

    async def submit(self, request: T) -> R:
        """Queue the request for the next batch and return its answer.

        Raises:
            Exception: the one ``flush`` gave for this request, or raised for its batch.
        Cancelling the caller does not withdraw the request: it is written all the same.
        """
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append(_Entry(request, future))
        if len(self._writers) == self._writing and len(self._writers) < self._max_writers:
            # Every writer is inside a write (or there is none): one more may start at once.
            writer = asyncio.get_running_loop().create_task(
                self._write_while_waiting(), name=f"batch:{self.name}"
            )
            self._writers.add(writer)
        return await future

    async def wait_idle(self) -> None:
        """Return once no batch is being written and no request waits."""
        while self._writers:
            await asyncio.wait(set(self._writers))

    async def _write_while_waiting(self) -> None:
        """A writer: batch after batch while requests wait, then end."""
        try:
            while self._queue:
                batch = self._take()
                self._writing += 1
                try:
                    await self._write(batch)
                finally:
                    self._writing -= 1
        finally:
            # Left here, not in a done callback: a request queued between this writer's
            # last look at the queue and such a callback would find no writer.
            self._writers.discard(asyncio.current_task())

    def _take(self) -> list[_Entry[T]]:
        batch: list[_Entry[T]] = []
        while self._queue and len(batch) < self._max_batch:
            batch.append(self._queue.popleft())
        return batch

    async def _write(self, batch: list[_Entry[T]]) -> None:
        """Write one batch and answer each of its requests; every request learns the outcome."""
        self._batches += 1
        self._requests += len(batch)
        try:
            answers = await self._flush_with_retries([e.request for e in batch])
        except BaseException as exc:  # every request of the batch learns why
            error = exc if isinstance(exc, Exception) else RuntimeError(f"the write was interrupted: {exc!r}")
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for entry, answer in zip(batch, answers, strict=True):
            if entry.future.done():  # its caller went away; the work is done anyway
                continue
            if isinstance(answer, BaseException):
                entry.future.set_exception(answer)
            else:
                entry.future.set_result(answer)

    async def _flush_with_retries(self, requests: list[T]) -> Sequence[R | BaseException]:
        for attempt in range(1, self._attempts + 1):
            try:
                return await self._flush(requests)
            except Exception as exc:
                if attempt == self._attempts or not self._retryable(exc):
                    raise
                log.warning("%s: a batch of %d failed (%s); trying again", self.name, len(requests), exc)
                await asyncio.sleep(self._retry_delay_s * attempt)
        raise AssertionError("unreachable")
