"""The worker view, in a real browser: a real manager, real agents linked to it, a real process.

An admin clicks a worker in the Fleet view and sees, inside the manager's page, what its
agent runs (asked over the agent's link to the manager): a process started before is
listed, one started while the view is open comes with the worker's next report, and the
agent's own page is linked for actions. A user is offered no worker view.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.browser.conftest import Fleet
from tests.browser.test_dashboard import open_page, shot, sign_in, signed_in
from tests.helpers import wait_http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def start_process(agent_url: str, token: str, app: str) -> None:
    """A process on the agent (through its API, with a token the manager issued)."""
    async with httpx.AsyncClient(base_url=agent_url, headers=bearer(token), timeout=30) as api:
        created = await api.post(
            "/create-process", json={"app": app, "node": "0", "command": ["sleep", "60"]}
        )
        assert created.status_code == 201, created.text
        await wait_http(api, f"/process-status/{app}.0", lambda d: d["state"] == "running")


async def test_an_admin_opens_a_worker_and_sees_its_processes(fleet: Fleet, browser: Any) -> None:
    page, errors, _ = await signed_in(fleet, browser)
    token = await page.evaluate("sessionStorage.getItem('herder.token')")
    agent = fleet.agents[0]
    await start_process(agent.url, token, "ticker")
    row = page.locator("#workers tr", has_text="render-1")
    await row.locator("a.worker-link").click()
    assert agent.runtime is not None
    assert agent.runtime.worker is not None
    assert page.url.endswith(f"#worker/{agent.runtime.worker.worker_id}")
    listed = page.locator("#worker-processes tr[data-slug='ticker.0'][data-state=running]")
    await listed.wait_for()
    assert "sleep 60" in (await listed.text_content() or "")
    assert await page.locator("#worker-processes-count").text_content() == "1 on this agent"
    await page.locator("#worker-pools td", has_text="No pools.").wait_for()
    await page.locator("#worker-sessions td", has_text="No sessions.").wait_for()
    link = page.locator("#worker-agent a.agent-ui")
    assert await link.get_attribute("href") == f"{agent.url}/ui/"
    assert await page.locator("h2").text_content() == "render-1"
    assert await page.locator("#nav a.current").text_content() == "Fleet"
    # Started while the view is open: it comes with one of the worker's next reports.
    await start_process(agent.url, token, "second")
    await page.locator("#worker-processes tr[data-slug='second.0']").wait_for()
    await shot(page, "worker")
    # The other worker runs nothing; back to the fleet by its link.
    await page.click("text=← Fleet")
    await page.locator("#workers tr", has_text="render-2").locator("a.worker-link").click()
    await page.locator("#worker-processes td", has_text="No processes.").wait_for()
    assert errors == []


async def test_a_user_is_offered_no_worker_view(fleet: Fleet, browser: Any) -> None:
    key, _ = await fleet.issue("bob", "user")
    page, errors = await open_page(browser, fleet.manager.url)
    await sign_in(page, key)
    await page.locator("#workers tr[data-connection=online]").nth(1).wait_for()
    assert await page.locator("#workers a.worker-link").count() == 0
    await page.evaluate("location.hash = '#worker/1'")
    await page.locator("p.error", has_text="Only an admin").wait_for()
    assert errors == []
