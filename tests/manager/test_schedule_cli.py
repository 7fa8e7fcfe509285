"""``herder schedules ...`` against a real manager, on both databases: the real binary."""

from __future__ import annotations

import json

from herder.manager.server import Manager
from tests.manager.test_task_cli import herder, ok, table


async def test_add_list_show_pause_resume_and_remove(manager: Manager) -> None:
    url = manager.url
    every = await ok(
        url, "schedules", "add", "--every", "5m", "--name", "sync", "command", "--", "echo", "hi"
    )
    cron = await ok(
        url,
        "schedules",
        "add",
        "--cron",
        "0 2 * * *",
        "--timezone",
        "Europe/Paris",
        "--overlap",
        "queue",
        "--catch-up",
        "one",
        "--json",
        "command",
        "--setting",
        "shell=date",
    )
    assert every.startswith("schedule 1 (sync): every 5m, next in ")
    doc = json.loads(cron)
    assert (doc["cron"], doc["timezone"], doc["overlap"], doc["catch_up"]) == (
        "0 2 * * *",
        "Europe/Paris",
        "queue",
        "one",
    )
    assert doc["task"]["settings"] == {"shell": "date"}
    rows = table(await ok(url, "schedules", "ls"))
    assert rows[0] == ["ID", "NAME", "WHEN", "OVERLAP", "NEXT", "LAST", "RUNS", "SKIPPED"]
    assert rows[1][:4] == ["1", "sync", "every 5m", "skip"]
    assert rows[2][2:4] == ["cron 0 2 * * * (Europe/Paris)", "queue"]
    shown = await ok(url, "schedules", "show", str(doc["id"]))
    assert "when:      cron 0 2 * * * (Europe/Paris)" in shown
    assert "RUN AT" in shown
    assert "paused" in await ok(url, "schedules", "pause", "1")
    assert table(await ok(url, "schedules", "ls"))[1][4] == "paused"
    assert "next in" in await ok(url, "schedules", "resume", "1")
    assert await ok(url, "schedules", "rm", "1") == "schedule 1 removed\n"
    listed = json.loads(await ok(url, "schedules", "ls", "--json"))
    assert [s["id"] for s in listed["schedules"]] == [doc["id"]]


async def test_errors_name_the_field_or_the_option(manager: Manager) -> None:
    url = manager.url
    code, _, err = await herder(url, "schedules", "add", "--cron", "0 25 * * *", "command", "--", "true")
    assert code == 1
    assert "422" in err
    assert "(field: cron)" in err
    code, _, err = await herder(
        url, "schedules", "add", "--every", "1m", "--timezone", "Mars/Base", "command", "--", "true"
    )
    assert code == 1
    assert "(field: timezone)" in err
    code, _, err = await herder(url, "schedules", "add", "--every", "1m", "command")
    assert code == 1
    assert "(field: task.settings.argv)" in err
    code, _, err = await herder(url, "schedules", "add", "command", "--", "true")
    assert code == 2
    assert "--cron" in err
    code, _, err = await herder(url, "schedules", "show", "7")
    assert code == 1
    assert "404" in err
