"""#12 §2: a 300 MiB body to ``POST /tasks`` was read whole (+500 MB RSS). A body whose
``Content-Length`` is over the route's bound is answered 413 before a byte of it is read
(before authentication, too); a chunked one is cut at the bound; the proxy, which streams
bodies, has a bound of its own."""

from __future__ import annotations

import json
from pathlib import Path

from herder.auth import init_keys
from tests.manager.conftest import ManagerFactory
from tests.regress.edge import exchange

BOUND = 100_000


def document(answer: bytes) -> dict[str, object]:
    return dict(json.loads(answer.split(b"\r\n\r\n", 1)[1]))


async def test_bodies_are_bounded_before_they_are_read(make_manager: ManagerFactory, tmp_path: Path) -> None:
    init_keys(tmp_path / "manager")
    async with make_manager(limits={"max_body_bytes": BOUND}) as manager:
        assert manager.runtime is not None
        assert manager.authority is not None
        async with manager.runtime.transaction() as db:
            key = (await manager.authority.issue_key(db, "alice", "user", 3600)).key
        token, _ = manager.authority.token_for(key, 600)
        declared = (
            b"POST /tasks HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Length: 314572800\r\n\r\n" + b'{"type": '
        )
        answer = await exchange(manager.url, declared)  # the 300 MiB are never sent
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        assert document(answer)["field"] == "body"
        # Without credentials: still 413, not a 401 after reading.
        anonymous = declared.replace(b"Authorization: Bearer " + token.encode() + b"\r\n", b"")
        assert (await exchange(manager.url, anonymous)).startswith(b"HTTP/1.1 413")

        chunk = b"2710\r\n" + b" " * 10_000 + b"\r\n"
        chunked = (
            b"POST /tasks HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + token.encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 15 + b"0\r\n\r\n"
        )
        answer = await exchange(manager.url, chunked)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]

        # Refused credentials: the body is not read, and the connection ends with the answer
        # (it would otherwise take in whatever the client streams).
        endless = b"POST /tasks HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk
        answer = await exchange(manager.url, endless)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:100]

        # The proxy streams bodies: its bound is its own (an unknown service: 404, not 413).
        proxied = (
            b"POST /proxy/nosuch/upload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 2000000\r\n\r\n"
        )
        answer = await exchange(manager.url, proxied)
        assert not answer.startswith(b"HTTP/1.1 413"), answer[:100]
