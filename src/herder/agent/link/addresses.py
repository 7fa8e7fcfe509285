"""Which address of a manager's name the link connects to: untried ones first, lost ones last.

A manager URL may name a DNS name with several addresses (one record per manager behind
it). Left to the resolver, every reconnection would go to the same first address: fine
when that manager is dead (the connection is refused and the next address is tried), but
a manager that is stalled (SIGSTOP, a hung host) still completes TCP handshakes in its
kernel, so the link would connect to it, wait out its timeouts, and connect to it again,
for ever. So the link resolves the name itself, before each connection, and picks the
address: those that never failed in resolver order, then those that failed, the one that
failed longest ago first. The connection then goes to that address while keeping the
name (the ``Host`` header, TLS's server name and certificate check).

A URL whose host is an address, or a name with one address, is left to the connection as
before (``pick`` answers None).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse
from collections.abc import Sequence

DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
NAMED_SCHEMES = frozenset({*DEFAULT_PORTS, "tcp"})
# A name that resolves to more addresses than this is cut: the link tries these in turn.
MAX_ADDRESSES = 16


def host_and_port(url: str) -> tuple[str, int] | None:
    """The name and port a URL connects to; None for a ``unix://`` URL or an address."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in NAMED_SCHEMES or not parts.hostname:
        return None
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
        return None if port is None else (parts.hostname, port)
    return None


def in_order(addresses: Sequence[str], failed_at: dict[str, float]) -> list[str]:
    """``addresses`` in the order to try: never failed (as given), then oldest failure first."""
    fresh = [a for a in addresses if a not in failed_at]
    lost = sorted((a for a in addresses if a in failed_at), key=lambda a: failed_at[a])
    return fresh + lost


class Addresses:
    """The addresses tried for each manager name, and when each last failed."""

    def __init__(self) -> None:
        self._failed_at: dict[tuple[str, int], dict[str, float]] = {}

    async def pick(self, url: str) -> str | None:
        """The address to connect to for ``url``; None: connect to the URL as it is.

        Raises:
            OSError: the name does not resolve (``socket.gaierror``).
        """
        target = host_and_port(url)
        if target is None:
            return None
        host, port = target
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))[:MAX_ADDRESSES]
        if len(addresses) < 2:
            return None
        failed_at = self._failed_at.setdefault(target, {})
        for gone in set(failed_at) - set(addresses):  # the name no longer has it
            del failed_at[gone]
        return in_order(addresses, failed_at)[0]

    def failed(self, url: str, address: str | None, now: float) -> None:
        """The link through ``address`` (as ``pick`` gave it for ``url``) failed or was lost."""
        target = host_and_port(url)
        if address is not None and target is not None:
            self._failed_at.setdefault(target, {})[address] = now


__all__ = ["Addresses", "host_and_port", "in_order"]
