"""The agent's own page (its /ui/) in a real browser against a real agent with a token.

Signing in with the agent's token (a wrong one refused), the process list following
creations and deletions made through the API over WS /events, a process's console
showing its lines as they are written, and a pool scaled, drained and resumed from the
page. ``HERDER_UI_SCREENSHOTS=docs/img`` saves the pictures docs/ui.md shows.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from herder.agent import Agent
from tests.browser.conftest import Fleet
from tests.browser.test_dashboard import open_page, shot, sign_in
from tests.conftest import AgentFactory
from tests.helpers import wait_http

TOKEN = "agent-dashboard-secret"
TICKER = "import time\nfor n in range(100000):\n    print('tick', n, flush=True)\n    time.sleep(0.1)"


@pytest.fixture
async def agent(make_agent: AgentFactory) -> AsyncIterator[Agent]:
    async with make_agent(auth_token=TOKEN) as running:
        yield running


@pytest.fixture
async def api(agent: Agent) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=agent.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as client:
        yield client


async def signed_in(agent: Agent, browser: Any) -> tuple[Any, list[str]]:
    page, errors = await open_page(browser, agent.url)
    await page.locator("#agent-token").fill(TOKEN)
    await page.click("#signin button[type=submit]")
    await page.locator(".live.on").wait_for()
    return page, errors


def faults(errors: list[str]) -> list[str]:
    """Console errors but the 401 that shows a tab without a token the sign-in form."""
    return [e for e in errors if "status of 401" not in e]


async def test_a_wrong_token_is_refused_and_the_list_follows_the_api(
    agent: Agent, api: httpx.AsyncClient, browser: Any
) -> None:
    page, errors = await open_page(browser, agent.url)
    await page.locator("#agent-token").wait_for()
    await shot(page, "agent-signin")
    await page.locator("#agent-token").fill("not-the-token")
    await page.click("#signin button[type=submit]")
    await page.locator("#signin-error", has_text="refused").wait_for()
    assert await page.evaluate("sessionStorage.getItem('herder.token')") is None
    await page.locator("#agent-token").fill(TOKEN)
    await page.click("#signin button[type=submit]")
    await page.locator(".live.on").wait_for()
    assert await page.evaluate("sessionStorage.getItem('herder.token')") == TOKEN
    assert await page.evaluate("document.cookie") == ""
    created = await api.post("/create-process", json={"app": "live", "node": "web.0", "command": "sleep 60"})
    assert created.status_code == 201
    row = page.locator("#processes tr[data-slug='live.web.0'][data-state=running]")
    await row.wait_for()
    assert await row.locator("td.pid").text_content() == str(
        (await api.get("/process-status/live.web.0")).json()["pid"]
    )
    # Its uptime, counted on in the page from started_at (Unix seconds): "3 s", never "NaN s".
    await row.locator("td.uptime", has_text=re.compile(r"^\d+ s$")).wait_for()
    assert (await api.post("/delete-process/live.web.0")).status_code == 200
    await page.locator("#processes tr[data-slug='live.web.0']").wait_for(state="detached")
    # And from the page: Delete (confirmed) stops it and forgets it.
    assert (
        await api.post("/create-process", json={"app": "live", "node": "web.1", "command": "sleep 60"})
    ).status_code == 201
    page.on("dialog", lambda dialog: dialog.accept())
    await page.locator("#processes tr[data-slug='live.web.1'] button.delete").click()
    await page.locator("#processes tr[data-slug='live.web.1']").wait_for(state="detached")
    assert (await api.get("/process-status/live.web.1")).status_code == 404
    assert faults(errors) == []


async def test_a_console_shows_lines_as_they_are_written(
    agent: Agent, api: httpx.AsyncClient, browser: Any
) -> None:
    created = await api.post(
        "/create-process", json={"app": "ticker", "node": "0", "command": ["python3", "-c", TICKER]}
    )
    assert created.status_code == 201
    await api.post("/create-process", json={"app": "idle", "node": "0", "command": "sleep 60"})
    page, errors = await signed_in(agent, browser)
    await page.locator("#processes tr[data-slug='ticker.0'] button.console").click()
    line = page.locator("#console-log div")
    await line.first.wait_for()
    seen = max(
        int(m) for m in re.findall(r"tick (\d+)", await page.locator("#console-log").text_content() or "")
    )
    # A line written after the console opened, some 0.5 s later: it came live.
    await page.locator("#console-log div", has_text=re.compile(rf"^tick {seen + 5}$")).wait_for()
    await page.locator("#console-state", has_text="live").wait_for()
    await shot(page, "agent-processes")
    assert (await api.post("/delete-process/ticker.0")).status_code == 200
    await page.locator("#console-state", has_text="deleted").wait_for()  # the agent closed it
    assert faults(errors) == []


async def test_a_pool_is_scaled_drained_and_resumed_from_the_page(
    agent: Agent, api: httpx.AsyncClient, browser: Any
) -> None:
    spec = {"name": "site", "command": "python3 -m http.server {port} --bind 127.0.0.1", "max_instances": 3}
    assert (await api.post("/pools", json=spec)).status_code == 201
    page, errors = await signed_in(agent, browser)
    await page.click("#nav a[data-view=pools]")
    card = page.locator(".pool[data-pool=site]")
    await card.locator("td", has_text="No instance runs").wait_for()
    await card.locator("input.min").fill("2")
    await card.locator("button", has_text="Scale").click()
    ready = card.locator("tr[data-instance][data-state=ready]")
    await ready.nth(1).wait_for()
    assert (await api.get("/pools/site")).json()["spec"]["min_instances"] == 2
    await shot(page, "agent-pools")
    await card.locator("button.drain").click()
    await page.locator(".pool[data-pool=site][data-state=drained]").wait_for()
    await card.locator("button.resume").click()
    await page.locator(".pool[data-pool=site][data-state=active]").wait_for()
    await ready.nth(1).wait_for()  # the minimum again
    await card.locator("input.max").fill("1")
    await card.locator("button", has_text="Scale").click()
    await page.locator("#pools-error", has_text="min_instances").wait_for()  # the 422, with its field
    assert [e for e in faults(errors) if "status of 422" not in e] == []


async def test_a_process_is_stopped_started_and_restarted_from_the_page(
    agent: Agent, api: httpx.AsyncClient, browser: Any
) -> None:
    created = await api.post("/create-process", json={"app": "ops", "node": "0", "command": "exec sleep 300"})
    assert created.status_code == 201
    page, errors = await signed_in(agent, browser)
    row = page.locator("#processes tr[data-slug='ops.0']")
    running = page.locator("#processes tr[data-slug='ops.0'][data-state=running]")
    await running.wait_for()
    first_pid = (await api.get("/process-status/ops.0")).json()["pid"]
    await row.locator("td.pid", has_text=str(first_pid)).wait_for()
    await row.locator("td.rss", has_text="iB").wait_for()  # the figures of a ps
    await row.locator("button.stop").click()
    await page.locator("#processes tr[data-slug='ops.0'][data-state=stopped]").wait_for()
    assert await row.locator("td.pid").text_content() == "\u2013"
    assert await row.locator("td.cpu").text_content() == "\u2013"
    assert (await api.get("/process-status/ops.0")).json()["state"] == "stopped"
    await shot(page, "agent-process-stopped")
    await row.locator("button.start").click()
    await running.wait_for()
    second_pid = (await api.get("/process-status/ops.0")).json()["pid"]
    assert second_pid != first_pid
    await row.locator("td.pid", has_text=str(second_pid)).wait_for()
    await row.locator("button.restart").click()
    # The restart's new process, shown as the feed brings it (no reload, no polling).
    third_pid = (await wait_http_doc(api, "/process-status/ops.0", second_pid))["pid"]
    await row.locator("td.pid", has_text=str(third_pid)).wait_for()
    await running.wait_for()
    await row.locator("button.start").wait_for(state="detached")  # running: Stop, not Start
    assert faults(errors) == []


async def wait_http_doc(api: httpx.AsyncClient, path: str, old_pid: int) -> dict[str, Any]:
    """The status document once it runs a process other than ``old_pid``."""
    return await wait_http(api, path, lambda d: d["state"] == "running" and d["pid"] != old_pid)


async def test_the_sessions_are_listed_live(make_agent: AgentFactory, browser: Any) -> None:
    from herder.client import Agent as Client
    from tests.test_sessions import session_config

    async with make_agent(auth_token=TOKEN, **session_config()) as agent:
        page, errors = await signed_in(agent, browser)
        await page.click("#nav a[data-view=sessions]")
        await page.locator("#sessions td", has_text="No sessions.").wait_for()
        async with Client(agent.url, token=TOKEN) as client:
            session = await client.open_session("testkit")
            row = page.locator(f"#sessions tr[data-session='{session.id}'][data-state=open]")
            await row.wait_for()
            assert await row.locator("td.product").text_content() == "testkit"
            assert await row.locator("td.client").text_content() == "attached"
            await shot(page, "agent-sessions")
            await session.close()
            await page.locator("#sessions td", has_text="No sessions.").wait_for()
        assert faults(errors) == []


async def test_a_pools_cold_starts_are_shown(agent: Agent, api: httpx.AsyncClient, browser: Any) -> None:
    spec = {
        "name": "cold",
        "command": "python3 -m http.server {port} --bind 127.0.0.1",
        "listen": "127.0.0.1:0",
    }
    created = await api.post("/pools", json=spec)
    assert created.status_code == 201
    page, errors = await signed_in(agent, browser)
    await page.click("#nav a[data-view=pools]")
    card = page.locator(".pool[data-pool=cold]")
    await card.locator(".cold-starts", has_text="0 cold starts").wait_for()
    async with httpx.AsyncClient(base_url=created.json()["url"], timeout=30) as through:
        assert (await through.get("/")).status_code == 200
    await card.locator(".cold-starts", has_text="1 cold start").wait_for()
    assert faults(errors) == []


async def test_the_fleet_links_each_worker_to_its_agents_page(fleet: Fleet, browser: Any) -> None:
    key, _ = await fleet.issue("alice")
    page, errors = await open_page(browser, fleet.manager.url)
    await sign_in(page, key)
    for agent in fleet.agents:
        link = page.locator(f"#workers a.agent-ui[href='{agent.url}/ui/']")
        await link.wait_for()
        assert await link.get_attribute("rel") == "noopener noreferrer"
    assert errors == []
