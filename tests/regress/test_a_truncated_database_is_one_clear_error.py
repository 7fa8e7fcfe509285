"""#12 §4: a truncated ``manager.db`` made ``herder manager`` exit with a Python traceback.

It now exits with status 2 and one line that names the file.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from herder.manager.config import ManagerConfig
from herder.manager.server import Manager
from tests.helpers import HERDER


async def test_a_truncated_database_exits_2_naming_the_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "manager"
    async with Manager(ManagerConfig(port=0, data_dir=data_dir)):
        pass
    db = data_dir / "manager.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with open(db, "r+b") as file:
        file.truncate(os.path.getsize(db) // 3)
    done = subprocess.run(
        [HERDER, "manager", "--port", "0", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert str(db) in lines[0], done.stderr
