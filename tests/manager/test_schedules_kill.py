"""A real manager killed (SIGKILL) again and again while a schedule fires every second,
on both databases: every run is fired exactly once, none lost, none doubled (#18).

The run is claimed in the transaction that inserts its task, so a manager killed at any
moment has committed both or neither; its successor fires what is left (``catch_up:
all``, ``overlap: allow``: every run due submits a task).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from herder.manager.schedules.tables import Schedule, ScheduleRun
from herder.manager.store.db import in_transaction
from herder.manager.store.tables import Task
from tests.helpers import poll
from tests.manager.conftest import ManagerProcess

KILLS = 3  # each a manager started again: the suite has 10 minutes in all


async def more_runs(url: str, schedule_id: int) -> None:
    """Wait until the manager at ``url`` has fired one more run of the schedule."""
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:

        async def runs() -> int:
            return int((await client.get(f"/schedules/{schedule_id}")).json()["runs"])

        before = await runs()

        async def one_more() -> bool:
            return await runs() > before

        await poll(one_more, 20)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_manager_killed_at_random_moments_neither_loses_nor_doubles_a_run(
    db_url: str, tmp_path: Path
) -> None:
    manager = ManagerProcess(tmp_path / "manager", db_url).start()
    chance = random.Random(18)
    try:
        body = {
            "interval_s": 1,
            "overlap": "allow",
            "catch_up": "all",
            "task": {"type": "command", "settings": {"argv": ["true"]}},
        }
        async with httpx.AsyncClient(base_url=manager.url, timeout=10.0) as client:
            made = (await client.post("/schedules", json=body)).json()
        for _ in range(KILLS):
            await more_runs(manager.url, made["id"])
            # Then a random moment within the next second: before, during or after a run's commit.
            await asyncio.sleep(chance.uniform(0.0, 1.0))
            manager.kill()
            manager.start()
        await more_runs(manager.url, made["id"])
    finally:
        manager.kill()

    async def read(db: Any) -> tuple[Any, list[float], int]:
        schedule = await db.get(Schedule, made["id"])
        runs = (await db.execute(select(ScheduleRun.run_at).order_by(ScheduleRun.run_at))).scalars().all()
        tasks = (await db.execute(select(func.count()).select_from(Task))).scalar_one()
        return schedule, list(runs), int(tasks)

    schedule, fired, tasks = await in_transaction(db_url, read)
    first = made["next_run_at"]
    # Every run from the first on is there once, with one task each, and the next is the
    # one after the last: none lost (at a kill or at the end), none doubled.
    assert fired == [first + k for k in range(len(fired))]
    assert schedule.runs == len(fired) == tasks
    assert schedule.skipped == 0
    assert schedule.next_run_at == fired[-1] + 1
    assert len(fired) > KILLS
