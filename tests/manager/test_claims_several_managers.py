"""Claims of two managers at once on one PostgreSQL: neither waits for the other's round.

Benchmark 14 (bench/README.md, issue 17) found that two managers' claims read the same head
of the queue: the second's compare-and-set ``UPDATE`` waited for the first's round to commit,
then found the rows taken, so its workers' slots stayed empty until its next round (14-30%
of the items chosen lost that way with 2 and 3 managers). The candidates are now locked as
they are read, past those another transaction holds (``FOR UPDATE ... SKIP LOCKED``).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Connection

from herder.manager.store import claims, db
from herder.manager.store.tables import WorkItem
from tests.manager.conftest import ManagerFactory

SLOTS = 4
LEASE_S = 60.0


async def test_two_claims_in_open_transactions_take_the_next_items_without_waiting(
    make_manager: ManagerFactory, db_url: str
) -> None:
    """Claim A holds its transaction open; claim B, for another worker, returns at once with
    the next items in the queue's order (before: it waited on A's row locks, here until the
    lock timeout); once both commit, no item is held twice."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writes: one manager per database file, no claims at once")
    async with (
        make_manager() as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
    ):
        ids = []
        for name in ("worker-a", "worker-b"):
            answer = await client.post("/workers", json={"hostname": name, "system": "Linux", "slots": SLOTS})
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()[name]["id"])
        for _ in range(3 * SLOTS):  # no worker is linked: the tasks stay queued
            answer = await client.post("/tasks", json={"type": "command", "settings": {"argv": ["true"]}})
            assert answer.status_code == 202, answer.text
        offline_after_s = manager.config.offline_after_s

        def claim_for(worker_id: int) -> Any:
            def work(conn: Connection) -> list[int]:
                free = claims.free_slots(conn, [worker_id], offline_after_s)
                return [row.id for row in claims.claim(conn, free, LEASE_S)]

            return work

        engine = db.create_engine(db_url)
        try:
            async with engine.connect() as a, engine.connect() as b:
                queue = list((await a.execute(select(WorkItem.id).order_by(*claims.QUEUE_ORDER))).scalars())
                await a.commit()
                await a.begin()
                first = await a.run_sync(claim_for(ids[0]))
                await b.begin()
                await b.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
                second = await b.run_sync(claim_for(ids[1]))  # A's transaction still open
                await a.commit()
                await b.commit()
                held = (
                    await a.execute(
                        select(WorkItem.id, WorkItem.worker_id).where(WorkItem.status == "assigned")
                    )
                ).all()
                await a.commit()
        finally:
            await engine.dispose()
    assert first == queue[:SLOTS]
    assert second == queue[SLOTS : 2 * SLOTS]
    assert sorted(held) == sorted([(i, ids[0]) for i in first] + [(i, ids[1]) for i in second])
