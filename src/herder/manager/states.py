"""The lifecycles of a work item and of a task, as tables (the agent's ``states.py`` shape).

A **work item** is one command a compiler made of a task, run by one worker per attempt.
Its status is set by the statements of ``store.claims``, ``store.reports`` and ``store.queries``; each of
them takes its source statuses and its target from ``ITEM_TRANSITIONS`` (``sources()``,
``target()``), so the table is the one place that says which change is legal:

* ``queued``: waits for a worker (a paused task's items wait here too, flagged).
* ``assigned``: handed to a worker (an attempt begun, its lease running), not yet
  reported started.
* ``running``: the worker reported it started.
* ``completed``: an attempt exited 0.
* ``failed``: its last attempt exited non-zero, or its worker was lost during it.
* ``canceled``: a user canceled its task, or another of its task's items failed.

``assigned`` and ``running`` are *active*: the item is leased, heartbeats renew it and
reports are fenced by its attempt. ``completed``, ``failed`` and ``canceled`` are
terminal: no event leaves them.

A **task** is what a user submitted. Its status is *derived* from its items' by one
rule (``derive_status``), never set by hand but for ``canceled``; ``TASK_TRANSITIONS``
lists the changes that rule (and a user) may make, one event per outcome:

* ``queued``: none of its work is handed out.
* ``assigned``: some of its work is handed out, none of it runs yet.
* ``rendering``: some of its work runs (the seed's word for running).
* ``paused``: a user holds it; running work finishes, queued work waits. Resuming
  derives the status again, from what its work does then.
* ``completed``: every item completed.
* ``failed``: one item failed for good; its queued items are canceled.
* ``canceled``: a user canceled it.

Rules: terminal statuses have no exits; every status is reachable from ``queued``; an
event the table does not list for a status is a bug, and ``apply()`` raises
``TransitionError`` naming both. The diagrams in ``docs/manager.md`` are rendered from the
tables (``diagram()``), and a test checks that they match.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from typing import Any, overload

from herder.manager.errors import TransitionError

__all__ = [
    "ACTIVE",
    "ITEM_TRANSITIONS",
    "TASK_TRANSITIONS",
    "TERMINAL",
    "ItemEvent",
    "ItemStatus",
    "TaskEvent",
    "TaskStatus",
    "TransitionError",
    "apply",
    "derive_status",
    "diagram",
    "may_move",
    "sources",
    "target",
]


class ItemStatus(enum.StrEnum):
    """Where a work item is (the ``status`` of a work item on the wire and in the database)."""

    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


class ItemEvent(enum.StrEnum):
    """What happens to a work item."""

    CLAIM = "claim"  # a claim hands it to a worker: a new attempt, leased
    START = "start"  # its worker reports the attempt started (again: a repeated report)
    SUCCEED = "succeed"  # the attempt exited 0
    REQUEUE = "requeue"  # the attempt exited non-zero or its lease expired; attempts are left
    FAIL = "fail"  # the same, on the task's last attempt
    CANCEL = "cancel"  # a user canceled its task, or its task failed


class TaskStatus(enum.StrEnum):
    """Where a task is (the ``status`` of a task on the wire and in the database)."""

    QUEUED = "queued"
    ASSIGNED = "assigned"
    RENDERING = "rendering"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


class TaskEvent(enum.StrEnum):
    """What a task's items now say, or what a user did to it."""

    WORK_QUEUED = "work_queued"  # none of its work is handed out (or it was resumed so)
    WORK_ASSIGNED = "work_assigned"  # some of its work is handed out, none runs
    WORK_RUNNING = "work_running"  # some of its work runs
    PAUSE = "pause"  # a user holds it
    ALL_COMPLETED = "all_completed"  # every item completed
    ITEM_FAILED = "item_failed"  # an item failed for good
    CANCEL = "cancel"  # a user canceled it


_ACTIVE_ITEM = {
    ItemEvent.START: ItemStatus.RUNNING,
    ItemEvent.SUCCEED: ItemStatus.COMPLETED,
    ItemEvent.REQUEUE: ItemStatus.QUEUED,
    ItemEvent.FAIL: ItemStatus.FAILED,
    ItemEvent.CANCEL: ItemStatus.CANCELED,
}

ITEM_TRANSITIONS: Mapping[ItemStatus, Mapping[ItemEvent, ItemStatus]] = {
    ItemStatus.QUEUED: {
        ItemEvent.CLAIM: ItemStatus.ASSIGNED,
        ItemEvent.CANCEL: ItemStatus.CANCELED,
    },
    ItemStatus.ASSIGNED: _ACTIVE_ITEM,
    ItemStatus.RUNNING: _ACTIVE_ITEM,
    ItemStatus.COMPLETED: {},
    ItemStatus.FAILED: {},
    ItemStatus.CANCELED: {},
}

_ENDS = {
    TaskEvent.ALL_COMPLETED: TaskStatus.COMPLETED,
    TaskEvent.ITEM_FAILED: TaskStatus.FAILED,
    TaskEvent.CANCEL: TaskStatus.CANCELED,
}

TASK_TRANSITIONS: Mapping[TaskStatus, Mapping[TaskEvent, TaskStatus]] = {
    TaskStatus.QUEUED: {
        TaskEvent.WORK_ASSIGNED: TaskStatus.ASSIGNED,
        TaskEvent.WORK_RUNNING: TaskStatus.RENDERING,
        TaskEvent.PAUSE: TaskStatus.PAUSED,
        **_ENDS,
    },
    TaskStatus.ASSIGNED: {
        TaskEvent.WORK_QUEUED: TaskStatus.QUEUED,
        TaskEvent.WORK_RUNNING: TaskStatus.RENDERING,
        TaskEvent.PAUSE: TaskStatus.PAUSED,
        **_ENDS,
    },
    TaskStatus.RENDERING: {
        TaskEvent.WORK_QUEUED: TaskStatus.QUEUED,
        TaskEvent.WORK_ASSIGNED: TaskStatus.ASSIGNED,
        TaskEvent.PAUSE: TaskStatus.PAUSED,
        **_ENDS,
    },
    TaskStatus.PAUSED: {  # resumed: the status its work says
        TaskEvent.WORK_QUEUED: TaskStatus.QUEUED,
        TaskEvent.WORK_ASSIGNED: TaskStatus.ASSIGNED,
        TaskEvent.WORK_RUNNING: TaskStatus.RENDERING,
        **_ENDS,
    },
    TaskStatus.COMPLETED: {},
    TaskStatus.FAILED: {},
    TaskStatus.CANCELED: {},
}

# A work item's statuses while it is leased to a worker: heartbeats renew these, reports
# are fenced on them, and a worker's free slots are its slots less these.
ACTIVE: tuple[ItemStatus, ...] = (ItemStatus.ASSIGNED, ItemStatus.RUNNING)
# The statuses no event leaves, for items and tasks alike (the same three words).
TERMINAL: tuple[ItemStatus, ...] = tuple(s for s, edges in ITEM_TRANSITIONS.items() if not edges)


@overload
def apply(status: ItemStatus, event: ItemEvent) -> ItemStatus: ...
@overload
def apply(status: TaskStatus, event: TaskEvent) -> TaskStatus: ...
def apply(status: ItemStatus | TaskStatus, event: ItemEvent | TaskEvent) -> ItemStatus | TaskStatus:
    """The status ``event`` leads to from ``status`` (a work item's, or a task's).

    ``status`` may be the plain string the database holds: it is read as the enum.

    Raises:
        TransitionError: the table has no such edge (or the string is no status); the
            caller has a bug.
    """
    try:
        moved: ItemStatus | TaskStatus = _table(event)[status][event]
        return moved
    except KeyError:
        raise TransitionError(status, event) from None


def may_move(status: ItemStatus | TaskStatus | str, event: ItemEvent | TaskEvent) -> bool:
    """Whether the table lets ``event`` happen in ``status`` (``apply`` would not raise)."""
    return event in _table(event).get(status, {})


def _table(event: ItemEvent | TaskEvent) -> Mapping[Any, Mapping[Any, Any]]:
    """The lifecycle an event belongs to."""
    return ITEM_TRANSITIONS if isinstance(event, ItemEvent) else TASK_TRANSITIONS


@functools.cache  # read when statements are built: claims build theirs per round
def sources(event: ItemEvent) -> tuple[ItemStatus, ...]:
    """The statuses a work item may be in for ``event`` to happen, in the table's order.

    A statement that applies ``event`` matches only rows in these statuses: the
    compare-and-set that makes it safe against other managers and late reports.
    """
    return tuple(status for status, edges in ITEM_TRANSITIONS.items() if event in edges)


@functools.cache
def target(event: ItemEvent) -> ItemStatus:
    """The status ``event`` leads a work item to (each item event has one, wherever from)."""
    (only,) = {edges[event] for edges in ITEM_TRANSITIONS.values() if event in edges}
    return only


def derive_status(counts: Mapping[str, int], *, paused: bool, canceled: bool) -> TaskStatus:
    """A task's status from its items' counted by status (absent: none), the first rule that holds.

    ``canceled`` stays canceled; any ``failed`` item fails the task; every item
    ``completed`` completes it; otherwise ``paused`` (a user holds it), ``rendering``
    (something runs), ``assigned`` (handed out, not started yet) or ``queued``.
    """
    total = sum(counts.values())
    if canceled:
        return TaskStatus.CANCELED
    if counts.get(ItemStatus.FAILED, 0):
        return TaskStatus.FAILED
    if total and counts.get(ItemStatus.COMPLETED, 0) == total:
        return TaskStatus.COMPLETED
    if paused:
        return TaskStatus.PAUSED
    if counts.get(ItemStatus.RUNNING, 0):
        return TaskStatus.RENDERING
    if counts.get(ItemStatus.ASSIGNED, 0):
        return TaskStatus.ASSIGNED
    return TaskStatus.QUEUED


def diagram(table: Mapping[Any, Mapping[Any, Any]]) -> str:
    """A lifecycle table as a mermaid ``stateDiagram-v2`` block (fenced, for Markdown).

    The first status is the start; terminal statuses lead to the end.
    """
    statuses = list(table)
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {statuses[0].value}"]
    for source, edges in table.items():
        lines += [f"    {source.value} --> {to.value}: {event.value}" for event, to in edges.items()]
    lines += [f"    {status.value} --> [*]" for status, edges in table.items() if not edges]
    lines.append("```")
    return "\n".join(lines)
