"""A build longer than the agent's tree walk is not killed as an orphan.

Found by the build benchmark (#14): ``herder agent`` is a child subreaper, and its walk
(every ``track_interval_s``) took the build's own commands, direct children of the agent
that no unit spawned, for orphans re-parented to it; with no unit that could have
started them, it SIGKILLed them: "uv exited with code -9" on any build longer than a walk.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers import AgentProcess, wait_http


async def test_a_release_phase_longer_than_a_walk_finishes(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[supervision]\ntrack_interval_s = 0.02\n")
    app = tmp_path / "app"
    app.mkdir()
    # A release of ~1 s: about fifty walks while the agent's own child runs.
    (app / "Procfile").write_text(
        "release: for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.1; done; echo released\nweb: exec sleep 100\n"
    )
    agent = AgentProcess(tmp_path / "data", "--config", str(config)).start()
    try:
        async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
            body = {"app": "slow", "node": "web.0", "source_url": app.as_uri(), "process_type": "web"}
            assert (await client.post("/create-process", json=body)).status_code == 201
            doc = await wait_http(
                client, "/process-status/slow.web.0", lambda d: d["state"] in ("running", "failed"), 30
            )
            assert doc["state"] == "running", doc["error"]
            log_text = (await client.get("/build-log/slow.web.0")).text
            assert "released" in log_text
        assert "killed" not in agent.stderr()
    finally:
        agent.kill()
