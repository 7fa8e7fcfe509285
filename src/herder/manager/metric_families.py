"""The families of the manager's ``GET /metrics`` (#16): tasks, queue, workers, RPC, HTTP...

Read at scrape time: tasks by status (the query of ``GET /tasks/counts``), work items
in the active statuses and the age of the oldest queued one (both through the claim
index, whose first column is the status: the cost grows with the work waiting or
running, not with history), and each worker's last heartbeat. The database gets
``DB_TIMEOUT_S``; a scrape that cannot read it still answers, with
``herder_manager_database_up 0`` and without those families.

Claims and lost leases are counted as they happen (``metrics.Counters``).

Heartbeats are RPC calls: their number and how long the manager took to answer them are
``herder_rpc_calls_total{method="heartbeat"}`` and
``herder_rpc_call_duration_seconds{method="heartbeat"}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from herder import __version__
from herder.manager.states import ItemStatus, TaskStatus
from herder.manager.store import queries
from herder.manager.store.tables import Worker, WorkItem
from herder.metrics import Families, HttpCounts, http_families, rpc_families

if TYPE_CHECKING:
    from herder.manager.metrics import Counters
    from herder.manager.server import ManagerRuntime

log = logging.getLogger(__name__)

# A scrape waits this long for the database at most (Prometheus's own timeout is 10 s
# by default): a slow database shows as database_up 0, not as a failed scrape.
DB_TIMEOUT_S = 2.0
# Work items counted by status: those still in play (the finished ones only grow).
ACTIVE_ITEM_STATUSES = (ItemStatus.QUEUED, ItemStatus.ASSIGNED, ItemStatus.RUNNING)


@dataclass
class DatabaseFigures:
    """What one scrape read from the database."""

    tasks: dict[str, int] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    oldest_queued_at: float | None = None
    workers: list[tuple[str, str, float]] = field(default_factory=list)  # hostname, status, last_seen


async def read_database(runtime: ManagerRuntime) -> DatabaseFigures | None:
    """The scrape's reads, in one transaction; None if the database did not answer in time."""
    try:
        async with asyncio.timeout(DB_TIMEOUT_S), runtime.transaction() as db:
            figures = DatabaseFigures(tasks=await queries.count_tasks(db))
            rows = await db.execute(
                select(WorkItem.status, func.count())
                .where(WorkItem.status.in_([s.value for s in ACTIVE_ITEM_STATUSES]))
                .group_by(WorkItem.status)
            )
            figures.items = {status: n for status, n in rows.all()}
            figures.oldest_queued_at = await db.scalar(
                select(func.min(WorkItem.created_at)).where(WorkItem.status == ItemStatus.QUEUED.value)
            )
            workers = await db.execute(select(Worker.hostname, Worker.status, Worker.last_seen))
            figures.workers = [(h, s, seen) for h, s, seen in workers.all()]
            return figures
    except (TimeoutError, OSError, SQLAlchemyError):  # away or slow: the scrape says so, goes on
        log.warning("/metrics: the database could not be read", exc_info=True)
        return None


def families(
    runtime: ManagerRuntime, counters: Counters, figures: DatabaseFigures | None, http: HttpCounts | None
) -> Families:
    """Every family of one scrape of the manager."""
    info = GaugeMetricFamily(
        "herder_build_info", "Always 1: which daemon, which version.", labels=["daemon", "version"]
    )
    info.add_metric(["manager", __version__], 1)
    up = GaugeMetricFamily("herder_manager_database_up", "1 if this scrape could read the database in time.")
    up.add_metric([], 0 if figures is None else 1)
    linked = GaugeMetricFamily("herder_manager_linked_workers", "Agents linked to this manager over RPC now.")
    linked.add_metric([], len(runtime.linked.ids()))
    claims = CounterMetricFamily(
        "herder_manager_claims", "Work items claimed for workers (attempts handed out)."
    )
    claims.add_metric([], counters.claims)
    lost = CounterMetricFamily(
        "herder_manager_leases_lost",
        "Tasks whose work was requeued or failed because its worker's lease ran out, per lease-keeper tick.",
    )
    lost.add_metric([], counters.leases_lost)
    runs = CounterMetricFamily("herder_manager_schedule_runs", "Tasks submitted by schedules' runs (#18).")
    runs.add_metric([], counters.schedule_runs)
    out = Families([info, up, linked, claims, lost, runs])
    if figures is not None:
        out.add(*_database_families(figures))
    out.add(*rpc_families(runtime.rpc.registry.stats))
    if http is not None:
        out.add(*http_families(http.counts))
    return out


def _database_families(figures: DatabaseFigures) -> list[Metric]:
    tasks = GaugeMetricFamily("herder_manager_tasks", "Tasks, by status.", labels=["status"])
    for status in TaskStatus:
        tasks.add_metric([status.value], figures.tasks.get(status.value, 0))
    items = GaugeMetricFamily(
        "herder_manager_work_items", "Work items waiting or running, by status.", labels=["status"]
    )
    for item_status in ACTIVE_ITEM_STATUSES:
        items.add_metric([item_status.value], figures.items.get(item_status.value, 0))
    now = time.time()
    age = GaugeMetricFamily(
        "herder_manager_queue_oldest_age_seconds",
        "Age of the oldest queued work item (0: the queue is empty).",
    )
    age.add_metric(
        [], max(0.0, now - figures.oldest_queued_at) if figures.oldest_queued_at is not None else 0.0
    )
    beat = GaugeMetricFamily(
        "herder_manager_worker_last_heartbeat_age_seconds",
        "Seconds since each worker was last heard from (heartbeat or report).",
        labels=["worker", "status"],
    )
    for hostname, worker_status, last_seen in figures.workers:
        beat.add_metric([hostname, worker_status], max(0.0, now - last_seen))
    return [tasks, items, age, beat]
