"""The manager's components on their own: output kept per work item, the registry's sweeper,
the lease keeper.

``Output`` is driven with a parser lookup of the tests' own (there is no database
here: no item has a parser); the sweeper and the lease keeper run on a ``ManualClock``
and are seen to act exactly when the clock says they should, not a tick before.
"""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import update

from herder.manager.leases import LeaseKeeper
from herder.manager.output import Output
from herder.manager.services import Services
from herder.manager.store.tables import WorkItem
from herder.registry import Registration, ServiceKey
from tests.clocks import ManualClock
from tests.manager.conftest import ManagerFactory


class NoParsers:
    """A parser lookup for items no task names a parser for (``output.ParserNames``)."""

    async def parser_of_item(self, item_id: int) -> str | None:
        return None


def lines(*texts: str) -> list[list[str]]:
    return [["stdout", text] for text in texts]


async def test_an_items_lines_are_bounded_and_the_oldest_item_goes_first() -> None:
    output = Output(NoParsers(), kept_lines=3, max_items=2, max_lines=100)
    await output.add(1, 1, lines("a", "b", "c", "d"))
    assert [text for _, _, text in output.lines(1)] == ["b", "c", "d"]
    await output.add(2, 1, lines("x"))
    await output.add(1, 2, lines("e"))  # item 1 is now the latest written
    await output.add(3, 1, lines("y"))
    assert output.lines(2) == []  # the item written to longest ago
    assert [text for _, _, text in output.lines(1)] == ["c", "d", "e"]
    assert output.statistics().items == 2


async def test_the_total_of_lines_is_bounded() -> None:
    output = Output(NoParsers(), kept_lines=10, max_items=100, max_lines=15)
    for item in range(1, 4):
        await output.add(item, 1, lines(*(f"{item}.{n}" for n in range(10))))
    stats = output.statistics()
    assert stats.lines <= 15
    assert output.lines(1) == []
    assert len(output.lines(3)) == 10


async def test_an_ended_tasks_output_stays_for_the_log_then_goes() -> None:
    output = Output(NoParsers(), ended_tasks_kept=1)
    output.assigned(11, task_id=1)
    output.assigned(21, task_id=2)
    await output.add(11, 1, lines("first task"))
    await output.add(21, 1, lines("second task"))
    reader = output.subscribe(1)
    output.task_ended(1)
    assert await reader.get() is None  # its live readers are told it ended
    assert [text for _, _, text in output.lines(11)] == ["first task"]  # the log still answers
    output.task_ended(2)
    assert output.lines(11) == []  # past the ended tasks kept: dropped
    assert [text for _, _, text in output.lines(21)] == ["second task"]
    assert output.statistics().ended_tasks == 1


async def test_a_deleted_tasks_output_is_dropped_at_once() -> None:
    output = Output(NoParsers())
    output.assigned(5, task_id=3)
    await output.add(5, 1, lines("gone soon"))
    output.task_deleted(3)
    assert output.lines(5) == []
    stats = output.statistics()
    assert (stats.items, stats.lines, stats.ended_tasks) == (0, 0, 0)


async def test_the_sweeper_drops_a_registration_when_the_clock_passes_its_expiry() -> None:
    clock = ManualClock()
    services = Services(auth_on=False, clock=clock)
    key = ServiceKey.parse("/alice/prod/math/1.0.0/eu/host-1/instance-1")
    services.index.add(
        Registration(
            key=key,
            url="http://127.0.0.1:9",
            owner="alice",
            registered_at=clock.time(),
            expires_at=clock.time() + 2.5,
        )
    )
    async with asyncio.TaskGroup() as tg:
        sweeper = tg.create_task(services.run())
        await clock.wait_asleep()
        for _ in range(2):  # 2 s of the 2.5 s pass: still there
            clock.advance(1.0)
            await clock.wait_asleep()
        assert services.index.get(key.id) is not None
        clock.advance(0.6)
        await clock.wait_asleep()
        assert services.index.get(key.id) is None
        sweeper.cancel()


async def test_the_lease_keeper_requeues_once_it_has_watched_a_whole_lease(
    make_manager: ManagerFactory,
) -> None:
    """A lease that ran out is judged only after the keeper listened for a lease and its
    margin (a worker it could not hear is not silent): 3.5 s of its clock is not enough, 4 s is.
    The manager's own keeper waits 240 s (a 60 s interval) and stays out of the way."""
    async with (
        make_manager(heartbeat_interval_s=60) as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30) as client,
    ):
        assert manager.runtime is not None
        worker = (await client.post("/workers", json={"hostname": "puller", "system": "Linux"})).json()[
            "puller"
        ]
        body = {"type": "command", "settings": {"argv": ["true"]}, "max_attempts": 2}
        task = (await client.post("/tasks", json=body)).json()
        pulled = (await client.patch(f"/workers/{worker['id']}", json={"status": "available"})).json()
        item_id = pulled["work_item"]["id"]
        async with manager.runtime.transaction() as db:  # its lease ran out long ago
            await db.execute(update(WorkItem).where(WorkItem.id == item_id).values(lease_expires=0.0))

        async def status() -> str:
            doc = (await client.get(f"/tasks/{task['id']}")).json()
            return str(doc["work_items"][0]["status"])

        clock = ManualClock()
        keeper = LeaseKeeper(
            manager.runtime, heartbeat_interval_s=1.0, lease_s=3.0, lease_margin_s=1.0, clock=clock
        )
        assert keeper.tick_s == 0.5
        async with asyncio.TaskGroup() as tg:
            running = tg.create_task(keeper.run())
            await clock.wait_asleep()
            for _ in range(7):
                clock.advance(0.5)
                await clock.wait_asleep()
            assert await status() == "assigned"
            clock.advance(0.5)
            await clock.wait_asleep()
            assert await status() == "queued"
            running.cancel()
