"""#12 §2: a keyed manager read 100 MiB of request headers before answering 401 (+117 MB
RSS). A head bigger than ``limits.max_header_bytes`` is answered 431 as soon as it
passes the bound, before authentication and without waiting for (or holding) the rest."""

from __future__ import annotations

import json
from pathlib import Path

from herder.auth import init_keys
from tests.manager.conftest import ManagerFactory
from tests.regress.edge import exchange


async def test_a_head_over_the_bound_gets_431_before_it_ends(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    init_keys(tmp_path / "manager")
    async with make_manager(limits={"max_header_bytes": 16 * 1024}) as manager:
        # 200 KB of one header, and no blank line: the head never ends. The answer must
        # come anyway, at once.
        head = b"GET /tasks HTTP/1.1\r\nHost: localhost\r\nX-Junk: " + b"a" * 200_000
        answer = await exchange(manager.url, head)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
        document = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert document["field"] == "headers"
        # A head under the bound still reaches the token check.
        small = b"GET /tasks HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Junk: "
        answer = await exchange(manager.url, small + b"a" * 8000 + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 401"), answer[:100]
