"""Both daemons against their own OpenAPI documents, with schemathesis (#15).

A real agent and a real manager (the ``herder`` binary, on loopback, SQLite) serve
``/openapi.json``; schemathesis (its ``st`` command, a real process too) reads it and
sends each operation generated requests, valid and invalid: boundary values first (its
coverage phase), then a few random ones (fuzzing). Every answer must be what the
document says: no server error, a status the operation documents, a body, content type
and headers its schema admits, a 405 with ``Allow`` for a method the path does not take,
and a request the document calls valid is not refused (a 422 the document does not
foresee).

Bounded: a few examples per operation, no shrinking, a fixed seed, so the file takes
well under a minute on two cores and a failure is the same at every run. What the agent
would run or fetch is made harmless first (``tests/schemathesis_hooks.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import AgentProcess
from tests.manager.conftest import ManagerProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ST = str(Path(sys.executable).with_name("st"))
MAX_EXAMPLES = 6  # per operation, for fuzzing; the coverage phase sends its own set
SEED = 15
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "positive_data_acceptance",
    "unsupported_method",
    "allow_header_conformance",
)


# Operations whose valid requests the document cannot tell from refused ones, and why;
# every other check still runs on them.
NOT_FORESEEABLE = {
    ("POST", "/tasks"): "a task's settings are its compiler's to check (a plugin, by its own rules)",
    ("POST", "/schedules"): "its task is its compiler's to check; cron or interval_s (one) spans two fields",
    ("PATCH", "/schedules/{id}"): "its task is its compiler's to check, as POST /tasks's",
    ("GET", "/services"): "a query's grammar (names, version ranges) is the registry's; 400 names the part",
    ("POST", "/pools"): "min_instances <= max_instances compares two fields, which JSON Schema cannot say",
    ("POST", "/pools/{name}/scale"): "a bound past the pool's current other one is refused: state, not shape",
    ("POST", "/pools/{name}/deploy"): "one under way is a 409, a canary past max_instances a 422: state",
    ("POST", "/pools/{name}/promote"): "only a deploy whose canaries are healthy can be promoted: state",
    ("POST", "/pools/{name}/revert"): "only a deploy under way can be reverted: state, not shape",
}


# The manager's proxy: no service is registered, so every case of its seven operations is
# the same 404; the boundary values of the coverage phase would only cost time (random
# ones still run, and tests/regress covers the proxy against real services).
PROXY = "^/proxy/"


def config_text() -> str:
    """The ``st`` configuration (TOML): bounded, deterministic, the checks above."""
    lines = [
        'hooks = "tests.schemathesis_hooks"',
        f"seed = {SEED}",
        "[generation]",
        f"max-examples = {MAX_EXAMPLES}",
        "no-shrink = true",
        'database = "none"',
        'mode = "all"',
        "[phases.examples]",
        "enabled = false",
        "[phases.stateful]",
        "enabled = false",
        "[checks]",
        "enabled = false",
    ]
    for check in CHECKS:
        lines += [f"[checks.{check}]", "enabled = true"]
    for (method, path), why in NOT_FORESEEABLE.items():
        lines += [
            f"# {why}",
            "[[operations]]",
            f'include-name = "{method} {path}"',  # the two filters include-method and -path would OR
            "checks.positive_data_acceptance.enabled = false",
        ]
    lines += ["[[operations]]", f'include-path-regex = "{PROXY}"', "phases.coverage.enabled = false"]
    return "\n".join(lines) + "\n"


def run_schemathesis(url: str, tmp_path: Path) -> None:
    """``st run`` against the daemon at ``url``; fail with its report unless all checks pass."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(config_text())
    # One worker: with two, st's threads build Python ASTs at once (hypothesis describing
    # its lambdas), which the CPython 3.11.7 here cannot always do (gh-106905, "AST
    # constructor recursion depth mismatch", a runtime error that failed CI once).
    command = [
        *(ST, "--config-file", str(config), "run", f"{url}/openapi.json"),
        *("--phases", "coverage,fuzzing", "--workers", "1", "--request-timeout", "30"),
    ]
    result = subprocess.run(
        # In tmp_path: st keeps a cache in its working directory (the hooks come by PYTHONPATH).
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=110,
        env=_env(),
        check=False,
    )
    report = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"schemathesis found what the document does not say:\n{report}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["NO_COLOR"] = "1"
    return env


@pytest.mark.timeout(120)
def test_the_agent_does_what_its_document_says(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "data").start()
    try:
        run_schemathesis(agent.url, tmp_path)
    finally:
        agent.kill()


@pytest.mark.timeout(120)
def test_the_manager_does_what_its_document_says(tmp_path: Path) -> None:
    manager = ManagerProcess(tmp_path / "data", f"sqlite:///{tmp_path / 'manager.db'}").start()
    try:
        run_schemathesis(manager.url, tmp_path)
    finally:
        manager.kill()


def test_the_hooks_keep_a_request_as_valid_as_it_was() -> None:
    from tests.schemathesis_hooks import HARMLESS_COMMAND, MISSING_ARCHIVE, make_harmless

    body: dict[str, object] = {
        "command": "rm -rf x",
        "source_url": "HTTP://example.com/a",
        "listen": "h:80",
        "min_instances": 256,
    }
    make_harmless(body)
    assert body == {
        "command": HARMLESS_COMMAND,
        "source_url": MISSING_ARCHIVE,
        "listen": "127.0.0.1:0",
        "min_instances": 1,
    }
    invalid: dict[str, object] = {
        "command": "",
        "source_url": "ftp://x",
        "listen": "nope",
        "min_instances": "9",
    }
    make_harmless(invalid)
    assert invalid == {"command": "", "source_url": "ftp://x", "listen": "nope", "min_instances": "9"}


def test_the_hooks_keep_health_and_order_as_valid_as_they_were() -> None:
    from tests.schemathesis_hooks import make_harmless

    body: dict[str, object] = {"depends_on": ["a.b", "c"], "port": False, "health": {"type": "tcp"}}
    make_harmless(body)
    assert body == {"depends_on": [], "port": True, "health": {"type": "tcp"}}
    invalid: dict[str, object] = {"depends_on": ["a", "a"], "port": False, "health": {"type": "command"}}
    make_harmless(invalid)
    assert invalid == {"depends_on": ["a", "a"], "port": False, "health": {"type": "command"}}
