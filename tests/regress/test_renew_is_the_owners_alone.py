"""#12 §4: any user could ``renew_service`` another user's registration.

Re-registering and deregistering another user's id were refused, renewing was not, so
anyone could keep a dead instance of someone else's service alive for ever. Renewing is
the owner's (and an admin's, who may also deregister it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from herder.auth import init_keys
from herder.manager.server import Manager
from herder.rpc.client import connect
from herder.rpc.discovery import buy_token, manager_rpc_url
from herder.rpc.errors import RemoteError
from tests.manager.conftest import ManagerFactory

BOBS = "/bob/prod/math/1.0.0/eu/host-1/bob-1"
TARGET = "http://192.0.2.10:8080/"  # TEST-NET-1: not loopback, never dialled here


async def key_for(manager: Manager, user: str, role: str = "user") -> str:
    assert manager.runtime is not None
    assert manager.authority is not None
    async with manager.runtime.transaction() as db:
        return (await manager.authority.issue_key(db, user, role)).key


async def test_only_the_owner_or_an_admin_renews_a_registration(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")
    async with make_manager() as manager:
        url = manager_rpc_url(manager.url)
        bob = await buy_token(manager.url, await key_for(manager, "bob"))
        eve = await buy_token(manager.url, await key_for(manager, "eve"))
        root = await buy_token(manager.url, await key_for(manager, "root", "admin"))
        async with connect(url, token=bob) as as_bob, connect(url, token=eve) as as_eve:
            await as_bob.call("register_service", BOBS, TARGET, {}, 30)
            with pytest.raises(RemoteError, match="another user's") as refused:
                await as_eve.call("renew_service", "bob-1", 3600)
            assert refused.value.code != "not_found"
            assert (await as_bob.call("renew_service", "bob-1", 60))["owner"] == "bob"
            async with connect(url, token=root) as as_root:
                assert (await as_root.call("renew_service", "bob-1", 60))["owner"] == "bob"
