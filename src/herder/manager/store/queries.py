"""What the manager does to its database for users and operators (the ORM side).

Registering workers, reading and changing tasks (priority, pause, cancel, delete) and
the lease keeper: requests that come one at a time. The paths that come by the hundred
per second (heartbeats, claims, submissions, reports) are in ``store.batch``. Both
derive a task's status by the one rule of ``manager.states`` and change an item's status
only as its table allows (``moves.allows``, ``states.target``).

Every decision that must hold across manager processes is taken *in the database*:
expired leases go back to the queue by a compare-and-set on the attempt, so a report
racing with it either lands first or is fenced out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, exists, func, literal_column, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from herder.manager.errors import FencedOut, NotFound
from herder.manager.states import ACTIVE, TERMINAL, ItemEvent, TaskEvent, TaskStatus, apply, target
from herder.manager.store import moves, reports
from herder.manager.store.tables import Blocked, Task, Worker, WorkItem

__all__ = ["ACTIVE", "TERMINAL", "FencedOut", "NotFound"]


# -- workers -------------------------------------------------------------------------------


async def register_worker(db: AsyncSession, fields: dict[str, Any]) -> tuple[Worker, bool]:
    """Create the worker, or update it if its hostname is known; (worker, created)."""
    now = time.time()
    worker = (
        await db.execute(select(Worker).where(Worker.hostname == fields["hostname"]))
    ).scalar_one_or_none()
    created = worker is None
    if worker is None:
        worker = Worker(registered_at=now, status="enabled", update_frequent={}, update_less_frequent={})
        db.add(worker)
    for key, value in fields.items():
        setattr(worker, key, value)
    worker.last_seen = now
    await db.flush()
    return worker, created


async def get_worker(db: AsyncSession, worker_id: int) -> Worker:
    worker = await db.get(Worker, worker_id)
    if worker is None:
        raise NotFound(f"no worker with id {worker_id}")
    return worker


async def list_workers(db: AsyncSession) -> Sequence[Worker]:
    return (await db.execute(select(Worker).order_by(Worker.id))).scalars().all()


async def current_items(db: AsyncSession, worker_id: int) -> Sequence[WorkItem]:
    """The work a worker holds now (assigned or running), oldest first."""
    query = select(WorkItem).where(WorkItem.worker_id == worker_id, WorkItem.status.in_(ACTIVE))
    return (await db.execute(query.order_by(WorkItem.id))).scalars().all()


# -- tasks ---------------------------------------------------------------------------------


async def get_task(db: AsyncSession, task_id: int, *, lock: bool = False, owner: str | None = None) -> Task:
    """The task; with ``lock``, its row is locked until the transaction ends.

    Every change that derives a task's status from its items locks the task first, so
    that two reports on one task (PostgreSQL runs them at once) are counted one after
    the other: otherwise each could count the other's item as still running, and the
    task would stay "rendering" with every item completed. (SQLite runs one writer at
    a time, and ignores the lock.) With ``owner``, another user's task is as absent as one
    that does not exist: users do not learn what others run.
    """
    task = await db.get(Task, task_id, with_for_update=lock, populate_existing=lock)
    if task is None or (owner is not None and task.owner != owner):
        raise NotFound(f"no task with id {task_id}")
    return task


async def list_tasks(
    db: AsyncSession,
    status: str | None = None,
    limit: int = 1000,
    before: int | None = None,
    owner: str | None = None,
    *,
    of_owner: str | None = None,
    tag: str | None = None,
) -> Sequence[Task]:
    """Tasks newest first: at most ``limit``, of ``status`` if given, with ids below ``before``,
    seen by ``owner`` (a user sees only theirs) and, if given, of ``of_owner`` and with
    ``tag`` among their tags."""
    query = select(Task).order_by(Task.id.desc()).limit(limit)
    for name in {owner, of_owner} - {None}:
        query = query.where(Task.owner == name)
    if tag is not None:
        query = query.where(_has_tag(db, tag))
    if status is not None:
        query = query.where(Task.status == status)
    if before is not None:
        query = query.where(Task.id < before)
    return (await db.execute(query)).scalars().all()


def _has_tag(db: AsyncSession, tag: str) -> Any:
    """``tag`` is one of a task's tags (a JSON list): each database's own JSON test."""
    if db.get_bind().dialect.name == "postgresql":
        return Task.tags.cast(JSONB).contains([tag])
    values = func.json_each(Task.tags).table_valued("value")
    return exists(select(literal_column("1")).select_from(values).where(values.c.value == tag))


async def count_tasks(
    db: AsyncSession, owner: str | None = None, *, of_owner: str | None = None, tag: str | None = None
) -> dict[str, int]:
    """How many tasks have each status (absent: none has it), seen by ``owner`` (a user
    counts only theirs) and, if given, of ``of_owner`` and with ``tag``: ``list_tasks``'s
    filters, so that the counts say what the filtered list holds."""
    query = select(Task.status, func.count()).group_by(Task.status)
    for name in {owner, of_owner} - {None}:
        query = query.where(Task.owner == name)
    if tag is not None:
        query = query.where(_has_tag(db, tag))
    rows = await db.execute(query)
    return {status: n for status, n in rows.all()}


async def items_of(db: AsyncSession, task_id: int) -> Sequence[WorkItem]:
    query = select(WorkItem).where(WorkItem.task_id == task_id).order_by(WorkItem.index)
    return (await db.execute(query)).scalars().all()


async def parser_of_item(db: AsyncSession, item_id: int) -> str | None:
    """The name of the parser of a work item's task (None: no such item)."""
    query = select(Task.parser).join(WorkItem, WorkItem.task_id == Task.id).where(WorkItem.id == item_id)
    return await db.scalar(query)


async def set_priority(db: AsyncSession, task: Task, priority: int) -> None:
    task.priority = priority
    await db.execute(update(WorkItem).where(WorkItem.task_id == task.id).values(priority=priority))
    task.updated_at = time.time()


async def set_paused(db: AsyncSession, task: Task, paused: bool) -> None:
    """Paused: its queued items are not handed out (running ones finish)."""
    task.paused = paused
    await db.execute(update(WorkItem).where(WorkItem.task_id == task.id).values(paused=paused))
    await refresh_task(db, task)


async def cancel_task(db: AsyncSession, task: Task) -> list[tuple[int, int, int]]:
    """Cancel the task and its unfinished items; (worker, item, attempt) of those running.

    Raises:
        TransitionError: the task has ended (callers answer that first: ``TERMINAL``).
    """
    canceled = apply(TaskStatus(task.status), TaskEvent.CANCEL)
    running = await _cancel_items(db, task.id)
    task.status = canceled
    task.updated_at = time.time()
    return running


async def _cancel_items(db: AsyncSession, task_id: int) -> list[tuple[int, int, int]]:
    """Cancel a task's unfinished items; (worker, item, attempt) of those running."""
    running = [
        (i.worker_id, i.id, i.attempt)
        for i in await items_of(db, task_id)
        if i.status in ACTIVE and i.worker_id is not None
    ]
    await db.execute(
        update(WorkItem)
        .where(WorkItem.task_id == task_id, moves.allows(ItemEvent.CANCEL))
        .values(status=target(ItemEvent.CANCEL), lease_expires=None, finished_at=time.time())
    )
    return running


async def delete_task(db: AsyncSession, task: Task) -> list[tuple[int, int, int]]:
    """Delete a task, whatever its status, and its items; (worker, item, attempt) of those running."""
    running = await _cancel_items(db, task.id)
    await db.execute(delete(WorkItem).where(WorkItem.task_id == task.id))
    await db.delete(task)
    return running


async def refresh_task(db: AsyncSession, task: Task) -> None:
    """Derive the task's status and current frame from its items (``states.derive_status``).

    With one aggregate, not by loading the items: a frames task may have 10,000 of them.
    """
    await db.flush()
    statuses = await (await db.connection()).run_sync(reports.refresh_tasks, [task.id])
    await db.refresh(task)
    task.status = statuses.get(task.id, task.status)


# -- leases ------------------------------------------------------------------------------


async def requeue_expired(db: AsyncSession, margin_s: float = 0.0) -> set[int]:
    """Work whose lease ran out ``margin_s`` ago goes back to the queue (or fails after its last attempt).

    Returns the ids of the tasks whose work it requeued or failed.

    The margin is the manager's half of the at-most-one-attempt rule (docs/manager.md):
    the agent stopped the attempt ``margin_s`` before the lease ended, by its own clock.
    The worker that lost the attempt goes on the task's blocklist.
    """
    now = time.time()
    expired = (
        await db.execute(
            select(WorkItem, Task.max_attempts)
            .join(Task, Task.id == WorkItem.task_id)
            .where(WorkItem.status.in_(ACTIVE), WorkItem.lease_expires < now - margin_s)
        )
    ).all()
    touched: set[int] = set()
    lost_by: set[tuple[int, int]] = set()
    for item, max_attempts in expired:
        lost = f"worker {item.worker_id} was lost (no heartbeat) during attempt {item.attempt}"
        event = ItemEvent.FAIL if item.attempt >= max_attempts else ItemEvent.REQUEUE
        if event == ItemEvent.FAIL:
            values: dict[str, Any] = {"finished_at": now}
            values["error"] = f"failed after {item.attempt} attempts: {lost}"
        else:
            values = {"worker_id": None, "error": lost}
        result = await db.execute(
            update(WorkItem)
            .where(WorkItem.id == item.id, WorkItem.attempt == item.attempt, moves.allows(event))
            .values(status=target(event), lease_expires=None, **values)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) == 1:
            touched.add(item.task_id)
            if item.worker_id is not None:
                lost_by.add((item.task_id, item.worker_id))
    if lost_by:
        await block(db, lost_by, now)
    for task_id in touched:
        task = await db.get(Task, task_id, populate_existing=True, with_for_update=True)
        if task is not None:
            await refresh_task(db, task)
    return touched


async def block(db: AsyncSession, pairs: set[tuple[int, int]], now: float) -> None:
    """Put (task, worker) pairs on the blocklist (those already on it stay as they are)."""
    rows = [{"task_id": t, "worker_id": w, "created_at": now} for t, w in sorted(pairs)]
    if (await db.connection()).dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        await db.execute(pg_insert(Blocked).on_conflict_do_nothing(), rows)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        await db.execute(sqlite_insert(Blocked).on_conflict_do_nothing(), rows)


# -- why work waits ------------------------------------------------------------------------


async def waiting_reason(db: AsyncSession, task: Task, offline_after_s: float) -> str | None:
    """Why a queued task's work is not handed out, when no free slot is the answer.

    ``"no online worker has tag gpu"``: none of the online, enabled workers offers a
    tag the task needs; ``"no online worker has all of the tags a, b"``: each is offered,
    never together; ``"no online worker"``. None: the task does not wait for a worker
    that is missing (it runs, or waits its turn for a slot).
    """
    if task.status != TaskStatus.QUEUED or task.paused:
        return None
    since = time.time() - offline_after_s
    online = (
        await db.execute(select(Worker.tags).where(Worker.status == "enabled", Worker.last_seen >= since))
    ).all()
    if not online:
        return "no online worker"
    needed = set(task.tags or ())
    offered = [set(tags or ()) for (tags,) in online]
    if any(needed <= tags for tags in offered):
        return None
    missing = sorted(needed - set().union(*offered))
    if missing:
        return f"no online worker has tag{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
    return f"no online worker has all of the tags {', '.join(sorted(needed))}"
