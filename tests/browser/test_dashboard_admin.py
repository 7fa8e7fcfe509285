"""The dashboard's admin views and the rest of its task list, in a real browser.

An admin issues a key in the Keys view, another browser (a second context: a profile of
its own) signs in with it and is signed out when the admin revokes it; a user is not
offered the view. An ended task is requeued and its new page opens; the counts follow
the owner and tag filters; a deletion leaves every tab; a command's percent moves its
bar; a tab renews its token before it expires.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from herder.auth import init_keys
from herder.manager.config import ManagerConfig
from herder.manager.server import Manager
from tests.browser.conftest import CHROMIUM_ARGS, TIMEOUT_MS, Fleet
from tests.browser.test_dashboard import open_page, shot, sign_in, signed_in


@pytest.fixture
async def chromium_browser(chromium: Path) -> AsyncIterator[Any]:
    """Debian's chromium, in which each test opens contexts of its own (separate profiles:
    no storage shared), closed with its process after the test."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def new_context(browser: Any) -> Any:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    return context


@pytest.fixture
async def short_tokens(tmp_path: Path) -> AsyncIterator[Fleet]:
    """A manager with keys on whose access tokens live 5 s (``token_ttl_s``)."""
    init_keys(tmp_path / "manager")
    config = ManagerConfig.model_validate({"port": 0, "data_dir": tmp_path / "manager", "token_ttl_s": 5})
    async with Manager(config) as manager:
        yield Fleet(manager, [])


def token_of(page: Any) -> Any:
    return page.evaluate("sessionStorage.getItem('herder.token')")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_admin_issues_a_key_and_revoking_it_signs_its_holder_out(
    keyed_manager: Fleet, chromium_browser: Any
) -> None:
    admins, holders = await new_context(chromium_browser), await new_context(chromium_browser)
    page, errors, _ = await signed_in(keyed_manager, admins, "root", "admin")
    page.on("dialog", lambda dialog: dialog.accept())  # the revocation's confirmation
    await page.click("#nav a[data-view=keys]")
    await page.locator("#keys tr[data-user=root]").wait_for()  # the admin's own key is listed
    await page.fill("#key-user", "carol")
    await page.select_option("#key-role", "user")
    await page.click("#issue button[type=submit]")
    secret = page.locator("#issued-key")
    await secret.wait_for()
    key = await secret.input_value()
    assert key.count(".") == 2
    assert "shown only once" in (await page.locator("#issued").text_content() or "")
    await page.click("#copy-key")
    await page.locator("#issued-copied:not(:empty)").wait_for()
    row = page.locator("#keys tr[data-user=carol]")
    await row.wait_for()
    assert key not in (await page.locator("#keys").text_content() or "")  # listed by id, never the key
    await shot(page, "keys")
    # Another browser signs in with it: a user, who is not offered the keys.
    other, other_errors = await open_page(holders, keyed_manager.manager.url)
    await sign_in(other, key)
    assert await other.locator("#who").text_content() == "carol (user)"
    assert await other.locator("#nav a[data-view=keys]").is_hidden()
    await other.goto(keyed_manager.manager.url + "/ui/#keys")
    await other.locator("#workers").wait_for()  # the fleet instead
    async with httpx.AsyncClient(base_url=keyed_manager.manager.url) as client:
        refused = await client.get("/auth/keys", headers=bearer(await token_of(other)))
        assert refused.status_code == 403  # and the manager refuses anyway
    await other.locator(".live.on").wait_for()
    # The admin revokes it: the other browser is signed out.
    await row.locator("button.revoke").click()
    await row.locator(".badge", has_text="revoked").wait_for()
    assert await row.locator("button.revoke").count() == 0
    await other.locator("#signed-out").wait_for()
    assert "revoked" in (await other.locator("#signed-out").text_content() or "")
    assert await token_of(other) is None
    assert errors == []
    assert [e for e in other_errors if "401" not in e] == []


async def test_counts_follow_the_filters_a_task_is_requeued_and_a_deletion_leaves_every_tab(
    keyed_manager: Fleet, chromium_browser: Any
) -> None:
    manager = keyed_manager.manager
    context = await new_context(chromium_browser)
    page, errors, _ = await signed_in(keyed_manager, context, "root", "admin")
    watcher, watcher_errors, _ = await signed_in(keyed_manager, context, "root", "admin")  # another tab
    token = await token_of(page)
    async with httpx.AsyncClient(base_url=manager.url, headers=bearer(token)) as client:

        async def submit(tag: str) -> int:
            body = {"type": "command", "settings": {"shell": "true"}, "tags": [tag]}  # no worker: it waits
            answer = await client.post("/tasks", json=body)
            assert answer.status_code == 202, answer.text
            task_id: int = answer.json()["id"]
            return task_id

        first = await submit("gpu")
        assert (await client.patch(f"/tasks/{first}", json={"status": "canceled"})).status_code == 204
        for _ in range(2):
            await submit("cpu")  # counted under no filter, never under the gpu one
        await page.click("#nav a[data-view=tasks]")
        await page.locator(".live.on").wait_for()
        every = page.locator("#status-filter option[value='']")
        await page.locator("#status-filter option[value='']", has_text="(3)").wait_for(state="attached")
        await page.fill("#tag-filter", "gpu")
        await page.press("#tag-filter", "Enter")
        await page.locator("#status-filter option[value='']", has_text="(1)").wait_for(state="attached")
        assert await page.locator("#status-filter option[value=canceled]").text_content() == "canceled (1)"
        assert await page.locator("#status-filter option[value=queued]").text_content() == "queued (0)"
        # Live: a gpu task is counted under the filter (ignoring it would say 4).
        second = await submit("gpu")
        await page.locator(f"#tasks tr[data-task='{second}']").wait_for()
        await page.locator("#status-filter option[value='']", has_text="(2)").wait_for(state="attached")
        assert await page.locator("#status-filter option[value=queued]").text_content() == "queued (1)"
        await page.fill("#owner-filter", "nobody")
        await page.press("#owner-filter", "Enter")
        await page.locator("#status-filter option[value='']", has_text="(0)").wait_for(state="attached")
        await page.fill("#owner-filter", "root")
        await page.fill("#tag-filter", "")
        await page.press("#tag-filter", "Enter")
        await page.locator("#status-filter option[value='']", has_text="(4)").wait_for(state="attached")
        assert await every.text_content() == "every status (4)"
        # Requeue the canceled task: a new one, whose page opens.
        await page.locator(f"#tasks tr[data-task='{first}'] button.requeue").click()
        await page.wait_for_function(
            "old => /^#tasks\\/\\d+$/.test(location.hash) && location.hash !== old", arg=f"#tasks/{first}"
        )
        again = int((await page.evaluate("location.hash")).split("/")[1])
        assert again > second
        await page.locator("#task-status", has_text="queued").wait_for()
        assert await page.locator("#task .requeue").count() == 0  # not ended: not offered
        # Another tab lists it; deleted (by anyone), it leaves that tab's list and this page.
        await watcher.click("#nav a[data-view=tasks]")
        listed = watcher.locator(f"#tasks tr[data-task='{again}']")
        await listed.wait_for()
        await watcher.locator(".live.on").wait_for()
        assert (await client.delete(f"/tasks/{again}")).status_code == 202
        await listed.wait_for(state="detached")
        await page.locator("#task-status", has_text="deleted").wait_for()
        assert (await client.get(f"/tasks/{again}")).status_code == 404
    # The page may have been reading the task (a change told just before) when it went: that
    # read's 404, which the browser logs, is the page learning of the deletion, not a fault.
    assert [e for e in errors if not ("404" in e and e.endswith(f"/tasks/{again}]"))] == []
    assert watcher_errors == []


async def test_a_commands_percent_moves_its_bar(fleet: Fleet, browser: Any) -> None:
    page, errors, _ = await signed_in(fleet, browser)
    await page.click("#nav a[data-view=tasks]")
    await page.locator(".live.on").wait_for()
    async with httpx.AsyncClient(base_url=fleet.manager.url, headers=bearer(await token_of(page))) as client:
        shell = "echo step 1 of 4: 25%; sleep 0.3; echo 50% done; sleep 60"
        body = {"type": "command", "parser": "percent", "settings": {"shell": shell}}
        task = (await client.post("/tasks", json=body)).json()
        row = page.locator(f"#tasks tr[data-task='{task['id']}']")
        await row.locator("[role=progressbar][aria-valuenow='50']").wait_for(timeout=30_000)
        assert await row.locator("[role=progressbar] em").text_content() == "50%"
        await row.locator("a").click()  # its page measures the same from its item
        await page.locator("#task [role=progressbar][aria-valuenow='50']").wait_for()
        assert (await client.patch(f"/tasks/{task['id']}", json={"status": "canceled"})).status_code == 204
    assert errors == []


async def test_a_tab_renews_its_token_before_it_expires(short_tokens: Fleet, browser: Any) -> None:
    page, errors, key_id = await signed_in(short_tokens, browser, "alice", "user")
    seen = [await token_of(page)]
    for _ in range(2):  # renewed at 4 s of each 5 s token: twice in about 8 s
        await page.wait_for_function(
            "held => sessionStorage.getItem('herder.token') !== held", arg=seen[-1], timeout=15_000
        )
        seen.append(await token_of(page))
    claims = [json.loads(_b64(token.split(".")[1])) for token in seen]
    assert [c["sub"] for c in claims] == ["alice"] * 3
    assert [c["role"] for c in claims] == ["user"] * 3
    assert claims[0]["exp"] < claims[2]["exp"]
    assert len({c["key"] for c in claims}) == 1  # the same key's
    async with httpx.AsyncClient(base_url=short_tokens.manager.url) as client:
        assert (await client.get("/tasks", headers=bearer(seen[-1]))).status_code == 200
    await page.locator("#nav").wait_for()
    assert await page.locator("#signin").count() == 0
    # Revoked: the tab is signed out, and none of its tokens is renewed again.
    await short_tokens.revoke(key_id)
    await page.locator("#signed-out").wait_for()
    async with httpx.AsyncClient(base_url=short_tokens.manager.url) as client:
        refused = await client.post("/auth/token/renew", headers=bearer(seen[-1]))
        assert refused.status_code == 401
    assert [e for e in errors if "401" not in e] == []


def _b64(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
