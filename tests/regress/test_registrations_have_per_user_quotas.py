"""#12 §4: one user registered 19,976 services of 15 KB metadata in 4.4 s (+325 MB).

With keys on, each user's live registrations are bounded: how many, how much metadata in
all, and how long a TTL may hold one (``service_quota`` in the manager's settings). A
refusal names the setting it hit; re-registering an id one already holds is not a new
registration; admins are exempt, and ``service_quota_overrides`` gives a user its own.
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

TARGET = "http://192.0.2.10:8080/"  # TEST-NET-1: not loopback, never dialled here
QUOTA = {"max_services": 3, "max_metadata_bytes": 25_000, "max_ttl_s": 60}


async def token_for(manager: Manager, user: str, role: str = "user") -> str:
    assert manager.runtime is not None
    assert manager.authority is not None
    async with manager.runtime.transaction() as db:
        key = (await manager.authority.issue_key(db, user, role)).key
    return await buy_token(manager.url, key)


def key(user: str, n: int) -> str:
    return f"/{user}/prod/math/1.0.0/eu/host-1/{user}-{n}"


async def test_a_users_registrations_are_bounded_and_refusals_name_the_setting(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")
    overrides = {"svc": {"max_services": 5, "max_metadata_bytes": 1000, "max_ttl_s": 60}}
    async with make_manager(service_quota=QUOTA, service_quota_overrides=overrides) as manager:
        url = manager_rpc_url(manager.url)
        bob = await token_for(manager, "bob")
        async with connect(url, token=bob) as as_bob:
            for n in range(3):
                await as_bob.call("register_service", key("bob", n), TARGET, {}, 30)
            await as_bob.call("register_service", key("bob", 2), TARGET, {"v": 2}, 30)  # a replacement
            with pytest.raises(RemoteError, match=r"service_quota\.max_services"):
                await as_bob.call("register_service", key("bob", 3), TARGET, {}, 30)
            await as_bob.call("deregister_service", "bob-0")
            await as_bob.call("deregister_service", "bob-1")
            await as_bob.call("register_service", key("bob", 4), TARGET, {"blob": "x" * 12_000}, 30)
            with pytest.raises(RemoteError, match=r"service_quota\.max_metadata_bytes"):
                await as_bob.call("register_service", key("bob", 5), TARGET, {"blob": "y" * 14_000}, 30)
            with pytest.raises(RemoteError, match=r"service_quota\.max_ttl_s"):
                await as_bob.call("register_service", key("bob", 6), TARGET, {}, 61)
            with pytest.raises(RemoteError, match=r"service_quota\.max_ttl_s"):
                await as_bob.call("renew_service", "bob-4", 61)
            assert (await as_bob.call("renew_service", "bob-4", 60))["owner"] == "bob"

        svc = await token_for(manager, "svc")
        async with connect(url, token=svc) as as_svc:
            for n in range(5):
                await as_svc.call("register_service", key("svc", n), TARGET, {}, 30)
            with pytest.raises(RemoteError, match=r"service_quota_overrides\.svc\.max_services"):
                await as_svc.call("register_service", key("svc", 5), TARGET, {}, 30)

        root = await token_for(manager, "root", "admin")
        async with connect(url, token=root) as as_root:
            for n in range(6):
                await as_root.call("register_service", key("root", n), TARGET, {"blob": "z" * 10_000}, 30)
