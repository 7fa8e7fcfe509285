"""``herder tasks ...`` and ``herder workers ...`` against a real manager, on both databases.

The real binary, run without blocking the manager (which serves from this test's event
loop); independent commands run side by side to keep the suite quick.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from herder.agent import Agent
from herder.cli.task_cmds import LogTail
from herder.manager.server import Manager
from tests.conftest import AgentFactory
from tests.helpers import run_herder
from tests.manager.conftest import ManagerFactory

Result = tuple[int, str, str]
TASKS_HEADER = ["ID", "STATUS", "PRIORITY", "TYPE", "FRAMES", "WORKER", "AGE"]


async def herder(url: str, *args: str, env: dict[str, str] | None = None) -> Result:
    """``herder ARGS`` with the manager's URL in HERDER_MANAGER_URL; (status, stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HERDER_MANAGER_")}
    environ.update({"HERDER_MANAGER_URL": url, **(env or {})})
    return await run_herder(*args, env=environ)


async def ok(url: str, *args: str) -> str:
    """``herder ARGS`` that must succeed quietly; its stdout."""
    code, out, err = await herder(url, *args)
    assert code == 0, f"herder {' '.join(args)}: {err}"
    assert err == ""
    return out


def table(out: str) -> list[list[str]]:
    """A table's rows split into cells (cells hold no two spaces in a row)."""
    return [[c.strip() for c in line.split("  ") if c.strip()] for line in out.splitlines()]


async def test_submit_list_show_and_change_tasks(manager: Manager) -> None:
    url = manager.url
    frames_options = ["-s", "frame_start=1", "-s", "frame_end=6", "--setting", "chunk_size=2"]
    frames_options += ["-s", "command=render {start} {end}", "--parser", "frames", "--priority", "5"]
    frames_options += ["--tag", "gpu", "--task-id", "77", "--max-attempts", "2", "--json"]
    first, second, third = await asyncio.gather(
        ok(url, "tasks", "submit", "command", "--", "echo", "--not-an-option", "hi"),
        ok(url, "tasks", "submit", "frames", *frames_options),
        ok(
            url,
            "tasks",
            "submit",
            "command",
            "--settings",
            '{"shell": "make all", "env": {"A": "1"}}',
            "--setting",
            "cwd=/tmp",
            "--manager",  # the option wins over HERDER_MANAGER_URL
            url,
            "--json",
        ),
    )
    command_id = first.split()[1].rstrip(":")
    assert first == f"task {command_id}: queued, priority 0\n"
    frames: dict[str, Any] = json.loads(second)
    assert (frames["frame_start"], frames["frame_end"], frames["priority"]) == (1, 6, 5)
    assert frames["settings"]["chunk_size"] == 2  # a number: values are JSON when they parse
    assert (frames["tags"], frames["task_id"], frames["parser"]) == (["gpu"], 77, "frames")
    shell: dict[str, Any] = json.loads(third)
    assert shell["settings"] == {"shell": "make all", "env": {"A": "1"}, "cwd": "/tmp"}
    frames_id, shell_id = str(frames["id"]), str(shell["id"])

    listing, shown, shown_json = await asyncio.gather(
        ok(url, "tasks", "ls"),
        ok(url, "tasks", "show", frames_id),
        ok(url, "tasks", "show", command_id, "--json"),
    )
    rows = table(listing)
    assert rows[0] == TASKS_HEADER
    assert {tuple(r[:6]) for r in rows[1:]} == {
        (command_id, "queued", "0", "command", "-", "-"),
        (frames_id, "queued", "5", "frames", "-/1-6", "-"),
        (shell_id, "queued", "0", "command", "-", "-"),
    }
    assert all(r[6].endswith("s") for r in rows[1:])  # ages, in seconds
    lines = shown.splitlines()
    assert "status:    queued" in lines
    assert "tags:      gpu" in lines
    assert "task_id:   77" in lines
    items = table(shown.split("\n\n", 1)[1])
    assert items[0] == ["#", "LABEL", "STATUS", "WORKER", "ATTEMPT", "EXIT"]
    assert [r[1:] for r in items[1:]] == [
        ["frames 1-2", "queued", "-", "0", "-"],
        ["frames 3-4", "queued", "-", "0", "-"],
        ["frames 5-6", "queued", "-", "0", "-"],
    ]
    command_doc = json.loads(shown_json)
    assert command_doc["settings"] == {"argv": ["echo", "--not-an-option", "hi"]}
    assert len(command_doc["work_items"]) == 1

    # Each task changes in its own way, side by side.
    changed = await asyncio.gather(
        ok(url, "tasks", "pause", frames_id),
        ok(url, "tasks", "priority", command_id, "--", "-3"),
        ok(url, "tasks", "cancel", shell_id),
    )
    assert changed == [
        f"task {frames_id}: paused, priority 5\n",
        f"task {command_id}: queued, priority -3\n",
        f"task {shell_id}: canceled, priority 0\n",
    ]
    paused, refused, removed = await asyncio.gather(
        ok(url, "tasks", "ls", "--status", "paused", "--json"),
        herder(url, "tasks", "pause", shell_id),
        ok(url, "tasks", "rm", command_id),
    )
    assert [t["id"] for t in json.loads(paused)["tasks"]] == [frames["id"]]
    assert refused == (1, "", f"herder: 409: task {shell_id} is canceled: it cannot change (field: status)\n")
    assert removed == f"task {command_id}: deleted, priority -3\n"
    resumed, gone = await asyncio.gather(
        ok(url, "tasks", "resume", frames_id), herder(url, "tasks", "show", command_id)
    )
    assert resumed == f"task {frames_id}: queued, priority 5\n"
    assert gone == (1, "", f"herder: 404: no task with id {command_id} (field: id)\n")


async def test_workers_list_show_disable_enable(manager: Manager, client: httpx.AsyncClient) -> None:
    url = manager.url
    registration = {"hostname": "render-01", "system": "Linux", "slots": 2, "tags": ["linux", "gpu"]}
    answer = await client.post("/workers", json=registration)
    assert answer.status_code == 201
    worker_id = str(answer.json()["render-01"]["id"])
    listing, listing_json, shown, shown_json = await asyncio.gather(
        ok(url, "workers", "ls"),
        ok(url, "workers", "ls", "--json"),
        ok(url, "workers", "show", worker_id),
        ok(url, "workers", "show", worker_id, "--json"),
    )
    assert table(listing) == [
        ["ID", "HOSTNAME", "CONNECTION", "STATUS", "ACTIVITY", "CURRENT TASK", "SLOTS", "TAGS"],
        [worker_id, "render-01", "online", "enabled", "-", "-", "2", "linux,gpu"],
    ]
    assert json.loads(listing_json)["render-01"]["slots"] == 2
    assert "hostname: render-01" in shown.splitlines()
    assert "tags: linux, gpu" in shown.splitlines()
    detail = json.loads(shown_json)
    assert (str(detail["id"]), detail["system"], detail["status"]) == (worker_id, "Linux", "enabled")
    assert "update_frequent" in detail  # the seed's GET /workers/{id} fields are there too

    disabled, missing = await asyncio.gather(
        ok(url, "workers", "disable", worker_id), herder(url, "workers", "show", "999")
    )
    assert disabled == f"worker {worker_id} (render-01): disabled\n"
    assert missing == (1, "", "herder: 404: no worker with id 999 (field: id)\n")
    assert (await client.get("/workers")).json()["render-01"]["status"] == "disabled"
    # A disabled worker is handed nothing.
    await client.post("/tasks", json={"type": "command", "settings": {"argv": ["true"]}})
    claim = await client.patch(f"/workers/{worker_id}", json={"status": "available"})
    assert claim.json()["task_id"] is None
    assert await ok(url, "workers", "enable", worker_id) == f"worker {worker_id} (render-01): enabled\n"


async def test_bad_input_names_the_field_and_the_token_is_sent(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    async with make_manager(auth_token="s3cret") as manager:
        url = manager.url
        with_token = ("--token-file", str(token))
        frames = ("-s", "frame_start=10", "-s", "frame_end=5", "-s", "command=render {frame}")
        results = await asyncio.gather(
            herder(url, "tasks", "submit", "frames", *with_token, *frames),
            herder(url, "tasks", "submit", "command", *with_token, "--priority", "2000000", "--", "true"),
            herder(url, "tasks", "submit", "command", *with_token, "--tag", "no spaces", "--", "true"),
            herder(url, "tasks", "ls"),  # no token
            herder(url, "tasks", "ls", env={"HERDER_MANAGER_TOKEN_FILE": str(token)}),
        )
    for (code, out, err), field in zip(
        results[:3], ["settings.frame_end", "priority", "tags.0"], strict=True
    ):
        assert (code, out) == (1, "")
        assert err.startswith("herder: 422: "), err
        assert err.endswith(f"(field: {field})\n"), err
        assert len(err.splitlines()) == 1
    code, _, err = results[3]
    assert code == 1
    assert err.startswith("herder: 401: a valid 'Authorization: Bearer <token>' is required"), err
    code, out, err = results[4]
    assert (code, table(out)) == (0, [TASKS_HEADER])


async def test_errors_found_before_asking_the_manager() -> None:
    nowhere = "http://127.0.0.1:9"
    not_json, not_command, unreachable = await asyncio.gather(
        herder(nowhere, "tasks", "submit", "command", "--settings", "[1, 2]"),
        herder(nowhere, "tasks", "submit", "frames", "--", "render"),
        herder(nowhere, "workers", "ls"),
    )
    code, _, err = not_json
    assert code == 2
    assert "--settings" in err
    assert "must be a JSON object" in err
    code, _, err = not_command
    assert code == 2
    assert "for command tasks, not frames" in err
    code, _, err = unreachable
    assert code == 1
    assert err.startswith(f"herder: cannot reach {nowhere}/workers")


@pytest.fixture
async def linked(
    make_manager: ManagerFactory, make_agent: AgentFactory
) -> AsyncIterator[tuple[Manager, Agent]]:
    """A manager with an agent working for it."""
    async with make_manager() as manager:
        link = {"url": manager.url, "slots": 2, "name": "cli-agent"}
        async with make_agent(manager=link) as agent:
            assert agent.runtime is not None
            assert agent.runtime.worker is not None
            await asyncio.wait_for(agent.runtime.worker.connected.wait(), 20)
            yield manager, agent


async def test_logs_and_follow_with_a_working_agent(linked: tuple[Manager, Agent]) -> None:
    manager, _ = linked
    url = manager.url
    script = "for i in 1 2 3; do echo line $i; sleep 0.3; done; echo oops >&2"
    submitted, failing = await asyncio.gather(
        ok(url, "tasks", "submit", "command", "-s", f"shell={script}", "--json"),
        ok(url, "tasks", "submit", "command", "--max-attempts", "1", "-s", "shell=sleep 0.5; exit 3"),
    )
    task, failed = str(json.loads(submitted)["id"]), failing.split()[1].rstrip(":")
    # Followed from the start: every line once, progress on stderr (not a terminal: lines).
    (code, out, err), (failed_code, _, failed_err) = await asyncio.gather(
        herder(url, "tasks", "logs", "-f", task), herder(url, "tasks", "logs", "--follow", failed)
    )
    assert code == 0, err
    lines = out.splitlines()  # '[<label> #<attempt>] <line>', the label being the shell text
    assert [line.split(" #1] ", 1)[1] for line in lines] == ["line 1", "line 2", "line 3", "stderr: oops"]
    assert f"[herder] task {task}: completed, 1/1 items" in err.splitlines()
    assert failed_code == 1
    assert failed_err.splitlines()[-1].startswith(f"herder: task {failed} failed")
    # Without -f: what the manager kept, at once; tasks and workers show who ran them.
    logs, listing, workers, shown = await asyncio.gather(
        ok(url, "tasks", "logs", task),
        ok(url, "tasks", "ls"),
        ok(url, "workers", "ls"),
        ok(url, "tasks", "show", failed),
    )
    assert logs == out
    assert sorted(row[:6] for row in table(listing)[1:]) == sorted(
        [
            [failed, "failed", "0", "command", "-", "cli-agent"],
            [task, "completed", "0", "command", "-", "cli-agent"],
        ]
    )
    assert table(workers)[1][1:4] == ["cli-agent", "online", "enabled"]
    assert table(shown.split("\n\n", 1)[1])[1][2:] == ["failed", "cli-agent", "1", "3"]


def test_log_tail_prints_each_line_once() -> None:
    tail = LogTail()
    assert tail.new_lines("[a #1] x\n[b #1] y\n") == ["[a #1] x", "[b #1] y"]
    # New lines of the first piece arrive in the middle of the text.
    assert tail.new_lines("[a #1] x\n[a #1] x\n[b #1] y\n[b #1] z\n") == ["[a #1] x", "[b #1] z"]
    # A retry is a new group; the kept window of a long piece slides forward.
    assert tail.new_lines("[a #1] x\n[a #2] again\n[b #1] z\n[b #1] w\n") == ["[a #2] again", "[b #1] w"]
    assert tail.new_lines("[a #1] x\n[a #2] again\n[b #1] z\n[b #1] w\n") == []
