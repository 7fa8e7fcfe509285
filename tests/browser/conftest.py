"""A real manager (keys on), two real agents working for it, and Debian's chromium.

The browser is the system's (``make chromium`` installs Debian's package with apt),
driven by Playwright; nothing is downloaded (no ``playwright install``). Without
``/usr/bin/chromium`` the tests are skipped, except under ``CI=true``, where a missing
browser is a failure: CI must not pass by skipping what it promises to test.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from herder.agent import Agent
from herder.auth import init_keys
from herder.manager.config import ManagerConfig
from herder.manager.server import Manager
from tests.conftest import fast_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000  # any one wait of a page


@dataclass
class Fleet:
    manager: Manager
    agents: list[Agent]

    async def issue(self, user: str, role: str = "admin") -> tuple[str, str]:
        """A key for ``user`` and its id, issued into the manager's database."""
        runtime, authority = self.manager.runtime, self.manager.authority
        assert runtime is not None
        assert authority is not None
        async with runtime.transaction() as db:
            issued = await authority.issue_key(db, user, role, 3600)
        return issued.key, issued.id

    async def revoke(self, key_id: str) -> None:
        runtime, authority = self.manager.runtime, self.manager.authority
        assert runtime is not None
        assert authority is not None
        async with runtime.transaction() as db:
            await authority.revoke(db, key_id=key_id)


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {CHROMIUM} is missing: make chromium installs it (apt-get)")
        pytest.skip(f"{CHROMIUM} is missing (make chromium installs Debian's package)")
    return CHROMIUM


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """A manager with keys on (SQLite) and two agents linked to it with an admin's key."""
    init_keys(tmp_path / "manager")
    config = ManagerConfig.model_validate(
        {"port": 0, "data_dir": tmp_path / "manager", "heartbeat_interval_s": 0.3}
    )
    async with Manager(config) as manager:
        running = Fleet(manager, [])
        key, _ = await running.issue("fleet-agents")
        agents: list[Any] = [
            Agent(
                fast_config(
                    data_dir=tmp_path / f"agent-{n}",
                    manager={"url": manager.url, "slots": 2, "name": f"render-{n}", "key": key},
                )
            )
            for n in (1, 2)
        ]
        async with agents[0], agents[1]:
            for agent in agents:
                assert agent.runtime is not None
                assert agent.runtime.worker is not None
                await asyncio.wait_for(agent.runtime.worker.connected.wait(), 20)
            running.agents = agents
            yield running


@pytest.fixture
async def keyed_manager(tmp_path: Path) -> AsyncIterator[Fleet]:
    """A manager with keys on and no agents: a page must sign in, and may issue keys."""
    init_keys(tmp_path / "manager")
    config = ManagerConfig.model_validate({"port": 0, "data_dir": tmp_path / "manager"})
    async with Manager(config) as manager:
        yield Fleet(manager, [])


@pytest.fixture
async def browser(chromium: Path, tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh chromium profile, closed (and its process gone) after the test."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(chromium),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 800},
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            await context.close()
