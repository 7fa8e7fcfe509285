"""The firing loop: a component of every manager that submits the schedules' due runs.

Each pass reads the enabled schedules whose ``next_run_at`` has come (by the loop's
``Clock``, a test's own or the system's), compiles each one's task template, and fires
its runs in one transaction per schedule (``store.fire``: the claim, then the tasks).
Several managers on one PostgreSQL all run this loop; the claim lets exactly one of
them fire each run. Then it sleeps until the soonest next run, a second at most (a
schedule made or changed through another manager is seen within that second), or
until a route here wakes it.

Tasks fired here are inserted directly, not through ``Writes``' rounds: the
dispatcher is woken to hand them out, and the dashboard's feed to show them.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from herder.clock import SYSTEM_CLOCK, Clock, wait_event
from herder.manager.errors import InvalidTask
from herder.manager.models import TaskSubmission
from herder.manager.schedules import store
from herder.manager.store.submissions import NewTask

if TYPE_CHECKING:
    from herder.manager.server import ManagerRuntime

log = logging.getLogger(__name__)

# The longest sleep between passes: how soon another manager's new schedule is seen,
# and a queued run (``overlap: queue``) submitted after its previous task ended.
POLL_S = 1.0


class Scheduler:
    """Fires the schedules' runs (``run``, a component); the routes' ``clock`` and ``wake``."""

    def __init__(self, runtime: ManagerRuntime, clock: Clock = SYSTEM_CLOCK) -> None:
        self._runtime = runtime
        self.clock = clock
        self._wake = asyncio.Event()
        self.fired_total = 0  # tasks submitted by this manager's passes
        self.lost_claims = 0  # runs another manager claimed first (several on one database)
        self.passes = 0  # passes completed (tests wait on it)
        self.asleep = False  # between passes
        # Told of each claim inside its transaction, before the tasks are written (tests
        # make it fail there: the claim must be undone with them).
        self.on_claimed: Callable[[int, float], None] | None = None

    def wake(self) -> None:
        """A schedule was made or changed here: look again now."""
        self._wake.set()

    async def run(self) -> None:
        """Pass after pass until cancelled; a failed pass is logged and the next one retries."""
        while True:
            self._wake.clear()
            soonest: float | None = None
            try:
                soonest = await self.fire_due()
            except Exception:  # the database is away for a moment: the next pass retries
                log.exception("firing the schedules' runs failed")
            self.passes += 1
            wait = POLL_S if soonest is None else min(POLL_S, max(0.0, soonest - self.clock.time()))
            self.asleep = True
            await wait_event(self._wake, wait, self.clock)
            self.asleep = False

    async def fire_due(self) -> float | None:
        """One pass: fire what is due and what waited; the soonest next run after it."""
        now = self.clock.time()
        engine = self._runtime.writes.engine
        async with engine.connect() as conn:
            due = await conn.run_sync(store.due, now)
            waiting = await conn.run_sync(store.waiting)
        fired = 0
        for row in due:
            new, error = await self._compiled(row.template)
            fired += await self._in_transaction(store.fire, row, now, new, error, self.on_claimed)
        for row in waiting:
            new, error = await self._compiled(row.template)
            fired += await self._in_transaction(store.fire_pending, row, now, new, error)
        if fired:
            self.fired_total += fired
            self._runtime.dispatcher.wake()
            self._runtime.events.changed()
        async with engine.connect() as conn:
            return await conn.run_sync(store.next_due)

    async def _in_transaction(self, fire: Callable[..., store.Fired | None], *args: Any) -> int:
        """Run one firing in a transaction of its own; how many tasks it submitted."""
        async with self._runtime.writes.engine.begin() as conn:
            fired = await conn.run_sync(fire, *args)
        if fired is None:
            self.lost_claims += 1
            return 0
        for task_id in fired.task_ids:
            log.info("schedule %d submitted task %d", args[0].id, task_id)
        return len(fired.task_ids)

    async def _compiled(self, template: dict[str, Any]) -> tuple[NewTask | None, str | None]:
        """The template's task compiled, or why it no longer compiles (a plugin removed)."""
        try:
            new = await self._runtime.compile(TaskSubmission.model_validate(template))
        except (InvalidTask, ValueError) as exc:
            return None, f"the task no longer compiles: {exc}"
        return NewTask(copy.deepcopy(new.task), new.items), None
