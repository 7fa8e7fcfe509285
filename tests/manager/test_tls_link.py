"""The manager over TLS and the agent's link to it (issue 18), with certificates made here.

A real manager serves HTTPS and WSS; real agents link to it over ``https://``, checking
its certificate with a CA file or a pinned fingerprint; with ``client_ca`` the manager
asks every client for a certificate, and an agent without one signed by that CA cannot
link. A link that is refused says why in its log line (the check that failed, and the
option that fixes it), and never becomes connected. TLS is orthogonal to the database,
so these run on SQLite only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from herder.agent import Agent
from herder.auth import init_keys
from herder.certs import init, issue
from herder.manager.config import ManagerConfig
from herder.manager.errors import ManagerError
from herder.manager.server import Manager
from herder.tls import certificate_fingerprint
from tests.conftest import AgentFactory
from tests.helpers import poll, run_herder
from tests.manager.keyed import issue as issue_key
from tests.test_tls import curl

LINK_LOGGER = "herder.agent.link.worker"
ManagerFactory = Callable[..., AbstractAsyncContextManager[Manager]]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fleet's CA with a server and a client certificate, and a stranger's CA with a client's."""
    root = tmp_path_factory.mktemp("pki")
    init(root / "fleet", [])
    issue(root / "fleet", "agent1", [], client=True)
    init(root / "other", [])
    issue(root / "other", "intruder", [], client=True)
    return {"fleet": root / "fleet", "other": root / "other"}


@pytest.fixture(autouse=True)
def _link_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """The link's warnings are captured: they say why a link was refused."""
    caplog.set_level(logging.WARNING, logger=LINK_LOGGER)


@pytest.fixture
def tls_manager(tmp_path: Path, pki: dict[str, Path]) -> ManagerFactory:
    def factory(**overrides: Any) -> Manager:
        fleet = pki["fleet"]
        data: dict[str, Any] = {
            "port": 0,
            "data_dir": tmp_path / "manager",
            "heartbeat_interval_s": 0.2,
            "tls": {"cert": fleet / "server.crt", "key": fleet / "server.key"},
        }
        data.update(overrides)
        return Manager(ManagerConfig.model_validate(data))

    return factory


def link_to(manager: Manager, **tls: Any) -> dict[str, Any]:
    return {"url": manager.url, "slots": 1, "name": "tls-agent", **tls}


async def linked(agent: Agent) -> None:
    assert agent.runtime is not None
    assert agent.runtime.worker is not None
    await asyncio.wait_for(agent.runtime.worker.connected.wait(), 20)


async def refused(agent: Agent, caplog: pytest.LogCaptureFixture, *words: str) -> str:
    """The link's warning that says why it failed (all of ``words`` in it); it never linked."""

    def said() -> bool:
        return any(all(w in r.getMessage() for w in words) for r in caplog.records if r.name == LINK_LOGGER)

    await poll(said, timeout_s=20)
    assert agent.runtime is not None
    assert agent.runtime.worker is not None
    assert not agent.runtime.worker.connected.is_set()
    return next(
        r.getMessage() for r in caplog.records if r.name == LINK_LOGGER and words[0] in r.getMessage()
    )


async def workers(manager: Manager, ca: Path, **client: Any) -> list[str]:
    """The hostnames of the workers the manager knows, asked over HTTPS."""
    async with httpx.AsyncClient(base_url=manager.url, verify=_ctx(ca, **client), timeout=30) as http:
        answer = await http.get("/workers")
        answer.raise_for_status()
        return sorted(answer.json())


def _ctx(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


async def test_an_agent_links_over_wss_checking_the_manager_with_its_ca(
    tls_manager: ManagerFactory, make_agent: AgentFactory, pki: dict[str, Path]
) -> None:
    fleet = pki["fleet"]
    async with tls_manager() as manager:
        assert manager.url.startswith("https://")
        code, out, err = await curl("--cacert", str(fleet / "ca.crt"), f"{manager.url}/")
        assert code == 0, err
        assert b'"wss://127.0.0.1:' in out  # the index's WebSocket links keep the scheme
        async with make_agent(manager=link_to(manager, ca=fleet / "ca.crt")) as agent:
            await linked(agent)
            assert await workers(manager, fleet / "ca.crt") == ["tls-agent"]


async def test_a_manager_whose_certificate_the_ca_did_not_sign_is_refused_clearly(
    tls_manager: ManagerFactory,
    make_agent: AgentFactory,
    pki: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with tls_manager() as manager:
        async with make_agent(manager=link_to(manager, ca=pki["other"] / "ca.crt")) as agent:
            message = await refused(agent, caplog, "not trusted", "--manager-ca")
            assert "CERTIFICATE_VERIFY_FAILED" in message
        assert await workers(manager, pki["fleet"] / "ca.crt") == []


async def test_a_key_is_never_sent_to_a_manager_the_link_does_not_trust(
    tmp_path: Path,
    tls_manager: ManagerFactory,
    make_agent: AgentFactory,
    pki: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With keys, the link's first request is POST /auth/token carrying the key: it goes over
    the same check, so a wrong CA stops it before the key leaves; the right one links."""
    init_keys(tmp_path / "manager")
    async with tls_manager() as manager:
        key, _ = await issue_key(manager, "agent", "admin")
        wrong = link_to(manager, ca=pki["other"] / "ca.crt", key=key)
        async with make_agent(manager=wrong) as agent:
            await refused(agent, caplog, "not trusted")
        right = link_to(manager, ca=pki["fleet"] / "ca.crt", key=key)
        async with make_agent(manager=right) as agent:
            await linked(agent)


async def test_without_a_ca_the_link_trusts_the_system_cas_for_its_token_and_its_socket(
    tmp_path: Path,
    tls_manager: ManagerFactory,
    make_agent: AgentFactory,
    pki: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No --manager-ca: the system's CAs (here the file SSL_CERT_FILE names, as OpenSSL
    reads it) for both of the link's connections, the token's (httpx) and the socket's."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki["fleet"] / "ca.crt"))
    init_keys(tmp_path / "manager")
    async with tls_manager() as manager:
        key, _ = await issue_key(manager, "agent", "admin")
        async with make_agent(manager=link_to(manager, key=key)) as agent:
            await linked(agent)


async def test_a_pinned_fingerprint_links_and_another_certificate_is_refused(
    tls_manager: ManagerFactory,
    make_agent: AgentFactory,
    pki: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pin = certificate_fingerprint(pki["fleet"] / "server.crt")
    async with tls_manager() as manager:
        # The pin needs no CA, and no name: the URL may name the manager as "localhost".
        url = manager.url.replace("127.0.0.1", "localhost")
        async with make_agent(manager={**link_to(manager, fingerprint=pin), "url": url}) as agent:
            await linked(agent)
        stranger = certificate_fingerprint(pki["other"] / "server.crt")
        async with make_agent(manager=link_to(manager, fingerprint=stranger)) as agent:
            message = await refused(agent, caplog, "not the pinned one")
            assert pin in message
            assert stranger in message


async def test_mutual_tls_admits_only_agents_with_a_certificate_of_the_clients_ca(
    tls_manager: ManagerFactory,
    make_agent: AgentFactory,
    pki: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet, other = pki["fleet"], pki["other"]
    ca = fleet / "ca.crt"
    mtls = {"cert": fleet / "server.crt", "key": fleet / "server.key", "client_ca": ca}
    async with tls_manager(tls=mtls) as manager:
        with_cert = link_to(manager, ca=ca, client_cert=fleet / "agent1.crt", client_key=fleet / "agent1.key")
        async with make_agent(manager=with_cert) as agent:
            await linked(agent)
        caplog.clear()
        async with make_agent(manager={**link_to(manager, ca=ca), "name": "bare"}) as agent:
            await refused(agent, caplog, "--tls-client-cert")
        caplog.clear()
        intruder = link_to(
            manager, ca=ca, client_cert=other / "intruder.crt", client_key=other / "intruder.key"
        )
        async with make_agent(manager={**intruder, "name": "intruder"}) as agent:
            await refused(agent, caplog, "link to the manager")
        # Only the agent with the fleet's certificate was ever registered.
        assert await workers(manager, ca, cert=fleet / "agent1.crt", key=fleet / "agent1.key") == [
            "tls-agent"
        ]
        # Any client without a certificate is refused in the handshake (curl too).
        with pytest.raises(httpx.HTTPError):
            await workers(manager, ca)
        # The herder command presents one named by HERDER_TLS_CLIENT_CERT/_KEY.
        env = {**os.environ, "SSL_CERT_FILE": str(ca)}
        code, _, err = await run_herder("--manager", manager.url, "workers", "ls", env=env)
        assert code == 1, err
        env |= {
            "HERDER_TLS_CLIENT_CERT": str(fleet / "agent1.crt"),
            "HERDER_TLS_CLIENT_KEY": str(fleet / "agent1.key"),
        }
        code, out, err = await run_herder("--manager", manager.url, "workers", "ls", env=env)
        assert code == 0, err
        assert "tls-agent" in out


async def test_tls_settings_that_cannot_work_are_refused_before_anything_starts(
    tls_manager: ManagerFactory, make_agent: AgentFactory, pki: dict[str, Path], tmp_path: Path
) -> None:
    fleet = pki["fleet"]
    with pytest.raises(ManagerError, match="cannot use the certificate"):
        async with tls_manager(tls={"cert": fleet / "server.crt", "key": pki["other"] / "server.key"}):
            pass
    # A CA for a plain http:// link would read as protection that is not there.
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not an https:// or wss:// URL"):
        make_agent(manager={"url": "http://127.0.0.1:1", "ca": fleet / "ca.crt"})
    pin = certificate_fingerprint(fleet / "server.crt")
    both = {"url": "https://127.0.0.1:1", "ca": fleet / "ca.crt", "fingerprint": pin}
    with pytest.raises(ValidationError, match="not both"):
        make_agent(manager=both)


async def test_keys_token_presents_the_client_certificate_to_a_manager_with_mutual_tls(
    tmp_path: Path, tls_manager: ManagerFactory, pki: dict[str, Path]
) -> None:
    """``herder keys token`` buys its token with the certificate HERDER_TLS_CLIENT_CERT names,
    as the other commands do; without one the manager's handshake refuses it."""
    fleet = pki["fleet"]
    init_keys(tmp_path / "manager")
    mtls = {"cert": fleet / "server.crt", "key": fleet / "server.key", "client_ca": fleet / "ca.crt"}
    async with tls_manager(tls=mtls) as manager:
        key, _ = await issue_key(manager, "alice", "user")
        key_file = tmp_path / "alice.key"
        key_file.write_text(key)
        env = {**os.environ, "SSL_CERT_FILE": str(fleet / "ca.crt")}
        argv = ("keys", "token", "--key-file", str(key_file), "--manager", manager.url)
        code, _, err = await run_herder(*argv, env=env)
        assert code == 1, err  # no client certificate: refused in the handshake
        env |= {
            "HERDER_TLS_CLIENT_CERT": str(fleet / "agent1.crt"),
            "HERDER_TLS_CLIENT_KEY": str(fleet / "agent1.key"),
        }
        code, out, err = await run_herder(*argv, env=env)
        assert code == 0, err
        token = out.strip()
        ctx = _ctx(fleet / "ca.crt", cert=fleet / "agent1.crt", key=fleet / "agent1.key")
        async with httpx.AsyncClient(base_url=manager.url, verify=ctx, timeout=30) as http:
            answer = await http.get("/tasks", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text  # the token bought is good
