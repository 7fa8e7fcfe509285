"""The examples in docs/examples run as documented, against each other, as real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import HERDER, POLL_S

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(POLL_S)
    raise AssertionError(f"nothing listens on {port}")


def test_math_service_and_client() -> None:
    env = {**os.environ, "MATH_PORT": str(free_port()), "MATH_TCP_PORT": str(free_port())}
    service = subprocess.Popen([sys.executable, str(EXAMPLES / "math_service.py")], env=env)
    try:
        wait_listening(int(env["MATH_PORT"]))
        wait_listening(int(env["MATH_TCP_PORT"]))
        out = subprocess.run(
            [sys.executable, str(EXAMPLES / "math_client.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert f"ws://127.0.0.1:{env['MATH_PORT']}/rpc square(4) = 16" in lines
        assert f"tcp://127.0.0.1:{env['MATH_TCP_PORT']} square(4) = 16" in lines
        assert sum(line.endswith("cube: unknown_method") for line in lines) == 2
        # The CLI against the same service.
        call = subprocess.run(
            [HERDER, "call", f"tcp://127.0.0.1:{env['MATH_TCP_PORT']}", "square", "4"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert call.returncode == 0, call.stderr
        assert call.stdout.strip() == "16"
        listing = subprocess.run(
            [HERDER, "call", f"ws://127.0.0.1:{env['MATH_PORT']}/rpc", "--methods"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listing.stdout.strip() == "square(x: float) -> float  (no auth)  - Return x squared."
        missing = subprocess.run(
            [HERDER, "call", f"tcp://127.0.0.1:{env['MATH_TCP_PORT']}", "cube", "2"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert missing.returncode == 1
        assert "unknown_method" in missing.stderr
    finally:
        service.terminate()
        service.wait(timeout=30)
