"""Which status changes the store's statements may make: ``states``' tables as SQL conditions.

Every statement that moves a work item's status (a claim, a report, a cancel, a lease
that expired) matches ``allows(event)``: the lifecycle table in ``herder.manager.states``
decides which change is legal, and the database applies it as a compare-and-set, so
that of two writers racing for one row exactly one matches it. A statement that moves
a task's status names the statuses it moves from, and ``task_moves`` checks them
against the table once, when the statement is built (at import): a move the table
does not allow, or one that leads to two statuses, is a bug found before any request.

The rounds (``claims``, ``reports``) and the one-off writes (``queries``) share these.
"""

from __future__ import annotations

from typing import Any

from herder.manager.states import ItemEvent, TaskEvent, TaskStatus, apply, sources
from herder.manager.store.tables import WorkItem


def allows(event: ItemEvent) -> Any:
    """The condition that a work item's status lets ``event`` happen (``states.sources``).

    Every statement that changes an item's status matches on it: the table decides which
    change is legal, and the database applies it as a compare-and-set.
    """
    able = sources(event)
    return WorkItem.status == able[0] if len(able) == 1 else WorkItem.status.in_(able)


def task_moves(statuses: tuple[TaskStatus, ...], event: TaskEvent) -> TaskStatus:
    """Where ``event`` leads a task from each of ``statuses``: one status, or a bug (at import)."""
    (only,) = {apply(status, event) for status in statuses}
    return only
