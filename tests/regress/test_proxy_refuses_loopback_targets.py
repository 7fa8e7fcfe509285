"""#12 §1: the proxy gives no user a shell on the manager's host.

With keys on, a plain ``user`` key registered a service at the URL of an open loopback
agent and POSTed ``/proxy/<id>/create-process``: the manager forwarded it (``Host``
rewritten to the target, so the agent's rebinding check passed) and the agent ran the
command as the manager host's user. The proxy now decides on the addresses it connects
to: loopback, in every spelling (a name, a decimal number, ``0``, an IPv4-mapped IPv6
address), is refused at registration and again at every request; no process is created.
Under ``herder up`` (loopback allowed for admins' registrations) a user's is still refused.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import websockets

from herder.agent import Agent
from herder.rpc.client import connect
from herder.rpc.errors import RemoteError
from tests.manager.conftest import ManagerFactory
from tests.regress.proxy_support import LOOPBACK, bearer, keyed

FORMS = [
    "http://127.0.0.1:{port}/",
    "http://localhost:{port}/",
    "http://LOCALHOST.:{port}/",
    "http://127.1:{port}/",
    "http://2130706433:{port}/",  # 127.0.0.1 as the C resolver reads a decimal number
    "http://0:{port}/",  # 0.0.0.0: connecting to it reaches this host
    "http://0.0.0.0:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]:{port}/",
    "http://[::1]:{port}/",
    "ws://127.0.0.1:{port}/",
]
COMMAND = {"app": "pwned", "node": "x.0", "command": "exec sleep 100"}


def agent_port(agent: Agent) -> int:
    return int(agent.url.rsplit(":", 1)[1])


async def processes(agent: Agent) -> list[str]:
    async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        return [p["slug"] for p in (await client.get("/list-processes")).json()["processes"]]


async def refused_websocket(manager_url: str, service_id: str, token: str) -> None:
    """The WebSocket side of the proxy refuses the same targets (403 before any upgrade)."""
    url = manager_url.replace("http://", "ws://") + f"/proxy/{service_id}/attach-console/x"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, additional_headers=bearer(token)):
            pass
    assert refused.value.response.status_code == 403


async def test_a_user_cannot_reach_a_loopback_agent_through_the_proxy(
    make_manager: ManagerFactory, agent: Agent, tmp_path: Path
) -> None:
    port = agent_port(agent)
    async with (
        keyed(make_manager, tmp_path) as keys,
        connect(keys.rpc_url, token=keys.user) as peer,
        httpx.AsyncClient(base_url=keys.manager.url, timeout=30, headers=bearer(keys.user)) as client,
    ):
        for n, form in enumerate(FORMS):
            url = form.format(port=port)
            key = f"/bob/dev/agent/1.0.0/eu/h/a{n}"
            with pytest.raises(RemoteError, match="url") as refused:
                await peer.call("register_service", key, url, {}, 0)
            assert "not proxied" in str(refused.value), url
            keys.place(key, url)  # as a name that resolved elsewhere at registration would be
            answer = await client.post(f"/proxy/a{n}/create-process", json=COMMAND)
            assert answer.status_code == 403, (url, answer.text)
            assert (answer.json()["error"], answer.json()["field"]) == ("forbidden_target", "id")
            await refused_websocket(keys.manager.url, f"a{n}", keys.user)
    assert await processes(agent) == []


async def test_under_herder_up_loopback_is_for_admins_registrations_only(
    make_manager: ManagerFactory, agent: Agent, tmp_path: Path
) -> None:
    async with (
        keyed(make_manager, tmp_path, proxy_admin_networks=LOOPBACK) as keys,
        httpx.AsyncClient(base_url=keys.manager.url, timeout=30, headers=bearer(keys.user)) as client,
    ):
        async with connect(keys.rpc_url, token=keys.user) as peer:
            with pytest.raises(RemoteError, match="url"):
                await peer.call("register_service", "/bob/dev/agent/1.0.0/eu/h/b1", agent.url + "/", {}, 0)
        keys.place("/bob/dev/agent/1.0.0/eu/h/b1", agent.url + "/")
        answer = await client.post("/proxy/b1/create-process", json=COMMAND)
        assert answer.status_code == 403, answer.text
        assert await processes(agent) == []
        async with connect(keys.rpc_url, token=keys.admin) as peer:
            await peer.call("register_service", "/root/dev/agent/1.0.0/eu/h/r1", agent.url + "/", {}, 0)
            listing = await client.get("/proxy/r1/list-processes")  # the user uses the admin's service
            assert (listing.status_code, listing.json()["processes"]) == (200, [])
