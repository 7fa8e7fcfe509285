"""Connections the daemons accept have Nagle off, on asyncio's own loop too.

asyncio sets ``TCP_NODELAY`` on a transport only when its socket's ``proto`` is
``IPPROTO_TCP``; ``herder.net.listen_socket`` made its sockets with proto 0, which accepted
sockets inherit. A daemon embedded in a program on the stdlib loop (and every in-process
test) then answered each request about 40 ms late: the answer's second write waited for
the client's delayed ACK.
"""

from __future__ import annotations

import asyncio
import socket

from herder.net import listen_socket


async def test_an_accepted_connection_has_nagle_off() -> None:
    sock = listen_socket("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("socket")
        accepted.set_result(peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_client, sock=sock)
    try:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        assert await asyncio.wait_for(accepted, 10) == 1
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
