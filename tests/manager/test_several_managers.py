"""Several manager processes on one database (#17): starting together, and SQLite's refusal.

On PostgreSQL two managers started at the same moment on a fresh database both come up
(their migrations take turns). On SQLite a second manager pointed at the file a running
manager uses exits at start and says PostgreSQL is needed; a SIGKILLed first manager
does not keep the next one out.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from tests.helpers import HERDER
from tests.manager.conftest import ManagerProcess

START_S = 30.0


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_managers_started_at_once_on_a_fresh_postgresql_all_come_up(
    db_url: str, tmp_path: Path
) -> None:
    """Three rather than two: without the lock, two collided in three runs out of four."""
    managers = [ManagerProcess(tmp_path / name, db_url) for name in ("a", "b", "c")]
    try:
        started = await asyncio.gather(*(asyncio.to_thread(m.start, START_S) for m in managers))
        assert all(m.url for m in started)
    finally:
        for m in managers:
            m.kill()


def second_manager(data_dir: Path, db_url: str) -> subprocess.CompletedProcess[str]:
    """A second ``herder manager`` on ``db_url``, run until it exits by itself."""
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [HERDER, "manager", "--port", "0", "--data-dir", str(data_dir), "--db", db_url]
    return subprocess.run(command, capture_output=True, text=True, timeout=START_S, check=False)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_second_manager_on_one_sqlite_file_exits_saying_postgresql_is_needed(
    db_url: str, tmp_path: Path
) -> None:
    first = ManagerProcess(tmp_path / "a", db_url)
    try:
        first.start()
        second = second_manager(tmp_path / "b", db_url)
        assert second.returncode != 0
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, second.stderr
        assert "PostgreSQL" in lines[0]
        assert "manager.db" in lines[0]
        assert first.proc is not None
        assert first.proc.poll() is None  # the first one serves on
    finally:
        first.kill()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_sigkilled_manager_does_not_keep_the_next_one_off_its_sqlite_file(
    db_url: str, tmp_path: Path
) -> None:
    first = ManagerProcess(tmp_path / "a", db_url)
    again = ManagerProcess(tmp_path / "a", db_url)
    try:
        first.start()
        first.kill()  # SIGKILL: no clean-up of any kind
        assert again.start().url
    finally:
        first.kill()
        again.kill()
