"""Heartbeats: workers' figures noted and their leases extended, a round's beats at once.

Beats arrive from every worker every few seconds, the most frequent request of a big
fleet; a round writes them in a statement per set of figures they carry, and a few
for the leases, whatever their number. The lease is what keeps a worker's work its own
(``reports`` are fenced by attempt; an expired lease sends the work back to the queue,
``herder.manager.leases``): a beat that lists what its agent runs extends those
attempts' leases only, and learns which of them it should stop.

Like every round's statement (``store.batch``), these take a connection inside a
transaction, leave committing to it, and are synchronous.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.engine import Connection

from herder.manager.states import ACTIVE
from herder.manager.store.tables import Worker, WorkItem


@dataclass(frozen=True)
class Beat:
    """A heartbeat: figures to note, and (from linked agents) the attempts it runs."""

    worker_id: int
    figures: dict[str, Any] = field(default_factory=dict)
    running: tuple[tuple[int, int], ...] | None = None


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
