"""The agent's own port: the API for the agent, pools for their Hosts.

uvicorn serves the agent's API; this protocol sits in its place and reads the first
request head of each connection. If its ``Host`` names a pool (``<pool>.<anything>``)
the connection is handed to the proxy (``ClientConnection``) for good, the way uvicorn
hands a connection to its WebSocket protocol on an upgrade; otherwise uvicorn parses
it as usual. The API's data path pays one ``find`` per connection for this.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from herder.agent.router.client import ClientConnection
from herder.frontdoor import HeadLimitProtocol, protocol_class

if TYPE_CHECKING:
    from herder.agent.server import AgentRuntime
    from herder.frontdoor import HttpLimits


def host_header(head: bytes) -> bytes | None:
    """The single ``Host`` header's value in a request head, or None (none, or several)."""
    lower = head.lower()
    start = lower.find(b"\r\nhost:")
    if start < 0 or lower.find(b"\r\nhost:", start + 7) >= 0:
        return None
    end = head.find(b"\r\n", start + 7)
    return head[start + 7 : end if end >= 0 else len(head)].strip(b" \t")


class FrontProtocol(HeadLimitProtocol):
    """uvicorn's protocol, after a look at the first request's Host."""

    runtime: AgentRuntime

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._routing = self.runtime.router is not None and bool(self.runtime.router.pools)
        self._first = b""
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._routing:
            super().data_received(data)
            return
        buf = self._first + data if self._first else data
        end = buf.find(b"\r\n\r\n")
        if end < 0 and len(buf) <= self.max_header_bytes:
            self._first = buf
            return
        self._routing = False
        self._first = b""
        router = self.runtime.router
        assert router is not None
        pool = router.pool_for_host(host_header(buf[:end])) if end >= 0 else None
        if pool is None:
            super().data_received(buf)
            return
        self._hand_over(buf)

    def _hand_over(self, data: bytes) -> None:
        """Give the connection to the proxy, as uvicorn does on a WebSocket upgrade."""
        self.connections.discard(self)
        self._disarm_header_deadline()
        self._unset_keepalive_if_required()
        assert self.runtime.router is not None
        proxy = ClientConnection(self.runtime.router.context, None, first_data=data)
        self.transport.set_protocol(proxy)
        proxy.connection_made(self.transport)


def front_protocol(limits: HttpLimits, runtime: AgentRuntime) -> type[FrontProtocol]:
    """A protocol class for uvicorn (it takes a class) with the front door's head limits,
    bound to ``runtime``'s router."""
    protocol = protocol_class(limits, FrontProtocol, runtime=runtime)
    assert issubclass(protocol, FrontProtocol)
    return protocol
