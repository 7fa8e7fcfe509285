"""Keys and tokens on a real manager (both databases): who gets in, who is refused, and why.

The manager's data dir gets a signing key (``init_keys``, what ``herder keys init``
does); keys are issued through the manager's own ``Authority`` into its database, and
the CLI is run for real once. Every refusal the issue lists is tried over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from herder.auth import init_keys, public_keys_from_jwks
from herder.auth import tokens as token_codec
from herder.auth.keys import SigningKey
from herder.manager.authority import ISSUER, KEY_AUDIENCE, TOKEN_AUDIENCE
from herder.manager.server import Manager, ManagerError
from herder.rpc.client import connect
from herder.rpc.errors import HandshakeRefused
from tests.conftest import AgentFactory
from tests.helpers import HERDER
from tests.manager.conftest import ManagerFactory
from tests.manager.keyed import bearer, buy, issue, keyed_agent, users_headers


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(payload).encode())
    return f"{head}.{body}.{b64(signature)}"


@pytest.fixture
async def secured(make_manager: ManagerFactory, tmp_path: Path) -> AsyncIterator[tuple[Manager, SigningKey]]:
    signing = init_keys(tmp_path / "manager")
    async with make_manager(heartbeat_interval_s=0.2) as manager:
        yield manager, signing


async def test_a_key_buys_a_token_and_the_token_opens_the_api(secured: tuple[Manager, SigningKey]) -> None:
    manager, signing = secured
    key, _ = await issue(manager, "alice", "admin")
    async with httpx.AsyncClient(base_url=manager.url) as client:
        assert (await client.get("/healthz")).status_code == 200  # public
        jwks = (await client.get("/auth/jwks.json")).json()
        assert set(public_keys_from_jwks(jwks)) == {signing.kid}
        refused = await client.get("/workers")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        answer = await buy(client, key)
        assert answer.status_code == 200
        token, expires_at = answer.json()["token"], answer.json()["expires_at"]
        assert 3500 < expires_at - time.time() <= 3600
        claims = token_codec.verify(
            token, public_keys_from_jwks(jwks), issuer=ISSUER, audience=TOKEN_AUDIENCE
        )
        assert (claims.sub, claims.role) == ("alice", "admin")
        assert (await client.get("/workers", headers=bearer(token))).status_code == 200
        # A key is not an access token, and a token buys no other token.
        assert (await client.get("/workers", headers=bearer(key))).json()["error"] == "wrong_audience"
        assert (await buy(client, token)).status_code == 401


async def test_every_forgery_is_refused_with_its_reason(secured: tuple[Manager, SigningKey]) -> None:
    manager, signing = secured
    key, _ = await issue(manager, "bob")
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": TOKEN_AUDIENCE,
        "sub": "bob",
        "iat": now,
        "exp": now + 600,
        "kind": "token",
    }
    public_raw = next(iter(signing.public_keys().values())).public_bytes_raw()
    hs_head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    hs_body = b64(json.dumps(payload).encode())
    hs_signature = hmac.new(public_raw, f"{hs_head}.{hs_body}".encode(), hashlib.sha256).digest()
    other = SigningKey.generate()
    cases = {
        "missing": None,
        "alg none": forged({"alg": "none", "typ": "JWT"}, payload),
        "HMAC with the public key": f"{hs_head}.{hs_body}.{b64(hs_signature)}",
        "another key": token_codec.issue(
            other, issuer=ISSUER, audience=TOKEN_AUDIENCE, ttl_s=600, subject="bob"
        ),
        "expired": token_codec.issue(
            signing, issuer=ISSUER, audience=TOKEN_AUDIENCE, ttl_s=60, subject="bob", now=now - 3600
        ),
        "another audience": token_codec.issue(
            signing, issuer=ISSUER, audience="somebody-else", ttl_s=600, subject="bob"
        ),
        "a key for the manager": key,
    }
    reasons = {}
    async with httpx.AsyncClient(base_url=manager.url) as client:
        for name, token in cases.items():
            headers = bearer(token) if token is not None else {}
            answer = await client.get("/tasks", headers=headers)
            assert answer.status_code == 401, name
            assert answer.json()["field"] == "Authorization"
            reasons[name] = answer.json()["error"]
    # A WebSocket without a valid token is refused before it opens.
    ws_url = manager.url.replace("http://", "ws://") + "/tasks/1/log"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(ws_url):
            pass
    assert refused.value.response.status_code == 403
    assert reasons == {
        "missing": "unauthorized",
        "alg none": "bad_algorithm",
        "HMAC with the public key": "bad_algorithm",
        "another key": "unknown_key",
        "expired": "expired",
        "another audience": "wrong_audience",
        "a key for the manager": "wrong_audience",
    }


async def test_revoking_a_key_ends_it_and_its_tokens_within_a_second(
    secured: tuple[Manager, SigningKey],
) -> None:
    manager, _ = secured
    assert manager.runtime is not None
    key, key_id = await issue(manager, "carol")
    async with httpx.AsyncClient(base_url=manager.url) as client:
        token = (await buy(client, key)).json()["token"]
        assert (await client.get("/tasks", headers=bearer(token))).status_code == 200
        async with manager.runtime.transaction() as db:
            assert await type(manager.authority).revoke(db, key_id=key_id) == 1
        deadline = time.monotonic() + 5
        while (await client.get("/tasks", headers=bearer(token))).status_code == 200:
            assert time.monotonic() < deadline, "the revocation never took effect"
            await asyncio.sleep(0.05)
        answer = await client.get("/tasks", headers=bearer(token))
        assert answer.json()["error"] == "revoked"
        assert (await buy(client, key)).json()["error"] == "revoked"


async def test_users_see_and_touch_their_own_tasks_and_admins_everything(
    secured: tuple[Manager, SigningKey],
) -> None:
    manager, _ = secured
    async with httpx.AsyncClient(base_url=manager.url) as client:
        tokens_of = {}
        for user, role in (("erin", "user"), ("frank", "user"), ("root", "admin")):
            key, _ = await issue(manager, user, role)
            tokens_of[user] = bearer((await buy(client, key)).json()["token"])
        body = {"type": "command", "settings": {"argv": ["true"]}}
        erins = (await client.post("/tasks", json=body, headers=tokens_of["erin"])).json()
        franks = (await client.post("/tasks", json=body, headers=tokens_of["frank"])).json()
        assert (erins["owner"], franks["owner"]) == ("erin", "frank")

        def ids(answer: httpx.Response) -> list[int]:
            return [t["id"] for t in answer.json()["tasks"]]

        assert ids(await client.get("/tasks", headers=tokens_of["erin"])) == [erins["id"]]
        assert ids(await client.get("/tasks", headers=tokens_of["root"])) == [franks["id"], erins["id"]]
        assert (await client.get("/tasks/counts", headers=tokens_of["frank"])).json()["total"] == 1
        # Another user's task is as absent as one that does not exist, whatever the verb.
        other = f"/tasks/{franks['id']}"
        assert (await client.get(other, headers=tokens_of["erin"])).status_code == 404
        cancel = {"status": "canceled"}
        assert (await client.patch(other, json=cancel, headers=tokens_of["erin"])).status_code == 404
        assert (await client.delete(other, headers=tokens_of["erin"])).status_code == 404
        assert (await client.get(f"{other}/log", headers=tokens_of["erin"])).status_code == 404
        assert (await client.get(other, headers=tokens_of["frank"])).json()["status"] == "queued"
        assert (await client.patch(other, json=cancel, headers=tokens_of["root"])).status_code == 204
        # Workers' routes are for admins.
        worker = {"hostname": "w1", "system": "Linux"}
        refused = await client.post("/workers", json=worker, headers=tokens_of["erin"])
        assert refused.status_code == 403
        assert refused.json()["error"] == "forbidden"
        assert (await client.post("/workers", json=worker, headers=tokens_of["root"])).status_code == 201


async def test_the_cli_issues_and_revokes_keys_in_the_managers_database(db_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "cli"

    def herder(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HERDER, "keys", *args, "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert herder("issue", "--user", "dan", "--db", db_url).returncode == 1  # no signing key yet
    assert herder("init").returncode == 0
    assert "exists" in herder("init").stderr
    issued = herder("issue", "--user", "dan", "--role", "admin", "--ttl", "2d", "--db", db_url)
    assert issued.returncode == 0, issued.stderr
    key = issued.stdout.strip()
    listed = json.loads(herder("ls", "--json", "--db", db_url).stdout)["keys"]
    assert [(k["user"], k["role"], k["revoked_at"]) for k in listed] == [("dan", "admin", None)]
    assert 2 * 86400 - 120 < listed[0]["expires_at"] - time.time() <= 2 * 86400
    claims = token_codec.verify(
        key, init_keys_public(data_dir), issuer=ISSUER, audience=KEY_AUDIENCE, kinds=("key",)
    )
    assert claims.jti == listed[0]["id"]
    bad_role = herder("issue", "--user", "dan", "--role", "root", "--db", db_url)
    assert bad_role.returncode == 2
    assert "--role" in bad_role.stderr
    assert herder("revoke", "--user", "dan", "--db", db_url).returncode == 0
    assert herder("revoke", "--user", "dan", "--db", db_url).returncode == 1  # nothing left to revoke
    assert json.loads(herder("ls", "--json", "--db", db_url).stdout)["keys"][0]["revoked_at"] is not None


def init_keys_public(data_dir: Path) -> Any:
    from herder.auth import load_signing_key

    signing = load_signing_key(data_dir)
    assert signing is not None
    return signing.public_keys()


async def test_an_agent_links_with_its_key_and_renews_its_token(
    make_manager: ManagerFactory, make_agent: AgentFactory, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")
    async with make_manager(heartbeat_interval_s=0.2, token_ttl_s=2) as manager:
        key, _ = await issue(manager, "agent-1", "admin")
        link = {"url": manager.url, "slots": 1, "name": "keyed", "key": key}
        async with make_agent(manager=link) as agent:
            assert agent.runtime is not None
            worker = agent.runtime.worker
            assert worker is not None
            await asyncio.wait_for(worker.connected.wait(), 20)
            first = worker.peer
            deadline = time.monotonic() + 10
            while worker.peer is first or worker.peer is None:  # renewed at 80% of 2 s
                assert time.monotonic() < deadline, "the link never renewed its token"
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=manager.url) as client:
                token = (await buy(client, key)).json()["token"]
                body = {"type": "command", "settings": {"argv": ["true"]}}
                task = (await client.post("/tasks", json=body, headers=bearer(token))).json()
                deadline = time.monotonic() + 20
                while (await client.get(f"/tasks/{task['id']}", headers=bearer(token))).json()[
                    "status"
                ] != "completed":
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)


async def test_an_agent_with_a_key_takes_the_managers_tokens_and_learns_revocations(
    make_manager: ManagerFactory, make_agent: AgentFactory, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")
    async with (
        make_manager(heartbeat_interval_s=0.2) as manager,
        keyed_agent(manager, make_agent, "trusting", "agent-2") as agent,
    ):
        async with httpx.AsyncClient(base_url=manager.url) as to_manager:
            user_key, user_key_id = await issue(manager, "grace")
            token = (await buy(to_manager, user_key)).json()["token"]
        async with httpx.AsyncClient(base_url=agent.url) as to_agent:
            assert (await to_agent.get("/healthz")).status_code == 200
            assert (await to_agent.get("/")).status_code == 401
            forged = token_codec.issue(
                SigningKey.generate(), issuer=ISSUER, audience=TOKEN_AUDIENCE, ttl_s=60, subject="x"
            )
            assert (await to_agent.get("/", headers=bearer(forged))).json()["error"] == "unknown_key"
            assert (await to_agent.get("/", headers=bearer(token))).status_code == 200
        agent_rpc = agent.url.replace("http://", "ws://") + "/rpc"
        async with connect(agent_rpc, token=token) as peer:  # its RPC takes them too
            assert (await peer.call("list_sessions", target="meta")) == []
        with pytest.raises(HandshakeRefused) as refused:  # at the front door
            async with connect(agent_rpc, token=forged):
                pass
        assert refused.value.code == "401"
        async with httpx.AsyncClient(base_url=agent.url) as to_agent:
            assert manager.runtime is not None
            async with manager.runtime.transaction() as db:
                await type(manager.authority).revoke(db, key_id=user_key_id)
            deadline = time.monotonic() + 10  # a tick to read it, a heartbeat to carry it
            while (await to_agent.get("/", headers=bearer(token))).status_code == 200:
                assert time.monotonic() < deadline, "the revocation never reached the agent"
                await asyncio.sleep(0.05)
            assert (await to_agent.get("/", headers=bearer(token))).json()["error"] == "revoked"


async def test_on_an_agent_users_see_and_touch_their_own_processes(
    make_manager: ManagerFactory, make_agent: AgentFactory, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")
    async with (
        make_manager(heartbeat_interval_s=0.2) as manager,
        keyed_agent(manager, make_agent, "owned", "agent-3") as agent,
    ):
        as_user = await users_headers(manager, (("ivy", "user"), ("jack", "user"), ("root", "admin")))
        async with httpx.AsyncClient(base_url=agent.url, timeout=30) as to_agent:
            body = {"app": "ivys", "node": "0", "command": ["sleep", "60"]}
            created = await to_agent.post("/create-process", json=body, headers=as_user["ivy"])
            assert created.status_code == 201
            slug = created.json()["slug"]

            def slugs(answer: httpx.Response) -> list[str]:
                return [p["slug"] for p in answer.json()["processes"]]

            assert slugs(await to_agent.get("/list-processes", headers=as_user["ivy"])) == [slug]
            assert slugs(await to_agent.get("/list-processes", headers=as_user["jack"])) == []
            assert slugs(await to_agent.get("/list-processes", headers=as_user["root"])) == [slug]
            other = as_user["jack"]
            assert (await to_agent.get(f"/process-status/{slug}", headers=other)).status_code == 404
            gone = await to_agent.post(f"/delete-process/{slug}", content=b"{}", headers=other)
            assert gone.status_code == 404
            assert (await to_agent.get(f"/process-status/{slug}", headers=as_user["ivy"])).status_code == 200
            deleted = await to_agent.post(f"/delete-process/{slug}", content=b"{}", headers=as_user["root"])
            assert deleted.status_code == 200


async def test_off_loopback_a_manager_without_keys_refuses_to_start(make_manager: ManagerFactory) -> None:
    with pytest.raises(ManagerError, match="keys init"):
        async with make_manager(host="0.0.0.0"):
            pass
