"""Which registered URLs the manager's proxy reaches (#12 §1), decided on addresses.

A service registered at ``http://127.0.0.1:8010/`` and used through ``/proxy/<id>/`` would
make the manager a way onto its own host: an open loopback agent runs commands for
whoever reaches it. So the proxy judges the **addresses it connects to**, never the text
of the URL: the host is resolved once (``herder.egress.resolve``, which reads ``0``,
``2852039166`` and ``localhost`` as the C resolver does), every address is checked, and the
connection goes to the address that was checked (``Pinned``), with the URL's own name as
``Host`` and TLS SNI.

Refused by default: loopback, link-local and cloud-metadata, unspecified and multicast
addresses (IPv4-mapped IPv6 forms are judged as the IPv4 address they carry), and always
the manager's own listening address (a proxy forwarding to itself loops). An admin
names networks that are proxied anyway: ``proxy_allow_networks`` for anyone's
registrations, ``proxy_admin_networks`` for those an admin key made (without keys there
are no roles and every registration counts as an admin's: ``herder up`` allows loopback
so). Unspecified and multicast addresses are never allowed.

The same check runs when a service registers, so that its owner learns at once
(``TargetRefused``, naming the ``url`` field); a name that does not resolve then is let
through, and decided at each request.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass

from herder import egress
from herder.manager.config import ManagerConfig
from herder.manager.errors import TargetRefused as TargetRefused  # re-exported: its old home

# A registration waits at most this long for its host name to resolve; the proxy too.
RESOLVE_TIMEOUT_S = 5.0
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


@dataclass(frozen=True, slots=True)
class Pinned:
    """A registered URL resolved and checked: connect to ``address``, speak to ``authority``."""

    secure: bool
    host: str  # the name: TLS SNI and certificate check
    port: int
    address: egress.IPAddress
    authority: str  # the registered URL's host[:port], sent as ``Host``

    def url(self, scheme: str, path: str, query: str) -> str:
        """The URL to connect to (the checked address), for ``scheme`` ``http`` or ``ws``."""
        scheme = scheme + "s" if self.secure else scheme
        url = f"{scheme}://{egress.literal(self.address)}:{self.port}/{path}"
        return f"{url}?{query}" if query else url

    def named_url(self, scheme: str, path: str, query: str) -> str:
        """The same URL with the registered authority (what a WebSocket client puts in ``Host``)."""
        scheme = scheme + "s" if self.secure else scheme
        url = f"{scheme}://{self.authority}/{path}"
        return f"{url}?{query}" if query else url


class Targets:
    """The proxy's policy for one manager; ``listening`` is set once its socket is bound."""

    def __init__(self, config: ManagerConfig) -> None:
        allow = list(config.proxy_allow_networks)
        hint = "an admin may allow its network: proxy_allow_networks"
        describe = {
            "loopback": f"a loopback address, this host's own ({hint})",
            "link-local": f"a link-local address, where cloud metadata services live ({hint})",
            "cloud-metadata": f"a cloud metadata service's address ({hint})",
            "unspecified": "an unspecified address (connecting to it reaches this host)",
            "multicast": "a multicast address",
        }

        def policy(exempt: list[str]) -> egress.Policy:
            return egress.Policy(
                refused=egress.KINDS, exempt=egress.HostList.parse(exempt), describe=describe
            )

        self._anyone = policy(allow)
        self._admins = policy(allow + list(config.proxy_admin_networks))
        self.listening: tuple[egress.IPAddress, int] | None = None

    def listen(self, host: str, port: int) -> None:
        """The manager's bound address: never a target (``0.0.0.0``: any local one, that port)."""
        self.listening = (ipaddress.ip_address(host.split("%", 1)[0]), port)

    async def pin(self, url: str, role: str | None) -> Pinned:
        """Resolve ``url``'s host once and check every address, for a registration by ``role``
        (``None``: made without keys).

        Raises:
            TargetRefused: an address is refused, or the URL names no host.
            herder.egress.ResolveError: the name does not resolve (now).
        """
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)
        except ValueError:
            raise TargetRefused(f"url {url!r} is not proxied: its port is not a number") from None
        host = (parts.hostname or "").rstrip(".")
        if not host or not port:
            raise TargetRefused(f"url {url!r} is not proxied: it names no host")
        addresses = await egress.resolve(host, port, RESOLVE_TIMEOUT_S)
        policy = self._admins if role in (None, "admin") else self._anyone
        for address in addresses:
            reason = policy.refusal(host, address) or self._own(address, port)
            if reason is not None:
                raise TargetRefused(f"url {url!r} is not proxied: {reason}")
        authority = parts.netloc.rsplit("@", 1)[-1]
        return Pinned(parts.scheme in ("https", "wss"), host, port, addresses[0], authority)

    async def check_registration(self, url: str, role: str | None) -> None:
        """Refuse at registration what the proxy would refuse (``TargetRefused``)."""
        try:
            await self.pin(url, role)
        except egress.ResolveError:
            return  # it may resolve later; the proxy decides at each request

    def _own(self, address: egress.IPAddress, port: int) -> str | None:
        if self.listening is None:
            return None
        bound, bound_port = self.listening
        address = egress.plain(address)
        if port != bound_port:
            return None
        if egress.plain(bound).is_unspecified:
            mine = egress.is_local_address(address)
        else:
            mine = address == egress.plain(bound)
        return f"{egress.literal(address)}:{port} is the manager's own address" if mine else None
