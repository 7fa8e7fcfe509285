"""Claims: the best queued work handed to every free slot of the linked workers at once.

A claim is the manager's hottest statement (``herder.manager.writes`` runs one in every
round that submitted or finished work, and the dispatcher asks for more), so it costs a
few Core statements whatever the number of slots: the free slots of every worker
(``free_slots``), a page or more of candidates in the queue's order, and one
compare-and-set ``UPDATE ... WHERE id IN (...) AND status = 'queued' RETURNING`` over all
the chosen items; of two managers racing for one item exactly one update matches its
row, and what the other took is simply not returned. The choice between the workers
(tags that cover the item's, the task's blocklist, the most room left) is made here in
Python, over the candidates' rows (``_choose``): it is what decides who runs what, and
it is kept beside the statements it reads.

Like every round's statement (``store.batch``), these take a connection inside a
transaction, leave committing to it, and are synchronous.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, bindparam, case, func, select, update
from sqlalchemy.engine import Connection

from herder.manager.states import ACTIVE, ItemEvent, TaskEvent, TaskStatus, target
from herder.manager.store.buckets import padded
from herder.manager.store.moves import allows, task_moves
from herder.manager.store.tables import Blocked, Task, Worker, WorkItem

ITEM_COLUMNS = tuple(WorkItem.__table__.c)


@dataclass(frozen=True)
class FreeWorker:
    """A linked worker with room: how many more pieces of work it takes, and its tags."""

    worker_id: int
    free: int  # 0 or less: full (it still counts as a worker that could take the work)
    tags: frozenset[str]


# Statements of a fixed shape are built once: building one (coercions, operators) cost
# more than running it on SQLite, and the rounds run them hundreds of times a second.
# Lists go in as expanding parameters (``ids``, ``unfit``, ``keys``).
_HELD = (
    select(func.count()).where(WorkItem.worker_id == Worker.id, WorkItem.status.in_(ACTIVE)).scalar_subquery()
)
_FREE_SLOTS = select(Worker.id, Worker.slots - _HELD, Worker.tags).where(
    Worker.id.in_(bindparam("ids", expanding=True)),
    Worker.status == "enabled",
    Worker.last_seen >= bindparam("online_since"),
)
# The queue's order: priority, then the owner's turn (``submissions.insert_tasks``), then age.
QUEUE_ORDER = (WorkItem.priority.desc(), WorkItem.turn, WorkItem.id)
# Whether the item's task has a blocklist: it is read only for the tasks that have one
# (most have none), so the common claim costs no statement for it.
_HAS_BLOCKLIST = select(Blocked.task_id).where(Blocked.task_id == WorkItem.task_id).exists()
_CANDIDATES = (
    select(WorkItem.id, WorkItem.tag_key, WorkItem.task_id, _HAS_BLOCKLIST)
    .where(allows(ItemEvent.CLAIM), WorkItem.paused.is_(False))
    .order_by(*QUEUE_ORDER)
    .limit(bindparam("n"))
)
# The same, past the tag sets no online worker offers.
_CANDIDATES_FITTING = _CANDIDATES.where(WorkItem.tag_key.not_in(bindparam("unfit", expanding=True)))
# The last resort when the pages above keep meeting new unrunnable tag sets: every tag set
# in the queue, then only the items of those that fit (a flood of distinct tags blocks nothing).
_QUEUED_TAG_KEYS = (
    select(WorkItem.tag_key).where(allows(ItemEvent.CLAIM), WorkItem.paused.is_(False)).distinct()
)
_CANDIDATES_OF_KEYS = _CANDIDATES.where(WorkItem.tag_key.in_(bindparam("keys", expanding=True)))
_BLOCKED = select(Blocked.task_id, Blocked.worker_id).where(
    Blocked.task_id.in_(bindparam("ids", expanding=True))
)

MAX_CLAIM_PAGES = 8
# A claim makes a queued task assigned; one already further along keeps its status (the
# next derivation, at a report, sets it from its items).
_ASSIGNED_FROM = (TaskStatus.QUEUED,)
_TASK_ASSIGNED = (
    update(Task)
    .where(Task.id == bindparam("b_id"), Task.status == _ASSIGNED_FROM[0], Task.paused.is_(False))
    .values(
        status=task_moves(_ASSIGNED_FROM, TaskEvent.WORK_ASSIGNED),
        worker_id=bindparam("b_worker"),
        updated_at=bindparam("b_now"),
    )
)


def free_slots(conn: Connection, worker_ids: Iterable[int], offline_after_s: float) -> list[FreeWorker]:
    """Of these workers, the enabled and online ones, and their room (one statement).

    Online: heard from within ``offline_after_s`` (the ``connection`` of ``GET
    /workers``). A worker whose link is open but which stopped heartbeating (a hung
    agent: SIGSTOP, swapping) gets nothing: its link alone says nothing of its health.
    Full workers are listed too (room 0): they make work eligible that waits for them.
    None of them has room: an empty list.
    """
    ids = list(worker_ids)
    if not ids:
        return []
    rows = conn.execute(_FREE_SLOTS, {"ids": padded(ids), "online_since": time.time() - offline_after_s})
    workers = [FreeWorker(worker_id, room, frozenset(tags or ())) for worker_id, room, tags in rows]
    return workers if any(w.free > 0 for w in workers) else []


def claim(
    conn: Connection,
    workers: Sequence[FreeWorker],
    lease_s: float,
    *,
    most: int | None = None,
    scan: int = 1024,
) -> list[Row[Any]]:
    """Hand the best queued work (priority, then turn, then age) to these workers' free slots.

    Each item goes to the worker whose tags cover it with the most room left, but not
    to a worker on its task's blocklist while another worker here could take it. Work
    whose tags no worker here offers is passed over *in SQL* (its tag set is excluded
    from the next page of candidates); past ``MAX_CLAIM_PAGES`` such pages (a flood of
    distinct tag sets), only the queue's tag sets that fit are asked for: a flood of
    unrunnable work at the top of the queue blocks nothing. The claim is one
    compare-and-set over all of them; what another manager took meanwhile is simply
    not returned. Returns the claimed items' rows
    (``worker_id`` and ``attempt`` already the new ones), best first; at most ``most``.
    """
    chosen = _choose(conn, workers, most, scan)
    if not chosen:
        return []
    now = time.time()
    claimed = (
        conn.execute(
            update(WorkItem)
            .where(WorkItem.id.in_(list(chosen)), allows(ItemEvent.CLAIM))
            .values(
                status=target(ItemEvent.CLAIM),
                worker_id=case(chosen, value=WorkItem.id),
                attempt=WorkItem.attempt + 1,
                lease_expires=now + lease_s,
                started_at=None,
                exit_code=None,
            )
            .returning(*ITEM_COLUMNS)
        )
    ).all()
    if claimed:
        # A queued task becomes assigned; one already further along keeps its status.
        latest = {row.task_id: row.worker_id for row in sorted(claimed, key=lambda r: r.id)}
        conn.execute(
            _TASK_ASSIGNED, [{"b_id": t, "b_worker": w, "b_now": now} for t, w in sorted(latest.items())]
        )
    return sorted(claimed, key=lambda row: (-row.priority, row.id))


def _choose(conn: Connection, workers: Sequence[FreeWorker], most: int | None, scan: int) -> dict[int, int]:
    """Which queued item goes to which worker (item id → worker id): ``claim``'s choice."""
    room = {w.worker_id: max(w.free, 0) for w in workers}
    total = sum(room.values()) if most is None else min(most, sum(room.values()))
    if total <= 0:
        return {}
    n = max(total, min(scan, total * 8))
    chosen: dict[int, int] = {}
    unfit: set[str] = set()  # tag sets no worker here offers
    fitting: dict[str, list[FreeWorker]] = {}
    blocked: dict[int, set[int]] = {}
    for page in range(MAX_CLAIM_PAGES + 1):
        if page < MAX_CLAIM_PAGES:
            rows = _candidates(conn, n, unfit)
        else:  # every page met new tag sets no worker offers: ask for the fitting ones only
            rows = _candidates_that_fit(conn, n + len(chosen), workers, fitting)
        _load_blocked(conn, {task_id for _, _, task_id, listed in rows if listed}, blocked)
        passed_over = False
        for item_id, key, task_id, _listed in rows:
            if item_id in chosen:
                continue
            if key not in fitting:
                fitting[key] = _able(key, workers)
            if not fitting[key]:
                unfit.add(key)
                passed_over = True
                continue
            best = _pick(fitting[key], blocked.get(task_id, _NOBODY), room)
            if best is None:
                continue
            chosen[item_id] = best
            room[best] -= 1
            total -= 1
            if total == 0:
                break
        if total == 0 or len(rows) < n or not passed_over:
            break
    return chosen


Candidate = tuple[int, str, int, bool]  # item id, tag key, task id, has its task a blocklist
_NOBODY: frozenset[int] = frozenset()


def _candidates(conn: Connection, n: int, unfit: set[str]) -> list[Candidate]:
    """The next ``n`` queued items in the queue's order, past the tag sets ``unfit``."""
    if unfit:
        rows = conn.execute(_CANDIDATES_FITTING, {"n": n, "unfit": padded(sorted(unfit))})
    else:
        rows = conn.execute(_CANDIDATES, {"n": n})
    return [(item_id, key, task_id, bool(listed)) for item_id, key, task_id, listed in rows]


def _candidates_that_fit(
    conn: Connection, n: int, workers: Sequence[FreeWorker], fitting: dict[str, list[FreeWorker]]
) -> list[Candidate]:
    """The next ``n`` queued items whose tag set some worker here offers, in the queue's order.

    Costs a look at every queued tag set (``DISTINCT``): the claim comes here only when
    ``MAX_CLAIM_PAGES`` pages in a row met tag sets it had not seen, unrunnable ones.
    """
    for key in conn.scalars(_QUEUED_TAG_KEYS):
        if key not in fitting:
            fitting[key] = _able(key, workers)
    keys = sorted(key for key, able in fitting.items() if able)
    if not keys:
        return []
    rows = conn.execute(_CANDIDATES_OF_KEYS, {"n": n, "keys": padded(keys)})
    return [(item_id, key, task_id, bool(listed)) for item_id, key, task_id, listed in rows]


def _able(key: str, workers: Sequence[FreeWorker]) -> list[FreeWorker]:
    """The workers whose tags cover a tag set (``tag_key``), full or not."""
    needed = set(key.split(",")) if key else set()
    return [w for w in workers if needed <= w.tags]


def _load_blocked(conn: Connection, task_ids: set[int], blocked: dict[int, set[int]]) -> None:
    """The blocklists of these tasks (those not loaded yet), into ``blocked``."""
    new = task_ids - blocked.keys()
    if not new:
        return
    for task_id in new:
        blocked[task_id] = set()
    for task_id, worker_id in conn.execute(_BLOCKED, {"ids": padded(sorted(new))}):
        blocked[task_id].add(worker_id)


def _pick(able: list[FreeWorker], lost: AbstractSet[int], room: dict[int, int]) -> int | None:
    """The worker to take an item: of those able, one that did not lose an attempt of its
    task if any exists (even full: the item waits for it), with the most room left."""
    if lost and any(w.worker_id not in lost for w in able):
        able = [w for w in able if w.worker_id not in lost]
    fits = [w for w in able if room[w.worker_id] > 0]
    if not fits:
        return None
    return max(fits, key=lambda w: (room[w.worker_id], -w.worker_id)).worker_id
