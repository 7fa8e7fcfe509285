"""A real herder service for herder.js's tests: the cases of tests/test_rpc.py's
conformance suite, served over WebSocket by herder's own Python ``Service``.

    python service.py [--port N] [--name math] [--secret S]
                      [--register KEY --manager URL [--auth-key K | --manager-token T]]

Prints one JSON line on stdout once it listens, ``{"url": "ws://127.0.0.1:PORT/rpc"}``
(and ``"registered": KEY`` once registered), then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from typing import Any

from herder.rpc import Peer, RemoteCallback, RemoteError, Service, SharedSecretVerifier


class Fenced(Exception):
    """An application error with its own code and the field at fault."""

    code = "fenced"
    field = "attempt"


class Probe:
    """What the service saw, for tests to wait on through a call (no sleeps)."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.kept: RemoteCallback | None = None


def build(name: str, secret: str | None) -> Service:
    verifier = SharedSecretVerifier(secret) if secret else None
    svc = Service(name, "1.0.0", verifier=verifier)
    add_plain_methods(svc)
    add_client_methods(svc)
    add_probed_methods(svc, Probe())
    return svc


def add_plain_methods(svc: Service) -> None:
    @svc.method(auth=False)
    async def square(x: float) -> float:
        """Square a number."""
        return x * x

    @svc.method(auth=False)
    def add(a: int, b: int = 0) -> int:
        return a + b

    @svc.method(auth=False)
    def echo(value: Any) -> Any:
        """The value, as it arrived."""
        return value

    @svc.method(auth=False)
    async def echo_after(delay: float, value: Any) -> Any:
        await asyncio.sleep(delay)
        return value

    @svc.method(auth=False)
    def fail(kind: str) -> None:
        if kind == "value":
            raise ValueError("bad value")
        if kind == "fenced":
            raise Fenced("the attempt is no longer yours")
        raise TypeError("a type error inside the handler")

    @svc.method(auth=False)
    def nan() -> float:
        return math.nan

    @svc.method
    async def secret() -> str:
        return "only with credentials"

    @svc.method(auth=False)
    def blob(size: int) -> str:
        return "x" * size


def add_client_methods(svc: Service) -> None:
    """Methods that call the client back: calls go both ways."""

    @svc.method(auth=False)
    async def count(n: int, progress: RemoteCallback) -> int:
        """Call progress(i) for i in 0..n-1, then release it."""
        for i in range(n):
            await progress(i)
        await progress.release()
        return n

    @svc.method(auth=False)
    async def greet_back(name: str, caller: Peer) -> str:
        """Call the client's own 'hello' method: calls go both ways."""
        answer: str = await caller.call("hello", name)
        return answer.upper()

    @svc.method(auth=False)
    async def call_client(
        method: str,
        args: list[Any],
        kwargs: dict[str, Any] | None = None,
        target: str | None = None,
        *,
        caller: Peer,
    ) -> Any:
        """Call the client's ``method``; its result, or its error as a map."""
        try:
            return {"result": await caller.call(method, *args, target=target, **(kwargs or {}))}
        except RemoteError as exc:
            return {"error": {"code": exc.code, "type": exc.type, "message": exc.message, "data": exc.data}}

    @svc.method(auth=False)
    async def flood_client(method: str, n: int, caller: Peer) -> list[Any]:
        """``n`` calls at once to the client's ``method``: results and error codes."""
        results = await asyncio.gather(*(caller.call(method, i) for i in range(n)), return_exceptions=True)
        return [r.code if isinstance(r, RemoteError) else r for r in results]

    @svc.method(auth=False)
    async def timeout_client(method: str, seconds: float, caller: Peer) -> str:
        """Call the client's ``method`` and give up after ``seconds`` (a cancel goes out)."""
        try:
            await caller.call(method, timeout=seconds)
        except TimeoutError:
            return "timed out"
        return "answered"

    @svc.method(auth=False)
    async def notify_client(method: str, args: list[Any], caller: Peer) -> None:
        await caller.notify(method, *args)


def add_probed_methods(svc: Service, probe: Probe) -> None:
    """Methods whose effects the tests wait for through another call."""

    @svc.method(auth=False)
    async def wait_forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            probe.cancelled.set()

    @svc.method(auth=False)
    async def was_cancelled() -> bool:
        """Wait until a wait_forever call was cancelled (the caller bounds the wait)."""
        await probe.cancelled.wait()
        probe.cancelled.clear()
        return True

    @svc.method(auth=False)
    async def keep(cb: RemoteCallback) -> None:
        probe.kept = cb

    @svc.method(auth=False)
    async def call_kept() -> Any:
        assert probe.kept is not None
        return await probe.kept("again")

    @svc.method(auth=False)
    async def release_kept() -> None:
        assert probe.kept is not None
        await probe.kept.release()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="math")
    parser.add_argument("--secret")
    parser.add_argument("--register")
    parser.add_argument("--manager")
    parser.add_argument("--auth-key")
    parser.add_argument("--manager-token")
    options = parser.parse_args()
    svc = build(options.name, options.secret)
    started = asyncio.Event()
    serving = asyncio.create_task(svc.serve("127.0.0.1", options.port, started=started))
    await started.wait()
    url = f"ws://127.0.0.1:{svc.ws_port}/rpc"
    ready: dict[str, Any] = {"url": url}
    registration = None
    if options.register:
        registration = await svc.register(
            options.register,
            manager=options.manager,
            token=options.manager_token,
            auth_key=options.auth_key,
            url=url,
        )
        ready["registered"] = options.register
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    try:
        await serving
    finally:
        if registration is not None:
            await registration.close()


if __name__ == "__main__":
    asyncio.run(main())
