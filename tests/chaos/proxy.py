"""TCP forwarders between namespaces, able to go silent: the suite's PostgreSQL cable (#17).

PostgreSQL listens on 127.0.0.1:5432 in the root namespace, which a manager in its own
namespace cannot reach. Each manager gets a ``Route``: a socket listening on its
namespace's loopback (made there with ``in_namespace``), whose connections are accepted
here and forwarded to PostgreSQL from the root namespace. The route is where the suite
cuts a manager from its database:

* ``cut()``: no byte goes either way on any connection, old or new, and none is closed:
  a silent partition, as a dead switch makes (TCP would retransmit; here the bytes wait).
* ``cut_listen()``: only the connections whose client sent ``LISTEN`` are held: the
  manager loses the other managers' NOTIFYs while its queries go through.
* ``heal()``: the bytes held flow again.

The same forwarder, listening on the root namespace's loopback and connecting from a
"client" namespace, lets the test (in the root namespace) talk to the managers' HTTP
ports on the namespaces' subnet.

Everything runs on one thread with its own event loop, so a busy test loop never delays
the managers' database traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from typing import Any, Literal

from tests.chaos.netns import in_namespace

Mode = Literal["open", "cut", "listen"]
CHUNK = 65536
CALL_TIMEOUT_S = 10.0


class _Conn:
    def __init__(self) -> None:
        self.listen = False  # its client sent LISTEN


class Route:
    """One listening socket and where its connections go; see the module's docstring."""

    def __init__(self, relay: Relay, listener: socket.socket, target: tuple[str, int], target_ns: str | None):
        self.relay = relay
        self.listener = listener
        self.target = target
        self.target_ns = target_ns
        self.mode: Mode = "open"
        self.address: tuple[str, int] = listener.getsockname()[:2]
        self._changed: asyncio.Condition | None = None
        self._server: asyncio.AbstractServer | None = None
        self.connections = 0

    async def _start(self) -> None:
        self._changed = asyncio.Condition()
        self._server = await asyncio.start_server(self._accepted, sock=self.listener)

    def _blocks(self, conn: _Conn) -> bool:
        return self.mode == "cut" or (self.mode == "listen" and conn.listen)

    async def _gate(self, conn: _Conn) -> None:
        assert self._changed is not None
        async with self._changed:
            await self._changed.wait_for(lambda: not self._blocks(conn))

    async def _set(self, mode: Mode) -> None:
        assert self._changed is not None
        async with self._changed:
            self.mode = mode
            self._changed.notify_all()

    def cut(self) -> None:
        self.relay.call(self._set("cut"))

    def cut_listen(self) -> None:
        self.relay.call(self._set("listen"))

    def heal(self) -> None:
        self.relay.call(self._set("open"))

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = _Conn()
        try:
            if self.target_ns is None:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            else:
                sock = await asyncio.to_thread(in_namespace, self.target_ns, self._socket)
                try:
                    await asyncio.get_running_loop().sock_connect(sock, self.target)
                    up_reader, up_writer = await asyncio.open_connection(sock=sock)
                except BaseException:
                    sock.close()
                    raise
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, conn, upstream=True),
                self._pump(up_reader, writer, conn, upstream=False),
            )
        finally:
            for w in (writer, up_writer):
                w.close()

    @staticmethod
    def _socket() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn, upstream: bool
    ) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if upstream and b"LISTEN" in data:
                    conn.listen = True
                await self._gate(conn)  # a cut holds the bytes (and the end) here
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._set("open")


class Relay:
    """The forwarders' thread and event loop; ``close()`` stops every route."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-relay", daemon=True)
        self._thread.start()
        self.routes: list[Route] = []

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)

    def route(
        self,
        listen_ns: str | None,
        listen: tuple[str, int],
        target: tuple[str, int],
        target_ns: str | None = None,
    ) -> Route:
        """Listen on ``listen`` in ``listen_ns``, forward to ``target`` from ``target_ns``."""

        def make() -> socket.socket:
            sock = socket.create_server(listen, backlog=256)
            sock.setblocking(False)
            return sock

        route = Route(self, in_namespace(listen_ns, make), target, target_ns)
        self.call(route._start())
        self.routes.append(route)
        return route

    def close(self) -> None:
        async def stop_all() -> None:
            for route in self.routes:
                await route._stop()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.call(stop_all())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CALL_TIMEOUT_S)
            if not self._thread.is_alive():
                self._loop.close()


__all__ = ["Relay", "Route"]
