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
from herder.manager.store.logs import FinalLog
from herder.manager.store.tables import WorkItem
from herder.registry import Registration, ServiceKey
from tests.clocks import ManualClock
from tests.manager.conftest import ManagerFactory


class NoParsers:
    """A parser lookup for items no task names a parser for (``output.ParserNames``)."""

    async def parser_of_item(self, item_id: int) -> str | None:
        return None


class EndedOnly:
    """Ended items' output "stored" for the items given as ended (``output.EndedLogs``)."""

    def __init__(self, ended: set[int]) -> None:
        self.ended = ended

    async def keep_ended_logs(self, logs: list[FinalLog]) -> list[int]:
        return [log.item_id for log in logs if log.item_id in self.ended]


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


async def test_an_ended_items_output_is_handed_over_then_let_go() -> None:
    """At its end an item's kept lines are handed over whole (to be stored), then leave
    the memory; late lines for it are dropped; the task's live readers are told it ended."""
    output = Output(NoParsers(), kept_lines=2)
    output.assigned(11, task_id=1)
    output.assigned(21, task_id=2)
    await output.add(11, 1, lines("first", "try"))
    await output.add(11, 2, lines("second try"))
    await output.add(21, 1, lines("another task"))
    reader = output.subscribe(1)
    log = output.final_log(11)
    assert log is not None
    kept = ((1, "stdout", "try"), (2, "stdout", "second try"))
    assert (log.attempt, log.lines, log.truncated) == (2, kept, 1)  # "first" fell off the bound
    output.item_ended(11)
    output.task_ended(1)
    assert await reader.get() is None  # its live readers are told it ended
    assert output.lines(11) == []
    assert output.final_log(11) is None
    await output.add(11, 2, lines("late"))  # a batch that crossed the end
    assert output.lines(11) == []
    assert [text for _, _, text in output.lines(21)] == ["another task"]  # live: still here
    stats = output.statistics()
    assert (stats.items, stats.lines) == (1, 1)


async def test_the_lines_of_a_tasks_items_move_only_when_the_database_says_they_ended() -> None:
    output = Output(NoParsers(), EndedOnly({5}))
    output.assigned(5, task_id=3)
    output.assigned(6, task_id=3)
    await output.add(5, 1, lines("canceled when its task failed"))
    await output.add(6, 1, lines("still running"))
    await output.move_ended(3)
    assert output.lines(5) == []
    assert [text for _, _, text in output.lines(6)] == ["still running"]


async def test_a_deleted_tasks_output_is_dropped_at_once() -> None:
    output = Output(NoParsers())
    output.assigned(5, task_id=3)
    await output.add(5, 1, lines("gone soon"))
    output.task_deleted(3)
    assert output.lines(5) == []
    stats = output.statistics()
    assert (stats.items, stats.lines) == (0, 0)


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
