"""``/auth/keys``: an admin issues, lists and revokes keys over HTTP (the dashboard's Keys).

Real manager, both databases. The CLI's ``herder keys`` does the same on the database;
these are the routes a running fleet's admin (and the page) use.
"""

from __future__ import annotations

import httpx

from herder.auth.keys import SigningKey
from herder.manager.answers import IssuedKeyDocument, KeyDocument, KeyList
from herder.manager.server import Manager
from tests.manager.conftest import ManagerFactory
from tests.manager.test_auth import bearer, buy, issue, secured

__all__ = ["secured"]  # a fixture, used by name


async def test_an_admin_issues_lists_and_revokes_keys(secured: tuple[Manager, SigningKey]) -> None:
    manager, _ = secured
    admin_key, _ = await issue(manager, "root", "admin")
    async with httpx.AsyncClient(base_url=manager.url) as client:
        admin = bearer((await buy(client, admin_key)).json()["token"])
        issued = await client.post("/auth/keys", json={"user": "dora", "ttl_s": 3600}, headers=admin)
        assert issued.status_code == 201, issued.text
        doc = issued.json()
        IssuedKeyDocument.model_validate(doc)  # the answer is what the OpenAPI document says
        assert doc["user"] == "dora"
        assert doc["role"] == "user"
        assert doc["revoked_at"] is None
        assert issued.headers["Location"] == f"{manager.url}/auth/keys/{doc['id']}/revoke"
        # The key works: it buys a token that opens dora's view.
        dora = bearer((await buy(client, doc["key"])).json()["token"])
        assert (await client.get("/tasks", headers=dora)).status_code == 200

        listed = KeyList.model_validate((await client.get("/auth/keys", headers=admin)).json()).model_dump()[
            "keys"
        ]
        assert [k["user"] for k in listed] == ["root", "dora"]
        assert all("key" not in k for k in listed)  # never the keys themselves

        revoked = await client.post(f"/auth/keys/{doc['id']}/revoke", headers=admin)
        assert revoked.status_code == 200, revoked.text
        assert KeyDocument.model_validate(revoked.json()).revoked_at is not None
        # At once on this manager, not within the second the refresh takes.
        answer = await client.get("/tasks", headers=dora)
        assert answer.status_code == 401
        assert answer.json()["error"] == "revoked"
        again = await client.post(f"/auth/keys/{doc['id']}/revoke", headers=admin)
        assert again.status_code == 409
        unknown = await client.post("/auth/keys/nope/revoke", headers=admin)
        assert unknown.status_code == 404
        assert unknown.json()["field"] == "id"


async def test_keys_are_an_admins_alone_and_bad_requests_name_the_field(
    secured: tuple[Manager, SigningKey],
) -> None:
    manager, _ = secured
    admin_key, _ = await issue(manager, "root", "admin")
    user_key, user_key_id = await issue(manager, "eve", "user")
    async with httpx.AsyncClient(base_url=manager.url) as client:
        eve = bearer((await buy(client, user_key)).json()["token"])
        for method, path in (
            ("GET", "/auth/keys"),
            ("POST", "/auth/keys"),
            ("POST", f"/auth/keys/{user_key_id}/revoke"),
        ):
            answer = await client.request(method, path, json={"user": "eve", "role": "admin"}, headers=eve)
            assert answer.status_code == 403, (method, path)
        assert (await client.get("/auth/keys")).status_code == 401
        admin = bearer((await buy(client, admin_key)).json()["token"])
        for body, field in (
            ({"user": "has space"}, "user"),
            ({"user": "a/b"}, "user"),
            ({"user": "x", "role": "root"}, "role"),
            ({"user": "x", "ttl_s": 1}, "ttl_s"),
            ({"user": "x", "extra": 1}, "extra"),
        ):
            answer = await client.post("/auth/keys", json=body, headers=admin)
            assert answer.status_code == 422, body
            assert answer.json()["field"] == field, answer.json()
        # Nothing was issued by the refusals.
        assert len((await client.get("/auth/keys", headers=admin)).json()["keys"]) == 2


async def test_without_keys_there_are_no_key_routes(make_manager: ManagerFactory) -> None:
    async with make_manager() as manager, httpx.AsyncClient(base_url=manager.url) as client:
        answer = await client.get("/auth/keys")
        assert answer.status_code == 404
        assert "auth is off" in answer.json()["message"]
