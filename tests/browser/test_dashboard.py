"""The dashboard in a real browser against a real manager with two real agents.

Signing in with a key, both workers live with their figures, a frames task followed to
100% with no page polling (the progress comes over WS /events), and a revoked key
signed out. The page must run under its CSP without a single console error.

``HERDER_UI_SCREENSHOTS=docs/img`` saves a picture of each view (docs/ui.md shows them).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import TimeoutError as PlaywrightTimeout

from herder.rpc import dial
from herder.rpc.client import connect
from herder.rpc.discovery import manager_rpc_url
from tests.browser.conftest import Fleet
from tests.helpers import poll

SHOTS = os.environ.get("HERDER_UI_SCREENSHOTS")


async def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A page of the dashboard, with the console errors (CSP violations among them) it logs."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on(
        "console",
        lambda m: errors.append(f"{m.text} [{m.location.get('url', '')}]") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: errors.append(str(e)))
    answer = await page.goto(url + "/ui/")
    assert answer is not None
    assert answer.status == 200
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert answer.headers["x-content-type-options"] == "nosniff"
    return page, errors


async def sign_in(page: Any, key: str) -> None:
    await page.locator("#signin").wait_for()
    await shot(page, "signin")
    await page.fill("#key", key)
    await page.click("#signin button[type=submit]")
    await page.locator("#nav").wait_for()


async def signed_in(
    fleet: Fleet, browser: Any, user: str = "alice", role: str = "admin"
) -> tuple[Any, list[str], str]:
    """A page signed in with a fresh key of ``user``; its console errors, and the key's id."""
    key, key_id = await fleet.issue(user, role)
    page, errors = await open_page(browser, fleet.manager.url)
    await sign_in(page, key)
    return page, errors, key_id


async def shot(page: Any, name: str) -> None:
    if SHOTS:
        await page.screenshot(path=str(Path(SHOTS) / f"ui-{name}.png"), full_page=True)


async def test_sign_in_and_see_both_workers_live(fleet: Fleet, browser: Any) -> None:
    page, errors, _ = await signed_in(fleet, browser)
    assert await page.locator("#who").text_content() == "alice (admin)"
    # Only the token is kept, in this tab's sessionStorage; no cookie at all.
    stored = await page.evaluate("sessionStorage.getItem('herder.token')")
    assert stored
    assert stored.count(".") == 2  # an access token (the key is not kept: nothing else is)
    assert await page.evaluate("Object.keys(sessionStorage).length + localStorage.length") == 1
    assert await page.evaluate("document.cookie") == ""
    online = page.locator("#workers tr[data-connection=online]")
    await online.nth(1).wait_for()
    assert await online.count() == 2
    for host in ("render-1", "render-2"):
        row = page.locator("#workers tr", has_text=host)
        await row.locator("svg.spark polyline").wait_for()  # heartbeats arriving: the sparkline grows
        assert "/ 2" in (await row.locator("td.slots").text_content() or "")
    await page.locator(".live.on").wait_for()
    await shot(page, "fleet")
    # An admin disables a worker (no new work for it) and enables it again.
    first = page.locator("#workers tr", has_text="render-1")
    await first.locator("button.switch[data-wanted=disabled]").click()
    await first.locator(".badge", has_text="disabled").wait_for()
    await first.locator("button.switch[data-wanted=enabled]").click()
    await first.locator(".badge", has_text="online").wait_for()
    assert errors == []


async def test_a_frames_task_is_followed_live_to_100_percent(fleet: Fleet, browser: Any) -> None:
    page, errors, _ = await signed_in(fleet, browser)
    await page.click("#nav a[data-view=tasks]")
    await page.locator("#submit").wait_for()
    await page.locator(".live.on").wait_for()
    reloads: list[str] = []
    page.on("request", lambda r: reloads.append(r.url) if "/tasks?" in r.url else None)
    await page.fill("#submit-command", "echo Fra:{frame}; sleep 0.4")
    await page.fill("#submit-start", "1")
    await page.fill("#submit-end", "8")
    await page.fill("#submit-chunk", "2")
    await page.click("#submit button[type=submit]")
    row = page.locator("#tasks tr[data-task]").first
    await row.wait_for()
    if SHOTS:  # a picture while it renders (a pass may see it only completed: not a failure)
        with contextlib.suppress(PlaywrightTimeout):
            await page.locator("#tasks tr[data-status=rendering]").first.wait_for(timeout=5_000)
        await shot(page, "tasks")
    done = page.locator("#tasks tr[data-status=completed]")
    await done.wait_for(timeout=30_000)
    bar = done.locator("[role=progressbar]")
    assert await bar.get_attribute("aria-valuenow") == "100"
    assert await bar.locator("em").text_content() == "100%"
    assert reloads == []  # no polling: every change came over WS /events
    completed = page.locator("#status-filter option[value=completed]", has_text="completed (1)")
    await completed.wait_for(state="attached")  # the counts follow the changes
    # Its page: the pieces, each done, and the output of every frame.
    await done.locator("a").click()
    await page.locator("#items tr[data-status=completed]").nth(3).wait_for()
    assert await page.locator("#task [role=progressbar]").get_attribute("aria-valuenow") == "100"
    await page.locator("#log-state", has_text="ended").wait_for()
    log = await page.locator("#log").text_content() or ""
    assert [f"Fra:{n}" in log for n in range(1, 9)] == [True] * 8
    await shot(page, "task")
    assert errors == []


async def test_a_waiting_task_says_why_and_is_paused_resumed_and_canceled(fleet: Fleet, browser: Any) -> None:
    page, errors, _ = await signed_in(fleet, browser)
    async with httpx.AsyncClient(base_url=fleet.manager.url) as client:
        token = await page.evaluate("sessionStorage.getItem('herder.token')")
        body = {"type": "command", "settings": {"shell": "true"}, "tags": ["gpu"]}  # no worker offers it
        headers = {"Authorization": f"Bearer {token}"}
        task = (await client.post("/tasks", json=body, headers=headers)).json()
        await page.goto(f"{fleet.manager.url}/ui/#tasks/{task['id']}")
        await page.locator("#waiting").wait_for()
        assert "gpu" in (await page.locator("#waiting").text_content() or "")
        await page.fill("#priority", "7")
        await page.click("#priority-form button")

        async def priority_is_7() -> bool:
            answer = await client.get(f"/tasks/{task['id']}", headers=headers)
            return bool(answer.json()["priority"] == 7)

        await poll(priority_is_7)
    await page.click("#task .act-pause")
    await page.locator("#task-status", has_text="paused").wait_for()
    await page.click("#task .act-resume")
    await page.locator("#task-status", has_text="queued").wait_for()
    await page.click("#task .act-cancel")
    await page.locator("#task-status", has_text="canceled").wait_for()
    assert await page.locator("#task .act-cancel").count() == 0  # an ended task offers nothing
    # The list, filtered by tag and owner (asked of the manager).
    await page.click("#nav a[data-view=tasks]")
    rows = page.locator("#tasks tr[data-task]")
    await rows.first.wait_for()
    await page.fill("#tag-filter", "cpu")
    await page.press("#tag-filter", "Enter")
    await page.locator("#tasks td", has_text="No tasks.").wait_for()
    await page.fill("#tag-filter", "gpu")
    await page.fill("#owner-filter", "alice")
    await page.press("#owner-filter", "Enter")
    await rows.first.wait_for()
    assert await rows.count() == 1
    assert errors == []


async def test_a_revoked_key_is_signed_out(fleet: Fleet, browser: Any) -> None:
    page, errors, key_id = await signed_in(fleet, browser, "bob", "user")
    await page.locator("#workers tr[data-connection=online]").first.wait_for()
    await page.locator(".live.on").wait_for()
    assert await page.locator("button.switch").count() == 0  # a user is not offered what needs an admin
    await fleet.revoke(key_id)
    await page.locator("#signed-out").wait_for()
    assert "revoked" in (await page.locator("#signed-out").text_content() or "")
    assert await page.evaluate("sessionStorage.getItem('herder.token')") is None
    # 401s are what signing out is made of; anything else logged would be a fault.
    assert [e for e in errors if "401" not in e] == []


async def test_services_come_and_go_live(keyed_manager: Fleet, browser: Any) -> None:
    manager = keyed_manager.manager
    page, errors, _ = await signed_in(keyed_manager, browser, "alice", "user")
    await page.click("#nav a[data-view=services]")
    await page.locator("#services-state", has_text="live").wait_for()
    token = await page.evaluate("sessionStorage.getItem('herder.token')")
    service = "/alice/dev/page/1.0.0/eu/tab/page-1"
    async with connect(manager_rpc_url(manager.url), token=token) as link:
        await link.call("register_service", service, None, {"title": "a tab"}, 0)
        row = page.locator("#services tr", has_text=service)
        await row.wait_for()
        assert "relayed" in (await row.text_content() or "")
        await shot(page, "services")
    await row.wait_for(state="detached")  # its link closed: it went, and the page saw it go
    assert errors == []


async def test_a_python_service_calls_the_tab_and_it_is_shown(keyed_manager: Fleet, browser: Any) -> None:
    """The tab is a service (the browser kite): registered without a URL, reached through
    the manager's relay, and what it is called with is shown."""
    page, errors, _ = await signed_in(keyed_manager, browser, "alice", "user")
    await page.locator("#kite", has_text="tab ").wait_for()
    caller, _ = await keyed_manager.issue("alice", "user")
    async with dial("/alice/ui/dashboard", manager=keyed_manager.manager.url, key=caller) as tab:
        assert await tab.call("alert", "frames 1-8 rendered", "render-1") == "shown"
    note = page.locator("#notes .note", has_text="frames 1-8 rendered")
    await note.wait_for()
    assert "render-1" in (await note.text_content() or "")
    await shot(page, "kite")
    await note.locator("button.close").click()
    await note.wait_for(state="detached")
    assert errors == []
