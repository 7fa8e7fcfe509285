"""#12 §1: a network the admin allows is proxied, and says who asked; the manager never is.

An admin allows named networks (``proxy_allow_networks``): a real HTTP server on loopback,
allowed so, is reached through the proxy. What it receives names the caller and the
manager (``Forwarded``, ``X-Forwarded-*``), carries the registered URL's own authority as
``Host`` (never the manager's), and none of the manager's credentials or cookies. The
manager's own listening address is never a target, whatever is allowed: a proxy that
forwards to itself would loop.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import pytest
import websockets

from herder.manager.config import ManagerConfig
from herder.manager.targets import TargetRefused, Targets
from herder.rpc.client import connect
from herder.rpc.errors import RemoteError
from tests.helpers import HERDER
from tests.manager.conftest import ManagerFactory
from tests.regress.proxy_support import LOOPBACK, bearer, keyed, recording_server


async def test_an_allowed_network_is_proxied_with_forwarded_headers_and_no_credentials(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    async with (
        recording_server() as (base, seen),
        keyed(make_manager, tmp_path, proxy_allow_networks=LOOPBACK) as keys,
        connect(keys.rpc_url, token=keys.user) as peer,
        httpx.AsyncClient(base_url=keys.manager.url, timeout=30) as client,
    ):
        await peer.call("register_service", "/bob/dev/web/1.0.0/eu/h/web-1", base + "/", {}, 0)
        headers = {
            **bearer(keys.user),
            "Cookie": "session=manager-secret",
            "Forwarded": "for=10.9.9.9",  # a caller's claims about itself are not passed on
            "X-Forwarded-For": "10.9.9.9",
        }
        answer = await client.post("/proxy/web-1/api/items?x=1", content=b"hello", headers=headers)
        assert (answer.status_code, answer.json()) == (201, {"body": "hello"})
        got = {k.lower(): v for k, v in seen[-1]["headers"].items()}
        assert seen[-1]["path"] == "/api/items?x=1"
        assert got["host"] == base.removeprefix("http://")  # the registered authority
        assert "authorization" not in got
        assert "cookie" not in got
        assert got["x-forwarded-for"] == "127.0.0.1"
        assert got["x-forwarded-host"] == keys.manager.url.removeprefix("http://")
        assert got["x-forwarded-proto"] == "http"
        forwarded = got["forwarded"]
        assert "10.9.9.9" not in forwarded
        assert "for=127.0.0.1" in forwarded
        assert "proto=http" in forwarded
        assert f'host="{keys.manager.url.removeprefix("http://")}"' in forwarded

        ws_url = keys.manager.url.replace("http://", "ws://") + "/proxy/web-1/ws"
        async with websockets.connect(ws_url, additional_headers=bearer(keys.user)) as ws:
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 10) == "echo: ping"
        got = {k.lower(): v for k, v in seen[-1]["headers"].items()}
        assert got["host"] == base.removeprefix("http://")
        assert "authorization" not in got
        assert "for=127.0.0.1" in got["forwarded"]


async def test_the_managers_own_address_is_never_proxied(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    async with (
        keyed(make_manager, tmp_path, proxy_allow_networks=LOOPBACK, proxy_admin_networks=LOOPBACK) as keys,
        connect(keys.rpc_url, token=keys.admin) as peer,
        httpx.AsyncClient(base_url=keys.manager.url, timeout=30, headers=bearer(keys.admin)) as client,
    ):
        port = keys.manager.url.rsplit(":", 1)[1]
        for n, url in enumerate([keys.manager.url + "/", f"http://localhost:{port}/"]):
            with pytest.raises(RemoteError, match="url") as refused:
                await peer.call("register_service", f"/root/dev/self/1.0.0/eu/h/self{n}", url, {}, 0)
            assert "the manager's own address" in str(refused.value)
            keys.place(f"/root/dev/self/1.0.0/eu/h/self{n}", url, "root", "admin")
            answer = await client.get(f"/proxy/self{n}/proxy/self{n}/healthz")
            assert (answer.status_code, answer.json()["error"]) == (403, "forbidden_target")


async def test_allowed_networks_must_be_networks(make_manager: ManagerFactory) -> None:
    with pytest.raises(ValueError, match="proxy_allow_networks"):
        async with make_manager(proxy_allow_networks=["not a network"]):
            pass


def test_the_command_line_refuses_a_network_that_is_not_one(tmp_path: Path) -> None:
    done = subprocess.run(
        [HERDER, "manager", "--port", "0", "--data-dir", str(tmp_path), "--proxy-allow-network", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "herder manager: the command line: proxy_allow_networks: "
        "'nope' is not a network (CIDR, e.g. 10.0.0.0/8)"
    )


async def test_a_manager_bound_to_every_address_refuses_any_local_one_with_its_port() -> None:
    targets = Targets(ManagerConfig(proxy_allow_networks=LOOPBACK, proxy_admin_networks=LOOPBACK))
    targets.listen("0.0.0.0", 8020)
    for url in ("http://127.0.0.1:8020/", "http://127.0.0.2:8020/", "http://[::ffff:127.0.0.1]:8020/"):
        with pytest.raises(TargetRefused, match="the manager's own address"):
            await targets.pin(url, "admin")
    await targets.pin("http://192.0.2.1:8020/", "user")  # not an address of this host
    pinned = await targets.pin("http://127.0.0.1:8021/x", "admin")  # another port: another server
    assert (str(pinned.address), pinned.port, pinned.authority) == ("127.0.0.1", 8021, "127.0.0.1:8021")
    assert pinned.url("http", "a/b", "q=1") == "http://127.0.0.1:8021/a/b?q=1"
