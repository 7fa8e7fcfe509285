"""``/docs`` and ``/redoc`` load nothing from another origin, and render in a real browser.

FastAPI's own pages took their script from jsDelivr and fonts from Google: blank on a
host without internet. The pages, their assets and ``/openapi.json`` are public (a
browser cannot send a token with a page load); everything else still needs a token.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from herder.agent import Agent
from herder.ui.apidocs import ASSET_TYPES
from tests.browser.conftest import Fleet
from tests.conftest import AgentFactory

FOREIGN = ("cdn.jsdelivr.net", "fonts.googleapis.com", "unpkg.com", "https://", "http://")


async def check_pages(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for page in ("/docs", "/redoc"):
            answer = await client.get(page)
            assert answer.status_code == 200, (page, answer.text)
            assert answer.headers["content-type"].startswith("text/html")
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
            for foreign in FOREIGN:
                assert foreign not in answer.text, (page, foreign)
            assert "/docs/assets/" in answer.text
        for name, kind in ASSET_TYPES.items():
            asset = await client.get(f"/docs/assets/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["content-type"] == kind
            assert len(asset.content) > 1000
        # Only the listed files: anything else is no public path (401 with a token
        # required) and no file (404 without).
        assert (await client.get("/docs/assets/index.html")).status_code in (401, 404)
        assert (await client.get("/docs/assets/%2E%2E%2Fapidocs.py")).status_code in (401, 404)
        assert (await client.get("/openapi.json")).json()["info"]["title"].startswith("herder")


async def test_the_agents_pages_need_no_cdn_and_no_token(make_agent: AgentFactory) -> None:
    async with make_agent(auth_token="s3cret") as agent:
        await check_pages(agent.url)
        async with httpx.AsyncClient(base_url=agent.url) as client:
            assert (await client.get("/list-processes")).status_code == 401  # the API is not open


async def test_the_managers_pages_need_no_cdn_and_no_token(keyed_manager: Fleet) -> None:
    await check_pages(keyed_manager.manager.url)
    async with httpx.AsyncClient(base_url=keyed_manager.manager.url) as client:
        assert (await client.get("/tasks")).status_code == 401


@pytest.mark.slow
async def test_swagger_ui_and_redoc_render_offline_in_chromium(agent: Agent, browser: Any) -> None:
    """No request leaves the daemon's origin, and both pages draw the agent's operations."""
    async with httpx.AsyncClient(base_url=agent.url) as client:
        assert (await client.get("/docs/assets/index.html")).status_code == 404
    page = await browser.new_page()
    own = (agent.url, f"blob:{agent.url}")  # ReDoc's worker comes from a blob of the page
    answered: list[str] = []  # what came back from elsewhere: nothing may

    def note(response: Any) -> None:
        if not response.url.startswith(own):
            answered.append(response.url)

    page.on("response", note)
    await page.goto(f"{agent.url}/docs")
    await page.wait_for_selector("text=/create-process")
    await page.goto(f"{agent.url}/redoc")
    await page.wait_for_selector("text=Create a process from an app", state="attached")
    # The pages drew the operations on a machine that reaches no CDN: their assets are
    # local. ReDoc's bundle names its vendor's logo on a CDN: the CSP keeps it unfetched.
    assert answered == []
