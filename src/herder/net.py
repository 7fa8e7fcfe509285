"""Addresses, URLs and listening sockets, the same for the agent, the manager and RPC services.

Neutral ground: the agent and the manager must not import each other, and both (and a
standalone ``Service``) listen, check ``Host`` headers and decide what counts as
loopback the same way. Every daemon serves HTTP and, on the same port, WebSockets (the
wire protocol at ``/rpc``); the conversions between the two URL forms live here once,
for the CLI, the SDK, the agent's link and discovery alike.
"""

from __future__ import annotations

import ipaddress
import socket

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

# The wire protocol's WebSocket path on every daemon (agent, manager, ``Service.run``).
RPC_PATH = "/rpc"
_TO_WS = {"http": "ws", "https": "wss"}
_TO_HTTP = {"ws": "http", "wss": "https"}
WS_SCHEMES = frozenset(_TO_HTTP)
HTTP_SCHEMES = frozenset(_TO_WS)


def host_name(value: str) -> str:
    """The host part of a ``Host`` header or an origin's netloc, lower-cased, no port."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _convert(url: str, schemes: dict[str, str]) -> str:
    """``url`` with its scheme mapped through ``schemes``; an http(s) or ws(s) URL also loses
    its trailing slashes. Any other URL (``tcp://``, ``unix:///``) comes back unchanged."""
    scheme, sep, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in HTTP_SCHEMES | WS_SCHEMES:
        return url
    return f"{schemes.get(scheme, scheme)}://{rest.rstrip('/')}"


def ws_url(url: str) -> str:
    """``http://h:p/x`` as ``ws://h:p/x`` (``https`` as ``wss``), without a trailing slash.

    A ws(s) URL only loses its trailing slashes; ``tcp://`` and ``unix://`` URLs, and text
    without a scheme, are returned unchanged.
    """
    return _convert(url, _TO_WS)


def http_url(url: str) -> str:
    """``ws://h:p/x`` as ``http://h:p/x`` (``wss`` as ``https``), without a trailing slash.

    An http(s) URL only loses its trailing slashes; other URLs are returned unchanged.
    """
    return _convert(url, _TO_HTTP)


def base_url(url: str) -> str:
    """A daemon's HTTP base from either of its URLs: ``ws://h:p/rpc`` and ``http://h:p/``
    both give ``http://h:p`` (a path prefix before ``/rpc`` is kept)."""
    return http_url(url).removesuffix(RPC_PATH)


def rpc_url(url: str) -> str:
    """The wire protocol's WebSocket for a daemon's URL.

    ``http://h:p`` (or ``http://h:p/rpc``) gives ``ws://h:p/rpc``, ``https`` gives ``wss``.
    A ws(s) URL names the endpoint itself and is kept (less a trailing slash); ``tcp://``
    and ``unix://`` URLs are returned unchanged.
    """
    if url.strip().partition("://")[0].lower() in HTTP_SCHEMES:
        return ws_url(base_url(url)) + RPC_PATH
    return ws_url(url)


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses: the only binds that may run open."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port`` (port 0: the kernel picks).

    Made with ``IPPROTO_TCP`` named, not 0: asyncio's own loop turns Nagle off
    (``TCP_NODELAY``) only on sockets whose ``proto`` says TCP, and accepted ones inherit
    it. With 0, every answer written in two parts waited for the client's delayed ACK:
    about 40 ms a request for a daemon embedded in a program on the stdlib loop (uvloop,
    which ``herder`` itself runs, sets it anyway).

    Raises:
        OSError: the address cannot be bound (in use, not an address of this host).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock
