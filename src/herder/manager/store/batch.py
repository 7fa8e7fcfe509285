"""The manager's hot paths: one transaction serves many requests (SQLAlchemy Core).

Heartbeats, claims, submissions and workers' reports arrive by the hundred per second.
Run one by one through the ORM they cost ~40 statements and a commit per task, and the
manager saturated its core at a few dozen tasks a second. Here each kind of request is
served *in batches* (``herder.manager.batcher`` gathers them while the previous batch is
being written), with a handful of Core statements per batch, whatever its size. Each
kind has its module:

* ``submissions``: new tasks and their items, each item given its owner's turn;
* ``heartbeats``: workers' figures noted, the leases of what they run extended;
* ``claims``: work handed to every free slot of every linked worker at once, in one
  compare-and-set ``UPDATE ... WHERE id IN (...) AND status = 'queued' RETURNING``;
  of two managers racing for one item exactly one update matches its row;
* ``reports``: attempts started, progressing and finished, fenced by
  ``(id, worker_id, attempt) IN (...)`` (a late report from an attempt that lost its
  work matches nothing and is answered ``FencedOut``), and the status of every task a
  batch touched derived from one aggregate over its items;
* ``moves``: the conditions all of them match, from ``herder.manager.states``' tables.

Every function takes a connection inside a transaction and leaves committing to it.
They are synchronous on purpose: a round of writes runs as one piece of code, on
SQLite in the database's own thread (one hand-over per round instead of one per
statement, each of which waited for a busy event loop), on PostgreSQL through
``AsyncConnection.run_sync``.

The names of those modules are importable from here too, their first home (where tests
and older code look for them); new code imports the module of the job.
"""

from __future__ import annotations

from herder.manager.errors import FencedOut
from herder.manager.store.claims import (
    _ASSIGNED_FROM,
    ITEM_COLUMNS,
    MAX_CLAIM_PAGES,
    FreeWorker,
    claim,
    free_slots,
)
from herder.manager.store.heartbeats import Beat, beat
from herder.manager.store.moves import allows
from herder.manager.store.reports import (
    _RENDERING_FROM,
    Done,
    Finished,
    Report,
    finish,
    progress,
    refresh_tasks,
    start,
)
from herder.manager.store.submissions import NewTask, insert_tasks, tag_key

__all__ = [
    "ITEM_COLUMNS",
    "MAX_CLAIM_PAGES",
    "_ASSIGNED_FROM",
    "_RENDERING_FROM",
    "Beat",
    "Done",
    "FencedOut",
    "Finished",
    "FreeWorker",
    "NewTask",
    "Report",
    "allows",
    "beat",
    "claim",
    "finish",
    "free_slots",
    "insert_tasks",
    "progress",
    "refresh_tasks",
    "start",
    "tag_key",
]
