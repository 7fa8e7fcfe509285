"""The rounds' list-bound statements come in a few texts whatever the batch's size.

Each distinct statement text is prepared once per connection by PostgreSQL's driver, in a
round trip of its own (``store/buckets.py``): a batch of 5 reports and one of 6 must reuse
the text of one another, not make one each. Checked on both databases: the texts are the
same SQLAlchemy renders for either.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import event

from herder.manager.server import Manager
from herder.manager.store import claims, reports
from herder.manager.store.buckets import padded
from herder.manager.store.reports import Done, Finished


def test_padded_lists_keep_their_values_in_a_power_of_two_of_lengths() -> None:
    for n in range(0, 40):
        values = list(range(n))
        out = padded(values)
        assert out[:n] == values
        assert set(out) == set(values)
        assert n <= 2 or len(out) & (len(out) - 1) == 0  # a power of two
        assert len(out) < max(2 * n, 3)


async def test_reports_of_batches_of_different_sizes_share_their_statements(manager: Manager) -> None:
    runtime = manager.runtime
    assert runtime is not None
    writes = runtime.writes
    async with httpx.AsyncClient(base_url=manager.url, timeout=30) as client:
        reg = {"hostname": "batches", "system": "Linux", "slots": 32}
        worker_id = (await client.post("/workers", json=reg)).json()["batches"]["id"]
        for _ in range(21):
            answer = await client.post("/tasks", json={"type": "command", "settings": {"argv": ["true"]}})
            assert answer.status_code == 202
    claimed = await writes.claim([worker_id])
    assert len(claimed) == 21

    engine = writes._sync_engine or writes.engine.sync_engine
    texts: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        texts.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        start = 0
        for size in (3, 5, 6, 7):  # padded to 4, 8, 8, 8
            rows, start = claimed[start : start + size], start + size
            batch = [Finished(row.id, worker_id, row.attempt, exit_code=0) for row in rows]
            done = await writes._in_transaction(reports.finish, batch)
            assert all(isinstance(d, Done) and d.status == "completed" and d.item_ended for d in done)
        assert start == len(claimed)
        free = await writes._in_transaction(
            claims.free_slots, [worker_id, worker_id + 1000, worker_id + 2000], 60.0
        )
        assert [w.free for w in free] == [32]
    finally:
        event.remove(engine, "before_cursor_execute", seen)

    def distinct(prefix: str) -> set[str]:
        return {t for t in texts if " ".join(t.split()).startswith(prefix)}

    # The completion, the tasks' lock and their aggregate: one text for 3, one for 5 to 7.
    assert len(distinct("UPDATE work_items SET frame_current")) == 2
    assert len(distinct("SELECT tasks.id, tasks.status, tasks.paused")) == 2
    assert len(distinct("SELECT work_items.task_id, work_items.status, count")) == 2
