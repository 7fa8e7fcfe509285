"""Where herder connects on someone else's behalf: one address policy, one resolver.

The agent downloads archives from URLs its users name, and the manager's proxy forwards to
URLs its users register. Either is a way into the network behind them (the host's own
loopback services, the cloud's metadata service) unless the decision is made on the
**addresses actually connected to**, never on the text of the URL: ``2852039166``, ``0``,
``::ffff:169.254.169.254`` and a host name that resolves to ``127.0.0.1`` all read as
harmless text. So both resolve the name once (``resolve``), check every address
(``Policy.refusal``), and connect to the address that was checked, sending the name as
``Host`` and TLS SNI: a DNS answer that changes between check and connect gains nothing.

Neutral ground, like ``herder.net``: the agent and the manager must not import each other.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Addresses that are metadata services on the big clouds, beyond 169.254.0.0/16.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
# The kinds of address ``kind_of`` names; a policy refuses a subset of them.
KINDS = frozenset({"unspecified", "multicast", "loopback", "link-local", "cloud-metadata"})


class ResolveError(Exception):
    """A host name that cannot be resolved (``transient``: it may resolve later)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def plain(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped IPv6 one (``::ffff:127.0.0.1``), else itself.

    The kernel connects ``::ffff:a.b.c.d`` to ``a.b.c.d``, so that is what is judged.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def kind_of(address: IPAddress) -> str | None:
    """What is special about ``address`` for a connection made on someone's behalf, if anything.

    ``unspecified`` comes first: connecting to ``0.0.0.0`` or ``::`` reaches this host.
    """
    address = plain(address)
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address in METADATA_ADDRESSES:
        return "cloud-metadata"
    return None


@dataclass(frozen=True, slots=True)
class HostList:
    """Host names and networks, as a setting lists them (``10.0.0.0/8``, ``apps.example``)."""

    names: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> HostList:
        """Entries with a ``/`` are networks; a bare address is a one-address network too.

        Raises:
            ValueError: an entry with a ``/`` that is not a network.
        """
        entries = list(entries)
        names = {e.lower().rstrip(".") for e in entries if "/" not in e}
        nets = [ipaddress.ip_network(e, strict=False) for e in entries if "/" in e]
        for name in names:
            try:
                nets.append(ipaddress.ip_network(name.strip("[]")))
            except ValueError:
                continue
        return cls(frozenset(names), tuple(nets))

    def __bool__(self) -> bool:
        return bool(self.names or self.networks)

    def matches(self, host: str, address: IPAddress) -> bool:
        host = host.lower().rstrip(".")  # "evil.example." is the same name as "evil.example"
        address = plain(address)
        return host in self.names or any(address in net for net in self.networks)

    def has_address(self, address: IPAddress) -> bool:
        """Whether a network of the list holds ``address`` (names are not consulted)."""
        address = plain(address)
        return any(address in net for net in self.networks)


@dataclass(frozen=True, slots=True)
class Policy:
    """Which (host, address) pairs a connection may go to.

    In order: an address of a ``refused`` kind is refused unless ``exempt`` holds it
    (``unspecified`` and ``multicast`` never are); then ``deny`` refuses; then a non-empty
    ``allow_only`` must match. ``describe`` words a kind for its refusal, saying how an
    operator would allow it (the agent: ``set fetch.allow_link_local to allow``).
    """

    refused: frozenset[str]
    exempt: HostList = HostList()
    deny: HostList = HostList()
    allow_only: HostList = HostList()
    deny_setting: str = "the deny list"
    allow_setting: str = "the allow list"
    describe: Mapping[str, str] = field(default_factory=dict)

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """Why ``host`` at ``address`` is refused (a sentence without a prefix), or None."""
        address = plain(address)
        kind = kind_of(address)
        if kind in self.refused and (
            kind in ("unspecified", "multicast") or not self.exempt.has_address(address)
        ):
            assert kind is not None
            return f"{host} resolves to {address}, {self.describe.get(kind) or _article(kind) + ' address'}"
        if self.deny.matches(host, address):
            return f"{host} ({address}) is in {self.deny_setting}"
        if self.allow_only and not self.allow_only.matches(host, address):
            return f"{host} ({address}) is not in {self.allow_setting}"
        return None


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


async def resolve(host: str, port: int, timeout_s: float | None = None) -> list[IPAddress]:
    """All addresses of ``host`` (a literal address resolves to itself), as the C resolver
    reads it: ``2852039166`` is ``169.254.169.254`` and ``0`` is ``0.0.0.0``.

    Raises:
        ResolveError: not a valid name, or it does not resolve (within ``timeout_s``).
    """
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:
        raise ResolveError(f"{host!r} is not a valid host name", transient=False) from exc
    except socket.gaierror as exc:
        raise ResolveError(f"cannot resolve {host}: {exc.strerror}", transient=True) from exc
    except TimeoutError as exc:
        raise ResolveError(f"cannot resolve {host}: no answer in {timeout_s:g} s", transient=True) from exc
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise ResolveError(f"cannot resolve {host}: no address", transient=True)
    return found


def is_local_address(address: IPAddress) -> bool:
    """Whether ``address`` is one of this host's own (loopback, or bound to an interface).

    Binding to an address succeeds only for the host's own, which is the question.
    """
    address = plain(address)
    if address.is_loopback or address.is_unspecified:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


def literal(address: IPAddress) -> str:
    """``address`` as it goes in a URL's authority (``[::1]`` for IPv6)."""
    return f"[{address}]" if address.version == 6 else str(address)
