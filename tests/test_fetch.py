"""Fetching apps: http(s) from a real server on 127.0.0.1:0, file:// archives, and refusals.

Downloads come from ``ArchiveServer`` (aiohttp in the test's loop), which counts every
request, so a test can tell "refused before connecting" (no request) from "failed".
The SSRF tests use literal link-local addresses: the policy refuses them before any
connection, so no traffic leaves loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from herder.agent import Agent
from herder.agent.apps.fetch import AddressPolicy, Fetcher, resolve
from herder.agent.config import FetchConfig
from herder.agent.errors import FetchError
from tests.conftest import AgentFactory, fast_config
from tests.fixtures.apps.appkit import ArchiveServer, Member, app_members, tar_bytes, write, zip_bytes
from tests.helpers import poll, wait_http


def create_body(source_url: str, node: str = "web.0", process_type: str = "web", **extra: Any) -> dict:
    return {"app": "shop", "node": node, "source_url": source_url, "process_type": process_type, **extra}


async def create(client: httpx.AsyncClient, body: dict) -> dict:
    response = await client.post("/create-process", json=body)
    assert response.status_code == 201, response.text
    doc: dict = response.json()
    return doc


async def wait_state(client: httpx.AsyncClient, doc: dict, state: str, timeout_s: float = 10.0) -> dict:
    return await wait_http(client, doc["details"], lambda d: d["state"] == state, timeout_s)


def out_log(agent: Agent, slug: str) -> Path:
    return agent.config.data_dir / "logs" / f"{slug}.out.log"


async def wait_log_lines(path: Path, count: int, timeout_s: float = 10.0) -> list[str]:
    """The first ``count`` lines of ``path`` once it has that many."""

    def enough() -> bool:
        return path.is_file() and len(path.read_text().splitlines()) >= count

    await poll(enough, timeout_s)
    return path.read_text().splitlines()[:count]


# -- apps that run -------------------------------------------------------------------


async def test_http_app_runs_with_its_environment(make_agent: AgentFactory) -> None:
    async with ArchiveServer() as server, make_agent(env={"BASE_VAR": "from-config"}) as agent:
        url = server.serve("/releases/shop-1.0.tgz", tar_bytes(app_members(prefix="shop-1.0/"), "gz"))
        async with httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
            created = await create(client, create_body(url, env={"GREETING": "hello world"}))
            assert created["state"] == "fetching"
            doc = await wait_state(client, created, "running")
            lines = await wait_log_lines(out_log(agent, "shop.web.0"), 6)
            assert lines == [
                f"PORT={doc['port']}",
                "HERDER_APP=shop",
                "HERDER_NODE=web.0",
                "HERDER_SLUG=shop.web.0",
                "GREETING=hello world",
                "BASE_VAR=from-config",
            ]
            assert isinstance(doc["port"], int)
            assert doc["port"] > 0
            assert doc["error"] is None
            assert server.hits["/releases/shop-1.0.tgz"] == 1
            await client.post(doc["delete"], content="{}")


async def test_request_env_wins_over_the_base_env_but_not_over_herder_variables(
    make_agent: AgentFactory,
) -> None:
    async with ArchiveServer() as server, make_agent(env={"BASE_VAR": "base", "GREETING": "base"}) as agent:
        url = server.serve("/app.zip", zip_bytes(app_members()))
        async with httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
            env = {"GREETING": "request", "PORT": "1", "HERDER_SLUG": "spoofed"}
            doc = await wait_state(client, await create(client, create_body(url, env=env)), "running")
            lines = await wait_log_lines(out_log(agent, "shop.web.0"), 6)
            assert f"PORT={doc['port']}" in lines
            assert "HERDER_SLUG=shop.web.0" in lines
            assert "GREETING=request" in lines
            assert "BASE_VAR=base" in lines


async def test_file_archive_app_runs_its_executable_script(
    agent: Agent, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    procfile = "web: bin/hello\n"
    archive = write(tmp_path / "dist" / "app.tar", tar_bytes(app_members(procfile)))
    doc = await wait_state(client, await create(client, create_body(archive.as_uri())), "running")
    lines = await wait_log_lines(out_log(agent, "shop.web.0"), 1)
    assert lines == ["hello-from-script"]
    # Unpacked for this process under the data dir, and gone once it is deleted.
    run_dir = agent.config.data_dir / "run" / "shop.web.0"
    assert (run_dir / "app" / "Procfile").is_file()
    await client.post(doc["delete"], content="{}")
    assert not run_dir.exists()


async def test_file_directory_app_runs_in_place(
    agent: Agent, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "Procfile").write_text("web: pwd; exec sleep 1000\n")
    doc = await wait_state(client, await create(client, create_body(checkout.as_uri())), "running")
    assert await wait_log_lines(out_log(agent, "shop.web.0"), 1) == [str(checkout)]
    await client.post(doc["delete"], content="{}")
    assert (checkout / "Procfile").is_file()  # a checkout is never deleted


async def test_file_url_with_localhost_authority(
    agent: Agent, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    archive = write(tmp_path / "app.tgz", tar_bytes(app_members(), "gz"))
    url = f"file://localhost{archive}"
    await wait_state(client, await create(client, create_body(url, process_type="worker")), "running")


async def test_missing_file_fails(agent: Agent, client: httpx.AsyncClient, tmp_path: Path) -> None:
    missing = tmp_path / "nope.tgz"
    doc = await wait_state(client, await create(client, create_body(missing.as_uri())), "failed")
    assert doc["error"] == f"download failed: {missing} does not exist"


async def test_file_url_naming_another_host_fails(agent: Agent, client: httpx.AsyncClient) -> None:
    doc = await wait_state(
        client, await create(client, create_body("file://fileserver/apps/x.tgz")), "failed"
    )
    assert "file URLs must name a local path" in doc["error"]


# -- one download for many nodes -------------------------------------------------------


async def test_ten_nodes_of_one_app_download_once(agent: Agent, client: httpx.AsyncClient) -> None:
    async with ArchiveServer() as server:
        url = server.serve("/shop.tgz", tar_bytes(app_members(), "gz"))
        server.gate.clear()  # hold the download until all ten wait for it
        created = await asyncio.gather(
            *(create(client, create_body(url, node=f"worker.{i}", process_type="worker")) for i in range(10))
        )
        await poll(lambda: server.hits["/shop.tgz"] >= 1)
        for doc in created:
            assert (await client.get(doc["details"])).json()["state"] == "fetching"
        server.gate.set()
        for doc in created:
            await wait_state(client, doc, "running")
        assert server.hits["/shop.tgz"] == 1
        # One more node a little later: the archive is still cached.
        late = await create(client, create_body(url, node="worker.10", process_type="worker"))
        await wait_state(client, late, "running")
        assert server.hits["/shop.tgz"] == 1
        # Each node has its own unpacked copy.
        run = agent.config.data_dir / "run"
        assert sorted(p.name for p in run.iterdir()) == sorted(f"shop.worker.{i}" for i in range(11))


async def test_deleting_one_node_while_it_downloads_does_not_fail_the_others(
    agent: Agent, client: httpx.AsyncClient
) -> None:
    async with ArchiveServer() as server:
        url = server.serve("/shop.tgz", tar_bytes(app_members(), "gz"))
        server.gate.clear()
        first = await create(client, create_body(url, node="worker.0", process_type="worker"))
        await poll(lambda: server.hits["/shop.tgz"] == 1)
        second = await create(client, create_body(url, node="worker.1", process_type="worker"))
        # The second node waits on the first one's download; the first is deleted.
        assert (await client.post(first["delete"], content="{}")).status_code == 200
        server.gate.set()
        doc = await wait_http(
            client, second["details"], lambda d: d["state"] in ("running", "failed", "exited")
        )
        assert doc["state"] == "running", doc


# -- limits and HTTP errors ------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_download_over_the_size_limit_fails(make_agent: AgentFactory, chunked: bool) -> None:
    async with ArchiveServer() as server, make_agent(fetch={"max_bytes": 1000}) as agent:
        url = server.serve(
            "/big.tar", tar_bytes([*app_members(), Member("blob", os.urandom(5000))]), chunked=chunked
        )
        async with httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
            doc = await wait_state(client, await create(client, create_body(url)), "failed")
            assert "over the 1000-byte limit" in doc["error"]
            assert url in doc["error"]
        partials = list((agent.config.data_dir / "cache" / "archives").iterdir())
        assert partials == []


async def test_file_archive_over_the_size_limit_fails(make_agent: AgentFactory, tmp_path: Path) -> None:
    archive = write(tmp_path / "big.tar", tar_bytes([*app_members(), Member("blob", os.urandom(5000))]))
    async with (
        make_agent(fetch={"max_bytes": 1000}) as agent,
        httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client,
    ):
        doc = await wait_state(client, await create(client, create_body(archive.as_uri())), "failed")
        assert doc["error"] == f"download failed: {archive} is larger than 1000 bytes"


async def test_http_404_fails_at_once(agent: Agent, client: httpx.AsyncClient) -> None:
    async with ArchiveServer() as server:
        url = server.url("/missing.tgz")
        doc = await wait_state(client, await create(client, create_body(url)), "failed")
        assert doc["error"] == f"download failed: {url} answered HTTP 404"
        assert server.hits["/missing.tgz"] == 1  # not retried


async def test_http_503_backs_off_then_succeeds_when_the_server_recovers(
    agent: Agent, client: httpx.AsyncClient
) -> None:
    async with ArchiveServer() as server:
        url = server.serve("/shop.tgz", b"", status=503)
        created = await create(client, create_body(url, process_type="worker"))
        doc = await wait_state(client, created, "backoff")
        assert "answered HTTP 503" in doc["error"]
        assert "retrying in" in doc["error"]
        await poll(lambda: server.hits["/shop.tgz"] >= 2)  # it does retry
        server.serve("/shop.tgz", tar_bytes(app_members(), "gz"))
        doc = await wait_state(client, created, "running")
        assert doc["error"] is None


async def test_download_timeout_is_transient(make_agent: AgentFactory) -> None:
    async with ArchiveServer() as server, make_agent(fetch={"timeout_s": 0.3}) as agent:
        url = server.serve("/slow.tgz", tar_bytes(app_members(), "gz"))
        server.gate.clear()
        async with httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
            created = await create(client, create_body(url, process_type="worker"))
            doc = await wait_state(client, created, "backoff")
            assert "took longer than 0.3 s" in doc["error"]
            server.gate.set()
            await wait_state(client, created, "running")


async def test_connection_refused_is_transient(agent: Agent, client: httpx.AsyncClient) -> None:
    async with ArchiveServer() as server:
        url = server.url("/gone.tgz")
    # The server is stopped: nothing listens on its port any more.
    created = await create(client, create_body(url))
    doc = await wait_state(client, created, "backoff")
    assert "download failed" in doc["error"]
    assert "retrying in" in doc["error"]


# -- redirects -----------------------------------------------------------------------


async def test_redirects_are_followed(agent: Agent, client: httpx.AsyncClient) -> None:
    async with ArchiveServer() as server:
        server.serve("/shop.tgz", tar_bytes(app_members(), "gz"))
        server.serve("/latest", b"", location="/v2")
        server.serve("/v2", b"", location=server.url("/shop.tgz"))
        await wait_state(
            client, await create(client, create_body(server.url("/latest"), process_type="worker")), "running"
        )
        assert [server.hits[p] for p in ("/latest", "/v2", "/shop.tgz")] == [1, 1, 1]


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local or cloud-metadata"),
        ("http://[fe80::1]/x", "link-local or cloud-metadata"),
        ("file:///etc/passwd", "redirect to 'file:///etc/passwd' refused"),
        ("ftp://127.0.0.1/x", "redirect to 'ftp://127.0.0.1/x' refused"),
    ],
)
async def test_redirect_to_a_refused_address_is_refused(
    agent: Agent, client: httpx.AsyncClient, location: str, expected: str
) -> None:
    async with ArchiveServer() as server:
        url = server.serve("/app.tgz", b"", location=location)
        doc = await wait_state(client, await create(client, create_body(url)), "failed")
        assert expected in doc["error"]


async def test_redirect_to_a_denied_host_is_refused(make_agent: AgentFactory) -> None:
    async with ArchiveServer() as server, make_agent(fetch={"deny_hosts": ["localhost"]}) as agent:
        server.serve("/shop.tgz", tar_bytes(app_members(), "gz"))
        url = server.serve("/app.tgz", b"", location=f"http://localhost:{server.port}/shop.tgz")
        async with httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
            doc = await wait_state(client, await create(client, create_body(url)), "failed")
        assert "is in fetch.deny_hosts" in doc["error"]
        assert server.hits["/shop.tgz"] == 0


async def test_redirect_loop_stops(make_agent: AgentFactory) -> None:
    async with ArchiveServer() as server, make_agent(fetch={"max_redirects": 2}) as agent:
        url = server.serve("/loop", b"", location="/loop")
        async with httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
            doc = await wait_state(client, await create(client, create_body(url)), "failed")
        assert doc["error"] == "download failed: more than 2 redirects"
        assert server.hits["/loop"] == 3


# -- SSRF: addresses refused before connecting ------------------------------------------

# These need no server and no special configuration: one agent serves them all (an
# agent takes a fraction of a second to start and stop). Each uses its own node name.
SHARED_LOOP = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    config = fast_config(tmp_path_factory.mktemp("shared") / "data")
    async with Agent(config) as agent, httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
        yield client


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://169.254.170.2/v2/credentials",
        "http://[fe80::a9fe:a9fe]/",
        "http://[::ffff:169.254.169.254]/",
        "http://100.100.100.200/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "https://169.254.169.254/",
    ],
)
@SHARED_LOOP
async def test_link_local_and_metadata_addresses_are_refused(
    shared_client: httpx.AsyncClient, url: str
) -> None:
    body = create_body(url, node=f"n{zlib.crc32(url.encode())}")
    doc = await wait_state(shared_client, await create(shared_client, body), "failed")
    assert doc["pid"] is None
    assert doc["error"].startswith("download refused: ")
    assert "link-local or cloud-metadata address (set fetch.allow_link_local to allow)" in doc["error"]


@pytest.mark.parametrize("deny", ["127.0.0.0/8", "127.0.0.1", "localhost"])
async def test_deny_hosts_refuses_without_connecting(make_agent: AgentFactory, deny: str) -> None:
    async with ArchiveServer() as server, make_agent(fetch={"deny_hosts": [deny]}) as agent:
        server.serve("/shop.tgz", tar_bytes(app_members(), "gz"))
        host = "localhost" if deny == "localhost" else "127.0.0.1"
        url = f"http://{host}:{server.port}/shop.tgz"
        async with httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
            doc = await wait_state(client, await create(client, create_body(url)), "failed")
        assert "is in fetch.deny_hosts" in doc["error"]
        assert server.hits["/shop.tgz"] == 0


async def test_allow_hosts_not_matching_refuses_without_connecting(make_agent: AgentFactory) -> None:
    async with (
        ArchiveServer() as server,
        make_agent(fetch={"allow_hosts": ["10.0.0.0/8", "apps.example"]}) as agent,
    ):
        url = server.serve("/shop.tgz", tar_bytes(app_members(), "gz"))
        async with httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
            doc = await wait_state(client, await create(client, create_body(url)), "failed")
        assert doc["error"] == "download refused: 127.0.0.1 (127.0.0.1) is not in fetch.allow_hosts"
        assert server.hits["/shop.tgz"] == 0


async def test_allow_hosts_matching_lets_the_download_through(make_agent: AgentFactory) -> None:
    async with ArchiveServer() as server, make_agent(fetch={"allow_hosts": ["127.0.0.0/8"]}) as agent:
        url = server.serve("/shop.tgz", tar_bytes(app_members(), "gz"))
        async with httpx.AsyncClient(base_url=agent.url, timeout=30.0) as client:
            await wait_state(client, await create(client, create_body(url, process_type="worker")), "running")


@pytest.mark.parametrize(
    "url", ["ftp://example.com/app.tgz", "gopher://127.0.0.1/", "javascript:alert(1)", "/just/a/path.tgz"]
)
@SHARED_LOOP
async def test_other_schemes_are_refused_at_create(shared_client: httpx.AsyncClient, url: str) -> None:
    body = create_body(url, node=f"n{zlib.crc32(url.encode())}")
    response = await shared_client.post("/create-process", json=body)
    assert response.status_code == 422
    doc = response.json()
    assert doc["field"] == "source_url"
    assert "use http, https or file" in doc["message"]
    assert (await shared_client.get(f"/process-status/shop.{body['node']}")).status_code == 404


# -- the policy and the fetcher on their own --------------------------------------------


def addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.0.1",
        "fe80::1",
        "::ffff:169.254.169.254",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
    ],
)
def test_policy_refuses_link_local_and_metadata_by_default(address: str) -> None:
    with pytest.raises(FetchError, match="link-local or cloud-metadata") as info:
        AddressPolicy(FetchConfig()).check("metadata.internal", addr(address))
    assert not info.value.transient


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "224.0.0.1", "ff02::1"])
def test_policy_refuses_unspecified_and_multicast(address: str) -> None:
    with pytest.raises(FetchError, match="download refused"):
        AddressPolicy(FetchConfig()).check("x.example", addr(address))


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "::1", "10.1.2.3", "192.168.0.10", "93.184.216.34", "2001:db8::1"]
)
def test_policy_allows_ordinary_addresses_by_default(address: str) -> None:
    AddressPolicy(FetchConfig()).check("apps.example", addr(address))


def test_policy_allow_link_local() -> None:
    AddressPolicy(FetchConfig(allow_link_local=True)).check("meta", addr("169.254.169.254"))


def test_policy_allow_list_does_not_unlock_link_local() -> None:
    policy = AddressPolicy(FetchConfig(allow_hosts=["169.254.0.0/16"]))
    with pytest.raises(FetchError, match="link-local"):
        policy.check("meta", addr("169.254.169.254"))


def test_policy_deny_list() -> None:
    policy = AddressPolicy(FetchConfig(deny_hosts=["10.0.0.0/8", "Evil.Example", "192.168.1.5", "fc00::/7"]))
    for host, address in [
        ("ok.example", "10.9.9.9"),
        ("evil.example", "8.8.8.8"),
        ("EVIL.EXAMPLE", "8.8.8.8"),
        ("evil.example.", "8.8.8.8"),
        ("ok.example", "192.168.1.5"),
        ("ok.example", "::ffff:10.0.0.1"),
        ("ok.example", "fd12::1"),
    ]:
        with pytest.raises(FetchError, match=r"is in fetch\.deny_hosts"):
            policy.check(host, addr(address))
    policy.check("ok.example", addr("192.168.1.6"))
    policy.check("not-evil.example", addr("8.8.8.8"))


def test_policy_allow_list() -> None:
    policy = AddressPolicy(FetchConfig(allow_hosts=["apps.example", "172.16.0.0/12"]))
    policy.check("apps.example", addr("8.8.8.8"))
    policy.check("apps.example.", addr("8.8.8.8"))
    policy.check("anything", addr("172.20.0.1"))
    policy.check("anything", addr("::ffff:172.20.0.1"))
    for host, address in [("other.example", "8.8.8.8"), ("sub.apps.example", "8.8.8.8"), ("x", "172.32.0.1")]:
        with pytest.raises(FetchError, match=r"is not in fetch\.allow_hosts"):
            policy.check(host, addr(address))


def test_policy_deny_wins_over_allow() -> None:
    policy = AddressPolicy(FetchConfig(allow_hosts=["10.0.0.0/8"], deny_hosts=["10.0.0.5"]))
    policy.check("a", addr("10.0.0.4"))
    with pytest.raises(FetchError, match="deny_hosts"):
        policy.check("a", addr("10.0.0.5"))


async def test_resolve_literal_and_odd_numeric_forms() -> None:
    assert await resolve("127.0.0.1", 80) == [addr("127.0.0.1")]
    assert await resolve("[::1]", 80) == [addr("::1")]
    # The C resolver reads "2852039166" as 169.254.169.254: checked after resolution, it is refused.
    addresses = await resolve("2852039166", 80)
    assert addresses == [addr("169.254.169.254")]
    with pytest.raises(FetchError, match="link-local"):
        AddressPolicy(FetchConfig()).check("2852039166", addresses[0])


async def test_fetcher_caches_file_archives_by_content(tmp_path: Path) -> None:
    data = tar_bytes(app_members(), "gz")
    one = write(tmp_path / "a" / "app.tgz", data)
    two = write(tmp_path / "b" / "renamed.bin", data)
    fetcher = Fetcher(tmp_path / "cache", FetchConfig())
    first = await fetcher.fetch(one.as_uri())
    second = await fetcher.fetch(two.as_uri())
    assert first.sha256 == second.sha256
    assert first.archive == second.archive == fetcher.archive_path(first.sha256 or "")
    assert first.archive is not None
    assert first.archive.read_bytes() == data
    assert first.directory is None


async def test_fetcher_hashes_and_copies_file_archives_off_the_event_loop(tmp_path: Path) -> None:
    # A large archive takes seconds to hash and copy; meanwhile the agent must go on
    # serving and reading its children's output. Had the fetch not yielded to the loop
    # once, the other task would not have run at all.
    archive = tmp_path / "big.tar"
    with open(archive, "wb") as fh:
        fh.truncate(32 * 1024 * 1024)
    ran = 0

    async def other_work() -> None:
        nonlocal ran
        while True:
            ran += 1
            await asyncio.sleep(0)

    other = asyncio.ensure_future(other_work())
    try:
        await asyncio.sleep(0)
        before = ran
        await Fetcher(tmp_path / "cache", FetchConfig()).fetch(archive.as_uri())
        assert ran > before
    finally:
        other.cancel()


async def test_fetcher_prefers_a_cached_archive_without_the_network(tmp_path: Path) -> None:
    fetcher = Fetcher(tmp_path / "cache", FetchConfig())
    async with ArchiveServer() as server:
        url = server.serve("/shop.tgz", tar_bytes(app_members(), "gz"))
        fetched = await fetcher.fetch(url)
    assert server.hits["/shop.tgz"] == 1
    # The server is gone; a restored process names the archive it had.
    again = await Fetcher(tmp_path / "cache", FetchConfig()).fetch(url, prefer_sha256=fetched.sha256)
    assert again.archive == fetched.archive


async def test_fetcher_refuses_a_bad_url(tmp_path: Path) -> None:
    fetcher = Fetcher(tmp_path / "cache", FetchConfig())
    with pytest.raises(FetchError, match="not an http\\(s\\) or file URL"):
        await fetcher.fetch("http:///no-host")
