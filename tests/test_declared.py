"""Processes declared in the agent's config file (``[[processes]]``, #16): the real ``herder
agent`` binary started with a config file, its processes seen over HTTP and by pid."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from herder.agent.config import AgentConfig
from herder.agent.declared import declared_requests, parse_concurrency
from herder.agent.errors import ConfigError
from tests.helpers import AgentProcess, pid_alive, run_herder, wait_dead, wait_http

THREE = """
[[processes]]
app = "demo"
node = "a.1"
command = ["sleep", "1000"]

[[processes]]
app = "demo"
node = "b.1"
command = "exec sleep 1001"
restart = "on-failure"
env = { GREETING = "hi" }

[[processes]]
app = "demo"
node = "c.1"
command = ["sleep", "1002"]
"""


async def running(client: httpx.AsyncClient, slugs: list[str]) -> dict[str, dict[str, Any]]:
    """The status documents of ``slugs`` once each one runs (with a pid)."""
    docs = {}
    for slug in slugs:
        docs[slug] = await wait_http(
            client, f"/process-status/{slug}", lambda d: d["state"] == "running" and d["pid"] is not None
        )
    return docs


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(THREE)
    return path


async def test_declared_processes_start_with_the_agent(tmp_path: Path, config_file: Path) -> None:
    agent = AgentProcess(tmp_path / "data", "--config", str(config_file)).start()
    try:
        async with httpx.AsyncClient(base_url=agent.url) as client:
            docs = await running(client, ["demo.a.1", "demo.b.1", "demo.c.1"])
            assert all(doc["declared"] is True for doc in docs.values())
            assert docs["demo.b.1"]["restart"] == "on-failure"
            assert docs["demo.b.1"]["env"] == {"GREETING": "hi"}
            # One created over the API is not declared.
            created = await client.post(
                "/create-process", json={"app": "api", "node": "x.1", "command": ["true"]}
            )
            assert created.status_code == 201
            assert created.json()["declared"] is False
            # The file is their record: nothing of them in the data dir's records.
            assert not (tmp_path / "data" / "processes" / "demo.a.1.json").exists()
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
        await wait_dead([doc["pid"] for doc in docs.values()])
    finally:
        agent.kill()


async def test_an_operator_s_stop_of_a_declared_process_outlives_an_agent_restart(
    tmp_path: Path, config_file: Path
) -> None:
    """As for any process: stopped stays stopped until started, and it is still declared."""
    data = tmp_path / "data"
    first = AgentProcess(data, "--config", str(config_file)).start()
    try:
        async with httpx.AsyncClient(base_url=first.url) as client:
            await running(client, ["demo.a.1"])
            stopped = await client.post("/stop-process/demo.a.1")
            assert stopped.status_code == 200, stopped.text
        first.signal(signal.SIGTERM)
        assert first.wait() == 0
    finally:
        first.kill()
    second = AgentProcess(data, "--config", str(config_file)).start()
    try:
        async with httpx.AsyncClient(base_url=second.url) as client:
            await running(client, ["demo.b.1", "demo.c.1"])
            doc = (await client.get("/process-status/demo.a.1")).json()
            assert (doc["state"], doc["declared"]) == ("stopped", True)
        second.signal(signal.SIGTERM)
        assert second.wait() == 0
    finally:
        second.kill()


async def test_a_process_the_file_no_longer_declares_is_not_restored(
    tmp_path: Path, config_file: Path
) -> None:
    """Its record (an operator's stop wrote one) is stale once the file drops it."""
    data = tmp_path / "data"
    first = AgentProcess(data, "--config", str(config_file)).start()
    try:
        async with httpx.AsyncClient(base_url=first.url) as client:
            await running(client, ["demo.c.1"])
            assert (await client.post("/stop-process/demo.c.1")).status_code == 200
        first.signal(signal.SIGTERM)
        assert first.wait() == 0
    finally:
        first.kill()
    config_file.write_text(THREE.split('[[processes]]\napp = "demo"\nnode = "c.1"')[0])
    second = AgentProcess(data, "--config", str(config_file)).start()
    try:
        async with httpx.AsyncClient(base_url=second.url) as client:
            await running(client, ["demo.a.1", "demo.b.1"])
            assert (await client.get("/process-status/demo.c.1")).status_code == 404
        assert not (data / "processes" / "demo.c.1.json").exists()
        second.signal(signal.SIGTERM)
        assert second.wait() == 0
    finally:
        second.kill()


BAD = """
[[processes]]
app = "ok"
node = "web.1"
command = "sleep 1"

[[processes]]
app = "ok"
node = "web.2"
comand = "sleep 1"

[[processes]]
app = "ok"
node = "web.3"

[[processes]]
app = "ok"
node = "web.4"
command = "sleep 1"
restart = "sometimes"

[[processes]]
app = "ok"
node = "web.1"
command = "sleep 2"
"""


async def test_config_errors_name_the_file_the_table_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    code, _, err = await run_herder(
        "agent", "--port", "0", "--data-dir", str(tmp_path / "data"), "--config", str(path)
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert f"herder agent: {path}: processes[1].comand: unknown field" in err
    assert f"herder agent: {path}: processes[2].source_url: field 'source_url' is required" in err
    assert f"herder agent: {path}: processes[3].restart: " in err
    assert "'sometimes'" in err
    assert f"herder agent: {path}: processes[4]: process 'ok.web.1' is declared twice" in err
    # Its unknown key does not hide that it has nothing to run.
    assert f"herder agent: {path}: processes[1].source_url: field 'source_url' is required" in err
    assert len(lines) == 5, err  # one line each, no traceback
    assert not (tmp_path / "data" / "agent.lock").exists()  # refused before anything started


def test_a_declared_process_takes_exactly_the_create_request_s_fields() -> None:
    """Whatever CreateRequest has, a [[processes]] table has: checked by the model itself."""
    from herder.agent.models import CreateRequest

    table: dict[str, Any] = {"app": "a", "node": "n.1", "command": ["true"]}
    config = AgentConfig(processes=[table])
    assert declared_requests(config)["a.n.1"] == CreateRequest.model_validate(table)
    with pytest.raises(ConfigError, match=r"the config: processes\[0\]\.nope: unknown field"):
        declared_requests(AgentConfig(processes=[{**table, "nope": 1}]))
    # The request's own checks against this host come along (a FieldError names its field).
    with pytest.raises(ConfigError, match=r"processes\[0\]\.user: no such user 'no-such-user-x'"):
        declared_requests(AgentConfig(processes=[{**table, "user": "no-such-user-x"}]))


def test_concurrency_syntax() -> None:
    assert parse_concurrency("web=2,worker=1") == {"web": 2, "worker": 1}
    assert parse_concurrency(" web = 0 ") == {"web": 0}
    for bad in ("web", "web=two", "=2", "web=-1", ""):
        with pytest.raises(ValueError, match="TYPE=COUNT"):
            parse_concurrency(bad)


async def test_a_declared_process_deleted_over_the_api_stays_gone_until_a_reload(
    tmp_path: Path, config_file: Path
) -> None:
    agent = AgentProcess(tmp_path / "data", "--config", str(config_file)).start()
    try:
        async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
            docs = await running(client, ["demo.a.1"])
            assert (await client.post("/delete-process/demo.a.1")).status_code == 200
            assert not pid_alive(docs["demo.a.1"]["pid"])
            assert (await client.get("/process-status/demo.a.1")).status_code == 404
            answer = (await client.post("/reload-config")).json()
            assert answer["started"] == ["demo.a.1"]
            await running(client, ["demo.a.1"])
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
    finally:
        agent.kill()


def test_a_procfile_in_a_config_file_is_relative_to_the_file(tmp_path: Path) -> None:
    from herder.agent.config import load_config

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Procfile").write_text("web: exec sleep 1\nworker: exec sleep 2\n")
    path = tmp_path / "agent.toml"
    path.write_text('procfile = "app/Procfile"\nconcurrency = { worker = 2 }\n')
    requests = declared_requests(load_config(path, {}))
    assert list(requests) == ["app.web.1", "app.worker.1", "app.worker.2"]
    assert {r.source_url for r in requests.values()} == {(tmp_path / "app").as_uri()}
    path.write_text('procfile = "app/Procfile"\nconcurrency = { worker = 65 }\n')
    with pytest.raises(ValueError, match="instances must be 0 to 64"):
        load_config(path, {})


def test_a_config_built_in_code_reloads_as_itself() -> None:
    """No file to read again: a reload of an embedded agent's config changes nothing."""
    config = AgentConfig(processes=[{"app": "a", "node": "n.1", "command": ["true"]}], port=0)
    again = config.reread()
    assert again == config
    assert again is not config


def test_a_procfile_s_release_phase_is_no_process_unless_asked(tmp_path: Path) -> None:
    """``release:`` runs once per build (herder.agent.builds), not as a process kept running."""
    from herder.agent.declared import procfile_requests

    procfile = tmp_path / "Procfile"
    procfile.write_text("release: ./migrate\nweb: ./serve\n")
    assert [r.node for r in procfile_requests(procfile, {})] == ["web.1"]
    assert [r.node for r in procfile_requests(procfile, {"release": 1, "web": 0})] == ["release.1"]


ORDERED = """
[[processes]]
app = "svc"
node = "api.1"
command = ["sleep", "1000"]
depends_on = ["db.1"]

[[processes]]
app = "svc"
node = "db.1"
command = ["sleep", "1001"]
ready_after_s = 0.5
"""


async def test_a_declared_process_has_the_create_request_s_settings(tmp_path: Path) -> None:
    """depends_on, ready_after_s (and every other field): declared as created, obeyed alike."""
    path = tmp_path / "agent.toml"
    path.write_text(ORDERED)
    agent = AgentProcess(tmp_path / "data", "--config", str(path)).start()
    try:
        async with httpx.AsyncClient(base_url=agent.url) as client:
            docs = await running(client, ["svc.db.1", "svc.api.1"])
            assert docs["svc.api.1"]["depends_on"] == ["svc.db.1"]  # resolved, as a create does
            db_up = docs["svc.db.1"]["started_at"]
            assert docs["svc.api.1"]["started_at"] >= db_up  # once db.1 was ready, not before
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
    finally:
        agent.kill()


def test_declared_dependencies_are_resolved_and_checked() -> None:
    def table(node: str, *deps: str) -> dict[str, Any]:
        return {"app": "svc", "node": node, "command": ["true"], "depends_on": list(deps)}

    requests = declared_requests(AgentConfig(processes=[table("api.1", "db.1"), table("db.1")]))
    assert requests["svc.api.1"].depends_on == ["svc.db.1"]  # a node of its app, as a slug
    with pytest.raises(ConfigError) as refused:
        declared_requests(AgentConfig(processes=[table("api.1", "cache.1")]))
    assert str(refused.value).startswith("the config: processes[0].depends_on: no process 'cache.1'")
    with pytest.raises(ConfigError) as refused:
        declared_requests(AgentConfig(processes=[table("a.1", "b.1"), table("b.1", "a.1")]))
    assert str(refused.value) == (
        "the config: processes[0].depends_on: closes a cycle: svc.a.1 -> svc.b.1 -> svc.a.1"
    )
