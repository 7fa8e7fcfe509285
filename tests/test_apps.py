"""Apps: from a create request to what runs, and the requests that must be refused.

``Apps.prepare`` is driven directly with real archives on disk; the create requests go
through the agent's HTTP API and are checked for their status code and the one error
document, ``{"error", "message", "field"}``, whose ``field`` names what is wrong.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from herder.agent import Agent
from herder.agent.apps.fetch import Fetcher
from herder.agent.apps.launch import SHELL, Apps
from herder.agent.config import FetchConfig, UnpackConfig
from herder.agent.errors import ProcfileError, UnsafeArchive
from tests.conftest import AgentFactory, fast_config
from tests.fixtures.apps.appkit import Member, app_members, tar_bytes, tree, write, zip_bytes
from tests.helpers import poll, wait_unit

# -- Apps.prepare ----------------------------------------------------------------------


def make_apps(tmp_path: Path, **unpack: Any) -> Apps:
    fetcher = Fetcher(tmp_path / "cache", FetchConfig())
    return Apps(fetcher, UnpackConfig(**unpack), tmp_path / "run")


async def test_prepare_archive_with_a_top_level_folder(tmp_path: Path) -> None:
    archive = write(tmp_path / "shop.tgz", tar_bytes(app_members(prefix="shop-1.0/"), "gz"))
    launch = await make_apps(tmp_path).prepare(
        slug="shop.web.0", source_url=archive.as_uri(), process_type="worker"
    )
    assert launch.argv == [SHELL, "-c", "echo worker-started; exec sleep 1000"]
    assert launch.cwd == tmp_path / "run" / "shop.web.0" / "app" / "shop-1.0"
    assert launch.archive_sha256 is not None
    assert (launch.cwd / "bin" / "hello").is_file()


async def test_prepare_unpacks_afresh_each_time(tmp_path: Path) -> None:
    apps = make_apps(tmp_path)
    archive = write(tmp_path / "shop.zip", zip_bytes(app_members()))
    launch = await apps.prepare(slug="s.n", source_url=archive.as_uri(), process_type="web")
    (launch.cwd / "stale.pid").write_text("123")
    (launch.cwd / "Procfile").write_text("web: tampered\n")
    again = await apps.prepare(slug="s.n", source_url=archive.as_uri(), process_type="web")
    assert again.cwd == launch.cwd
    assert not (again.cwd / "stale.pid").exists()
    assert "tampered" not in again.argv[-1]


async def test_prepare_directory_runs_in_place(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "Procfile").write_text("web: ./run\n")
    launch = await make_apps(tmp_path).prepare(slug="s.n", source_url=checkout.as_uri(), process_type="web")
    assert launch.cwd == checkout
    assert launch.archive_sha256 is None
    assert launch.argv == [SHELL, "-c", "./run"]


async def test_prepare_unsafe_archive_leaves_no_app(tmp_path: Path) -> None:
    archive = write(tmp_path / "evil.tar", tar_bytes([*app_members(), Member("../../x", b"pwned")]))
    apps = make_apps(tmp_path)
    with pytest.raises(UnsafeArchive, match="escapes"):
        await apps.prepare(slug="s.n", source_url=archive.as_uri(), process_type="web")
    assert tree(tmp_path / "run" / "s.n") == []
    assert not (tmp_path / "x").exists()


async def test_prepare_archive_without_procfile(tmp_path: Path) -> None:
    archive = write(tmp_path / "a.tar", tar_bytes([Member("README", b"hi")]))
    with pytest.raises(ProcfileError, match="no Procfile"):
        await make_apps(tmp_path).prepare(slug="s.n", source_url=archive.as_uri(), process_type="web")


async def test_prepare_honours_unpack_limits(tmp_path: Path) -> None:
    archive = write(tmp_path / "a.tar", tar_bytes(app_members()))
    with pytest.raises(UnsafeArchive, match="more than 1 entries"):
        await make_apps(tmp_path, max_files=1).prepare(
            slug="s.n", source_url=archive.as_uri(), process_type="web"
        )


async def test_remove_deletes_the_unpacked_app(tmp_path: Path) -> None:
    apps = make_apps(tmp_path)
    archive = write(tmp_path / "a.tar", tar_bytes(app_members()))
    await apps.prepare(slug="s.n", source_url=archive.as_uri(), process_type="web")
    apps.remove("s.n")
    assert not (tmp_path / "run" / "s.n").exists()
    apps.remove("never.existed")  # no error


async def test_delete_while_unpacking_leaves_nothing_behind(
    agent: Agent, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    # Unpacking runs in a thread, which a delete cannot cancel: the delete must wait for
    # it, or the thread goes on writing files after the process's directory is removed.
    members = [*app_members(), *(Member(f"d{i % 40}/f{i}", os.urandom(1000)) for i in range(4000))]
    archive = write(tmp_path / "big.tar", tar_bytes(members))
    body = {"app": "big", "node": "web.0", "source_url": archive.as_uri(), "process_type": "worker"}
    created = await client.post("/create-process", json=body)
    assert created.status_code == 201
    run_dir = agent.config.data_dir / "run" / "big.web.0"
    await poll(lambda: (run_dir / "app").exists())
    deleted = await client.post(created.json()["delete"], content="{}")
    assert deleted.status_code == 200
    assert not run_dir.exists(), f"{len(tree(run_dir))} files left"


# -- bad create requests through the API --------------------------------------------------

# Requests that are refused change nothing, so one agent serves all of their tests (an
# agent takes a fraction of a second to start and stop); once they have all run, the
# fixture checks that none of them created anything.
SHARED_LOOP = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    config = fast_config(tmp_path_factory.mktemp("shared") / "data")
    async with Agent(config) as agent, httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
        yield client
        assert (await client.get("/list-processes")).json() == {"processes": []}


GOOD = {"app": "shop", "node": "web.0", "command": ["sleep", "1000"]}


def without(key: str, body: dict[str, Any] = GOOD) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


def assert_error(response: httpx.Response, status: int, field: str | None, code: str | None = None) -> dict:
    """The one error document, with this status, code and field."""
    assert response.status_code == status, response.text
    doc: dict = response.json()
    assert set(doc) == {"error", "message", "field"}
    assert doc["field"] == field, doc
    assert doc["message"]
    if code is not None:
        assert doc["error"] == code
    return doc


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (without("app"), "app"),
        (without("node"), "node"),
        ({**GOOD, "app": 7}, "app"),
        ({**GOOD, "app": None}, "app"),
        ({**GOOD, "node": ["web", "0"]}, "node"),
        ({**GOOD, "command": 5}, "command"),
        ({**GOOD, "command": []}, "command"),
        ({**GOOD, "command": ""}, "command"),
        ({**GOOD, "command": ["sleep", "\u0000"]}, "command"),
        ({**GOOD, "env": "A=1"}, "env"),
        ({**GOOD, "env": ["A", "1"]}, "env"),
        ({**GOOD, "env": {"A": 1}}, "env.A"),
        ({**GOOD, "env": {"A": None}}, "env.A"),
        ({**GOOD, "restart": "sometimes"}, "restart"),
        ({**without("command"), "source_url": 5, "process_type": "web"}, "source_url"),
        ({**without("command"), "source_url": "file:///x", "process_type": 5}, "process_type"),
        ({**without("command"), "source_url": "file:///x", "process_type": "web server"}, "process_type"),
        ({**GOOD, "bogus": True}, "bogus"),
    ],
)
@SHARED_LOOP
async def test_missing_or_mistyped_field_is_422_naming_it(
    shared_client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    doc = assert_error(await shared_client.post("/create-process", json=body), 422, field, "invalid")
    assert field.split(".")[0] in doc["message"]


@pytest.mark.parametrize(
    "app", ["", "my app", "-shop", "shop.v2", "shop/../x", "caf\u00e9", "a" * 65, "shop\n", "_shop"]
)
@SHARED_LOOP
async def test_bad_app_name(shared_client: httpx.AsyncClient, app: str) -> None:
    assert_error(
        await shared_client.post("/create-process", json={**GOOD, "app": app}), 422, "app", "invalid"
    )


@pytest.mark.parametrize("node", ["", "web 0", "web/0", "../web", ".web", "n" * 65, "web\t0"])
@SHARED_LOOP
async def test_bad_node_name(shared_client: httpx.AsyncClient, node: str) -> None:
    assert_error(
        await shared_client.post("/create-process", json={**GOOD, "node": node}), 422, "node", "invalid"
    )


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", "", "A=B", "\u00c9T\u00c9", "A\u0000"])
@SHARED_LOOP
async def test_env_with_a_bad_name(shared_client: httpx.AsyncClient, name: str) -> None:
    response = await shared_client.post("/create-process", json={**GOOD, "env": {name: "x"}})
    doc = assert_error(response, 422, "env", "invalid")
    assert "not a valid variable name" in doc["message"]


@SHARED_LOOP
async def test_env_value_with_nul(shared_client: httpx.AsyncClient) -> None:
    response = await shared_client.post("/create-process", json={**GOOD, "env": {"A": "x\u0000y"}})
    assert "NUL" in assert_error(response, 422, "env")["message"]


@SHARED_LOOP
async def test_too_many_env_entries(shared_client: httpx.AsyncClient) -> None:
    env = {f"V{i}": "x" for i in range(300)}
    assert_error(await shared_client.post("/create-process", json={**GOOD, "env": env}), 422, "env")


CROSS_FIELD = [
    pytest.param(
        {**GOOD, "source_url": "file:///srv/app.tgz", "process_type": "web"},
        "command",
        id="command-and-source_url",
    ),
    pytest.param({"app": "shop", "node": "web.0"}, "source_url", id="nothing-to-run"),
    pytest.param({"app": "shop", "node": "web.0", "process_type": "web"}, "source_url", id="no-source_url"),
    pytest.param(
        {"app": "shop", "node": "web.0", "source_url": "file:///x"}, "process_type", id="no-process_type"
    ),
]


@pytest.mark.parametrize(("body", "field"), CROSS_FIELD)
@SHARED_LOOP
async def test_cross_field_errors_are_422_naming_the_field(
    shared_client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    doc = assert_error(await shared_client.post("/create-process", json=body), 422, field, "invalid")
    assert f"'{field}'" in doc["message"]


@pytest.mark.parametrize(
    "content",
    [b"{bad json", b'{"app": "shop",}', b"{'app': 'shop'}", b'{"app": "\xff\xfe"}', b"\x00\x01"],
)
@SHARED_LOOP
async def test_malformed_json_is_400(shared_client: httpx.AsyncClient, content: bytes) -> None:
    doc = assert_error(
        await shared_client.post("/create-process", content=content), 400, "body", "invalid_json"
    )
    assert "not valid JSON" in doc["message"]


@pytest.mark.parametrize("content", [b"[]", b'"shop"', b"null", b"42", b""])
@SHARED_LOOP
async def test_json_that_is_not_an_object_is_422(shared_client: httpx.AsyncClient, content: bytes) -> None:
    assert_error(await shared_client.post("/create-process", content=content), 422, "body", "invalid")


async def test_json_with_a_content_type_or_without(agent: Agent, client: httpx.AsyncClient) -> None:
    import json

    body = json.dumps({**GOOD, "node": "plain.0"})
    plain = await client.post("/create-process", content=body)  # the seed's client sends no type
    assert plain.status_code == 201, plain.text
    typed = await client.post(
        "/create-process",
        content=body.replace("plain", "typed"),
        headers={"content-type": "application/json"},
    )
    assert typed.status_code == 201, typed.text
    for doc in (plain.json(), typed.json()):
        assert (await client.post(doc["delete"], content="{}")).status_code == 200


async def test_body_over_the_limit_is_413(make_agent: AgentFactory) -> None:
    async with (
        make_agent(limits={"max_body_bytes": 2048}) as agent,
        httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client,
    ):
        response = await client.post("/create-process", json={**GOOD, "env": {"BIG": "x" * 4096}})
        assert response.status_code == 413
        assert (await client.get("/list-processes")).json() == {"processes": []}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/process-status/no.such"),
        ("POST", "/delete-process/no.such"),
        ("GET", "/process-status/shop.web.1"),
        ("POST", "/delete-process/not-even-a-slug"),
    ],
)
@SHARED_LOOP
async def test_unknown_slug_is_404(shared_client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await shared_client.request(method, path, content=b"{}" if method == "POST" else None)
    doc = assert_error(response, 404, "slug", "not_found")
    assert path.rsplit("/", 1)[1] in doc["message"]


async def test_existing_slug_is_409(agent: Agent, client: httpx.AsyncClient) -> None:
    first = await client.post("/create-process", json=GOOD)
    assert first.status_code == 201
    doc = assert_error(await client.post("/create-process", json=GOOD), 409, "node", "conflict")
    assert "shop.web.0" in doc["message"]
    await client.post(first.json()["delete"], content="{}")


async def test_bad_requests_leave_the_agent_and_its_processes_alone(
    agent: Agent, client: httpx.AsyncClient
) -> None:
    created = await client.post("/create-process", json=GOOD)
    assert created.status_code == 201
    unit = await wait_unit(agent.supervisor.units["shop.web.0"], lambda u: u.pid is not None)
    pid = unit.pid
    bad_requests: list[dict[str, Any]] = [
        {"content": b"{nope"},
        {"json": {**GOOD, "node": "web.1", "env": {"1": "x"}}},
        {"json": {**without("command"), "node": "web.2", "source_url": "ftp://x/y", "process_type": "web"}},
        {"json": {**GOOD, "node": "web.3", "source_url": "file:///x"}},
        {"json": [GOOD]},
        {"json": GOOD},  # the slug exists
    ]
    for request in bad_requests:
        response = await client.post("/create-process", **request)
        assert 400 <= response.status_code < 500, response.text
    listing = (await client.get("/list-processes")).json()["processes"]
    assert [(p["slug"], p["state"], p["pid"], p["restarts"]) for p in listing] == [
        ("shop.web.0", "running", pid, 0)
    ]
    await client.post(created.json()["delete"], content="{}")
