"""Reports: workers' news of their attempts (started, progress, finished), fenced by attempt.

Each report names the attempt it is about, and every statement that applies one matches
``(id, worker_id, attempt)``: a late report from an attempt that lost its work (its
lease expired and the item went to another worker, or its task was canceled) matches
nothing and is answered ``FencedOut``, and the attempt that holds the item now is left
alone. A round's reports of one kind cost a few statements whatever their number.

A task's status is derived from one aggregate over the items of every task a round
touched (``refresh_tasks``), after the items changed and the tasks' rows were locked (in
id order, so that two rounds never wait on each other in a circle): on PostgreSQL the
aggregate then sees every report committed before, as the ORM path does. The one-off
writes of ``store.queries`` derive it the same way (``queries.refresh_task``).

Like every round's statement (``store.batch``), these take a connection inside a
transaction, leave committing to it, and are synchronous.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import bindparam, case, func, or_, select, tuple_, update
from sqlalchemy.engine import Connection

from herder.manager.errors import FencedOut
from herder.manager.states import (
    ACTIVE,
    ItemEvent,
    ItemStatus,
    TaskEvent,
    TaskStatus,
    apply,
    derive_status,
    target,
)
from herder.manager.store.buckets import padded
from herder.manager.store.logs import FinalLog, keep_logs
from herder.manager.store.moves import allows, task_moves
from herder.manager.store.status import TaskCounts
from herder.manager.store.tables import Task, WorkItem


@dataclass(frozen=True)
class Report:
    """A worker's report on one attempt of one work item."""

    item_id: int
    worker_id: int
    attempt: int

    @property
    def fence(self) -> tuple[int, int, int]:
        return (self.item_id, self.worker_id, self.attempt)

    def fenced_out(self) -> FencedOut:
        return FencedOut(
            f"attempt {self.attempt} of work item {self.item_id} is no longer held by worker {self.worker_id}"
        )


@dataclass(frozen=True)
class Finished(Report):
    exit_code: int = 0
    error: str | None = None
    started_at: float | None = None  # for work too short to have been reported started
    # The item's output kept so far: stored in the report's own transaction if the report
    # ends the item (completed, or failed after its last attempt); None: it has none.
    log: FinalLog | None = None


class Done(NamedTuple):
    """What a finished report did: its task's id and new status, and whether the item ended."""

    task_id: int
    status: str
    item_ended: bool


def _fenced(reports: Iterable[Report]) -> Any:
    return tuple_(WorkItem.id, WorkItem.worker_id, WorkItem.attempt).in_([r.fence for r in reports])


# Statements of a fixed shape are built once: building one (coercions, operators) cost
# more than running it on SQLite, and the rounds run them hundreds of times a second.
# Lists go in as expanding parameters (``ids``, ``fences``).
_FENCED = tuple_(WorkItem.id, WorkItem.worker_id, WorkItem.attempt).in_(bindparam("fences", expanding=True))
_START = (
    update(WorkItem)
    .where(_FENCED, allows(ItemEvent.START))
    .values(
        status=target(ItemEvent.START),
        started_at=bindparam("b_now"),
        lease_expires=bindparam("b_expires"),
    )
    .returning(WorkItem.id, WorkItem.task_id)
)
# Running work makes a queued or assigned task rendering; any other status outranks it.
_RENDERING_FROM = (TaskStatus.QUEUED, TaskStatus.ASSIGNED)
_TASKS_RENDERING = (
    update(Task)
    .where(Task.id.in_(bindparam("ids", expanding=True)), Task.status.in_(_RENDERING_FROM))
    .values(status=task_moves(_RENDERING_FROM, TaskEvent.WORK_RUNNING), updated_at=bindparam("b_now"))
)
_PARSERS = select(Task.id, Task.parser).where(Task.id.in_(bindparam("ids", expanding=True)))
_COMPLETE = (
    update(WorkItem)
    .where(_FENCED, allows(ItemEvent.SUCCEED))
    .values(
        status=target(ItemEvent.SUCCEED),
        exit_code=0,
        finished_at=bindparam("b_now"),
        lease_expires=None,
        frame_current=func.coalesce(WorkItem.frame_end, WorkItem.frame_current),
    )
    .returning(WorkItem.id, WorkItem.task_id)
)
_START_TIMES = (  # for work too short to have been reported started
    update(WorkItem)
    .where(WorkItem.id == bindparam("b_id"), WorkItem.started_at.is_(None))
    .values(started_at=bindparam("b_started"))
)
_LOCK_TASKS = (
    select(Task.id, Task.status, Task.paused, Task.frame_current)
    .where(Task.id.in_(bindparam("ids", expanding=True)))
    .order_by(Task.id)
    .with_for_update()
)
_ITEMS_BY_STATUS = (
    select(
        WorkItem.task_id,
        WorkItem.status,
        func.count(),
        func.max(WorkItem.frame_current),
        func.max(WorkItem.frame_end),
    )
    .where(WorkItem.task_id.in_(bindparam("ids", expanding=True)))
    .group_by(WorkItem.task_id, WorkItem.status)
)
_TASK_DERIVED = (
    update(Task)
    .where(Task.id == bindparam("b_id"))
    .values(
        status=bindparam("status"),
        frame_current=bindparam("frame_current"),
        updated_at=bindparam("updated_at"),
    )
)


def start(conn: Connection, reports: Sequence[Report], lease_s: float) -> list[str | FencedOut]:
    """Attempts started: each report's task parser, or ``FencedOut``."""
    now = time.time()
    fences = [r.fence for r in reports]
    started = conn.execute(_START, {"fences": padded(fences), "b_now": now, "b_expires": now + lease_s}).all()
    task_of = {item_id: task_id for item_id, task_id in started}
    if not task_of:
        return [r.fenced_out() for r in reports]
    tasks = sorted(set(task_of.values()))
    conn.execute(_TASKS_RENDERING, {"ids": padded(tasks), "b_now": now})
    parsers = dict(conn.execute(_PARSERS, {"ids": padded(tasks)}).all())
    return [parsers[task_of[r.item_id]] if r.item_id in task_of else r.fenced_out() for r in reports]


def finish(conn: Connection, reports: Sequence[Finished]) -> list[Done | FencedOut]:
    """Attempts ended: completed, back to the queue, or failed for good.

    Per report, what it did (``Done``), or ``FencedOut``. The output of each item it
    ended goes to ``item_logs`` in the same transaction, in one statement (none if no
    ended item had output): the log of an ended item is there as soon as its end is.
    """
    now = time.time()
    done: dict[int, int] = {}  # item -> task
    ended: set[int] = set()
    succeeded = [r for r in reports if r.exit_code == 0]
    if succeeded:
        rows = conn.execute(_COMPLETE, {"fences": padded([r.fence for r in succeeded]), "b_now": now})
        done.update((item_id, task_id) for item_id, task_id in rows)
        ended.update(done)
        began = [
            {"b_id": r.item_id, "b_started": r.started_at}
            for r in succeeded
            if r.started_at is not None and r.item_id in done
        ]
        if began:  # only for the attempts just completed: the fence held for them
            conn.execute(_START_TIMES, began)
    for report in reports:
        if report.exit_code != 0:
            failed = _finish_failed(conn, report, now)
            if failed is not None:
                done[report.item_id], failed_for_good = failed
                if failed_for_good:
                    ended.add(report.item_id)
    keep_logs(conn, [r.log for r in reports if r.log is not None and r.item_id in ended])
    statuses = refresh_tasks(conn, set(done.values()))
    return [
        Done(done[r.item_id], statuses[done[r.item_id]], r.item_id in ended)
        if r.item_id in done
        else r.fenced_out()
        for r in reports
    ]


def _finish_failed(conn: Connection, report: Finished, now: float) -> tuple[int, bool] | None:
    """A failed attempt: queued again, or failed after the task's last attempt (rare: alone).

    Its task's id and whether the item failed for good; None: fenced out.
    """
    row = (
        conn.execute(
            select(WorkItem.task_id, Task.max_attempts)
            .join(Task, Task.id == WorkItem.task_id)
            .where(WorkItem.id == report.item_id)
        )
    ).first()
    if row is None:
        return None
    task_id, max_attempts = row
    code, attempt = report.exit_code, report.attempt
    event = ItemEvent.REQUEUE if attempt < max_attempts else ItemEvent.FAIL
    if event == ItemEvent.REQUEUE:
        values: dict[str, Any] = {"worker_id": None}
        values["error"] = report.error or f"attempt {attempt} exited with {code}"
    else:
        values = {"finished_at": now}
        values["error"] = f"failed after {attempt} attempts: {report.error or f'exited with {code}'}"
    if report.started_at is not None:
        values["started_at"] = func.coalesce(WorkItem.started_at, report.started_at)
    result = conn.execute(
        update(WorkItem)
        .where(_fenced([report]), allows(event))
        .values(status=target(event), exit_code=code, lease_expires=None, **values)
    )
    if getattr(result, "rowcount", 0) != 1:
        return None
    return int(task_id), event == ItemEvent.FAIL


def refresh_tasks(conn: Connection, task_ids: Iterable[int]) -> dict[int, TaskStatus]:
    """Derive the status and current frame of these tasks from their items'; the new statuses.

    The tasks' rows are locked first (in id order); the aggregate that follows then
    counts every change committed before (see the module's docstring).
    """
    ids = sorted(set(task_ids))
    if not ids:
        return {}
    tasks = conn.execute(_LOCK_TASKS, {"ids": padded(ids)}).all()
    counts: dict[int, TaskCounts] = {t.id: TaskCounts() for t in tasks}
    aggregate = conn.execute(_ITEMS_BY_STATUS, {"ids": padded(ids)})
    for task_id, status, n, frame, frame_end in aggregate:
        counts[task_id].add(status, n, frame, frame_end)
    now = time.time()
    changes = []
    statuses: dict[int, TaskStatus] = {}
    for task in tasks:
        status = derive_status(
            counts[task.id].by_status, paused=task.paused, canceled=task.status == TaskStatus.CANCELED
        )
        statuses[task.id] = status
        frame = counts[task.id].frame(task.frame_current)
        changes.append({"b_id": task.id, "status": status, "frame_current": frame, "updated_at": now})
        if status == TaskStatus.FAILED and (
            task.status != TaskStatus.FAILED or counts[task.id][ItemStatus.QUEUED]
        ):
            _fail_task(conn, task.id, now)  # work requeued after the failure is canceled too
    conn.execute(_TASK_DERIVED, changes)
    return statuses


def _fail_task(conn: Connection, task_id: int, now: float) -> None:
    """A task failed: none of its work is handed out any more, and it says why."""
    of_task = WorkItem.task_id == task_id
    conn.execute(
        update(WorkItem)
        .where(of_task, WorkItem.status == ItemStatus.QUEUED)
        .values(status=apply(ItemStatus.QUEUED, ItemEvent.CANCEL), finished_at=now)
    )
    error = conn.scalar(
        select(WorkItem.error)
        .where(of_task, WorkItem.status == ItemStatus.FAILED, WorkItem.error.is_not(None))
        .limit(1)
    )
    if error is not None:
        conn.execute(update(Task).where(Task.id == task_id).values(error=error))


def progress(conn: Connection, report: Report, frame: int | None, percent: float | None) -> int | FencedOut:
    """An attempt's progress (a frame never goes backwards: reports may cross); its task."""
    values: dict[str, Any] = {}
    if frame is not None:
        values["frame_current"] = case(
            (or_(WorkItem.frame_current.is_(None), WorkItem.frame_current < frame), frame),
            else_=WorkItem.frame_current,
        )
    if percent is not None:
        values["percent"] = percent
    row = (
        conn.execute(
            update(WorkItem)
            .where(_fenced([report]), WorkItem.status.in_(ACTIVE))
            .values(values or {"attempt": WorkItem.attempt})
            .returning(WorkItem.task_id)
        )
    ).first()
    if row is None:
        return report.fenced_out()
    if frame is not None:
        conn.execute(
            update(Task)
            .where(Task.id == row[0], or_(Task.frame_current.is_(None), Task.frame_current < frame))
            .values(frame_current=frame, updated_at=time.time())
        )
    elif percent is not None:  # the dashboard's feed sends tasks whose updated_at moved
        conn.execute(update(Task).where(Task.id == row[0]).values(updated_at=time.time()))
    return int(row[0])
