"""Relay Circus control calls for the benchmarks: runs in ``.bench-venv``, which has pyzmq.

Why a separate process: Circus's client needs pyzmq, and the project's ``.venv`` must
keep exactly its locked dependencies. The benchmark starts this once, before timing
anything, so its import cost is never counted as Circus's.

Protocol, one JSON document per line: the request
``{"endpoint": "tcp://...", "messages": [{"command": ..., "properties": {...}}, ...], "timeout": s}``
gets ``{"responses": [...], "elapsed_s": s}`` (the messages sent one after the other, each
answer awaited, as ``circusctl`` does) or ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def main() -> None:
    from circus.client import CircusClient

    clients: dict[tuple[str, float], Any] = {}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            request = json.loads(line)
            key = (request["endpoint"], float(request.get("timeout", 30.0)))
            client = clients.get(key)
            if client is None:
                client = clients[key] = CircusClient(endpoint=key[0], timeout=key[1])
            t0 = time.perf_counter()
            responses = [client.call(dict(message)) for message in request["messages"]]
            answer: dict[str, Any] = {"responses": responses, "elapsed_s": time.perf_counter() - t0}
        except Exception as exc:  # report it to the benchmark, which decides
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
