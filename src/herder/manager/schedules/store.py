"""The schedules in the database: what the routes read and change, and one run's firing.

The routes' side (``create``, ``listing``, ``get``, ``update``, ``delete``) works on the
ORM, a request at a time. ``fire`` and ``fire_pending`` are the firing loop's: Core
statements on one connection inside one transaction, the claim first:

    UPDATE schedules SET next_run_at = <next> WHERE id = :id AND next_run_at = :old

then the run's tasks (``store.submissions.insert_tasks``, as ``POST /tasks``'s rounds
write them) and their ``schedule_runs`` rows. Of two managers on one PostgreSQL that
read the same ``next_run_at``, the second's UPDATE waits for the first's commit, finds
the row changed and matches nothing: it fires nothing. A manager killed before its
commit leaves neither the claim nor the task (the next pass fires the run), and one
killed after has left both (nobody fires it again).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from herder.manager.errors import NotFound
from herder.manager.schedules.tables import Schedule, ScheduleRun
from herder.manager.schedules.timing import Timing
from herder.manager.states import TERMINAL
from herder.manager.store.submissions import NewTask, insert_tasks
from herder.manager.store.tables import AuthKey, Task

# A run more than this late was missed (no manager ran then): ``catch_up`` decides. A
# manager's pass comes at least once a second, so a run this late was not merely slow.
MISSED_AFTER_S = 10.0
# The most runs one pass fires for a schedule (``catch_up: all`` after a long stop: the
# newest ones; the older are counted as skipped).
MAX_CATCH_UP = 100
# ``overlap: allow``: past this many of a schedule's tasks still active, runs are skipped
# (a one-second schedule of hour-long tasks would otherwise fill the queue without end).
MAX_ACTIVE_ALLOWED = 100
# The runs kept per schedule in ``schedule_runs`` (GET /schedules/{id}'s recent_runs).
KEPT_RUNS = 100
_TERMINAL = tuple(str(s) for s in TERMINAL)


def timing_of(row: Any) -> Timing:
    """The timing of a schedule's row (ORM object or Core row)."""
    return Timing(row.cron, row.interval_s, row.timezone, row.anchor_at)


def schedule_document(row: Any) -> dict[str, Any]:
    """A schedule as the API answers it (``models.ScheduleDocument``)."""
    return {
        "id": row.id,
        "name": row.name,
        "owner": row.owner,
        "cron": row.cron,
        "interval_s": row.interval_s,
        "timezone": row.timezone,
        "task": row.template,
        "overlap": row.overlap,
        "catch_up": row.catch_up,
        "enabled": row.enabled,
        "next_run_at": row.next_run_at,
        "pending_at": row.pending_at,
        "last_run_at": row.last_run_at,
        "last_task_id": row.last_task_id,
        "runs": row.runs,
        "skipped": row.skipped,
        "last_error": row.last_error,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


# -- the routes' side ---------------------------------------------------------------------


async def create(db: AsyncSession, fields: dict[str, Any], now: float) -> Schedule:
    """A new schedule; its first run is the first after ``now`` (an interval's: ``now`` plus it)."""
    schedule = Schedule(**fields, anchor_at=now, runs=0, skipped=0, created_at=now, updated_at=now)
    schedule.next_run_at = timing_of(schedule).next_after(now)
    db.add(schedule)
    await db.flush()
    return schedule


async def count_of(db: AsyncSession, owner: str | None) -> int:
    query = (
        select(func.count())
        .select_from(Schedule)
        .where(Schedule.owner.is_(None) if owner is None else Schedule.owner == owner)
    )
    return int((await db.execute(query)).scalar_one())


async def listing(db: AsyncSession, viewer: str | None) -> Sequence[Schedule]:
    """Every schedule ``viewer`` may see (None: all), oldest first."""
    query = select(Schedule).order_by(Schedule.id)
    if viewer is not None:
        query = query.where(Schedule.owner == viewer)
    return (await db.execute(query)).scalars().all()


async def get(db: AsyncSession, schedule_id: int, viewer: str | None, *, lock: bool = False) -> Schedule:
    """The schedule; another user's is as absent as one that does not exist.

    Raises:
        NotFound: no such schedule for ``viewer``.
    """
    query = select(Schedule).where(Schedule.id == schedule_id)
    if lock:
        query = query.with_for_update()
    schedule = (await db.execute(query)).scalar_one_or_none()
    if schedule is None or (viewer is not None and schedule.owner != viewer):
        raise NotFound(f"no schedule with id {schedule_id}")
    return schedule


async def recent_runs(db: AsyncSession, schedule_id: int, most: int = 20) -> list[dict[str, Any]]:
    query = (
        select(ScheduleRun)
        .where(ScheduleRun.schedule_id == schedule_id)
        .order_by(ScheduleRun.run_at.desc())
        .limit(most)
    )
    return [
        {"run_at": r.run_at, "task_id": r.task_id, "fired_at": r.fired_at}
        for r in (await db.execute(query)).scalars()
    ]


async def update_schedule(db: AsyncSession, schedule: Schedule, fields: dict[str, Any], now: float) -> None:
    """Change what ``fields`` give; a change of timing, or a resume, starts from ``now``.

    A resumed schedule's runs missed while it was paused are not caught up: the pause
    was asked for. Its next run is the first after ``now``.
    """
    retime = any(k in fields for k in ("cron", "interval_s", "timezone"))
    resumed = fields.get("enabled") is True and not schedule.enabled
    if "cron" in fields:
        schedule.interval_s = None
    if "interval_s" in fields:
        schedule.cron = None
    for key, value in fields.items():
        setattr(schedule, "template" if key == "task" else key, value)
    if retime:
        schedule.anchor_at = now
    if retime or resumed:
        schedule.next_run_at = timing_of(schedule).next_after(now)
    if fields.get("enabled") is False:
        schedule.pending_at = None  # a paused schedule submits nothing, a waiting run neither
    schedule.updated_at = now
    await db.flush()


async def delete_schedule(db: AsyncSession, schedule: Schedule) -> None:
    """Delete it and its runs' records (its tasks stay: they are tasks like any other)."""
    await db.execute(delete(ScheduleRun).where(ScheduleRun.schedule_id == schedule.id))
    await db.delete(schedule)


# -- the firing loop's side ---------------------------------------------------------------

_COLUMNS = (
    Schedule.id,
    Schedule.owner,
    Schedule.cron,
    Schedule.interval_s,
    Schedule.timezone,
    Schedule.anchor_at,
    Schedule.template,
    Schedule.overlap,
    Schedule.catch_up,
    Schedule.next_run_at,
    Schedule.pending_at,
    Schedule.last_task_id,
)


def due(conn: Connection, now: float, most: int = 100) -> list[Any]:
    """Enabled schedules whose next run is due at ``now``, the most overdue first."""
    query = (
        select(*_COLUMNS)
        .where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
        .order_by(Schedule.next_run_at)
        .limit(most)
    )
    return list(conn.execute(query))


def waiting(conn: Connection, most: int = 100) -> list[Any]:
    """Enabled schedules with a queued run whose previous task is no longer active."""
    query = (
        select(*_COLUMNS)
        .outerjoin(Task, Task.id == Schedule.last_task_id)
        .where(
            Schedule.enabled.is_(True),
            Schedule.pending_at.is_not(None),
            (Task.id.is_(None)) | Task.status.in_(_TERMINAL),
        )
        .limit(most)
    )
    return list(conn.execute(query))


def next_due(conn: Connection) -> float | None:
    """The soonest next run of any enabled schedule (None: none)."""
    query = select(func.min(Schedule.next_run_at)).where(Schedule.enabled.is_(True))
    value = conn.execute(query).scalar()
    return float(value) if value is not None else None


@dataclass(frozen=True)
class Plan:
    """What a pass fires for one schedule: the runs to submit, those skipped as missed."""

    runs: list[float]
    missed_skipped: int
    next_run_at: float | None


def plan(row: Any, now: float) -> Plan:
    """Which of a schedule's due runs fire now (``catch_up``), and its next run after ``now``.

    The runs due are those from ``next_run_at`` to ``now``. Those late by at most
    ``MISSED_AFTER_S`` are on time and fire; older ones were missed while no manager ran:
    ``none`` fires none of them, ``one`` the newest, ``all`` each (the newest
    ``MAX_CATCH_UP`` runs at most; the rest count as skipped).
    """
    timing = timing_of(row)
    recent, more = timing.latest(row.next_run_at, now, MAX_CATCH_UP)
    on_time = [t for t in recent if now - t <= MISSED_AFTER_S]
    missed = [t for t in recent if now - t > MISSED_AFTER_S]
    if row.catch_up == "all":
        caught = missed
    elif row.catch_up == "one":
        caught = missed[-1:]
    else:
        caught = []
    skipped = len(missed) - len(caught) + (1 if more else 0)
    return Plan(caught + on_time, skipped, timing.next_after(now))


def _active(conn: Connection, task_id: int | None) -> bool:
    if task_id is None:
        return False
    status = conn.execute(select(Task.status).where(Task.id == task_id)).scalar()
    return status is not None and status not in _TERMINAL


def _active_count(conn: Connection, schedule_id: int) -> int:
    query = (
        select(func.count())
        .select_from(ScheduleRun)
        .join(Task, Task.id == ScheduleRun.task_id)
        .where(ScheduleRun.schedule_id == schedule_id, Task.status.not_in(_TERMINAL))
    )
    return int(conn.execute(query).scalar_one())


def _holds_key(conn: Connection, owner: str | None) -> bool:
    """Whether the schedule's owner may still act: no owner (keys off), or a key of theirs
    neither revoked nor expired (by the wall clock, as tokens are checked)."""
    if owner is None:
        return True
    query = select(AuthKey.id).where(
        AuthKey.subject == owner, AuthKey.revoked_at.is_(None), AuthKey.expires_at > time.time()
    )
    return conn.execute(query.limit(1)).first() is not None


def _orphaned(owner: str) -> str:
    return f"{owner!r} holds no valid key any more (revoked or expired): the schedule submits nothing"


@dataclass
class Fired:
    """What one firing did: the tasks it submitted, and the runs it skipped."""

    task_ids: list[int]
    skipped: int


def _submit(conn: Connection, row: Any, new: NewTask, run_at: float, now: float) -> int:
    task = {**new.task, "owner": row.owner, "created_at": now, "updated_at": now}
    items = [{**item, "created_at": now} for item in new.items]
    (task_id,) = insert_tasks(conn, [replace(new, task=task, items=items)])
    conn.execute(
        insert(ScheduleRun),
        {"schedule_id": row.id, "run_at": run_at, "task_id": task_id, "fired_at": now},
    )
    return task_id


def _prune_runs(conn: Connection, schedule_id: int) -> None:
    """Keep the newest ``KEPT_RUNS`` runs' records of the schedule."""
    oldest_kept = (
        select(ScheduleRun.id)
        .where(ScheduleRun.schedule_id == schedule_id)
        .order_by(ScheduleRun.id.desc())
        .offset(KEPT_RUNS - 1)
        .limit(1)
        .scalar_subquery()
    )
    conn.execute(
        delete(ScheduleRun).where(ScheduleRun.schedule_id == schedule_id, ScheduleRun.id < oldest_kept)
    )


def fire(
    conn: Connection,
    row: Any,
    now: float,
    new: NewTask | None,
    error: str | None,
    on_claimed: Callable[[int, float], None] | None = None,
) -> Fired | None:
    """Fire a due schedule's runs, in the caller's transaction; None if another manager did.

    ``row`` is the schedule as ``due`` read it; ``new`` its task compiled (None, with
    ``error``: it no longer compiles, and its runs are skipped with that error noted).
    A schedule whose owner holds no valid key any more (every key revoked or expired)
    submits nothing: its runs are skipped and ``last_error`` says why.
    ``on_claimed(id, next_run_at)`` is told right after the claim, inside the
    transaction (a test's fault goes there: whatever fails after the claim undoes it).
    """
    planned = plan(row, now)
    claimed = conn.execute(
        update(Schedule)
        .where(Schedule.id == row.id, Schedule.next_run_at == row.next_run_at, Schedule.enabled.is_(True))
        .values(next_run_at=planned.next_run_at)
    )
    if claimed.rowcount != 1:
        return None
    if on_claimed is not None:
        on_claimed(row.id, row.next_run_at)
    if new is not None and not _holds_key(conn, row.owner):
        new, error = None, _orphaned(row.owner)
    fired = Fired([], planned.missed_skipped)
    pending = row.pending_at
    last_task = row.last_task_id
    last_run: float | None = None
    for run_at in planned.runs:
        if new is None:
            fired.skipped += 1
            continue
        if row.overlap == "allow":
            busy = _active_count(conn, row.id) >= MAX_ACTIVE_ALLOWED
        else:
            busy = _active(conn, last_task)
        if busy is False and pending is not None:  # the waiting run goes first, this one waits
            last_task = _submit(conn, row, new, pending, now)
            last_run, pending, busy = pending, None, True
            fired.task_ids.append(last_task)
        if busy and row.overlap == "queue" and pending is None:
            pending = run_at
            continue
        if busy:
            fired.skipped += 1
            continue
        last_task = _submit(conn, row, new, run_at, now)
        last_run = run_at
        fired.task_ids.append(last_task)
    values: dict[str, Any] = {
        "runs": Schedule.runs + len(fired.task_ids),
        "skipped": Schedule.skipped + fired.skipped,
        "pending_at": pending,
        "last_error": error,
    }
    if last_run is not None:
        values.update(last_run_at=last_run, last_task_id=last_task)
        _prune_runs(conn, row.id)
    conn.execute(update(Schedule).where(Schedule.id == row.id).values(**values))
    return fired


def fire_pending(
    conn: Connection, row: Any, now: float, new: NewTask | None, error: str | None
) -> Fired | None:
    """Submit a queued run (``overlap: queue``) now that the previous task has ended.

    Claimed as a run is: ``pending_at`` cleared only if it still holds what was read.
    """
    claimed = conn.execute(
        update(Schedule)
        .where(Schedule.id == row.id, Schedule.pending_at == row.pending_at, Schedule.enabled.is_(True))
        .values(pending_at=None)
    )
    if claimed.rowcount != 1:
        return None
    if new is not None and not _holds_key(conn, row.owner):
        new, error = None, _orphaned(row.owner)
    if new is None:
        conn.execute(
            update(Schedule)
            .where(Schedule.id == row.id)
            .values(skipped=Schedule.skipped + 1, last_error=error)
        )
        return Fired([], 1)
    task_id = _submit(conn, row, new, row.pending_at, now)
    _prune_runs(conn, row.id)
    conn.execute(
        update(Schedule)
        .where(Schedule.id == row.id)
        .values(runs=Schedule.runs + 1, last_run_at=row.pending_at, last_task_id=task_id, last_error=None)
    )
    return Fired([task_id], 0)
