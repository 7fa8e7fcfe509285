"""Schedules on the manager (#18), on both databases, with time moved by a ``ManualClock``.

Each test runs real managers whose firing loop reads a clock the test advances: a run
falls due when the test says, and nothing waits for minutes. No worker is linked, so a
submitted task stays queued (active) until the test cancels it: that is what the
overlap modes are tried against.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from herder.auth import init_keys
from herder.manager.config import ManagerConfig
from herder.manager.schedules import Scheduler
from herder.manager.schedules.routes import MAX_SCHEDULES_PER_USER
from herder.manager.schedules.store import MAX_CATCH_UP
from herder.manager.schedules.tables import ScheduleRun
from herder.manager.server import Manager
from herder.manager.store.tables import Task
from tests.clocks import ManualClock
from tests.helpers import poll
from tests.manager.keyed import users_headers
from tests.test_metrics import scrape, value

ECHO = {"type": "command", "settings": {"argv": ["echo", "hi"]}}


def scheduler_of(manager: Manager) -> Scheduler:
    assert manager.runtime is not None
    return manager.runtime.schedules


def new_manager(db_url: str, data_dir: Path, clock: ManualClock) -> Manager:
    config = ManagerConfig.model_validate({"port": 0, "data_dir": data_dir, "db": db_url})
    return Manager(config, clock=clock)


async def settled(clock: ManualClock, *managers: Manager, passes: list[int]) -> None:
    """Wait until each manager's firing loop made a pass since ``passes`` and sleeps again
    on ``clock`` (theirs alone sleep on it)."""
    await poll(
        lambda: (
            clock.sleeping() >= len(managers)
            and all(
                scheduler_of(m).passes > before and scheduler_of(m).asleep
                for m, before in zip(managers, passes, strict=True)
            )
        )
    )


async def advance(clock: ManualClock, seconds: float, *managers: Manager) -> None:
    """Move time on and wait for every manager's pass at the new time."""
    passes = [scheduler_of(m).passes for m in managers]
    clock.advance(seconds)
    await settled(clock, *managers, passes=passes)


@pytest.fixture
async def timed(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Manager, ManualClock, httpx.AsyncClient]]:
    clock = ManualClock()
    async with (
        new_manager(db_url, tmp_path / "manager", clock) as manager,
        httpx.AsyncClient(base_url=manager.url, timeout=30.0) as client,
    ):
        await settled(clock, manager, passes=[0])
        yield manager, clock, client


async def make(
    manager: Manager, clock: ManualClock, client: httpx.AsyncClient, body: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    """POST /schedules, then wait for the loop's pass that the new schedule woke."""
    before = scheduler_of(manager).passes
    answer = await client.post("/schedules", json=body, **kw)
    assert answer.status_code == 201, answer.text
    await settled(clock, manager, passes=[before])
    return dict(answer.json())


async def schedule(client: httpx.AsyncClient, schedule_id: int, **kw: Any) -> dict[str, Any]:
    answer = await client.get(f"/schedules/{schedule_id}", **kw)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def cancel(client: httpx.AsyncClient, task_id: int) -> None:
    answer = await client.patch(f"/tasks/{task_id}", json={"status": "canceled"})
    assert answer.status_code == 204, answer.text


async def test_an_interval_schedule_fires_as_the_clock_moves_and_overlap_skip_waits(
    timed: tuple[Manager, ManualClock, httpx.AsyncClient],
) -> None:
    manager, clock, client = timed
    made = await make(manager, clock, client, {"interval_s": 10, "task": ECHO, "name": "tick"})
    assert made["overlap"] == "skip"
    assert made["catch_up"] == "none"
    assert made["enabled"] is True
    assert made["next_run_at"] == pytest.approx(clock.time() + 10)
    assert made["task"] == ECHO
    await advance(clock, 9, manager)
    assert (await schedule(client, made["id"]))["runs"] == 0  # not due yet
    await advance(clock, 1, manager)
    first = await schedule(client, made["id"])
    assert first["runs"] == 1
    assert first["last_task_id"] is not None
    assert first["recent_runs"][0]["task_id"] == first["last_task_id"]
    samples = await scrape(client)
    assert value(samples, "herder_manager_schedule_runs_total") == 1
    task = (await client.get(f"/tasks/{first['last_task_id']}")).json()
    assert task["type"] == "command"
    assert task["status"] == "queued"
    await advance(clock, 10, manager)  # the first task is still queued: skipped
    second = await schedule(client, made["id"])
    assert (second["runs"], second["skipped"]) == (1, 1)
    await cancel(client, first["last_task_id"])
    await advance(clock, 10, manager)
    third = await schedule(client, made["id"])
    assert (third["runs"], third["skipped"]) == (2, 1)
    assert third["next_run_at"] == pytest.approx(made["next_run_at"] + 30)


async def test_overlap_queue_keeps_one_run_waiting_and_allow_submits_every_run(
    timed: tuple[Manager, ManualClock, httpx.AsyncClient],
) -> None:
    manager, clock, client = timed
    queue = await make(manager, clock, client, {"interval_s": 10, "task": ECHO, "overlap": "queue"})
    allow = await make(manager, clock, client, {"interval_s": 10, "task": ECHO, "overlap": "allow"})
    for _ in range(3):
        await advance(clock, 10, manager)
    queued = await schedule(client, queue["id"])
    # Run 1 submitted; run 2 waits behind it; run 3 is skipped (one waits at most).
    assert (queued["runs"], queued["skipped"]) == (1, 1)
    assert queued["pending_at"] == pytest.approx(queue["next_run_at"] + 10)
    allowed = await schedule(client, allow["id"])
    assert (allowed["runs"], allowed["skipped"]) == (3, 0)
    assert len({r["task_id"] for r in allowed["recent_runs"]}) == 3
    await cancel(client, queued["last_task_id"])
    await advance(clock, 1, manager)  # the next pass submits the waiting run
    after = await schedule(client, queue["id"])
    assert (after["runs"], after["skipped"], after["pending_at"]) == (2, 1, None)
    assert after["last_run_at"] == pytest.approx(queued["pending_at"])
    assert after["last_task_id"] != queued["last_task_id"]


async def test_catch_up_none_one_and_all_after_an_hour_without_a_manager(db_url: str, tmp_path: Path) -> None:
    clock = ManualClock()
    body = {"interval_s": 60, "task": ECHO, "overlap": "allow"}
    async with (
        new_manager(db_url, tmp_path / "manager", clock) as first,
        httpx.AsyncClient(base_url=first.url, timeout=30.0) as client,
    ):
        await settled(clock, first, passes=[0])
        made = {
            mode: await make(first, clock, client, {**body, "catch_up": mode})
            for mode in ("none", "one", "all")
        }
    # No manager runs for an hour and 5 s: 60 runs fall due; the last is only 5 s late
    # when the next manager starts (on time), the 59 before it were missed.
    clock.advance(3605)
    async with (
        new_manager(db_url, tmp_path / "manager", clock) as second,
        httpx.AsyncClient(base_url=second.url, timeout=30.0) as client,
    ):
        await settled(clock, second, passes=[0])
        counts = {}
        for mode, doc in made.items():
            now = await schedule(client, doc["id"])
            counts[mode] = (now["runs"], now["skipped"])
        assert counts == {"none": (1, 59), "one": (2, 58), "all": (60, 0)}
        one = await schedule(client, made["one"]["id"])
        # The run caught up for "one" is the newest missed one, before the on-time one.
        assert [r["run_at"] for r in one["recent_runs"]] == pytest.approx(
            [made["one"]["next_run_at"] + 59 * 60, made["one"]["next_run_at"] + 58 * 60]
        )


async def test_catch_up_all_is_bounded(timed: tuple[Manager, ManualClock, httpx.AsyncClient]) -> None:
    manager, clock, client = timed
    doc = await make(
        manager, clock, client, {"interval_s": 1, "task": ECHO, "overlap": "allow", "catch_up": "all"}
    )
    await advance(clock, 10_000, manager)
    now = await schedule(client, doc["id"])
    assert now["runs"] == MAX_CATCH_UP
    assert now["skipped"] > 0  # the older ones: counted, not submitted
    assert now["next_run_at"] == pytest.approx(clock.time() + 1)


async def test_pause_resume_change_and_delete(timed: tuple[Manager, ManualClock, httpx.AsyncClient]) -> None:
    manager, clock, client = timed
    doc = await make(manager, clock, client, {"interval_s": 10, "task": ECHO, "overlap": "allow"})
    paused = await client.patch(f"/schedules/{doc['id']}", json={"enabled": False})
    assert paused.status_code == 200
    assert paused.json()["enabled"] is False
    await advance(clock, 100, manager)
    assert (await schedule(client, doc["id"]))["runs"] == 0  # paused: nothing fired, nothing counted
    resumed = (await client.patch(f"/schedules/{doc['id']}", json={"enabled": True})).json()
    # Runs missed while paused are not caught up: the next is the first after now.
    assert resumed["next_run_at"] == pytest.approx(doc["next_run_at"] + 100)
    changed = (
        await client.patch(f"/schedules/{doc['id']}", json={"cron": "0 3 * * *", "timezone": "Asia/Tokyo"})
    ).json()
    assert changed["cron"] == "0 3 * * *"
    assert changed["interval_s"] is None
    assert changed["next_run_at"] > clock.time()
    listed = (await client.get("/schedules")).json()["schedules"]
    assert [s["id"] for s in listed] == [doc["id"]]
    deleted = await client.delete(f"/schedules/{doc['id']}")
    assert deleted.status_code == 200
    assert (await client.get(f"/schedules/{doc['id']}")).status_code == 404
    assert (await client.get("/schedules")).json() == {"schedules": []}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "61 * * * *", "task": ECHO}, "cron"),
        ({"cron": "0 9 * * *", "timezone": "Nowhere/City", "task": ECHO}, "timezone"),
        ({"interval_s": 0.5, "task": ECHO}, "interval_s"),
        ({"interval_s": 10**9, "task": ECHO}, "interval_s"),
        ({"task": ECHO}, "cron"),
        ({"cron": "* * * * *", "interval_s": 60, "task": ECHO}, "cron"),
        ({"interval_s": 60}, "task"),
        ({"interval_s": 60, "task": {"type": "command", "settings": {}}}, "task.settings.argv"),
        ({"interval_s": 60, "task": {"type": "no-such-type", "settings": {}}}, "task.type"),
        ({"interval_s": 60, "task": {**ECHO, "priority": "high"}}, "task.priority"),
        ({"interval_s": 60, "task": ECHO, "overlap": "sometimes"}, "overlap"),
        ({"interval_s": 60, "task": ECHO, "catch_up": "most"}, "catch_up"),
        ({"interval_s": 60, "task": ECHO, "color": "red"}, "color"),
    ],
)
async def test_a_wrong_schedule_is_refused_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    answer = await client.post("/schedules", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field, answer.text


async def test_a_wrong_change_is_refused_naming_the_field(client: httpx.AsyncClient) -> None:
    doc = (await client.post("/schedules", json={"interval_s": 60, "task": ECHO})).json()
    for body, field in [
        ({}, "enabled"),
        ({"cron": "nope"}, "cron"),
        ({"timezone": "Atlantis"}, "timezone"),
        ({"interval_s": 0}, "interval_s"),
        ({"task": {"type": "command", "settings": {"argv": 5}}}, "task.settings.argv"),
    ]:
        answer = await client.patch(f"/schedules/{doc['id']}", json=body)
        assert (answer.status_code, answer.json()["field"]) == (422, field), (body, answer.text)
    assert (await client.get("/schedules/abc")).status_code == 422
    assert (await client.get("/schedules/99999")).status_code == 404
    assert (await client.get(f"/schedules/{doc['id']}")).json()["interval_s"] == 60  # unchanged


async def test_users_see_and_touch_their_own_schedules_and_runs_are_theirs(
    db_url: str, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")
    clock = ManualClock()
    async with new_manager(db_url, tmp_path / "manager", clock) as manager:
        as_user = await users_headers(manager, (("erin", "user"), ("frank", "user"), ("root", "admin")))
        async with httpx.AsyncClient(base_url=manager.url, timeout=30.0) as client:
            mine = await make(
                manager, clock, client, {"interval_s": 5, "task": ECHO}, headers=as_user["erin"]
            )
            assert mine["owner"] == "erin"
            path = f"/schedules/{mine['id']}"
            frank = as_user["frank"]
            assert (await client.get("/schedules", headers=frank)).json() == {"schedules": []}
            assert (await client.get(path, headers=frank)).status_code == 404
            assert (await client.patch(path, json={"enabled": False}, headers=frank)).status_code == 404
            assert (await client.delete(path, headers=frank)).status_code == 404
            listed = (await client.get("/schedules", headers=as_user["root"])).json()["schedules"]
            assert [s["id"] for s in listed] == [mine["id"]]
            too_high = {"interval_s": 5, "task": {**ECHO, "priority": 1000}}
            refused = await client.post("/schedules", json=too_high, headers=frank)
            assert (refused.status_code, refused.json()["field"]) == (403, "task.priority")
            await advance(clock, 5, manager)
            ran = await schedule(client, mine["id"], headers=as_user["erin"])
            assert ran["runs"] == 1
            task = await client.get(f"/tasks/{ran['last_task_id']}", headers=as_user["erin"])
            assert task.json()["owner"] == "erin"  # the run's task is the schedule owner's
            assert (await client.get(f"/tasks/{ran['last_task_id']}", headers=frank)).status_code == 404
            # A user holds a bounded number of schedules; an admin is not bounded.
            body = {"interval_s": 3600, "task": ECHO}
            answers = await asyncio.gather(
                *(client.post("/schedules", json=body, headers=frank) for _ in range(MAX_SCHEDULES_PER_USER))
            )
            assert all(a.status_code == 201 for a in answers)
            over = await client.post("/schedules", json=body, headers=frank)
            assert (over.status_code, over.json()["field"]) == (403, "owner")
            assert (await client.post("/schedules", json=body, headers=as_user["root"])).status_code == 201
            # Once every key of its owner is revoked, the schedule submits nothing more.
            assert manager.runtime is not None
            assert manager.authority is not None
            async with manager.runtime.transaction() as db:
                await manager.authority.revoke(db, subject="erin")
            await advance(clock, 5, manager)
            orphan = await schedule(client, mine["id"], headers=as_user["root"])
            assert (orphan["runs"], orphan["skipped"]) == (1, 1)
            assert "'erin' holds no valid key" in orphan["last_error"]
            assert (await client.delete(path, headers=as_user["root"])).status_code == 200


async def test_a_pass_that_fails_after_its_claim_neither_loses_nor_doubles_the_run(
    timed: tuple[Manager, ManualClock, httpx.AsyncClient],
) -> None:
    manager, clock, client = timed
    doc = await make(manager, clock, client, {"interval_s": 10, "task": ECHO, "overlap": "allow"})
    failures = []

    def die_after_claim(schedule_id: int, run_at: float) -> None:
        failures.append((schedule_id, run_at))
        raise RuntimeError("killed between the claim and the commit")

    scheduler_of(manager).on_claimed = die_after_claim
    await advance(clock, 10, manager)
    assert failures == [(doc["id"], doc["next_run_at"])]
    still = await schedule(client, doc["id"])
    assert (still["runs"], still["next_run_at"]) == (0, doc["next_run_at"])  # the claim was undone
    assert (await client.get("/tasks")).json()["tasks"] == []
    scheduler_of(manager).on_claimed = None
    await advance(clock, 1, manager)  # the next pass fires the run, once
    fired = await schedule(client, doc["id"])
    assert fired["runs"] == 1
    assert [r["run_at"] for r in fired["recent_runs"]] == [doc["next_run_at"]]
    assert len((await client.get("/tasks")).json()["tasks"]) == 1


async def test_two_managers_on_one_postgresql_fire_each_run_exactly_once(db_url: str, tmp_path: Path) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("several managers share a PostgreSQL (one manager per SQLite file)")
    clock = ManualClock()
    async with (
        new_manager(db_url, tmp_path / "a", clock) as first,
        new_manager(db_url, tmp_path / "b", clock) as second,
        httpx.AsyncClient(base_url=first.url, timeout=30.0) as client,
    ):
        await settled(clock, first, second, passes=[0, 0])
        body = {"interval_s": 1, "task": ECHO, "overlap": "allow"}
        ids = [(await client.post("/schedules", json=body)).json()["id"] for _ in range(5)]
        steps = 30
        for _ in range(steps):
            await advance(clock, 1, first, second)
        assert first.runtime is not None
        async with first.runtime.transaction() as db:
            runs = (await db.execute(select(ScheduleRun.schedule_id, ScheduleRun.run_at))).all()
            tasks = (await db.execute(select(Task.id))).scalars().all()
        assert len(runs) == len(set(runs)) == steps * len(ids)  # each run once, none lost
        assert len(tasks) == steps * len(ids)  # one task per run
        both = scheduler_of(first).fired_total + scheduler_of(second).fired_total
        assert both == steps * len(ids)
        # They did race: runs both read as due, of which the claim left one to each other.
        assert scheduler_of(first).lost_claims + scheduler_of(second).lost_claims > 0
