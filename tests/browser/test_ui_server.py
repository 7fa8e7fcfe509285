"""The dashboard's server side, without a browser: its files and headers (herder.ui), and
the live feed WS /events (herder.manager.events) on a real manager, with and without keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from herder.manager.config import ManagerConfig
from herder.manager.events import Subscriber
from herder.manager.server import Manager
from tests.browser.conftest import Fleet
from tests.conftest import AgentFactory


@pytest.fixture
async def open_manager(tmp_path: Path) -> AsyncIterator[Manager]:
    """A manager without keys (loopback): no sign-in needed."""
    config = ManagerConfig.model_validate({"port": 0, "data_dir": tmp_path / "manager"})
    async with Manager(config) as manager:
        yield manager


async def next_of(ws: Any, kind: str, test: Any = None, timeout_s: float = 10.0) -> dict[str, Any]:
    """The next message of ``kind`` (that passes ``test``), skipping others."""
    async with asyncio.timeout(timeout_s):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == kind and (test is None or test(message)):
                return message


def ws_url(manager: Manager) -> str:
    return manager.url.replace("http://", "ws://") + "/events"


async def test_the_files_are_served_with_a_strict_policy(open_manager: Manager) -> None:
    async with httpx.AsyncClient(base_url=open_manager.url) as client:
        moved = await client.get("/ui")
        assert moved.status_code == 308
        assert moved.headers["location"] == "/ui/"
        page = await client.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        csp = page.headers["content-security-policy"]
        for rule in (
            "default-src 'self'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ):
            assert rule in csp
        assert "unsafe" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "<script" not in page.text.replace('<script type="module" src="dash/main.js"></script>', "")
        assert "style=" not in page.text
        module = await client.get("/ui/herder.js")  # herder.js, from clients/js
        assert module.headers["content-type"] == "text/javascript; charset=utf-8"
        assert "export" in module.text
        assert (await client.get("/ui/lib/peer.js")).status_code == 200
        again = await client.get("/ui/dash/main.js", headers={"If-None-Match": module.headers["etag"]})
        assert again.status_code == 200  # another file's ETag
        etag = again.headers["etag"]
        assert (await client.get("/ui/dash/main.js", headers={"If-None-Match": etag})).status_code == 304
        for path in (
            "/ui/package.json",
            "/ui/node_modules/ws/package.json",
            "/ui/js/herder.js",
            "/ui/..%2Fpyproject.toml",
        ):
            missing = await client.get(path)
            assert missing.status_code == 404, path
            assert missing.json()["field"] == "path"
        refused = await client.post("/ui/", content=b"{}")
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, HEAD"


async def test_with_keys_the_files_are_public_and_the_api_is_not(keyed_manager: Fleet) -> None:
    async with httpx.AsyncClient(base_url=keyed_manager.manager.url) as client:
        assert (await client.get("/ui/")).status_code == 200
        assert (await client.get("/ui/dash/api.js")).status_code == 200
        about = (await client.get("/ui/about.json")).json()
        assert (about["daemon"], about["auth"]) == ("manager", "keys")  # a key signs in
        assert (await client.get("/ui/nothing.js")).status_code == 401  # not a file: not public
        assert (await client.get("/workers")).status_code == 401
        foreign = await client.get("/ui/", headers={"Host": "evil.example"})
        assert foreign.status_code == 403  # the Host check stays


async def test_an_agent_serves_the_dashboard_and_herder_js(make_agent: AgentFactory) -> None:
    async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url) as client:
        assert (await client.get("/ui/")).status_code == 200
        assert (await client.get("/ui/herder.js")).status_code == 200
        about = (await client.get("/ui/about.json")).json()
        assert (about["daemon"], about["auth"]) == ("agent", "none")  # the page shows what it has


async def test_the_feed_sends_a_snapshot_then_workers_and_tasks_as_they_change(open_manager: Manager) -> None:
    async with (
        websockets.connect(ws_url(open_manager)) as ws,
        httpx.AsyncClient(base_url=open_manager.url) as client,
    ):
        assert json.loads(await ws.recv()) == {"type": "snapshot", "workers": []}
        registered = await client.post("/workers", json={"hostname": "render-9", "slots": 3, "tags": ["gpu"]})
        assert registered.status_code == 201
        worker = (await next_of(ws, "worker"))["worker"]
        assert (worker["hostname"], worker["connection"], worker["slots"], worker["slots_used"]) == (
            "render-9",
            "online",
            3,
            0,
        )
        body = {
            "type": "frames",
            "parser": "frames",
            "settings": {"command": "x {frame}", "frame_start": 1, "frame_end": 4},
        }
        task = (await client.post("/tasks", json=body)).json()
        queued = await next_of(ws, "task", lambda m: m["task"]["id"] == task["id"])
        assert queued["task"]["status"] == "queued"
        assert queued["task"]["progress"] == 0.0  # from its items: none done yet
        # A page asks the progress of the tasks it loaded; what is not a question is ignored.
        for junk in ("not json", '{"type": "progress", "ids": "1"}', '{"type": "progress", "ids": [true]}'):
            await ws.send(junk)
        await ws.send(json.dumps({"type": "progress", "ids": [task["id"], 2**40]}))
        answer = await next_of(ws, "progress")
        assert answer["progress"] == {str(task["id"]): 0.0}
        # A cancel is written by the route itself, not in a round: the feed still sees it.
        assert (await client.patch(f"/tasks/{task['id']}", json={"status": "canceled"})).status_code == 204
        canceled = await next_of(ws, "task", lambda m: m["task"]["status"] == "canceled")
        assert canceled["task"]["id"] == task["id"]
        # A pulling worker's figures (PATCH /workers/{id}) reach the feed too.
        figures = {"update_frequent": {"load_average": {"1min": 0.5, "5min": 0.4, "15min": 0.3}}}
        assert (await client.patch(f"/workers/{worker['id']}", json=figures)).status_code == 200
        beat = await next_of(ws, "worker", lambda m: m["worker"]["update_frequent"])
        assert beat["worker"]["update_frequent"]["load_average"]["1min"] == 0.5
    async with websockets.connect(ws_url(open_manager)) as ws:
        snapshot = json.loads(await ws.recv())
        assert [w["history"] for w in snapshot["workers"]] == [[0.5]]  # the sparkline's samples


async def test_a_user_gets_only_their_own_tasks_and_a_revocation_closes_the_stream(
    keyed_manager: Fleet,
) -> None:
    manager = keyed_manager.manager
    tokens = {}
    ids = {}
    async with httpx.AsyncClient(base_url=manager.url) as client:
        for user in ("alice", "bob"):
            key, ids[user] = await keyed_manager.issue(user, "user")
            answer = await client.post("/auth/token", headers={"Authorization": f"Bearer {key}"})
            tokens[user] = answer.json()["token"]
        refused = websockets.connect(ws_url(manager))
        with pytest.raises(websockets.exceptions.WebSocketException):
            async with refused as ws:
                await ws.recv()  # no token: closed before it opens
        offer = ["herder", f"herder.bearer.{tokens['alice']}"]
        async with websockets.connect(ws_url(manager), subprotocols=offer) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol == "herder"
            await next_of(ws, "snapshot")
            for user in ("bob", "alice"):
                body = {"type": "command", "settings": {"shell": f"echo {user}"}}
                headers = {"Authorization": f"Bearer {tokens[user]}"}
                assert (await client.post("/tasks", json=body, headers=headers)).status_code == 202
            seen = await next_of(ws, "task")
            assert seen["task"]["owner"] == "alice"  # bob's, submitted first, never came
            mine = seen["task"]["id"]
            await ws.send(json.dumps({"type": "progress", "ids": [mine - 1, mine]}))
            answer = await next_of(ws, "progress")
            assert list(answer["progress"]) == [str(mine)]  # not bob's
            await keyed_manager.revoke(ids["bob"])
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await next_of(ws, "never")
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4001


def test_a_subscriber_that_falls_behind_is_told_to_resync() -> None:
    subscriber = Subscriber(viewer=None, size=3)
    for n in range(3):
        subscriber.offer({"type": "task", "n": n})
    subscriber.offer({"type": "task", "n": 3})  # one too many: what was queued is dropped
    subscriber.offer({"type": "task", "n": 4})  # and nothing more until the resync is sent
    assert subscriber.queue.qsize() == 1
    assert subscriber.queue.get_nowait() == {"type": "resync"}
    assert subscriber.behind
