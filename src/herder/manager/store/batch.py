"""The manager's hot paths: one transaction serves many requests (SQLAlchemy Core).

Heartbeats, claims, submissions and workers' reports arrive by the hundred per second.
Run one by one through the ORM they cost ~40 statements and a commit per task, and the
manager saturated its core at a few dozen tasks a second. Here each kind of request is
served *in batches* (``herder.manager.batcher`` gathers them while the previous batch is
being written), with a handful of Core statements per batch, whatever its size:

* a claim hands work to every free slot of every linked worker at once: one
  compare-and-set ``UPDATE ... WHERE id IN (...) AND status = 'queued' RETURNING``;
  of two managers racing for one item exactly one update matches its row;
* reports are fenced by ``(id, worker_id, attempt) IN (...)``: a late report from an
  attempt that lost its work matches nothing and is answered ``FencedOut``;
* a task's status is derived from one aggregate over the items of every task a batch
  touched, after the items changed and the tasks' rows were locked (in id order, so
  that two batches never wait on each other in a circle): on PostgreSQL the aggregate
  then sees every report committed before, as the ORM path does.

Every function takes a connection inside a transaction and leaves committing to it.
They are synchronous on purpose: a round of writes runs as one piece of code, on
SQLite in the database's own thread (one hand-over per round instead of one per
statement, each of which waited for a busy event loop), on PostgreSQL through
``AsyncConnection.run_sync``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Row, bindparam, case, func, insert, or_, select, tuple_, update
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
    sources,
    target,
)
from herder.manager.store.logs import FinalLog, keep_logs
from herder.manager.store.status import TaskCounts
from herder.manager.store.tables import Blocked, Task, Worker, WorkItem

ITEM_COLUMNS = tuple(WorkItem.__table__.c)


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


@dataclass(frozen=True)
class Beat:
    """A heartbeat: figures to note, and (from linked agents) the attempts it runs."""

    worker_id: int
    figures: dict[str, Any] = field(default_factory=dict)
    running: tuple[tuple[int, int], ...] | None = None


@dataclass(frozen=True)
class FreeWorker:
    """A linked worker with room: how many more pieces of work it takes, and its tags."""

    worker_id: int
    free: int  # 0 or less: full (it still counts as a worker that could take the work)
    tags: frozenset[str]


@dataclass(frozen=True)
class NewTask:
    """A compiled submission: the task's row and its items' rows (without ids)."""

    task: dict[str, Any]
    items: list[dict[str, Any]]


def allows(event: ItemEvent) -> Any:
    """The condition that a work item's status lets ``event`` happen (``states.sources``).

    Every statement that changes an item's status matches on it: the table decides which
    change is legal, and the database applies it as a compare-and-set.
    """
    able = sources(event)
    return WorkItem.status == able[0] if len(able) == 1 else WorkItem.status.in_(able)


def _task_moves(statuses: tuple[TaskStatus, ...], event: TaskEvent) -> TaskStatus:
    """Where ``event`` leads a task from each of ``statuses``: one status, or a bug (at import)."""
    (only,) = {apply(status, event) for status in statuses}
    return only


def _fenced(reports: Iterable[Report]) -> Any:
    return tuple_(WorkItem.id, WorkItem.worker_id, WorkItem.attempt).in_([r.fence for r in reports])


# Statements of a fixed shape are built once: building one (coercions, operators) cost
# more than running it on SQLite, and the rounds run them hundreds of times a second.
# Lists go in as expanding parameters (``ids``, ``fences``).
_HELD = (
    select(func.count()).where(WorkItem.worker_id == Worker.id, WorkItem.status.in_(ACTIVE)).scalar_subquery()
)
_FREE_SLOTS = select(Worker.id, Worker.slots - _HELD, Worker.tags).where(
    Worker.id.in_(bindparam("ids", expanding=True)),
    Worker.status == "enabled",
    Worker.last_seen >= bindparam("online_since"),
)
_QUEUE_ORDER = (WorkItem.priority.desc(), WorkItem.turn, WorkItem.id)
# Whether the item's task has a blocklist: it is read only for the tasks that have one
# (most have none), so the common claim costs no statement for it.
_HAS_BLOCKLIST = select(Blocked.task_id).where(Blocked.task_id == WorkItem.task_id).exists()
_CANDIDATES = (
    select(WorkItem.id, WorkItem.tag_key, WorkItem.task_id, _HAS_BLOCKLIST)
    .where(allows(ItemEvent.CLAIM), WorkItem.paused.is_(False))
    .order_by(*_QUEUE_ORDER)
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
# The turn of the next item to be served: new work starts no earlier (see ``insert_tasks``).
_HEAD_TURN = (
    select(WorkItem.turn).where(WorkItem.status == ItemStatus.QUEUED).order_by(*_QUEUE_ORDER).limit(1)
)


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


MAX_CLAIM_PAGES = 8
# A claim makes a queued task assigned; one already further along keeps its status (the
# next derivation, at a report, sets it from its items).
_ASSIGNED_FROM = (TaskStatus.QUEUED,)
_TASK_ASSIGNED = (
    update(Task)
    .where(Task.id == bindparam("b_id"), Task.status == _ASSIGNED_FROM[0], Task.paused.is_(False))
    .values(
        status=_task_moves(_ASSIGNED_FROM, TaskEvent.WORK_ASSIGNED),
        worker_id=bindparam("b_worker"),
        updated_at=bindparam("b_now"),
    )
)
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
    .values(status=_task_moves(_RENDERING_FROM, TaskEvent.WORK_RUNNING), updated_at=bindparam("b_now"))
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
_INSERT_TASKS = insert(Task).returning(Task.id, sort_by_parameter_order=True)
_INSERT_ITEMS = insert(WorkItem)


# -- submissions ---------------------------------------------------------------------------


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


# -- heartbeats ----------------------------------------------------------------------------


def beat(conn: Connection, beats: Sequence[Beat], lease_s: float) -> list[list[list[int]]]:
    """Note the workers' figures, extend the leases of what they run; per beat, what to stop.

    A beat that names its running attempts extends only those leases, and is answered
    with those of them its worker no longer holds (the manager gave them away or they
    were canceled): an agent that restarted holds nothing, and what the manager still
    thinks it holds expires and goes back to the queue. A beat without (the seed's
    pull path) extends every lease its worker holds.
    """
    now = time.time()
    by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for b in beats:
        row = {"b_id": b.worker_id, "last_seen": now}
        for key in ("update_frequent", "update_less_frequent"):
            if key in b.figures:
                row[key] = b.figures[key]
        by_keys.setdefault(tuple(sorted(row)), []).append(row)
    for rows in by_keys.values():
        values: dict[str, Any] = {k: bindparam(k) for k in rows[0] if k != "b_id"}
        conn.execute(update(Worker).where(Worker.id == bindparam("b_id")).values(**values), rows)

    expires = now + lease_s
    pull = [b.worker_id for b in beats if b.running is None]
    if pull:
        conn.execute(
            update(WorkItem)
            .where(WorkItem.worker_id.in_(pull), WorkItem.status.in_(ACTIVE))
            .values(lease_expires=expires)
        )
    running = [(b.worker_id, item, attempt) for b in beats for item, attempt in b.running or ()]
    if not running:
        return [[] for _ in beats]
    conn.execute(
        update(WorkItem)
        .where(
            WorkItem.id == bindparam("b_id"),
            WorkItem.worker_id == bindparam("b_worker"),
            WorkItem.attempt == bindparam("b_attempt"),
            or_(*(WorkItem.status == status for status in ACTIVE)),  # executemany: no IN (...)
        )
        .values(lease_expires=expires),
        [{"b_id": i, "b_worker": w, "b_attempt": a, "lease_expires": expires} for w, i, a in running],
    )
    workers = {w for w, _, _ in running}
    held_rows = conn.execute(
        select(WorkItem.worker_id, WorkItem.id, WorkItem.attempt).where(
            WorkItem.worker_id.in_(workers), WorkItem.status.in_(ACTIVE)
        )
    )
    held = {(w, i, a) for w, i, a in held_rows}
    return [[[i, a] for i, a in b.running or () if (b.worker_id, i, a) not in held] for b in beats]


# -- claims --------------------------------------------------------------------------------


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
    rows = conn.execute(_FREE_SLOTS, {"ids": ids, "online_since": time.time() - offline_after_s})
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
        rows = conn.execute(_CANDIDATES_FITTING, {"n": n, "unfit": sorted(unfit)})
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
    rows = conn.execute(_CANDIDATES_OF_KEYS, {"n": n, "keys": keys})
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
    for task_id, worker_id in conn.execute(_BLOCKED, {"ids": sorted(new)}):
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


# -- reports -------------------------------------------------------------------------------


def start(conn: Connection, reports: Sequence[Report], lease_s: float) -> list[str | FencedOut]:
    """Attempts started: each report's task parser, or ``FencedOut``."""
    now = time.time()
    fences = [r.fence for r in reports]
    started = conn.execute(_START, {"fences": fences, "b_now": now, "b_expires": now + lease_s}).all()
    task_of = {item_id: task_id for item_id, task_id in started}
    if not task_of:
        return [r.fenced_out() for r in reports]
    tasks = sorted(set(task_of.values()))
    conn.execute(_TASKS_RENDERING, {"ids": tasks, "b_now": now})
    parsers = dict(conn.execute(_PARSERS, {"ids": tasks}).all())
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
        rows = conn.execute(_COMPLETE, {"fences": [r.fence for r in succeeded], "b_now": now})
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
    tasks = conn.execute(_LOCK_TASKS, {"ids": ids}).all()
    counts: dict[int, TaskCounts] = {t.id: TaskCounts() for t in tasks}
    aggregate = conn.execute(_ITEMS_BY_STATUS, {"ids": ids})
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
    return int(row[0])
