"""Shared fixtures: a real agent on 127.0.0.1:0 with its own data dir, real clients.

Nothing here is a stand-in: the agent is the product, started in-process (``agent``)
or as the real ``herder`` binary (``helpers.AgentProcess``), and stopped by the test.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from herder.agent import Agent, AgentConfig


@pytest.fixture(autouse=True)
def _isolated_environ() -> Iterator[None]:
    """No test leaks environment changes into another."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def fast_config(data_dir: Path, **overrides: Any) -> AgentConfig:
    """An agent config for tests: an ephemeral port, short grace and backoff."""
    data: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "data_dir": data_dir,
        "supervision": {
            "grace_s": 2.0,
            "stable_s": 0.5,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.5,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return AgentConfig.model_validate(data)


AgentFactory = Callable[..., AbstractAsyncContextManager[Agent]]


@pytest.fixture
def make_agent(tmp_path: Path) -> AgentFactory:
    """``async with make_agent(**config overrides) as agent`` starts a fresh agent."""

    def factory(**overrides: Any) -> Agent:
        overrides.setdefault("data_dir", tmp_path / "data")
        return Agent(fast_config(**overrides))

    return factory


@pytest.fixture
async def agent(make_agent: AgentFactory) -> AsyncIterator[Agent]:
    async with make_agent() as running:
        yield running


@pytest.fixture
async def client(agent: Agent) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=agent.url, timeout=30.0) as c:
        yield c
