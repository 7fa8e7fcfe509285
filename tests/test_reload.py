"""``herder reload``, ``POST /reload-config`` and SIGHUP (#16): a real agent started with a
config file, the file changed, the reload asked for; pids tell what was touched."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import AgentProcess, pid_alive, poll, run_herder, wait_dead, wait_http
from tests.test_declared import THREE, running

SLUGS = ["demo.a.1", "demo.b.1", "demo.c.1"]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(THREE)
    return path


@pytest.fixture
def agent(tmp_path: Path, config_file: Path) -> Any:
    proc = AgentProcess(tmp_path / "data", "--config", str(config_file)).start()
    try:
        yield proc
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    finally:
        proc.kill()


def pids(docs: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {slug: doc["pid"] for slug, doc in docs.items()}


async def test_reload_changes_one_of_three_adds_one_removes_one(
    agent: AgentProcess, config_file: Path
) -> None:
    async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        before = pids(await running(client, SLUGS))
        text = THREE.replace('"exec sleep 1001"', '"exec sleep 1005"')  # b changes
        text = text.replace('node = "c.1"', 'node = "d.1"')  # c goes, d comes
        config_file.write_text(text)
        code, out, err = await run_herder("reload", "--agent", agent.url)
        assert code == 0, err
        assert out.splitlines() == [
            "started: demo.d.1",
            "stopped: demo.c.1",
            "changed: demo.b.1",
            "unchanged: demo.a.1",
        ]
        after = pids(await running(client, ["demo.a.1", "demo.b.1", "demo.d.1"]))
        assert after["demo.a.1"] == before["demo.a.1"]  # untouched
        assert after["demo.b.1"] != before["demo.b.1"]
        assert not pid_alive(before["demo.b.1"])
        assert not pid_alive(before["demo.c.1"])
        assert (await client.get("/process-status/demo.c.1")).status_code == 404
        assert (await client.get("/process-status/demo.b.1")).json()["command"] == "exec sleep 1005"
        # Again with nothing changed: nothing touched.
        answer = (await client.post("/reload-config", json={})).json()
        assert answer == {
            "started": [],
            "stopped": [],
            "changed": [],
            "unchanged": ["demo.a.1", "demo.b.1", "demo.d.1"],
            "restart_needed": [],
        }
        assert pids(await running(client, list(after))) == after


async def test_a_bad_config_on_reload_changes_nothing(agent: AgentProcess, config_file: Path) -> None:
    async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        before = pids(await running(client, SLUGS))
        # A valid change beside a wrong table: neither is applied.
        bad = THREE.replace('node = "c.1"', 'node = "d.1"') + '\n[[processes]]\napp = "x"\nnode = "y.1"\n'
        config_file.write_text(bad)
        answer = await client.post("/reload-config")
        assert answer.status_code == 422
        doc = answer.json()
        assert doc["error"] == "invalid_config"
        assert f"{config_file}: processes[3].source_url: field 'source_url' is required" in doc["message"]
        config_file.write_text("[[processes]\nnot toml")
        answer = await client.post("/reload-config")
        assert answer.status_code == 422
        assert "not valid TOML" in answer.json()["message"]
        code, _, err = await run_herder("reload", "--agent", agent.url)
        assert code == 1
        assert err.startswith("herder: 422: ")
        assert "not valid TOML" in err
        assert pids(await running(client, SLUGS)) == before
        assert (await client.get("/process-status/demo.d.1")).status_code == 404
        # The agent keeps running: a good file is applied afterwards.
        config_file.write_text(THREE)
        assert (await client.post("/reload-config")).json()["unchanged"] == SLUGS


async def test_sighup_reloads_and_a_refused_one_is_logged(agent: AgentProcess, config_file: Path) -> None:
    async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        before = pids(await running(client, SLUGS))
        config_file.write_text(THREE.replace('node = "c.1"', 'node = "d.1"'))
        agent.signal(signal.SIGHUP)
        await running(client, ["demo.d.1"])
        await wait_dead([before["demo.c.1"]])
        assert "reloaded the config: started 1 (demo.d.1), stopped 1 (demo.c.1)" in agent.stderr()
        current = pids(await running(client, ["demo.a.1", "demo.b.1", "demo.d.1"]))
        assert current["demo.a.1"] == before["demo.a.1"]
        assert current["demo.b.1"] == before["demo.b.1"]
        config_file.write_text('[[processes]]\napp = "x"\nnode = "y.1"\ncommand = 3\n')
        agent.signal(signal.SIGHUP)
        await poll(lambda: "reload refused, nothing changed" in agent.stderr())
        assert f"{config_file}: processes[0].command: must be a string" in agent.stderr()
        assert pids(await running(client, list(current))) == current


POOLS = """
[[pools]]
name = "keep"
command = ["sleep", "1000"]
min_instances = 1

[[pools]]
name = "edit"
command = ["sleep", "1000"]
min_instances = 1

[[pools]]
name = "drop"
command = ["sleep", "1000"]
min_instances = 1
"""


async def instance_pids(client: httpx.AsyncClient, name: str) -> list[int]:
    doc = await wait_http(
        client, f"/pools/{name}", lambda d: any(i["pid"] is not None for i in d["instances"]), timeout_s=20
    )
    return [i["pid"] for i in doc["instances"] if i["pid"] is not None]


async def test_declared_pools_follow_the_same_rule(tmp_path: Path) -> None:
    path = tmp_path / "pools.toml"
    path.write_text(POOLS)
    agent = AgentProcess(tmp_path / "data", "--config", str(path)).start()
    try:
        async with httpx.AsyncClient(base_url=agent.url, timeout=60) as client:
            kept = await instance_pids(client, "keep")
            edited = await instance_pids(client, "edit")
            dropped = await instance_pids(client, "drop")
            text = POOLS.replace(
                'name = "edit"\ncommand = ["sleep", "1000"]', 'name = "edit"\ncommand = ["sleep", "999"]'
            )
            text = text.replace('name = "drop"', 'name = "new"')
            path.write_text(text)
            answer = (await client.post("/reload-config")).json()
            assert answer == {
                "started": ["pool:new"],
                "stopped": ["pool:drop"],
                "changed": ["pool:edit"],
                "unchanged": ["pool:keep"],
                "restart_needed": [],
            }
            assert await instance_pids(client, "keep") == kept
            assert await instance_pids(client, "edit") != edited
            await instance_pids(client, "new")
            await wait_dead(edited + dropped)
            assert (await client.get("/pools/drop")).status_code == 404
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
    finally:
        agent.kill()


async def test_settings_a_reload_does_not_apply_are_named(agent: AgentProcess, config_file: Path) -> None:
    config_file.write_text("[supervision]\nring_lines = 10\n" + THREE)
    async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        answer = (await client.post("/reload-config")).json()
    assert answer["restart_needed"] == ["supervision.ring_lines"]
    assert answer["unchanged"] == SLUGS
    code, out, _ = await run_herder("reload", "--agent", agent.url)
    assert code == 0
    assert "not applied (needs an agent restart): supervision.ring_lines" in out


async def test_reload_refuses_a_body_it_does_not_know(agent: AgentProcess) -> None:
    async with httpx.AsyncClient(base_url=agent.url) as client:
        answer = await client.post("/reload-config", json={"force": True})
    assert answer.status_code == 422
    assert answer.json()["field"] == "force"
