"""The registry's statements on real SQLite and PostgreSQL (``store/registrations.py``)."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from herder.manager.store import db
from herder.manager.store import registrations as rows
from herder.registry import Registration, ServiceKey

T = TypeVar("T")
NOW = 1_000_000.0


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    created = db.create_engine(db_url)
    await db.migrate(created)
    try:
        yield created
    finally:
        await created.dispose()


async def run(engine: AsyncEngine, work: Callable[[Connection], T]) -> T:
    async with engine.begin() as conn:
        return await conn.run_sync(work)


def reg(id: str, expires_at: float = math.inf, registered_at: float = NOW - 10) -> Registration:
    return Registration(
        key=ServiceKey.parse(f"/alice/prod/math/1.0.0/eu/host/{id}"),
        url="http://192.0.2.10/",
        owner="alice",
        registered_at=registered_at,
        expires_at=expires_at,
        metadata={"zone": "a", "raw": b"\x00"},  # bytes (msgpack links) kept as their repr
        metadata_bytes=20,
    )


async def test_a_renewal_moves_only_live_rows_with_a_ttl(engine: AsyncEngine) -> None:
    regs = [(reg("live", NOW + 5), None), (reg("expired", NOW - 1), None), (reg("linked"), "m1")]
    await run(engine, lambda c: rows.put(c, regs))
    renewed = await run(engine, lambda c: rows.renew(c, [("live", NOW + 30), ("expired", NOW + 30)], NOW))
    assert renewed == {"live"}
    assert (
        await run(engine, lambda c: rows.renew(c, [("linked", NOW + 30), ("missing", NOW + 30)], NOW))
        == set()
    )
    found = {r.id: r for r, _ in await run(engine, lambda c: rows.read(c))}
    assert found["live"].expires_at == NOW + 30
    assert found["expired"].expires_at == NOW - 1
    assert math.isinf(found["linked"].expires_at)
    assert found["live"].metadata == {"zone": "a", "raw": repr(b"\x00")}


async def test_expiry_hands_the_rows_to_one_caller(engine: AsyncEngine) -> None:
    await run(engine, lambda c: rows.put(c, [(reg("a", NOW - 1), None), (reg("b", NOW + 60), None)]))
    first = await run(engine, lambda c: rows.expire(c, NOW))
    second = await run(engine, lambda c: rows.expire(c, NOW))
    assert [r.id for r in first] == ["a"]
    assert second == []


async def test_a_closed_links_removal_spares_a_registration_made_again(engine: AsyncEngine) -> None:
    old = reg("x", registered_at=NOW - 10)
    await run(engine, lambda c: rows.put(c, [(old, "m1")]))
    await run(engine, lambda c: rows.put(c, [(reg("x", registered_at=NOW), "m1")]))  # again, another link
    assert await run(engine, lambda c: rows.remove(c, "x", "m1", old.registered_at)) is None
    assert await run(engine, lambda c: rows.remove(c, "x", "m2")) is None  # another manager's link
    gone = await run(engine, lambda c: rows.remove(c, "x", "m1", NOW))
    assert gone is not None
    assert gone.registered_at == NOW


async def test_a_dead_managers_links_go_with_it(engine: AsyncEngine) -> None:
    await run(engine, lambda c: rows.join(c, "m1", "host", 1, NOW))
    await run(engine, lambda c: rows.put(c, [(reg("held"), "m1"), (reg("timed", NOW + 60), None)]))
    dropped = await run(engine, lambda c: rows.drop_managers(c, ["m1"]))
    assert [r.id for r in dropped] == ["held"]
    assert [r.id for r, _ in await run(engine, lambda c: rows.read(c))] == ["timed"]
    assert await run(engine, rows.managers) == []
    assert not await run(engine, lambda c: rows.has_manager(c, "m1"))
    assert not await run(engine, lambda c: rows.beat(c, "m1", NOW))


def test_notify_payloads_stay_under_postgresqls_limit() -> None:
    ids = [f"service-{n:05d}-" + "x" * 200 for n in range(200)]
    renewed = [(id, NOW + n) for n, id in enumerate(ids)]
    payloads = rows.payloads("m1", ids, renewed, ["m2"])
    assert len(payloads) > 1
    assert all(len(p.encode()) < 8000 for p in payloads)
    decoded: list[dict[str, Any]] = [json.loads(p) for p in payloads]
    assert [i for d in decoded for i in d["c"]] == ids
    assert [tuple(r) for d in decoded for r in d["r"]] == renewed
    assert {d["m"] for d in decoded} == {"m1"}
    assert all(d["x"] == ["m2"] for d in decoded)  # whose links' rows went: in every payload


def test_the_index_names_what_is_overdue_without_removing_it() -> None:
    from herder.registry import Index

    index = Index()
    for id, expires_at in (("late", NOW + 5), ("first", NOW - 2), ("second", NOW - 1), ("held", math.inf)):
        index.add(reg(id, expires_at))
    index.renew("second", NOW + 60)  # its old heap entry is stale now
    assert index.overdue(NOW) == ["first"]
    assert len(index) == 4
    assert index.overdue(NOW + 10) == ["first", "late"]
