"""#12 §4: with its database emptied (or replaced), the manager started as new and a
revoked key bought tokens again.

A key is honoured only while the database records it as issued and not revoked, and a
manager whose data dir holds a signing key that its database does not know refuses to
start unless told (``accept_new_database``, ``--accept-new-database``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from herder.auth import init_keys
from herder.manager.server import Manager, ManagerError
from herder.manager.store.tables import AuthKey
from tests.manager.conftest import ManagerFactory


async def issue(manager: Manager, user: str) -> tuple[str, str]:
    assert manager.runtime is not None
    assert manager.authority is not None
    async with manager.runtime.transaction() as db:
        issued = await manager.authority.issue_key(db, user, "user")
    return issued.key, issued.id


async def buy(manager: Manager, key: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=manager.url) as client:
        return await client.post("/auth/token", headers={"Authorization": f"Bearer {key}"})


async def empty(db_url: str) -> None:
    """Empty the database the way a restore of nothing (or a fresh volume) would."""
    if db_url.startswith("sqlite"):
        path = Path(db_url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    import asyncpg

    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


async def test_a_database_that_does_not_know_the_signing_key_is_refused(
    make_manager: ManagerFactory, db_url: str, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")
    async with make_manager() as manager:
        revoked, revoked_id = await issue(manager, "mallory")
        kept, _ = await issue(manager, "alice")
        assert manager.runtime is not None
        async with manager.runtime.transaction() as db:
            assert await type(manager.authority).revoke(db, key_id=revoked_id) == 1
    await empty(db_url)
    with pytest.raises(ManagerError, match="accept-new-database"):
        async with make_manager():
            pass
    async with make_manager(accept_new_database=True) as manager:
        for key in (revoked, kept):  # neither is recorded in this database
            answer = await buy(manager, key)
            assert answer.status_code == 401, answer.text
    async with make_manager():  # the new database now knows the signing key
        pass


async def test_a_key_the_database_forgot_buys_nothing(make_manager: ManagerFactory, tmp_path: Path) -> None:
    from sqlalchemy import delete

    init_keys(tmp_path / "manager")
    async with make_manager(heartbeat_interval_s=0.2) as manager:
        key, key_id = await issue(manager, "alice")
        answer = await buy(manager, key)
        assert answer.status_code == 200
        token = answer.json()["token"]
        assert manager.runtime is not None
        async with manager.runtime.transaction() as db:  # an older copy of the database
            await db.execute(delete(AuthKey).where(AuthKey.id == key_id))
        deadline = time.monotonic() + 10
        async with httpx.AsyncClient(base_url=manager.url) as client:
            while (
                await client.get("/tasks", headers={"Authorization": f"Bearer {token}"})
            ).status_code != 401:
                assert time.monotonic() < deadline, "a token of a forgotten key still opens the API"
                await asyncio.sleep(0.05)
        assert (await buy(manager, key)).status_code == 401


async def test_an_older_copy_of_the_database_is_refused(make_manager: ManagerFactory, tmp_path: Path) -> None:
    from sqlalchemy import update

    init_keys(tmp_path / "manager")
    async with make_manager() as manager:
        key, key_id = await issue(manager, "mallory")
        assert manager.runtime is not None
        async with manager.runtime.transaction() as db:
            assert await type(manager.authority).revoke(db, key_id=key_id) == 1
        deadline = time.monotonic() + 10
        while (await buy(manager, key)).status_code != 401:  # the manager has seen the revocation
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        async with manager.runtime.transaction() as db:  # the copy from before the revocation
            await db.execute(update(AuthKey).values(revoked_at=None))
    with pytest.raises(ManagerError, match="older copy"):
        async with make_manager():
            pass
    async with make_manager(accept_new_database=True):
        pass
    async with make_manager():  # accepted once: the data dir now remembers this database
        pass
