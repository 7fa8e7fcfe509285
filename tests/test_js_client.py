"""herder.js (clients/js) in the project's test run: its own tests, its type check, and
a tab in a real browser.

herder.js is tested by Node's test runner against real herder processes (a Python service
and managers, started by its tests with this interpreter); this test runs them, and
``tsc --noEmit`` over its JSDoc types, and fails with their output. ``npm ci`` installs
its locked dev dependencies first, only when ``node_modules`` is missing or older than
``package-lock.json``. Without node or npm the test is skipped, except under ``CI=true``,
where a missing toolchain is a failure: CI must not pass by skipping the client it ships.

In the browser (Debian's chromium, as ``tests/browser`` drives it, with the same rule for
a missing one), a page of a real manager imports herder.js from ``/ui/herder.js``,
registers without a URL with a user's key, and is called by herder's Python.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from herder.rpc import dial

# Debian's chromium through Playwright and a manager with keys, as tests/browser has them
# (the same fixtures).
from tests.browser.conftest import Fleet, browser, chromium, keyed_manager  # noqa: F401
from tests.helpers import HERDER

CLIENT = Path(__file__).resolve().parent.parent / "clients" / "js"
# npm ci, the client's tests (two files at once, each starting real processes) and tsc:
# about 30 s on a loaded 2-core machine; the bound leaves room for a busier one.
TIMEOUT_S = 240


def _tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = "node" if node is None else "npm"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {missing} is not installed: herder.js's tests must run")
        pytest.skip(f"{missing} is not installed")
    return node, npm


def _start(command: list[str]) -> subprocess.Popen[str]:
    """Start ``command`` in the client's folder, its output captured."""
    env = {**os.environ, "HERDER_PYTHON": sys.executable, "HERDER_BIN": HERDER, "NO_COLOR": "1"}
    return subprocess.Popen(
        command, cwd=CLIENT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(command: list[str], proc: subprocess.Popen[str], timeout_s: float) -> None:
    """Wait for ``proc``; fail with its output if it fails or outlives ``timeout_s``."""
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"{' '.join(command)} did not finish within {timeout_s:g} s:\n{output}")
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({proc.returncode}):\n{output}")


def _run(command: list[str], timeout_s: float) -> None:
    _finish(command, _start(command), timeout_s)


def _installed_is_current() -> bool:
    """``node_modules`` exists and was installed from the current ``package-lock.json``."""
    marker = CLIENT / "node_modules" / ".package-lock.json"  # npm writes it at each install
    lock = CLIENT / "package-lock.json"
    return marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime


def _ensure_installed(npm: str) -> None:
    """``npm ci`` when needed, once at a time (pytest-xdist workers share the folder)."""
    lock_path = Path(tempfile.gettempdir()) / f"herder-js-npm-ci-{os.getuid()}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed_is_current():
            _run([npm, "ci", "--no-audit", "--no-fund"], TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S * 2)
def test_herder_js_passes_its_tests_and_type_check() -> None:
    _, npm = _tools()
    _ensure_installed(npm)
    # The type check runs beside the tests (it only reads files): the two take as long as
    # the tests alone.
    typecheck = [npm, "run", "--silent", "typecheck"]
    checking = _start(typecheck)
    try:
        _run([npm, "test", "--silent"], TIMEOUT_S)
    finally:
        _finish(typecheck, checking, TIMEOUT_S)


# -- herder.js in a real browser -------------------------------------------------------------

PAGE_KEY = "/alice/dev/page/1.0.0/browser/tab/tab-1"


async def test_a_browser_tab_registers_and_is_called_by_python(keyed_manager: Fleet, browser: Any) -> None:  # noqa: F811
    """herder.js as served at /ui/herder.js, in chromium with its own WebSocket: the token
    goes as the herder.bearer subprotocol, the tab registers without a URL, and herder's
    Python dials it through the manager's relay, a callback crossing back."""
    manager = keyed_manager.manager
    alice, _ = await keyed_manager.issue("alice", "user")
    carol, _ = await keyed_manager.issue("carol", "user")
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{manager.url}/ui/")
    relayed = await page.evaluate(
        """async ([key, pageKey]) => {
            const herder = await import("/ui/herder.js");
            // No manager URL: the page's own origin; no WebSocket class: the browser's.
            const link = await herder.connectManager({ key, reconnect: true });
            window.alerts = [];
            link.handle("alert", (text) => {
                window.alerts.push(text);
                return `shown: ${text}`;
            });
            link.handle("countdown", async (n, tick) => {
                for (let i = n; i > 0; i--) await tick(i);
                return "liftoff";
            });
            const registration = await herder.register(link, pageKey);
            // The tab dials itself by name, through the relay, with its own credential.
            const self = await herder.dial("/alice/dev/page", { key, reconnect: false });
            const echoed = await self.call("alert", "to myself");
            self.close();
            return [registration.document.relay, echoed, link.codec];
        }""",
        [alice, PAGE_KEY],
    )
    assert relayed == [True, "shown: to myself", "json"]
    async with dial("/alice/dev/page", manager=manager.url, key=carol) as tab:
        assert await tab.call("alert", "from python") == "shown: from python"
        ticks: list[int] = []
        assert await tab.call("countdown", 2, ticks.append) == "liftoff"
        assert ticks == [2, 1]
    assert await page.evaluate("window.alerts") == ["to myself", "from python"]
    assert errors == []
