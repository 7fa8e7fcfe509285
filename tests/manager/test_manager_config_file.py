"""``herder manager --config FILE``: every setting from TOML, options over it, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx

from tests.helpers import HERDER, wait_banner


def _run(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERDER, "manager", *args], capture_output=True, text=True, timeout=timeout_s)


def test_a_bad_setting_in_the_file_is_one_line_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "manager.toml"
    config.write_text("port = 8020\n[limits]\nmax_json_depth = 1\n")
    done = _run("--config", str(config), "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 2
    assert "limits.max_json_depth" in done.stderr
    assert "Traceback" not in done.stderr
    config.write_text("no_such_setting = 1\n")
    done = _run("--config", str(config), "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 2
    assert "no_such_setting" in done.stderr
    config.write_text("port = [\n")
    done = _run("--config", str(config), "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def test_the_file_sets_what_no_option_does_and_options_win(tmp_path: Path) -> None:
    """``[limits]`` comes from the file (a depth of 4 refuses a depth of 5); ``--port`` wins."""
    config = tmp_path / "manager.toml"
    config.write_text('port = 1\nhost = "127.0.0.1"\n[limits]\nmax_json_depth = 4\n')
    stderr = tmp_path / "stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [HERDER, "manager", "--config", str(config), "--port", "0", "--data-dir", str(tmp_path / "d")],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        found = wait_banner(proc, stderr, r"herder manager listening on (http://\S+)", 30)
        assert found, stderr.read_text()
        url = found.group(1)
        deep = {"type": "command", "settings": {"argv": [[[["x"]]]]}}  # 5 levels
        answer = httpx.post(f"{url}/tasks", content=json.dumps(deep), timeout=10)
        assert answer.status_code == 400, answer.text
        assert answer.json()["field"] == "body"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
