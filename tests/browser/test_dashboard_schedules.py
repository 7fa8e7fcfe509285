"""The dashboard's Schedules view (#18) in a real browser against a real manager.

A user's schedule is listed with its next run, then its last run and the task it
submitted (it runs every second on the real clock); Pause, Resume and Delete act on it;
another user's tab does not list it.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.browser.conftest import Fleet
from tests.browser.test_dashboard import open_page, shot, sign_in
from tests.manager.keyed import bearer, buy


async def test_schedules_are_listed_paused_resumed_and_deleted(keyed_manager: Fleet, browser: Any) -> None:
    key, _ = await keyed_manager.issue("ann", "user")
    async with httpx.AsyncClient(base_url=keyed_manager.manager.url) as client:
        token = (await buy(client, key)).json()["token"]
        body = {
            "name": "nightly",
            "interval_s": 1,
            "task": {"type": "command", "settings": {"argv": ["true"]}},
        }
        made = (await client.post("/schedules", json=body, headers=bearer(token))).json()
    page, errors = await open_page(browser, keyed_manager.manager.url)
    await sign_in(page, key)
    await page.click("#nav a[data-view=schedules]")
    row = page.locator(f"#schedules tr[data-schedule='{made['id']}']")
    await row.wait_for()
    assert "nightly" in (await row.text_content() or "")
    assert "every 1 s" in (await row.text_content() or "")
    # No worker runs it, so the first task stays queued and the next runs are skipped: the
    # last run names the first task, a link to its page.
    await row.locator("a.last-task").wait_for()
    await shot(page, "schedules")
    await row.locator("button.pause").click()
    await page.locator(f"#schedules tr[data-schedule='{made['id']}'][data-enabled=false]").wait_for()
    assert await row.locator(".badge").text_content() == "paused"
    await row.locator("button.resume").click()
    await page.locator(f"#schedules tr[data-schedule='{made['id']}'][data-enabled=true]").wait_for()
    task_link = await row.locator("a.last-task").get_attribute("href")
    assert task_link is not None
    assert task_link.startswith("#tasks/")
    page.on("dialog", lambda dialog: dialog.accept())
    await row.locator("button.delete").click()
    await row.wait_for(state="detached")
    await page.locator("#schedules td.muted", has_text="No schedules.").wait_for()
    assert errors == []

    other_key, _ = await keyed_manager.issue("bob", "user")
    async with httpx.AsyncClient(base_url=keyed_manager.manager.url) as client:
        token = (await buy(client, key)).json()["token"]
        kept = (await client.post("/schedules", json=body, headers=bearer(token))).json()
    other, other_errors = await open_page(browser, keyed_manager.manager.url)
    await sign_in(other, other_key)
    await other.click("#nav a[data-view=schedules]")
    await other.locator("#schedules td.muted", has_text="No schedules.").wait_for()
    assert await other.locator(f"#schedules tr[data-schedule='{kept['id']}']").count() == 0
    assert other_errors == []
