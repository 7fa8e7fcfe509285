"""What the dashboard needs of the manager, on both databases: counts that follow the
list's filters, a token renewed before it expires (never a revoked key's), a deletion
that reaches every watching tab, and the parser's percent in a task's progress."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import websockets

from herder import auth
from herder.auth.keys import SigningKey
from herder.manager.authority import ISSUER, TOKEN_AUDIENCE
from herder.manager.server import Manager
from herder.manager.store.progress import progress_of
from herder.manager.store.tables import WorkItem
from tests.manager.test_auth import bearer, buy, issue, secured
from tests.manager.test_task_filters import submit

__all__ = ["secured"]  # a fixture, used by name

RENEW = "/auth/token/renew"


async def counts(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: Any
) -> dict[str, int]:
    answer = await client.get("/tasks/counts", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    found: dict[str, int] = answer.json()
    return found


async def test_counts_follow_the_owner_and_tag_filters(secured: tuple[Manager, SigningKey]) -> None:
    manager, _ = secured
    keys = {
        user: (await issue(manager, user, role))[0]
        for user, role in (("root", "admin"), ("alice", "user"), ("bob", "user"))
    }
    async with httpx.AsyncClient(base_url=manager.url) as client:
        who = {user: bearer((await buy(client, key)).json()["token"]) for user, key in keys.items()}
        alices = [await submit(client, who["alice"], tags=["red", "gpu"]) for _ in range(2)]
        await submit(client, who["alice"], tags=["blue"])
        await submit(client, who["bob"], tags=["red"])
        assert (
            await client.patch(f"/tasks/{alices[0]}", json={"status": "canceled"}, headers=who["alice"])
        ).is_success
        everything = await counts(client, who["root"])
        assert everything["total"] == 4
        of_alice = await counts(client, who["root"], owner="alice")
        assert (of_alice["total"], of_alice["canceled"]) == (3, 1)
        red = await counts(client, who["root"], tag="red")
        assert (red["total"], red["canceled"]) == (3, 1)
        assert (await counts(client, who["root"], owner="alice", tag="red"))["total"] == 2
        assert (await counts(client, who["root"], tag="gp"))["total"] == 0  # a whole tag
        # A user counts only their own, whatever they ask.
        assert (await counts(client, who["bob"]))["total"] == 1
        assert (await counts(client, who["bob"], owner="alice"))["total"] == 0
        assert (await counts(client, who["bob"], tag="red"))["total"] == 1
        for bad in ({"tag": ""}, {"tag": "x" * 65}, {"owner": ""}, {"owner": "y" * 256}):
            answer = await client.get("/tasks/counts", params=bad, headers=who["root"])
            assert answer.status_code == 422, bad
            assert answer.json()["field"] == next(iter(bad))


async def test_a_token_is_renewed_with_its_holder_and_never_a_revoked_keys(
    secured: tuple[Manager, SigningKey],
) -> None:
    manager, _ = secured
    assert manager.authority is not None
    key, key_id = await issue(manager, "alice", "user")
    async with httpx.AsyncClient(base_url=manager.url) as client:
        first = (await buy(client, key)).json()
        assert (await client.post(RENEW)).status_code == 401  # no token at all
        renewed = await client.post(RENEW, headers=bearer(first["token"]))
        assert renewed.status_code == 200, renewed.text
        fresh = renewed.json()
        assert fresh["expires_at"] >= first["expires_at"]
        claims = manager.authority.verify_token(fresh["token"])
        assert (claims.sub, claims.role, claims.raw["key"]) == ("alice", "user", key_id)
        assert (await client.get("/tasks", headers=bearer(fresh["token"]))).status_code == 200
        # A key is no "token" to renew: it buys tokens at /auth/token.
        assert (await client.post(RENEW, headers=bearer(key))).status_code == 401
        # Revoked: neither the old token nor the renewed one is renewed again.
        async with manager.runtime.transaction() as db:  # type: ignore[union-attr]
            await manager.authority.revoke(db, key_id=key_id)
        for held in (first["token"], fresh["token"]):
            refused = await client.post(RENEW, headers=bearer(held))
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"] == "revoked"


async def test_a_token_past_its_expiry_is_not_renewed(secured: tuple[Manager, SigningKey]) -> None:
    """Expired a few seconds ago: the front door's clock-skew leeway lets it in, the
    renewal does not (a tab that slept past its token signs in again)."""
    manager, signing = secured
    _, key_id = await issue(manager, "alice", "admin")
    late = auth.issue(
        signing,
        {"role": "admin", "key": key_id},
        issuer=ISSUER,
        audience=TOKEN_AUDIENCE,
        ttl_s=1,
        subject="alice",
        now=time.time() - 6,
    )
    unbought = auth.issue(
        signing, {"role": "admin"}, issuer=ISSUER, audience=TOKEN_AUDIENCE, ttl_s=60, subject="ops"
    )
    async with httpx.AsyncClient(base_url=manager.url) as client:
        refused = await client.post(RENEW, headers=bearer(late))
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == "expired"
        # Signed with the private key but bought with no key: nothing to check it against.
        other = await client.post(RENEW, headers=bearer(unbought))
        assert other.status_code == 403, other.text
        assert other.json()["field"] == "Authorization"


async def test_renewal_is_404_without_keys(client: httpx.AsyncClient) -> None:
    answer = await client.post(RENEW)
    assert answer.status_code == 404
    assert answer.json()["field"] == "path"


async def next_of(ws: Any, kind: str, timeout_s: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == kind:
                return message


async def test_a_deletion_reaches_every_tab_that_may_see_it(secured: tuple[Manager, SigningKey]) -> None:
    manager, _ = secured
    url = manager.url.replace("http://", "ws://") + "/events"
    keys = {user: (await issue(manager, user, "user"))[0] for user in ("alice", "bob")}
    async with httpx.AsyncClient(base_url=manager.url) as client:
        tokens = {user: (await buy(client, key)).json()["token"] for user, key in keys.items()}
        offers = {user: ["herder", f"herder.bearer.{token}"] for user, token in tokens.items()}
        async with (
            websockets.connect(url, subprotocols=offers["alice"]) as one,  # type: ignore[arg-type]
            websockets.connect(url, subprotocols=offers["alice"]) as two,  # type: ignore[arg-type]
            websockets.connect(url, subprotocols=offers["bob"]) as bobs,  # type: ignore[arg-type]
        ):
            for ws in (one, two, bobs):
                await next_of(ws, "snapshot")
            task = await submit(client, bearer(tokens["alice"]))
            mine = await submit(client, bearer(tokens["bob"]))
            assert (await client.delete(f"/tasks/{task}", headers=bearer(tokens["alice"]))).status_code == 202
            assert (await client.delete(f"/tasks/{mine}", headers=bearer(tokens["bob"]))).status_code == 202
            for ws in (one, two):
                assert (await next_of(ws, "task_deleted"))["id"] == task
            assert (await next_of(bobs, "task_deleted"))["id"] == mine  # not alice's first


async def test_pieces_without_frames_count_the_parsers_percent(manager: Manager) -> None:
    async with httpx.AsyncClient(base_url=manager.url) as client:
        task = await submit(client, settings={"argv": ["true"]}, parser="percent")
    assert manager.runtime is not None
    async with manager.runtime.transaction() as db:
        item = (await db.execute(WorkItem.__table__.select().where(WorkItem.task_id == task))).one()
        assert item.frame_start is None
        await db.execute(WorkItem.__table__.update().where(WorkItem.id == item.id).values(percent=42.5))
        assert await progress_of(db, [task]) == {task: 42.5}
