"""Submissions: new tasks and their work items written in a few statements a round.

A round inserts every task submitted since the last one (one ``INSERT ... RETURNING``)
and all their items (one ``INSERT``). Each item is given its owner's next *turn* here,
so that the claims' order (``claims.QUEUE_ORDER``: priority, then turn) serves owners
in turns: the turns of all the round's owners, and the head of the queue, are read in
one statement (``_turns_query``).

Like every round's statement (``store.batch``), these take a connection inside a
transaction, leave committing to it, and are synchronous.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Connection

from herder.manager.states import ACTIVE, ItemStatus
from herder.manager.store.claims import QUEUE_ORDER
from herder.manager.store.tables import Task, WorkItem


@dataclass(frozen=True)
class NewTask:
    """A compiled submission: the task's row and its items' rows (without ids)."""

    task: dict[str, Any]
    items: list[dict[str, Any]]


# Built once, as the claims' statements are (see there why).
# The turn of the next item to be served: new work starts no earlier (see ``insert_tasks``).
_HEAD_TURN = select(WorkItem.turn).where(WorkItem.status == ItemStatus.QUEUED).order_by(*QUEUE_ORDER).limit(1)


def _turns_query(owners: int) -> Any:
    """One statement: the head's turn, then each of ``owners`` owners' last unfinished turn
    (bound as ``o0``, ``o1``...): a submission round pays one round trip for them all."""
    lasts = [
        select(WorkItem.turn)
        .where(WorkItem.owner == bindparam(f"o{i}"), WorkItem.status.in_((ItemStatus.QUEUED, *ACTIVE)))
        .order_by(WorkItem.turn.desc())
        .limit(1)
        .scalar_subquery()
        for i in range(owners)
    ]
    return select(_HEAD_TURN.scalar_subquery(), *lasts)


_INSERT_TASKS = insert(Task).returning(Task.id, sort_by_parameter_order=True)
_INSERT_ITEMS = insert(WorkItem)


def tag_key(tags: Iterable[str] | None) -> str:
    """Tags as one string that compares equal for equal sets (``WorkItem.tag_key``)."""
    return ",".join(sorted(set(tags or ())))


def insert_tasks(conn: Connection, new: Sequence[NewTask]) -> list[int]:
    """Insert the tasks and their items; their ids, in order (a few statements in all).

    Each item gets its owner's next *turn*: one past the owner's last unfinished item,
    and no earlier than the head of the queue. At equal priority the queue is served by
    turn, so owners take turns: one user's 10,000 tasks take turns 0 to 9,999, and
    another user's task submitted meanwhile is served after the few items before the
    head of the queue, not after the 10,000 (start-time fair queueing, by count).
    """
    inserted = conn.execute(_INSERT_TASKS, [n.task for n in new])
    ids = [row[0] for row in inserted]
    owners = sorted({n.task.get("owner") or "" for n in new})
    head, *lasts = conn.execute(
        _turns_query(len(owners)), {f"o{i}": owner for i, owner in enumerate(owners)}
    ).one()
    next_turn = {
        owner: max(head or 0, last + 1 if last is not None else 0)
        for owner, last in zip(owners, lasts, strict=True)
    }
    items = []
    for task_id, n in zip(ids, new, strict=True):
        owner = n.task.get("owner") or ""
        for item in n.items:
            turn = next_turn[owner]
            next_turn[owner] = turn + 1
            key = tag_key(item.get("tags"))
            items.append({**item, "task_id": task_id, "owner": owner, "turn": turn, "tag_key": key})
    if items:
        conn.execute(_INSERT_ITEMS, items)
    return ids
