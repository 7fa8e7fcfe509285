"""Call the math service over WebSocket and TCP: `python docs/examples/math_client.py`."""

import asyncio
import os

from herder.rpc import RemoteError, connect

WS_URL = f"ws://127.0.0.1:{os.environ.get('MATH_PORT', '3636')}/rpc"
TCP_URL = f"tcp://127.0.0.1:{os.environ.get('MATH_TCP_PORT', '3637')}"


async def main() -> None:
    for url in (WS_URL, TCP_URL):
        async with connect(url) as peer:
            print(url, "square(4) =", await peer.call("square", 4))
            try:
                await peer.call("cube", 2)
            except RemoteError as exc:
                print(url, "cube:", exc.code)


if __name__ == "__main__":
    asyncio.run(main())
