"""The manager's frequent writes, gathered into rounds: one transaction serves them all.

Submissions, heartbeats, workers' reports and claims all go through one ``Batcher``:
whatever arrived while the previous round was being written is written in the next,
in one transaction of a few Core statements per kind (``store.batch``). The REST
routes and the agents' RPC links share it: a report is written the same way whichever
door it came in by. With SQLite (one connection, one writer) this matters most: one
round in flight instead of a queue of small transactions, each waiting for the last.

A round that submitted or finished work also claims, in the same transaction, work
for the free slots of the linked workers (``dispatch_to``) and hands what it claimed
to ``on_claimed`` once committed: a slot freed by a report is filled without waiting
for the dispatcher's next pass.

A round that fails as a whole for a reason other than a passing one (which
``Batcher`` retries) is written again kind by kind, each in a transaction of its own,
so that one kind's failure (a bug, a value the database refuses) is reported to its
requests only.

A heartbeat from a worker that runs nothing (most of them, on a big fleet) is soft
state: it is answered at once and written with the others of its tick (a quarter of
the heartbeat interval at most). A manager killed meanwhile loses a fraction of one
interval of "last seen" and load figures, which the next beat brings back; a lease is
never at stake (nothing runs). Beats that name running work are written before they
are answered, since the answer says which of it to stop. While a tick's write is
overdue (the database away, or this manager cut off from it), quiet beats wait for it
too: their agents move to a manager that can record them (the chaos suite's idle agent
stayed linked to a manager cut off from PostgreSQL, getting no work). The ticks are ``Writes.run``,
one of the manager's components (``ManagerRuntime.components``): its task is owned by
the manager's task group, and what is left at the stop is written by ``close``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.ext.asyncio import AsyncEngine

from herder.manager.batcher import Batcher, retryable
from herder.manager.store import claims, heartbeats, reports, submissions
from herder.manager.store.heartbeats import Beat
from herder.manager.store.reports import Done, Finished, Report
from herder.manager.store.submissions import NewTask

log = logging.getLogger(__name__)

MAX_BEAT_FLUSH_S = 1.0
# At stop, how long a round still being written may take before the thread is let go.
CLOSE_WAIT_S = 10.0

# The kinds of request, in the order a round writes them: new tasks first, so that the
# round's own claim can hand them out.
SUBMIT, BEATS, START, PROGRESS, FINISH, CLAIM = "submit", "beats", "start", "progress", "finish", "claim"
ORDER = (SUBMIT, BEATS, START, PROGRESS, FINISH, CLAIM)

Request = tuple[str, Any]
R = TypeVar("R")


class Writes:
    """Rounds of writes to one database; ``lease_s`` is how long a worker's silence is tolerated."""

    def __init__(
        self,
        engine: AsyncEngine,
        lease_s: float,
        heartbeat_interval_s: float,
        sync_engine: Engine | None = None,
        offline_after_s: float | None = None,
    ) -> None:
        self.engine = engine
        self._sync_engine = sync_engine
        # The one thread a synchronous engine's connection is used from (SQLite only).
        self._thread = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="herder-db")
            if sync_engine is not None
            else None
        )
        self.lease_s = lease_s
        # Workers not heard from for this long are offline: claims give them nothing.
        self.offline_after_s = offline_after_s if offline_after_s is not None else lease_s
        # One round at a time, on PostgreSQL too: three at once measured slower (their
        # claims must take turns, or two would fill the same free slots), and rounds
        # simply grow under load.
        self.rounds: Batcher[Request, Any] = Batcher("writes", self._write_round)
        self._beat_flush_s = min(MAX_BEAT_FLUSH_S, heartbeat_interval_s / 4)
        self._quiet_beats: dict[int, Beat] = {}
        self._beats_waiting = asyncio.Event()  # quiet beats wait for ``run``'s next tick
        # When a write of quiet beats began that has not succeeded since (None: none), and
        # what waits for the next success: past one tick, quiet beats are not answered
        # before it (see ``heartbeat``).
        self._beats_behind_since: float | None = None
        self._beats_written = asyncio.Event()
        # Set by the RPC links: the workers to claim for, and who pushes what was claimed.
        self.dispatch_to: Callable[[], list[int]] = list
        self.on_claimed: Callable[[list[Row[Any]]], Awaitable[None]] | None = None
        self.claimed_total = 0  # work items claimed, by rounds and by ``claim`` (/metrics)
        # Told of every heartbeat and every round written: the dashboard's feed (events.py).
        self.on_beat: Callable[[Beat], None] | None = None
        self.on_round: Callable[[], None] | None = None

    # -- what callers ask ------------------------------------------------------------------

    async def submit_task(self, new: NewTask) -> int:
        """Store a compiled task; its id."""
        task_id: int = await self.rounds.submit((SUBMIT, new))
        return task_id

    async def heartbeat(self, beat: Beat) -> list[list[int]]:
        """Note a heartbeat; the attempts it names that its worker must stop."""
        if self.on_beat is not None:
            self.on_beat(beat)
        if beat.running == ():  # runs nothing: soft state, written with its tick
            self._quiet_beats[beat.worker_id] = beat
            self._beats_waiting.set()
            behind = self._beats_behind_since
            if behind is not None and time.monotonic() - behind > self._beat_flush_s:
                # The database has not taken a tick's beats for a while (it is away, or this
                # manager is cut off from it): answered now, the worker would stay linked to
                # a manager that can neither record it nor give it work. Unanswered, it
                # moves to another manager (with several) once its beat is overdue.
                await self._beats_written.wait()
            return []
        self._quiet_beats.pop(beat.worker_id, None)  # this one is newer
        stops: list[list[list[int]]] = await self.rounds.submit((BEATS, [beat]))
        return stops[0]

    async def started(self, report: Report) -> str:
        """An attempt started; the name of its task's parser.

        Raises:
            FencedOut: the attempt is no longer the worker's.
        """
        parser: str = await self.rounds.submit((START, report))
        return parser

    async def progress(self, report: Report, frame: int | None, percent: float | None) -> int:
        """An attempt's progress; its task's id.

        Raises:
            FencedOut: the attempt is no longer the worker's.
        """
        task_id: int = await self.rounds.submit((PROGRESS, (report, frame, percent)))
        return task_id

    async def finished(self, report: Finished) -> Done:
        """An attempt ended; its task's id and new status, and whether the item ended.

        The report's ``log`` is stored in its round if the report ends the item: in
        the transaction that writes the end, so that an ended item's output is in the
        database exactly when its end is (no window in which the log reads neither
        memory nor database), and at no cost of its own (no transaction more).

        Raises:
            FencedOut: the attempt is no longer the worker's.
        """
        done: Done = await self.rounds.submit((FINISH, report))
        return done

    async def claim(self, worker_ids: list[int], most: int | None = None) -> list[Row[Any]]:
        """Work for every free slot of these workers (or ``most`` pieces of it)."""
        claimed: list[Row[Any]] = await self.rounds.submit((CLAIM, (worker_ids, most)))
        self.claimed_total += len(claimed)
        return claimed

    # -- rounds ----------------------------------------------------------------------------

    async def _write_round(self, requests: list[Request]) -> Sequence[Any]:
        kinds = {kind for kind, _ in requests}
        workers = self.dispatch_to() if SUBMIT in kinds or FINISH in kinds else []
        try:
            results, claimed = await self._in_transaction(self._apply, requests, workers)
        except Exception as exc:
            if retryable(exc) or len(kinds) == 1:
                raise
            log.warning("a round of %d writes failed (%s); writing each kind alone", len(requests), exc)
            results, claimed = await self._write_kinds_apart(requests, kinds)
        if self.on_round is not None:
            self.on_round()
        self.claimed_total += len(claimed)
        if claimed and self.on_claimed is not None:
            await self.on_claimed(claimed)
        return results

    async def _in_transaction(self, write: Callable[..., R], *args: Any) -> R:
        """Run ``write(connection, *args)`` in one transaction, committed if it returns.

        SQLite: in the database's own thread, on a synchronous engine. PostgreSQL: on
        the asynchronous one, through ``run_sync``.
        """
        if self._sync_engine is not None:

            def in_thread() -> R:
                assert self._sync_engine is not None
                with self._sync_engine.begin() as conn:
                    return write(conn, *args)

            return await asyncio.get_running_loop().run_in_executor(self._thread, in_thread)
        async with self.engine.begin() as conn:
            return await conn.run_sync(write, *args)

    async def _write_kinds_apart(
        self, requests: list[Request], kinds: set[str]
    ) -> tuple[list[Any], list[Row[Any]]]:
        results: list[Any] = [None] * len(requests)
        for kind in kinds:
            indexes = [i for i, (k, _) in enumerate(requests) if k == kind]
            try:
                part, _ = await self._in_transaction(self._apply, [requests[i] for i in indexes], [])
            except Exception as exc:
                part = [exc] * len(indexes)
            for i, result in zip(indexes, part, strict=True):
                results[i] = result
        return results, []

    def _apply(
        self, conn: Connection, requests: list[Request], workers: list[int]
    ) -> tuple[list[Any], list[Row[Any]]]:
        """Write every request of a round; their answers, and what the round claimed.

        ``workers``: those to fill the free slots of, if the round submitted or
        finished work (none: claim nothing beyond what is asked).
        """
        results: list[Any] = [None] * len(requests)
        by_kind: dict[str, list[int]] = {}
        for i, (kind, _) in enumerate(requests):
            by_kind.setdefault(kind, []).append(i)
        for kind in ORDER:
            indexes = by_kind.get(kind)
            if not indexes:
                continue
            payloads = [requests[i][1] for i in indexes]
            for i, answer in zip(indexes, self._write_kind(conn, kind, payloads), strict=True):
                results[i] = answer
        claimed: list[Row[Any]] = []
        if workers and (SUBMIT in by_kind or FINISH in by_kind):
            free = claims.free_slots(conn, workers, self.offline_after_s)
            claimed = claims.claim(conn, free, self.lease_s) if free else []
        return results, claimed

    def _write_kind(self, conn: Connection, kind: str, payloads: list[Any]) -> Sequence[Any]:
        if kind == SUBMIT:
            return submissions.insert_tasks(conn, payloads)
        if kind == BEATS:
            beats = [beat for group in payloads for beat in group]
            stops = iter(heartbeats.beat(conn, beats, self.lease_s))
            return [[next(stops) for _ in group] for group in payloads]
        if kind == START:
            return reports.start(conn, payloads, self.lease_s)
        if kind == PROGRESS:
            return [reports.progress(conn, report, frame, pct) for report, frame, pct in payloads]
        if kind == FINISH:
            return reports.finish(conn, payloads)
        if kind == CLAIM:
            answers = []
            for worker_ids, most in payloads:
                free = claims.free_slots(conn, worker_ids, self.offline_after_s)
                answers.append(claims.claim(conn, free, self.lease_s, most=most) if free else [])
            return answers
        raise ValueError(f"unknown kind of write {kind!r}")

    # -- quiet heartbeats ------------------------------------------------------------------

    async def run(self) -> None:
        """Write the quiet heartbeats, a tick's together, until cancelled (a component).

        A tick starts with the first beat held and ends ``_beat_flush_s`` later; no beat
        held, no tick. Cancelled, it leaves what it holds to ``close``.
        """
        while True:
            await self._beats_waiting.wait()
            await asyncio.sleep(self._beat_flush_s)
            self._beats_waiting.clear()
            await self._write_quiet_beats()

    async def _write_quiet_beats(self) -> None:
        beats, self._quiet_beats = self._quiet_beats, {}
        if self._beats_behind_since is None:
            self._beats_behind_since = time.monotonic()
        try:
            await self.rounds.submit((BEATS, list(beats.values())))
        except Exception:  # the database is away for a moment: keep them for the next tick
            log.exception("writing %d heartbeats failed", len(beats))
            self._quiet_beats = {**beats, **self._quiet_beats}
            self._beats_waiting.set()
            return
        self._beats_behind_since = None
        written, self._beats_written = self._beats_written, asyncio.Event()
        written.set()

    async def close(self) -> None:
        """Write what is still held in memory (the manager is stopping; ``run`` has ended)."""
        with contextlib.suppress(TimeoutError):  # a round being written ends before its thread goes
            async with asyncio.timeout(CLOSE_WAIT_S):
                await self.rounds.wait_idle()
        if self._quiet_beats:
            await self._write_quiet_beats()
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._sync_engine is not None:
            self._sync_engine.dispose()
