"""Group commit: requests that arrive while a batch is being written share the next one.

One write (an fsync of the agent's records directory, a transaction of the manager's
database) then serves many requests instead of one. No timer decides when to write: a
batch starts as soon as a writer is free, so a lone request waits for nothing, and under
load batches grow by themselves to what arrived during one write (up to ``max_batch``).

There is no task of its own: the writers are the callers. A caller that finds a writer's
place free (at most ``writers`` at once) writes the waiting requests, its own among them,
and then hands its place to the oldest caller still waiting, which writes the next batch;
every other caller waits for its answer. A batch in flight is never abandoned: a writer
cancelled meanwhile waits for the write to end, answers its batch, hands its place on, and
only then lets the cancellation through. Nothing is left running when the callers are gone,
so there is nothing to drain at shutdown.

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


class _Turn:
    """What a waiting caller's future receives when it is handed the writer's place."""


_TURN = _Turn()


class _Entry(Generic[T]):
    __slots__ = ("future", "led", "request", "taken")

    def __init__(self, request: T, future: asyncio.Future[Any]) -> None:
        self.request = request
        self.future = future  # the answer, or _TURN once (then replaced by a fresh one)
        self.led = False  # its caller holds, or held, a writer's place: never hand it one
        self.taken = False  # in a batch (written, or being written)


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
        # Callers writing now, plus places handed to a waiting caller not yet awake.
        self._writers = 0
        self._batches = 0
        self._requests = 0

    def statistics(self) -> GroupCommitStatistics:
        return GroupCommitStatistics(self._batches, self._requests, len(self._queue), self._writers)

    async def submit(self, request: T) -> R:
        """Queue the request for the next batch and return its answer.

        Raises:
            Exception: the one ``flush`` gave for this request, or raised for its batch.
        Cancelling the caller does not withdraw the request: it is written all the same.
        """
        entry = _Entry(request, asyncio.get_running_loop().create_future())
        self._queue.append(entry)
        try:
            if self._writers < self._max_writers:
                self._writers += 1
                entry.led = True
                await self._lead(entry, gather=True)
            while True:
                outcome = await self._wait_answer_or_turn(entry)
                if outcome is not _TURN:
                    answer: R = outcome
                    return answer
                await self._lead(entry)
        except BaseException:
            entry.future.cancel()  # no answer wanted; never handed the writer's place
            raise

    async def _wait_answer_or_turn(self, entry: _Entry[T]) -> Any:
        waited = entry.future
        try:
            return await waited
        except asyncio.CancelledError:
            if waited.done() and not waited.cancelled() and waited.result() is _TURN:
                self._pass_turn()  # handed the place just as it was cancelled: hand it on
            raise

    async def _lead(self, mine: _Entry[T], *, gather: bool = False) -> None:
        """Write batches until ``mine`` is in one (ours or another writer's), then hand on.

        ``gather``: first let the requests of this loop turn join the batch (a new writer).
        """
        try:
            if gather:
                await asyncio.sleep(0)
            while self._queue and not mine.taken:
                await self._write(self._take())
        finally:
            self._pass_turn()

    def _take(self) -> list[_Entry[T]]:
        batch: list[_Entry[T]] = []
        while self._queue and len(batch) < self._max_batch:
            entry = self._queue.popleft()
            entry.taken = True
            batch.append(entry)
        return batch

    def _pass_turn(self) -> None:
        """Hand this writer's place to the oldest caller still waiting, or give it up."""
        for entry in self._queue:
            if not entry.led and not entry.future.done():
                entry.led = True
                turn, entry.future = entry.future, asyncio.get_running_loop().create_future()
                turn.set_result(_TURN)
                return
        self._writers -= 1

    async def _write(self, batch: list[_Entry[T]]) -> None:
        """Write one batch and answer each of its requests; the write outlives a cancellation."""
        self._batches += 1
        self._requests += len(batch)
        writing = asyncio.ensure_future(self._flush_with_retries([e.request for e in batch]))
        cancelled = False
        while not writing.done():  # its failure is read by _settle, not raised here
            try:
                await asyncio.wait((writing,))  # cancelling the wait leaves the write running
            except asyncio.CancelledError:
                cancelled = True
        _settle(batch, writing)
        if cancelled:
            raise asyncio.CancelledError

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


def _settle(batch: list[_Entry[Any]], writing: asyncio.Future[Sequence[Any]]) -> None:
    """Answer each request of a written batch (those whose callers went away are skipped)."""
    if writing.cancelled():
        failed: BaseException | None = RuntimeError("the write was cancelled")
    else:
        failed = writing.exception()
    if failed is not None:  # every request of the batch learns why
        error = failed if isinstance(failed, Exception) else RuntimeError(repr(failed))
        for entry in batch:
            if not entry.future.done():
                entry.future.set_exception(error)
        return
    for entry, answer in zip(batch, writing.result(), strict=True):
        if entry.future.done():  # its caller went away; the work is done anyway
            continue
        if isinstance(answer, BaseException):
            entry.future.set_exception(answer)
        else:
            entry.future.set_result(answer)
