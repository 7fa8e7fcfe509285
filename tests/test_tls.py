"""TLS on the agent's links (issue 18): certificates made here, real servers, real clients.

``herder certs`` makes a CA and certificates in the test's directory; a real agent serves
HTTPS and WSS with them on its port and on a pool's own address; curl (``--cacert``),
httpx, websockets, the wire protocol's client and the ``herder`` command talk to it, each
checking the certificate against the CA. What must be refused is: a client that does not
trust the CA, a key that does not match its certificate, an off-loopback agent without
auth (TLS or not).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect

from herder.agent import Agent, ConfigError
from herder.certs import CertError, init, issue
from herder.net import rpc_url
from herder.rpc import connect
from herder.tls import certificate_fingerprint, fingerprint_of, parse_fingerprint
from tests.conftest import AgentFactory
from tests.helpers import UpProcess, poll, run_herder, wait_http

APP = str(Path(__file__).parent / "apps" / "pool_app.py")


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A CA and a server certificate for loopback, made once for the module's tests."""
    directory = tmp_path_factory.mktemp("certs") / "tls"
    init(directory, [])
    return directory


async def curl(*args: str) -> tuple[int, bytes, str]:
    """The real curl (exit status, body, stderr): a client that is not Python's."""
    found = shutil.which("curl")
    assert found is not None, "curl is needed by these tests"
    proc = await asyncio.create_subprocess_exec(
        found, "-sS", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err.decode()


def tls_table(certs: Path) -> dict[str, Any]:
    return {"cert": certs / "server.crt", "key": certs / "server.key"}


def trusting(certs: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs / "ca.crt"))


# -- herder certs ------------------------------------------------------------------------


async def test_certs_init_and_issue_write_a_ca_and_certificates_with_private_keys_0600(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "fleet"
    code, out, err = await run_herder("certs", "init", "--dir", str(directory), "--host", "node1.example")
    assert code == 0, err
    for name in ("ca.crt", "ca.key", "server.crt", "server.key"):
        assert (directory / name).is_file(), name
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((directory / key).stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "server.crt").stat().st_mode) == 0o644
    # It prints the server certificate's fingerprint, as --manager-fingerprint takes it.
    assert certificate_fingerprint(directory / "server.crt") in out
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((directory / "server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"node1.example", "localhost"}
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    # openssl agrees that the CA signed it.
    verified = await asyncio.create_subprocess_exec(
        "openssl", "verify", "-CAfile", str(directory / "ca.crt"), str(directory / "server.crt"),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert (await verified.communicate())[0].strip().endswith(b"OK")

    code, out, err = await run_herder(
        "certs", "issue", "--dir", str(directory), "--name", "agent1", "--client"
    )
    assert code == 0, err
    assert stat.S_IMODE((directory / "agent1.key").stat().st_mode) == 0o600
    client = x509.load_pem_x509_certificate((directory / "agent1.crt").read_bytes())
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in usage

    # Nothing is overwritten: a second init, or a name taken, is refused (exit 1, one line).
    code, _, err = await run_herder("certs", "init", "--dir", str(directory))
    assert code == 1
    assert "has a CA already" in err
    code, _, err = await run_herder("certs", "issue", "--dir", str(directory), "--name", "agent1")
    assert code == 1
    assert "exists" in err
    with pytest.raises(CertError, match="run herder certs init first"):
        issue(tmp_path / "empty", "x", [])


def test_fingerprints_are_read_in_the_spellings_people_paste(certs_dir: Path) -> None:
    pem = (certs_dir / "server.crt").read_text()
    fingerprint = fingerprint_of(ssl.PEM_cert_to_DER_cert(pem))
    assert certificate_fingerprint(certs_dir / "server.crt") == fingerprint
    openssl_style = "SHA256:" + ":".join(fingerprint[7 + i : 9 + i].upper() for i in range(0, 64, 2))
    assert parse_fingerprint(openssl_style) == fingerprint
    for bad in ("abc", "sha256:1234", "md5:" + "0" * 64):
        with pytest.raises(ValueError, match="fingerprint"):
            parse_fingerprint(bad)


# -- the agent over TLS ----------------------------------------------------------------------


async def test_the_agent_serves_https_and_wss_that_clients_verify_with_the_ca(
    make_agent: AgentFactory, certs_dir: Path
) -> None:
    async with make_agent(tls=tls_table(certs_dir)) as agent:
        assert agent.url.startswith("https://127.0.0.1:")
        # curl, checking the certificate against the CA.
        code, out, err = await curl("--cacert", str(certs_dir / "ca.crt"), f"{agent.url}/")
        assert code == 0, err
        index = json.loads(out)
        assert index["rpc"].startswith("wss://127.0.0.1:")  # links keep the scheme the client used
        # curl without the CA refuses the certificate (exit 60).
        code, _, err = await curl(f"{agent.url}/")
        assert code == 60, err
        # Plain HTTP on the TLS port gets no answer of the API.
        with pytest.raises(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=5) as plain:
                await plain.get(agent.url.replace("https://", "http://") + "/")

        async with httpx.AsyncClient(base_url=agent.url, verify=trusting(certs_dir), timeout=30) as client:
            created = await client.post(
                "/create-process",
                json={"app": "tls", "node": "echo.0", "command": "echo over-tls; sleep 60"},
            )
            assert created.status_code == 201, created.text
            attach = created.json()["attach"]
            assert attach.startswith("wss://")
        # WSS: the attach socket, then the wire protocol at /rpc, both verified.
        async with ws_connect(attach, ssl=trusting(certs_dir)) as ws:
            line = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert line == {"stream": "stdout", "line": "over-tls"}
        async with connect(rpc_url(agent.url), tls=trusting(certs_dir)) as peer:
            assert peer.remote is not None
        # The system's CAs do not know this one: the default context refuses it.
        with pytest.raises(ssl.SSLCertVerificationError):
            async with ws_connect(attach):
                pass


async def test_a_pools_own_address_serves_https_and_tells_the_app(
    make_agent: AgentFactory, certs_dir: Path
) -> None:
    async with make_agent(tls=tls_table(certs_dir)) as agent:
        async with httpx.AsyncClient(base_url=agent.url, verify=trusting(certs_dir), timeout=30) as client:
            body = {
                "name": "web",
                "command": [sys.executable, APP, "--port", "{port}"],
                "listen": "127.0.0.1:0",
            }
            created = await client.post("/pools", json=body)
            assert created.status_code == 201, created.text
            pool_url = created.json()["url"]
            assert pool_url.startswith("https://127.0.0.1:")
            async with httpx.AsyncClient(
                base_url=pool_url, verify=trusting(certs_dir), timeout=30
            ) as through:
                headers = (await through.get("/headers")).json()
            assert headers["x-forwarded-proto"] == "https"
            # The pool by Host on the agent's own port (a new connection: this one serves the
            # API): handed to the router over TLS too.
            async with httpx.AsyncClient(verify=trusting(certs_dir), timeout=30) as fresh:
                host = agent.url.removeprefix("https://")
                by_host = await fresh.get(f"{agent.url}/headers", headers={"Host": f"web.{host}"})
            assert by_host.status_code == 200, by_host.text
            assert by_host.json()["x-forwarded-proto"] == "https"
            await wait_http(client, created.json()["details"], lambda d: bool(d["instances"]))
        # A WebSocket through the pool's address, over WSS.
        async with ws_connect(pool_url.replace("https://", "wss://") + "/ws", ssl=trusting(certs_dir)) as ws:
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 10) == "ping"


async def test_the_cli_talks_to_an_https_agent_trusting_the_ca(
    make_agent: AgentFactory, certs_dir: Path
) -> None:
    async with make_agent(tls=tls_table(certs_dir)) as agent:
        env = {**os.environ, "SSL_CERT_FILE": str(certs_dir / "ca.crt")}
        code, out, err = await run_herder(
            "--agent", agent.url, "run", "cli", "tls.0", "--", "sleep", "60", env=env
        )
        assert code == 0, err
        code, out, err = await run_herder("--agent", agent.url, "ps", env=env)
        assert code == 0, err
        assert "cli.tls.0" in out
        # Without the CA the command says why, in one line, and exits 1.
        bare = {k: v for k, v in env.items() if k != "SSL_CERT_FILE"}
        code, _, err = await run_herder("--agent", agent.url, "ps", env=bare)
        assert code == 1
        assert "CERTIFICATE_VERIFY_FAILED" in err


async def test_tls_files_that_cannot_be_used_stop_the_agent_naming_them(
    tmp_path: Path, make_agent: AgentFactory, certs_dir: Path
) -> None:
    other = tmp_path / "other"
    init(other, [])
    mismatched = {"cert": certs_dir / "server.crt", "key": other / "server.key"}
    with pytest.raises(ConfigError, match="cannot use the certificate"):
        async with make_agent(tls=mismatched):
            pass
    with pytest.raises(ConfigError, match="no such file"):
        async with make_agent(tls={"cert": tmp_path / "none.crt", "key": tmp_path / "none.key"}):
            pass
    code, _, err = await run_herder(
        "agent", "--port", "0", "--data-dir", str(tmp_path / "d"), "--tls-cert", str(certs_dir / "server.crt")
    )
    assert code == 2
    assert "--tls-cert and --tls-key go together" in err


async def test_off_loopback_still_needs_auth_with_tls_on(tmp_path: Path, certs_dir: Path) -> None:
    from tests.conftest import fast_config

    config = fast_config(tmp_path / "data", host="0.0.0.0", tls=tls_table(certs_dir))
    with pytest.raises(ConfigError, match="off loopback the agent requires auth"):
        async with Agent(config):
            pass


async def test_herder_up_runs_both_over_tls_and_links_them_with_the_ca(
    tmp_path: Path, certs_dir: Path
) -> None:
    up = UpProcess(tmp_path / "up", "--tls-dir", str(certs_dir)).start()
    try:
        assert up.manager_url.startswith("https://")
        assert up.agent_url.startswith("https://")
        async with httpx.AsyncClient(
            base_url=up.manager_url, verify=trusting(certs_dir), timeout=30
        ) as client:

            async def agent_linked() -> bool:
                return len((await client.get("/workers")).json()) == 1

            await poll(agent_linked, timeout_s=20)
    finally:
        assert up.stop() == 0, up.stderr()
