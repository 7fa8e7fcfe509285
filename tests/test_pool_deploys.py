"""Rolling deploys of a pool (issue 18): a new version replaces the instances under load,
a broken one is rolled back while the old one serves, canaries wait for a promote.

A real agent, real instances of ``tests/apps/pool_app.py`` (``GET /version`` answers
``$APP_VERSION``), real clients: httpx for requests, websockets for WebSockets, both
through the pool's own listen address. Waits poll documents with deadlines; deploys use
short ``healthy_deadline`` and ``min_healthy_time`` so each test takes a few seconds.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

from herder.agent import Agent
from herder.auth import init_keys
from tests.conftest import AgentFactory
from tests.helpers import pid_alive, run_herder, wait_http
from tests.manager.conftest import ManagerFactory, db_url, make_manager
from tests.manager.keyed import keyed_agent, users_headers
from tests.test_pools import APP, app_command, create_pool, ready

__all__ = ["db_url", "make_manager"]  # fixtures, used by name

FAST = {"min_healthy_time": 0.2, "healthy_deadline": 10.0, "drain_timeout": 0.5}


def v(version: str) -> dict[str, str]:
    return {"APP_VERSION": version}


async def ended(client: httpx.AsyncClient, details: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """The pool's document once no deploy is under way."""
    return await wait_http(client, details, lambda d: d["deployment"] is None, timeout_s)


@dataclass
class Load:
    """A steady stream of requests (and open WebSockets) to a pool, until stopped."""

    url: str
    statuses: list[int] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    ws_echoes: int = 0
    ws_clean_closes: list[int] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, requesters: int = 3, sockets: int = 2) -> None:
        self._tasks = [asyncio.ensure_future(self._requests()) for _ in range(requesters)]
        self._tasks += [asyncio.ensure_future(self._socket()) for _ in range(sockets)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _requests(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30.0) as through:
            while not self._stop.is_set():
                try:
                    response = await through.get("/version")
                except httpx.HTTPError as exc:
                    self.failures.append(f"request: {exc!r}")
                    continue
                self.statuses.append(response.status_code)
                self.versions.append(response.text)

    async def _socket(self) -> None:
        """Echo messages on a WebSocket; a close frame (the old instance stopping) is clean,
        and a new WebSocket is opened; a connection cut without one is a failure."""
        ws_url = self.url.replace("http://", "ws://") + "/ws"
        while not self._stop.is_set():
            try:
                async with websockets.connect(ws_url) as ws:
                    while not self._stop.is_set():
                        await ws.send("ping")
                        assert await ws.recv() == "ping"
                        self.ws_echoes += 1
                        await asyncio.sleep(0.01)  # a client's pace, not a wait for a condition
            except ConnectionClosedOK as exc:
                self.ws_clean_closes.append(exc.rcvd.code if exc.rcvd is not None else -1)
            except (ConnectionClosedError, OSError) as exc:
                self.failures.append(f"websocket: {exc!r}")


async def test_a_deploy_under_load_drops_nothing(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client, min_instances=2, max_instances=2, env=v("1"))
    doc = await wait_http(client, doc["details"], lambda d: len(ready(d)) == 2)
    old_pids = {i["pid"] for i in doc["instances"]}
    load = Load(doc["url"])
    load.start()
    try:
        await wait_http(client, doc["details"], lambda d: sum(i["in_flight"] for i in d["instances"]) >= 2)
        response = await client.post(doc["deploy"], json={"env": v("2"), **FAST})
        assert response.status_code == 202, response.text
        assert response.headers["location"] == doc["details"]
        under_way = response.json()["deployment"]
        assert (under_way["version"], under_way["from_version"], under_way["target"]) == (2, 1, 2)
        assert under_way["state"] == "running"
        doc = await ended(client, doc["details"])
        served_before = len(load.versions)
        deadline = time.monotonic() + 20
        while len(load.versions) < served_before + 20:  # the new version serves on
            assert time.monotonic() < deadline, f"{len(load.versions) - served_before} answers since"
            await asyncio.sleep(0.02)
    finally:
        await load.stop()
    assert load.failures == []
    assert set(load.statuses) == {200}, f"{len(load.statuses)} answers"
    assert load.versions[0] == "1"
    assert load.versions[-1] == "2"
    assert load.ws_echoes > 0
    assert load.ws_clean_closes, "the WebSockets on the old instances were closed by them"
    assert set(load.ws_clean_closes) == {1001}  # going away: the old instance stopped
    (last,) = doc["deployments"]
    assert (last["state"], last["reason"], last["healthy"], last["replaced"]) == ("succeeded", None, 2, 2)
    assert last["finished_at"] >= last["started_at"]
    assert doc["version"] == 2
    assert doc["spec"]["env"] == v("2")
    assert [i["version"] for i in doc["instances"]] == [2, 2]
    assert not any(pid_alive(pid) for pid in old_pids)


async def test_a_broken_version_is_rolled_back_while_the_old_one_serves(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    doc = await create_pool(client, min_instances=1, env=v("1"))
    doc = await wait_http(client, doc["details"], lambda d: len(ready(d)) == 1)
    (old,) = doc["instances"]
    load = Load(doc["url"])
    load.start(requesters=2, sockets=1)
    try:
        exits = {
            "command": [sys.executable, "-c", "import sys; print('no config', file=sys.stderr); sys.exit(3)"]
        }
        response = await client.post(doc["deploy"], json={**exits, **FAST})
        assert response.status_code == 202, response.text
        doc = await ended(client, doc["details"])
        failed = doc["deployments"][0]
        assert failed["state"] == "failed"
        assert "exited with code 3" in failed["reason"]
        assert "no config" in failed["reason"]

        began = time.monotonic()
        silent = {"command": ["sleep", "30"], "healthy_deadline": 1.0, "min_healthy_time": 0.1}
        assert (await client.post(doc["deploy"], json=silent)).status_code == 202
        doc = await ended(client, doc["details"])
        assert time.monotonic() - began >= 1.0
        failed = doc["deployments"][0]
        assert (failed["state"], failed["version"]) == ("failed", 3)
        assert "was not healthy within 1 s" in failed["reason"]
    finally:
        await load.stop()
    assert load.failures == []
    assert set(load.statuses) == {200}
    assert set(load.versions) == {"1"}
    assert load.ws_clean_closes == []  # the old instance was never touched
    assert doc["version"] == 1
    assert doc["spec"]["command"] == app_command()
    assert [(i["id"], i["pid"], i["version"]) for i in doc["instances"]] == [(old["id"], old["pid"], 1)]

    # Fixed, as an app this time (a Procfile in a directory): the next version takes over.
    app = tmp_path / "app"
    app.mkdir()
    (app / "Procfile").write_text(f"web: APP_VERSION=app {sys.executable} {APP} --port $PORT\n")
    fixed = {"source_url": f"file://{app}", "process_type": "web", **FAST}
    assert (await client.post(doc["deploy"], json=fixed)).status_code == 202
    doc = await ended(client, doc["details"])
    assert (doc["deployments"][0]["state"], doc["version"]) == ("succeeded", 4)
    assert (doc["spec"]["command"], doc["spec"]["source_url"]) == (None, f"file://{app}")
    async with httpx.AsyncClient(base_url=doc["url"], timeout=30.0) as through:
        assert (await through.get("/version")).text == "app"


async def test_canaries_wait_for_a_promote_and_a_revert_rolls_back(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client, min_instances=2, max_instances=2, env=v("1"))
    doc = await wait_http(client, doc["details"], lambda d: len(ready(d)) == 2)
    response = await client.post(doc["promote"])
    assert (response.status_code, response.json()["error"]) == (409, "conflict")
    assert (await client.post(doc["deploy"], json={"env": v("2"), "canary": 1, **FAST})).status_code == 202
    doc = await wait_http(client, doc["details"], lambda d: (d["deployment"] or {}).get("state") == "canary")
    assert sorted(i["version"] for i in doc["instances"]) == [1, 1, 2]
    assert len(ready(doc)) == 3  # the canary takes requests beside the old ones
    again = await client.post(doc["deploy"], json={"env": v("3")})
    assert again.status_code == 409
    assert "promote or revert it" in again.json()["message"]

    promoted = await client.post(doc["promote"])
    assert promoted.status_code == 200, promoted.text
    doc = await ended(client, doc["details"])
    assert (doc["deployments"][0]["state"], doc["version"]) == ("succeeded", 2)
    assert sorted(i["version"] for i in doc["instances"]) == [2, 2]
    async with httpx.AsyncClient(base_url=doc["url"], timeout=30.0) as through:
        assert (await through.get("/version")).text == "2"

    assert (await client.post(doc["deploy"], json={"env": v("3"), "canary": 2, **FAST})).status_code == 202
    doc = await wait_http(client, doc["details"], lambda d: (d["deployment"] or {}).get("state") == "canary")
    reverted = await client.post(doc["revert"])
    assert reverted.status_code == 202, reverted.text
    doc = await ended(client, doc["details"])
    last = doc["deployments"][0]
    assert (last["state"], last["reason"], last["version"]) == ("failed", "reverted on request", 3)
    assert (doc["version"], doc["spec"]["env"]) == (2, v("2"))
    assert sorted(i["version"] for i in doc["instances"]) == [2, 2]
    assert [d["version"] for d in doc["deployments"]] == [3, 2]


WRONG_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"max_parallel": 0}, "max_parallel"),
    ({"max_parallel": 257}, "max_parallel"),
    ({"canary": -1}, "canary"),
    ({"canary": 2}, "canary"),  # above the pool's max_instances
    ({"healthy_deadline": 0}, "healthy_deadline"),
    ({"healthy_deadline": 2, "min_healthy_time": 2}, "min_healthy_time"),
    ({"drain_timeout": -1}, "drain_timeout"),
    ({"drain_timeout": "soon"}, "drain_timeout"),
    ({"listen": "0.0.0.0:80"}, "listen"),  # only what instances run may change
    ({"name": "other"}, "name"),
    ({"max_instances": 256}, "max_instances"),
    ({"command": "true", "source_url": "file:///tmp/x", "process_type": "web"}, "command"),
    ({"process_type": "web"}, "source_url"),
    ({"source_url": "file:///tmp/x"}, "process_type"),
    ({"source_url": "ftp://example.com/app.tgz", "process_type": "web"}, "source_url"),
    ({"command": ""}, "command"),
    ({"env": {"1X": "y"}}, "env"),
    ({"rebuild": "yes please"}, "rebuild"),
]


async def test_each_field_is_checked_by_name(client: httpx.AsyncClient) -> None:
    doc = await create_pool(client)
    for body, named in WRONG_FIELDS:
        response = await client.post(doc["deploy"], json=body)
        assert response.status_code == 422, (body, response.text)
        assert (response.json()["error"], response.json()["field"]) == ("invalid", named), body
    assert (await client.get(doc["details"])).json()["deployment"] is None


async def test_what_a_deploy_is_refused(client: httpx.AsyncClient) -> None:
    assert (await client.post("/pools/nothere/deploy", json={})).status_code == 404
    doc = await create_pool(client)
    bad_json = await client.post(doc["deploy"], content=b"{not json")
    assert (bad_json.status_code, bad_json.json()["field"]) == (400, "body")
    for action in ("promote", "revert"):
        response = await client.post(doc[action])
        assert response.status_code == 409, action
    await client.post(doc["drain"], json={"timeout": 0})
    drained = await client.post(doc["deploy"])
    assert drained.status_code == 409
    assert "resume it" in drained.json()["message"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the manager's database is not the point
async def test_a_user_deploys_as_they_scale_and_no_more(
    make_manager: ManagerFactory, make_agent: AgentFactory, tmp_path: Path
) -> None:
    """On an agent with keys, a pool is any signed-in user's to scale or delete, so to
    deploy; a deploy cannot change what create guards (the address, the bounds, the name)."""
    init_keys(tmp_path / "manager")
    async with (
        make_manager(heartbeat_interval_s=0.2) as manager,
        keyed_agent(manager, make_agent, "ops", "agent-ops") as agent,
    ):
        as_user = await users_headers(manager, (("mallory", "user"),))
        async with (
            httpx.AsyncClient(base_url=agent.url, timeout=30) as anonymous,
            httpx.AsyncClient(base_url=agent.url, timeout=30, headers=as_user["mallory"]) as mallory,
        ):
            body = {"name": "web", "command": app_command(), "listen": "127.0.0.1:0"}
            created = await mallory.post("/pools", json=body)
            assert created.status_code == 201, created.text
            doc = created.json()
            assert (await anonymous.post(doc["deploy"], json={})).status_code == 401
            for body, named in (
                ({"listen": "0.0.0.0:8080"}, "listen"),
                ({"max_instances": 256}, "max_instances"),
                ({"canary": 256}, "canary"),
            ):
                refused = await mallory.post(doc["deploy"], json=body)
                assert (refused.status_code, refused.json()["field"]) == (422, named), body
            assert (await mallory.post(doc["deploy"], json={"env": v("2"), **FAST})).status_code == 202
            doc = await ended(mallory, doc["details"])
            assert doc["spec"]["listen"] == "127.0.0.1:0"
            assert doc["deployments"][0]["state"] == "succeeded"


async def test_herder_pools_deploy_and_promote_follow_the_deploy(
    agent: Agent, client: httpx.AsyncClient
) -> None:
    doc = await create_pool(client, name="cli", min_instances=1, env=v("1"))
    await wait_http(client, doc["details"], lambda d: len(ready(d)) == 1)
    fast = ("--min-healthy-time", "0.2", "--drain-timeout", "0.5")
    code, _, err = await run_herder(
        "pools", "deploy", "cli", "--agent", agent.url, "--canary", "1", *fast, "-e", "APP_VERSION=2"
    )
    assert code == 0, err
    assert (
        err.splitlines()[-1]
        == "[herder] pool cli: deploy 1 of version 2 (from 1): canary, 1/1 healthy, 0 replaced"
    )
    code, out, err = await run_herder("pools", "promote", "cli", "--agent", agent.url)
    assert code == 0, err
    assert out == "pool cli: deploy 1 of version 2 (from 1): succeeded, 1/1 healthy, 1 replaced\n"
    code, _, err = await run_herder(
        "pools", "deploy", "cli", "--agent", agent.url, *fast, "--", "sh", "-c", "exit 4"
    )
    assert code == 1
    assert (
        "deploy 2 of version 3 (from 2): failed, 0/1 healthy, 0 replaced: instance cli.3 exited with code 4"
        in err
    )
    code, _, err = await run_herder("pools", "promote", "cli", "--agent", agent.url)
    assert (code, "409" in err) == (1, True)
    doc = (await client.get(doc["details"])).json()
    assert (doc["version"], doc["spec"]["env"]) == (2, v("2"))
