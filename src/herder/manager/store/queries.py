"""What the manager does to its database: register, submit, claim, report, requeue.

Every decision that must hold across manager processes is taken *in the database*:

* a claim is a compare-and-set (``UPDATE work_items SET status='assigned' ... WHERE
  id = :id AND status = 'queued'``); of two managers racing for one item, exactly one
  update matches a row, on SQLite (one writer at a time) as on PostgreSQL (row locks,
  and the ``WHERE`` re-checked after the wait);
* a report from a worker names its attempt; it applies only if that worker still holds
  that attempt (``WHERE worker_id = :w AND attempt = :a AND status IN (...)``), so a
  late report from a worker that lost its lease changes nothing (fencing);
* expired leases go back to the queue in one statement.

A task's status is derived from its items' after each change (``refresh_task``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from herder.manager.store.tables import Task, Worker, WorkItem

ACTIVE = ("assigned", "running")
TERMINAL = ("completed", "failed", "canceled")
CLAIM_CANDIDATES = 64


class NotFound(LookupError):
    """No such worker, task or work item."""


class FencedOut(Exception):
    """A report from an attempt that no longer owns its work (it was requeued or canceled)."""


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


async def heartbeat(
    db: AsyncSession,
    worker: Worker,
    lease_s: float,
    figures: dict[str, Any],
    running: list[tuple[int, int]] | None = None,
) -> None:
    """The worker is alive: note its figures and extend the leases of what it runs.

    With ``running`` (the attempts the worker says it runs: linked agents send it), only
    those leases are extended: an agent that restarted holds nothing any more, and what
    the manager still thinks it holds expires and goes back to the queue. Without it
    (the seed's pull path), every lease the worker holds is extended.
    """
    now = time.time()
    worker.last_seen = now
    for key in ("update_frequent", "update_less_frequent"):
        if key in figures:
            setattr(worker, key, figures[key])
    held = (WorkItem.worker_id == worker.id, WorkItem.status.in_(ACTIVE))
    if running is None:
        await db.execute(update(WorkItem).where(*held).values(lease_expires=now + lease_s))
        return
    for item_id, attempt in running:
        await db.execute(
            update(WorkItem)
            .where(*held, WorkItem.id == item_id, WorkItem.attempt == attempt)
            .values(lease_expires=now + lease_s)
        )


# -- tasks ---------------------------------------------------------------------------------


async def create_task(db: AsyncSession, task: Task, items: list[WorkItem]) -> Task:
    db.add(task)
    await db.flush()
    for item in items:
        item.task_id = task.id
        db.add(item)
    await db.flush()
    return task


async def get_task(db: AsyncSession, task_id: int, *, lock: bool = False) -> Task:
    """The task; with ``lock``, its row is locked until the transaction ends.

    Every change that derives a task's status from its items locks the task first, so
    that two reports on one task (PostgreSQL runs them at once) are counted one after
    the other: otherwise each could count the other's item as still running, and the
    task would stay "rendering" with every item completed. (SQLite runs one writer at
    a time, and ignores the lock.)
    """
    task = await db.get(Task, task_id, with_for_update=lock, populate_existing=lock)
    if task is None:
        raise NotFound(f"no task with id {task_id}")
    return task


async def list_tasks(db: AsyncSession, status: str | None = None, limit: int = 1000) -> Sequence[Task]:
    query = select(Task).order_by(Task.id.desc()).limit(limit)
    if status is not None:
        query = query.where(Task.status == status)
    return (await db.execute(query)).scalars().all()


async def items_of(db: AsyncSession, task_id: int) -> Sequence[WorkItem]:
    query = select(WorkItem).where(WorkItem.task_id == task_id).order_by(WorkItem.index)
    return (await db.execute(query)).scalars().all()


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
    """Cancel the task's unfinished items; return (worker, item, attempt) of those running."""
    running = [
        (i.worker_id, i.id, i.attempt)
        for i in await items_of(db, task.id)
        if i.status in ACTIVE and i.worker_id is not None
    ]
    await db.execute(
        update(WorkItem)
        .where(WorkItem.task_id == task.id, WorkItem.status.not_in(TERMINAL))
        .values(status="canceled", lease_expires=None, finished_at=time.time())
    )
    task.status = "canceled"
    task.updated_at = time.time()
    return running


async def delete_task(db: AsyncSession, task: Task) -> list[tuple[int, int, int]]:
    running = await cancel_task(db, task)
    await db.execute(delete(WorkItem).where(WorkItem.task_id == task.id))
    await db.delete(task)
    return running


async def refresh_task(db: AsyncSession, task: Task) -> None:
    """Derive the task's status, current frame and worker from its items.

    With aggregates, not by loading the items: a frames task may have 10,000 of them,
    and this runs on every claim and report.
    """
    of_task = WorkItem.task_id == task.id
    rows = await db.execute(select(WorkItem.status, func.count()).where(of_task).group_by(WorkItem.status))
    counts: dict[str, int] = {status: n for status, n in rows.all()}
    total = sum(counts.values())
    if task.status == "canceled":
        status = "canceled"
    elif counts.get("failed"):
        status = "failed"
        if counts.get("queued"):  # a failed task hands out no more of its work
            await db.execute(
                update(WorkItem)
                .where(of_task, WorkItem.status == "queued")
                .values(status="canceled", finished_at=time.time())
            )
        failed = select(WorkItem.error).where(
            of_task, WorkItem.status == "failed", WorkItem.error.is_not(None)
        )
        task.error = (await db.scalar(failed.limit(1))) or task.error
    elif total and counts.get("completed") == total:
        status = "completed"
    elif task.paused:
        status = "paused"
    elif counts.get("running"):
        status = "rendering"
    elif counts.get("assigned"):
        status = "assigned"
    else:
        status = "queued"
    task.status = status
    reported = await db.scalar(select(func.max(WorkItem.frame_current)).where(of_task))
    done = await db.scalar(
        select(func.max(WorkItem.frame_end)).where(of_task, WorkItem.status == "completed")
    )
    frames = [f for f in (reported, done, task.frame_current) if f is not None]
    task.frame_current = max(frames) if frames else None
    if counts.get("running") or counts.get("assigned"):
        latest = (
            select(WorkItem.worker_id)
            .where(of_task, WorkItem.status.in_(ACTIVE))
            .order_by(WorkItem.id.desc())
        )
        task.worker_id = await db.scalar(latest.limit(1))
    task.updated_at = time.time()


# -- claims and reports ------------------------------------------------------------------


async def has_queued_work(db: AsyncSession) -> bool:
    """Whether any work waits to be handed out (cheap: one indexed row at most)."""
    query = select(WorkItem.id).where(WorkItem.status == "queued", WorkItem.paused.is_(False)).limit(1)
    return (await db.scalar(query)) is not None


async def claim(db: AsyncSession, worker: Worker, lease_s: float) -> WorkItem | None:
    """Hand the worker the best queued item it may run (priority, then age; its tags).

    Returns None when the worker is disabled, full, or nothing fits.
    """
    if worker.status != "enabled":
        return None
    held = await db.scalar(
        select(func.count())
        .select_from(WorkItem)
        .where(WorkItem.worker_id == worker.id, WorkItem.status.in_(ACTIVE))
    )
    if (held or 0) >= worker.slots:
        return None
    tags = set(worker.tags or [])
    candidates = (
        await db.execute(
            select(WorkItem.id, WorkItem.tags)
            .where(WorkItem.status == "queued", WorkItem.paused.is_(False))
            .order_by(WorkItem.priority.desc(), WorkItem.id)
            .limit(CLAIM_CANDIDATES)
        )
    ).all()
    now = time.time()
    for item_id, item_tags in candidates:
        if not set(item_tags or []) <= tags:
            continue
        result = await db.execute(
            update(WorkItem)
            .where(WorkItem.id == item_id, WorkItem.status == "queued")
            .values(
                status="assigned",
                worker_id=worker.id,
                attempt=WorkItem.attempt + 1,
                lease_expires=now + lease_s,
                started_at=None,
                exit_code=None,
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) == 1:
            item = await db.get(WorkItem, item_id, populate_existing=True)
            assert item is not None
            await refresh_task(db, await get_task(db, item.task_id, lock=True))
            return item
    return None


async def _fenced_update(
    db: AsyncSession, item_id: int, worker_id: int, attempt: int, values: dict[str, Any]
) -> WorkItem:
    result = await db.execute(
        update(WorkItem)
        .where(
            WorkItem.id == item_id,
            WorkItem.worker_id == worker_id,
            WorkItem.attempt == attempt,
            WorkItem.status.in_(ACTIVE),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise FencedOut(f"attempt {attempt} of work item {item_id} is no longer held by worker {worker_id}")
    item = await db.get(WorkItem, item_id, populate_existing=True)
    assert item is not None
    return item


async def report_started(
    db: AsyncSession, item_id: int, worker_id: int, attempt: int, lease_s: float
) -> WorkItem:
    task = await _lock_task_of(db, item_id)
    now = time.time()
    item = await _fenced_update(
        db,
        item_id,
        worker_id,
        attempt,
        {"status": "running", "started_at": now, "lease_expires": now + lease_s},
    )
    await refresh_task(db, task)
    return item


async def _lock_task_of(db: AsyncSession, item_id: int) -> Task:
    """Lock the task of work item ``item_id`` (see ``get_task``).

    Raises:
        NotFound: no such work item.
    """
    task_id = await db.scalar(select(WorkItem.task_id).where(WorkItem.id == item_id))
    if task_id is None:
        raise NotFound(f"no work item {item_id}")
    return await get_task(db, task_id, lock=True)


async def report_progress(
    db: AsyncSession, item_id: int, worker_id: int, attempt: int, frame: int | None, percent: float | None
) -> WorkItem:
    values: dict[str, Any] = {}
    if frame is not None:  # never backwards: reports may arrive out of order
        values["frame_current"] = case(
            (or_(WorkItem.frame_current.is_(None), WorkItem.frame_current < frame), frame),
            else_=WorkItem.frame_current,
        )
    if percent is not None:
        values["percent"] = percent
    item = await _fenced_update(db, item_id, worker_id, attempt, values or {"attempt": attempt})
    task = await get_task(db, item.task_id)
    if frame is not None and (task.frame_current is None or frame > task.frame_current):
        task.frame_current = frame
        task.updated_at = time.time()
    return item


async def report_finished(
    db: AsyncSession, item_id: int, worker_id: int, attempt: int, exit_code: int, error: str | None
) -> WorkItem:
    """The attempt ended: completed, back to the queue, or failed for good."""
    task = await _lock_task_of(db, item_id)
    item = await db.get(WorkItem, item_id)
    assert item is not None
    now = time.time()
    if exit_code == 0:
        values: dict[str, Any] = {"status": "completed", "exit_code": 0, "finished_at": now}
        if item.frame_end is not None:
            values["frame_current"] = item.frame_end
    elif attempt < task.max_attempts:
        values = {"status": "queued", "worker_id": None, "exit_code": exit_code, "lease_expires": None}
        values["error"] = error or f"attempt {attempt} exited with {exit_code}"
    else:
        reason = error or f"exited with {exit_code}"
        values = {"status": "failed", "exit_code": exit_code, "finished_at": now}
        values["error"] = f"failed after {attempt} attempts: {reason}"
    item = await _fenced_update(db, item_id, worker_id, attempt, {**values, "lease_expires": None})
    await refresh_task(db, task)
    return item


async def requeue_expired(db: AsyncSession) -> int:
    """Work whose lease ran out goes back to the queue (or fails after its last attempt)."""
    now = time.time()
    expired = (
        await db.execute(
            select(WorkItem, Task.max_attempts)
            .join(Task, Task.id == WorkItem.task_id)
            .where(WorkItem.status.in_(ACTIVE), WorkItem.lease_expires < now)
        )
    ).all()
    touched: set[int] = set()
    for item, max_attempts in expired:
        lost = f"worker {item.worker_id} was lost (no heartbeat) during attempt {item.attempt}"
        if item.attempt >= max_attempts:
            values: dict[str, Any] = {"status": "failed", "finished_at": now}
            values["error"] = f"failed after {item.attempt} attempts: {lost}"
        else:
            values = {"status": "queued", "worker_id": None, "error": lost}
        result = await db.execute(
            update(WorkItem)
            .where(WorkItem.id == item.id, WorkItem.attempt == item.attempt, WorkItem.status.in_(ACTIVE))
            .values(lease_expires=None, **values)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) == 1:
            touched.add(item.task_id)
    for task_id in touched:
        task = await db.get(Task, task_id, populate_existing=True, with_for_update=True)
        if task is not None:
            await refresh_task(db, task)
    return len(touched)
