"""Manager tests run on both databases: SQLite in a temporary directory, and PostgreSQL.

PostgreSQL is the server ``HERDER_TEST_POSTGRES_URL`` names (``.ci/run`` sets it); each
test gets a database of its own, created and dropped around it. Without the variable
the PostgreSQL half is skipped, except under ``CI=true``, where a missing server is a
failure: CI must never pass by skipping the database it promises to test.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from herder.manager.config import ManagerConfig
from herder.manager.server import Manager
from tests.helpers import HERDER, wait_banner

POSTGRES_URL = os.environ.get("HERDER_TEST_POSTGRES_URL")


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'manager.db'}"
        return
    if not POSTGRES_URL:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but HERDER_TEST_POSTGRES_URL is not set: PostgreSQL tests must run")
        pytest.skip("HERDER_TEST_POSTGRES_URL is not set")
    name = f"herder_test_{secrets.token_hex(6)}"
    try:
        await _admin(POSTGRES_URL, f'CREATE DATABASE "{name}"')
    except OSError as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc}")
    base = POSTGRES_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        await _admin(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


ManagerFactory = Callable[..., AbstractAsyncContextManager[Manager]]


@pytest.fixture
def make_manager(db_url: str, tmp_path: Path) -> ManagerFactory:
    def factory(**overrides: Any) -> Manager:
        data: dict[str, Any] = {"port": 0, "data_dir": tmp_path / "manager", "db": db_url}
        data.update(overrides)
        return Manager(ManagerConfig.model_validate(data))

    return factory


@pytest.fixture
async def manager(make_manager: ManagerFactory) -> AsyncIterator[Manager]:
    async with make_manager() as running:
        yield running


@pytest.fixture
async def client(manager: Manager) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=manager.url, timeout=30.0) as c:
        yield c


class ManagerProcess:
    """The real ``herder manager`` binary on an ephemeral port; stopped by pid."""

    def __init__(
        self, data_dir: Path, db_url: str, *args: str, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        """``args``: more of ``herder manager``'s options."""
        self.args = args
        self.data_dir = data_dir
        self.db_url = db_url
        self.host = host
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        data_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = data_dir / f"manager-{secrets.token_hex(4)}.stderr"

    def start(self, timeout_s: float = 30.0) -> ManagerProcess:
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    *(HERDER, "manager", "--host", self.host, "--port", str(self.port)),
                    *("--data-dir", str(self.data_dir), "--db", self.db_url, *self.args),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        banner = r"herder manager listening on (http://\S+)"
        match = wait_banner(self.proc, self.stderr_path, banner, timeout_s)
        if match:
            self.url = match.group(1)
            return self
        self.kill()
        raise AssertionError("manager did not start:\n" + self.stderr_path.read_text())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
