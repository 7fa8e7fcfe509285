"""An operator's stop, start and restart of a process (issue 16), against a real agent.

``POST /stop-process/<slug>`` stops it and keeps it listed as ``stopped``, across an
agent restart too; ``/start-process/<slug>`` runs a process that does not run (409 if it
does, as supervisorctl's "already started"); ``/restart-process/<slug>`` does both and is
no crash (no backoff). The figures a ``ps`` needs ride along in every status document.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

from herder.agent import Agent
from herder.agent.processes.states import Event, State, TransitionError, apply, is_alive
from tests.conftest import AgentFactory
from tests.helpers import pid_alive, wait_dead, wait_http

SLEEPER = {"app": "ops", "node": "web.0", "command": "exec sleep 300"}
SLUG = "ops.web.0"
ACTIONS = ("stop-process", "start-process", "restart-process")


async def create_running(client: httpx.AsyncClient, body: dict[str, object] = SLEEPER) -> dict[str, object]:
    created = await client.post("/create-process", json=body)
    assert created.status_code == 201, created.text
    return await wait_http(client, created.json()["details"], lambda d: d["state"] == "running")


async def test_the_status_document_links_the_actions(agent: Agent, client: httpx.AsyncClient) -> None:
    doc = await create_running(client)
    assert doc["stop"] == f"{agent.url}/stop-process/{SLUG}"
    assert doc["start"] == f"{agent.url}/start-process/{SLUG}"
    assert doc["restart_process"] == f"{agent.url}/restart-process/{SLUG}"
    assert doc["restart"] == "always"  # the policy keeps its name


async def test_stop_keeps_it_listed_and_stopped_then_start_runs_it_again(client: httpx.AsyncClient) -> None:
    running = await create_running(client)
    pid = running["pid"]
    assert isinstance(pid, int)
    stopped = await client.post(f"/stop-process/{SLUG}")
    assert stopped.status_code == 200, stopped.text
    doc = stopped.json()
    assert (doc["state"], doc["pid"], doc["uptime_s"], doc["cpu_percent"], doc["rss_bytes"]) == (
        "stopped",
        None,
        None,
        None,
        None,
    )
    assert doc["exit_code"] == -15  # SIGTERM, politely
    assert not pid_alive(pid)
    listing = (await client.get("/list-processes")).json()["processes"]
    assert [(p["slug"], p["state"]) for p in listing] == [(SLUG, "stopped")]
    again = await client.post(f"/stop-process/{SLUG}")
    assert again.status_code == 409
    assert again.json()["field"] == "slug"
    assert "stopped already" in again.json()["message"]

    started = await client.post(f"/start-process/{SLUG}", content=b"{}")
    assert started.status_code == 200, started.text
    assert started.json()["state"] in ("starting", "running")
    back = await wait_http(client, f"/process-status/{SLUG}", lambda d: d["state"] == "running")
    assert back["pid"] != pid
    assert back["restarts"] == 0  # an operator's start is not a restart by policy
    twice = await client.post(f"/start-process/{SLUG}")
    assert twice.status_code == 409
    assert twice.json() == {
        "error": "conflict",
        "message": f"process {SLUG!r} is running, not stopped: it is started already "
        "(restart-process starts it again)",
        "field": "slug",
    }


async def test_stop_escalates_to_sigkill_after_the_grace(make_agent: AgentFactory) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(300)",
    ]
    async with (
        make_agent(supervision={"grace_s": 0.5}) as agent,
        httpx.AsyncClient(base_url=agent.url, timeout=30) as client,
    ):
        await create_running(client, {"app": "ops", "node": "web.0", "command": stubborn})
        assert agent.runtime is not None
        unit = agent.runtime.supervisor.get(SLUG)
        await unit.wait_for(lambda u: any(b"ready" in line for _, line in u.output.ring), 10)
        doc = (await client.post(f"/stop-process/{SLUG}")).json()
        assert (doc["state"], doc["exit_code"]) == ("stopped", -9)


async def test_restart_runs_a_new_process_and_is_no_crash(client: httpx.AsyncClient) -> None:
    first = await create_running(client)
    answer = await client.post(f"/restart-process/{SLUG}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] in ("starting", "running")
    second = await wait_http(client, f"/process-status/{SLUG}", lambda d: d["state"] == "running")
    assert second["pid"] != first["pid"]
    assert not pid_alive(first["pid"])  # type: ignore[arg-type]
    assert (second["restarts"], second["error"]) == (0, None)
    # From stopped, restart starts it.
    assert (await client.post(f"/stop-process/{SLUG}")).json()["state"] == "stopped"
    assert (await client.post(f"/restart-process/{SLUG}")).status_code == 200
    await wait_http(client, f"/process-status/{SLUG}", lambda d: d["state"] == "running")


async def test_a_crash_loop_is_forgotten_by_a_restart(make_agent: AgentFactory) -> None:
    # Backoff long enough that the process waits in backoff when the restart comes.
    async with (
        make_agent(supervision={"backoff_initial_s": 30.0, "backoff_max_s": 60.0}) as agent,
        httpx.AsyncClient(base_url=agent.url, timeout=30) as client,
    ):
        body = {"app": "ops", "node": "web.0", "command": "exit 3"}
        assert (await client.post("/create-process", json=body)).status_code == 201
        waiting = await wait_http(client, f"/process-status/{SLUG}", lambda d: d["state"] == "backoff")
        assert waiting["error"].startswith("exited with code 3; restarting in")
        restarted = (await client.post(f"/restart-process/{SLUG}")).json()
        assert restarted["error"] is None
        # It ran again at once (not after the 30 s delay), failed, and backs off from the start.
        again = await wait_http(
            client, f"/process-status/{SLUG}", lambda d: d["state"] == "backoff" and d["exit_code"] == 3
        )
        assert "restarting in 30.0 s" in again["error"]


async def test_start_runs_an_exited_process_again(client: httpx.AsyncClient) -> None:
    body = {"app": "ops", "node": "web.0", "command": "exit 0", "restart": "never"}
    assert (await client.post("/create-process", json=body)).status_code == 201
    first = await wait_http(client, f"/process-status/{SLUG}", lambda d: d["state"] == "exited")
    assert (await client.post(f"/start-process/{SLUG}")).status_code == 200
    await wait_http(
        client,
        f"/process-status/{SLUG}",
        lambda d: d["state"] == "exited" and d["started_at"] != first["started_at"],
    )


async def test_a_stop_outlives_an_agent_restart(make_agent: AgentFactory) -> None:
    async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        await create_running(client)
        other = await create_running(client, {"app": "ops", "node": "web.1", "command": "exec sleep 300"})
        assert (await client.post(f"/stop-process/{SLUG}")).json()["state"] == "stopped"
        assert agent.runtime is not None
        record = agent.runtime.supervisor._ctx.log_dir.parent / "processes" / f"{SLUG}.json"
        assert '"stopped": true' in record.read_text()
    await wait_dead([other["pid"]])  # type: ignore[list-item]
    async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        doc = (await client.get(f"/process-status/{SLUG}")).json()
        assert (doc["state"], doc["pid"]) == ("stopped", None)
        await wait_http(client, "/process-status/ops.web.1", lambda d: d["state"] == "running")
        assert (await client.post(f"/start-process/{SLUG}")).status_code == 200
        await wait_http(client, f"/process-status/{SLUG}", lambda d: d["state"] == "running")
    async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        # Started again: its record says it runs.
        await wait_http(client, f"/process-status/{SLUG}", lambda d: d["state"] == "running")


async def test_bad_slugs_and_bodies(client: httpx.AsyncClient) -> None:
    for action in ACTIONS:
        missing = await client.post(f"/{action}/no.such")
        assert missing.status_code == 404, action
        assert missing.json()["field"] == "slug"
        assert (await client.get(f"/{action}/no.such")).status_code == 405
    await create_running(client)
    for action in ACTIONS:
        bad = await client.post(f"/{action}/{SLUG}", content=b"{nope")
        assert (bad.status_code, bad.json()["error"]) == (400, "invalid_json")
        unknown = await client.post(f"/{action}/{SLUG}", json={"force": True})
        assert (unknown.status_code, unknown.json()["field"]) == (422, "force")
    assert (await client.get(f"/process-status/{SLUG}")).json()["state"] == "running"  # none acted


async def test_a_pool_instance_is_its_pools_to_stop(client: httpx.AsyncClient) -> None:
    pool = {"name": "opsp", "command": "python3 -m http.server {port} --bind 127.0.0.1", "min_instances": 1}
    assert (await client.post("/pools", json=pool)).status_code == 201
    doc = await wait_http(client, "/pools/opsp", lambda d: len(d["instances"]) == 1)
    slug = "@" + doc["instances"][0]["id"]
    for action in ACTIONS:
        refused = await client.post(f"/{action}/{slug}")
        assert refused.status_code == 409, action
        assert refused.json()["error"] == "pool_instance"
        assert "POST /pools/opsp/scale" in refused.json()["message"]
    assert (await client.post("/stop-process/@opsp.99")).status_code == 404
    assert (await client.post("/pools/opsp/delete", json={"timeout": 1})).status_code == 200


async def test_the_figures_of_a_ps(client: httpx.AsyncClient) -> None:
    spin = {"app": "ops", "node": "web.0", "command": [sys.executable, "-c", "while True: pass"]}
    await create_running(client, spin)
    # Once the interpreter has loaded (the figures are read at most once a second; a read
    # right after the spawn finds the process before its program's memory).
    running = await wait_http(
        client, f"/process-status/{SLUG}", lambda d: (d["rss_bytes"] or 0) > 1 << 20, timeout_s=20
    )
    assert isinstance(running["port"], int)
    assert running["uptime_s"] >= 0  # type: ignore[operator]
    assert running["rss_bytes"] > 1 << 20  # type: ignore[operator]
    # A spinning process shows CPU use (lightly: the machine is shared).
    busy = await wait_http(client, f"/process-status/{SLUG}", lambda d: d["cpu_percent"] > 5, timeout_s=20)
    assert busy["cpu_percent"] <= 100 * (os.cpu_count() or 1)
    listed = (await client.get("/list-processes")).json()["processes"][0]
    assert {"uptime_s", "cpu_percent", "rss_bytes", "port"} <= listed.keys()


@pytest.mark.parametrize("action", ACTIONS)
async def test_the_actions_need_the_token(make_agent: AgentFactory, action: str) -> None:
    token = "s3cret-ops-token"
    async with (
        make_agent(auth_token=token) as agent,
        httpx.AsyncClient(base_url=agent.url, timeout=30) as client,
    ):
        auth = {"Authorization": f"Bearer {token}"}
        created = await client.post("/create-process", json=SLEEPER, headers=auth)
        assert created.status_code == 201
        assert (await client.post(f"/{action}/{SLUG}")).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.post(f"/{action}/{SLUG}", headers=wrong)).status_code == 401
        if action == "start-process":
            assert (await client.post(f"/stop-process/{SLUG}", headers=auth)).status_code == 200
        assert (await client.post(f"/{action}/{SLUG}", headers=auth)).status_code == 200


def test_the_lifecycle_table_has_the_operators_stop_and_start() -> None:
    assert apply(State.STOPPING, Event.HALTED) is State.STOPPED
    assert apply(State.STOPPED, Event.START) is State.STARTING
    assert apply(State.STOPPED, Event.START_APP) is State.FETCHING
    assert apply(State.STOPPED, Event.STOP) is State.STOPPING  # a delete of a stopped process
    assert not is_alive(State.STOPPED)
    with pytest.raises(TransitionError):
        apply(State.RUNNING, Event.START)


async def test_an_app_is_made_ready_again_when_started(client: httpx.AsyncClient, tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "Procfile").write_text("web: exec sleep 300\n")
    body = {"app": "ops", "node": "web.0", "process_type": "web", "source_url": app.as_uri()}
    assert (await client.post("/create-process", json=body)).status_code == 201
    await wait_http(client, f"/process-status/{SLUG}", lambda d: d["state"] == "running")
    assert (await client.post(f"/stop-process/{SLUG}")).json()["state"] == "stopped"
    started = (await client.post(f"/start-process/{SLUG}")).json()
    assert started["state"] in ("fetching", "starting", "running")
    await wait_http(client, f"/process-status/{SLUG}", lambda d: d["state"] == "running")


async def test_a_process_backing_off_is_stopped_at_once(make_agent: AgentFactory) -> None:
    async with (
        make_agent(supervision={"backoff_initial_s": 30.0, "backoff_max_s": 60.0}) as agent,
        httpx.AsyncClient(base_url=agent.url, timeout=30) as client,
    ):
        body = {"app": "ops", "node": "web.0", "command": "exit 3"}
        assert (await client.post("/create-process", json=body)).status_code == 201
        await wait_http(client, f"/process-status/{SLUG}", lambda d: d["state"] == "backoff")
        stopped = (await client.post(f"/stop-process/{SLUG}")).json()
        assert (stopped["state"], stopped["exit_code"]) == ("stopped", 3)
        deleted = await client.post(f"/delete-process/{SLUG}")
        assert (deleted.status_code, deleted.json()["state"]) == (200, "exited")
        assert (await client.get("/list-processes")).json()["processes"] == []
