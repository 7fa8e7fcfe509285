"""The seed's math kite, as a herder service: `python docs/examples/math_service.py`.

It serves WebSocket on ws://127.0.0.1:3636/rpc and length-prefixed frames on
tcp://127.0.0.1:3637 (set MATH_PORT / MATH_TCP_PORT to move them).
"""

import os

from herder.rpc import Service

svc = Service("math", "1.0.0")


@svc.method(auth=False)
async def square(x: float) -> float:
    """Return x squared."""
    return x * x


if __name__ == "__main__":
    svc.run(
        port=int(os.environ.get("MATH_PORT", "3636")),
        tcp_port=int(os.environ.get("MATH_TCP_PORT", "3637")),
    )
