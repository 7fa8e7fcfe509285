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
from pathlib import Path
from typing import Any

from herder.rpc import Peer, RemoteError, Service, SharedSecretVerifier

# The conformance suite's service methods, shared rather than written again.
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.test_rpc import Probe, add_plain_methods, add_probed_methods


class Fenced(Exception):
    """An application error with its own code and the field at fault."""

    code = "fenced"
    field = "attempt"


def build(name: str, secret: str | None) -> Service:
    """The conformance suite's methods (tests/test_rpc.py), and those herder.js needs besides."""
    verifier = SharedSecretVerifier(secret) if secret else None
    svc = Service(name, "1.0.0", verifier=verifier)
    probe = Probe()
    add_plain_methods(svc)
    add_probed_methods(svc, probe)
    add_value_methods(svc, probe)
    add_client_methods(svc)
    return svc


def add_value_methods(svc: Service, probe: Probe) -> None:
    @svc.method(auth=False)
    def echo(value: Any) -> Any:
        """The value, as it arrived."""
        return value

    @svc.method(auth=False)
    def fail_coded() -> None:
        raise Fenced("the attempt is no longer yours")

    @svc.method(auth=False)
    def nan() -> float:
        return math.nan

    @svc.method(auth=False)
    async def was_cancelled() -> bool:
        """Wait until a wait_forever call was cancelled (the caller bounds the wait)."""
        await probe.cancelled.wait()
        probe.cancelled.clear()
        return True


def add_client_methods(svc: Service) -> None:
    """Methods that call the client back: calls go both ways."""

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
    async def give_client_callback(method: str, caller: Peer) -> Any:
        """Call the client's ``method`` with a function of ours (it doubles a number)."""
        return await caller.call(method, lambda x: x * 2)

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
