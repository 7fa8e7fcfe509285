"""``herder agent --procfile ./Procfile --concurrency web=2`` (#16): a local Procfile app run
as honcho and foreman run it, by the real binary; stopped by a signal to its pid."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import HERDER, AgentProcess, poll, run_herder, wait_banner, wait_dead
from tests.test_declared import running

PROCFILE = f"""# a web server and a worker
web: exec {sys.executable} -m http.server $PORT --bind 127.0.0.1
worker: echo "$GREETING from $PORT" | tee worker.out; exec sleep 1000
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    app = tmp_path / "my app"  # a name an app name cannot have as it is
    app.mkdir()
    (app / "Procfile").write_text(PROCFILE)
    (app / ".env").write_text("GREETING='hello there'\n")
    return app


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_each_type_times_its_concurrency_runs_and_a_signal_stops_them(
    tmp_path: Path, app_dir: Path, sig: signal.Signals
) -> None:
    agent = AgentProcess(
        tmp_path / "data", "--procfile", str(app_dir / "Procfile"), "--concurrency", "web=2"
    ).start()
    try:
        async with httpx.AsyncClient(base_url=agent.url) as client:
            slugs = ["my-app.web.1", "my-app.web.2", "my-app.worker.1"]
            docs = await running(client, slugs)
            listed = (await client.get("/list-processes")).json()["processes"]
            assert sorted(p["slug"] for p in listed) == slugs
            assert all(doc["declared"] and doc["source_url"] == app_dir.as_uri() for doc in docs.values())
            ports = {doc["port"] for doc in docs.values()}
            assert len(ports) == 3  # $PORT per instance
            for slug in ("my-app.web.1", "my-app.web.2"):
                port = docs[slug]["port"]

                async def answers(port: int = port) -> bool:
                    try:
                        return (await client.get(f"http://127.0.0.1:{port}/Procfile")).status_code == 200
                    except httpx.TransportError:
                        return False

                await poll(answers)  # each serves the app's directory on its own port
            out = app_dir / "worker.out"
            await poll(out.exists)
            await poll(lambda: out.read_text().strip() != "")
            assert out.read_text().strip() == f"hello there from {docs['my-app.worker.1']['port']}"
        agent.signal(sig)
        assert agent.wait() == 0
        await wait_dead([doc["pid"] for doc in docs.values()])
    finally:
        agent.kill()


async def test_a_concurrency_naming_an_unknown_type_is_refused(tmp_path: Path, app_dir: Path) -> None:
    code, _, err = await run_herder(
        "agent", "--port", "0", "--data-dir", str(tmp_path / "data"),
        "--procfile", str(app_dir / "Procfile"), "--concurrency", "web=2,clock=1",
    )  # fmt: skip
    assert code == 2
    assert err.strip() == (
        f"herder agent: {app_dir / 'Procfile'}: --concurrency names clock, which it does not define "
        "(web, worker)"
    )
    code, _, err = await run_herder("agent", "--procfile", str(app_dir / "Procfile"), "--concurrency", "web")
    assert code == 2
    assert "'web' is not TYPE=COUNT" in err


async def test_reload_reads_the_procfile_again(tmp_path: Path, app_dir: Path) -> None:
    agent = AgentProcess(tmp_path / "data", "--procfile", str(app_dir / "Procfile")).start()
    try:
        async with httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
            before = await running(client, ["my-app.web.1", "my-app.worker.1"])
            (app_dir / "Procfile").write_text(PROCFILE.split("worker:")[0] + "clock: exec sleep 999\n")
            answer = (await client.post("/reload-config")).json()
            assert answer["started"] == ["my-app.clock.1"]
            assert answer["stopped"] == ["my-app.worker.1"]
            assert answer["unchanged"] == ["my-app.web.1"]
            await wait_dead([before["my-app.worker.1"]["pid"]])
            after = await running(client, ["my-app.web.1", "my-app.clock.1"])
            assert after["my-app.web.1"]["pid"] == before["my-app.web.1"]["pid"]
            # A changed line restarts that type's instances only.
            (app_dir / "Procfile").write_text(PROCFILE.split("worker:")[0] + "clock: exec sleep 998\n")
            answer = (await client.post("/reload-config")).json()
            assert (answer["changed"], answer["unchanged"]) == (["my-app.clock.1"], ["my-app.web.1"])
            await wait_dead([after["my-app.clock.1"]["pid"]])
            again = await running(client, ["my-app.web.1", "my-app.clock.1"])
            assert again["my-app.web.1"]["pid"] == before["my-app.web.1"]["pid"]
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
    finally:
        agent.kill()


async def test_the_output_is_on_stdout_as_honcho_shows_it(tmp_path: Path, app_dir: Path) -> None:
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    argv = [HERDER, "agent", "--port", "0", "--data-dir", str(tmp_path / "data"), "--grace", "2"]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen([*argv, "--procfile", str(app_dir / "Procfile")], stdout=out, stderr=err)
    try:
        assert wait_banner(proc, err_path, r"herder agent listening on", timeout_s=20), err_path.read_text()
        greeting = re.compile(r"^\d\d:\d\d:\d\d worker\.1 +\| hello there from \d+$", re.M)
        await poll(lambda: greeting.search(out_path.read_text()) is not None)
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert re.search(r"^\d\d:\d\d:\d\d web\.1 +\| \[herder\] stopped", out_path.read_text(), re.M)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
