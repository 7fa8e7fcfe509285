"""Relayed services (#15): instances that cannot listen, reached over their own link.

A browser tab cannot accept connections, yet the Kite seed lets it be a service whose
methods others call (``herder call /alice/dev/page alert hi``). So a peer registers
*without a URL* (``register_service(key, None, metadata, 0)`` on its link to ``/rpc``),
and the manager stands in for it:

* the registration's URL is the manager's ``ws://<manager>/relay/<id>`` and its document
  says ``"relay": true``, so a client of any age dials the manager (new clients rebuild
  the URL from the manager they asked, which survives proxies and ``0.0.0.0`` binds);
* a caller connects there with the ordinary handshake and the manager's own credentials
  (the front door and the hello's token, as on ``/rpc``: any user with a valid token may
  call, as any may use ``/proxy/``), and each call it makes is sent on the registering
  link **as it came** (same target, method, args and kwargs; only the id is the
  manager's), so the page answers relayed calls with the very handlers it would use for
  direct ones; the answer (result, or error with its code, type and data unchanged) goes
  back;
* a cancel (the caller's timeout) is passed on; callbacks in arguments and results are
  relayed both ways (each side gets a reference of the manager's that calls the other);
* when the link closes, calls in flight fail with ``unknown_target`` ("went away") and the
  registration is dropped (``Services`` does that: a relayed registration is always kept
  by its link, ``ttl_s`` 0). A caller's connection stays open: if the page comes back
  under the same key, the next call reaches it.

Bounds: at most ``MAX_RELAYED_PER_LINK`` relayed registrations per link, and
``MAX_CALLS_IN_FLIGHT`` calls in flight to one relayed service, across all its callers
(past that: ``overloaded``). A caller that stops waiting cancels its call, so a page that
never answers holds a slot only as long as someone waits for it.
"""

from __future__ import annotations

import functools
import logging
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from herder.apierrors import error_response
from herder.net import ws_url
from herder.principals import principal_of
from herder.rpc import (
    ConnectionLost,
    Method,
    Peer,
    Registry,
    RemoteCallback,
    RemoteError,
    ServerWebSocketTransport,
    Service,
)
from herder.wire import ErrorCode

if TYPE_CHECKING:
    from fastapi import FastAPI, WebSocket

    from herder.manager.server import ManagerRuntime
    from herder.registry import Index, Registration

log = logging.getLogger(__name__)
audit = logging.getLogger("herder.manager.audit")

RELAY_PATH = "/relay"
MAX_RELAYED_PER_LINK = 16
MAX_CALLS_IN_FLIGHT = 64
# How long a caller's handshake waits for the page's own list of methods (meta.methods).
METHODS_TIMEOUT_S = 3.0
ERROR_TYPE = "RelayError"  # the ``type`` of the relay's own refusals, as the agent's SessionError


class Relay:
    """Which link serves each relayed service, the calls in flight to it, and the calls.

    Kept by ``Services`` (which decides what registers); the route (``install``) uses it.
    """

    def __init__(
        self,
        index: Index,
        *,
        max_per_link: int = MAX_RELAYED_PER_LINK,
        max_in_flight: int = MAX_CALLS_IN_FLIGHT,
    ) -> None:
        self._index = index
        self.max_per_link = max_per_link
        self.max_in_flight = max_in_flight
        self._links: dict[str, Peer] = {}  # service id -> the link that serves it
        self._served_by: dict[Peer, set[str]] = {}  # link -> the ids it serves (the cap)
        self._in_flight: dict[str, int] = {}
        self._base = "ws://127.0.0.1"  # until the manager listens (``listening``)

    # -- where -------------------------------------------------------------------------

    def listening(self, manager_url: str, allowed_hosts: list[str]) -> None:
        """The manager's URL once bound: relayed registrations' URLs start with it.

        A manager bound to every address (``0.0.0.0``) is named by its first
        ``allowed_hosts`` entry, the name its clients use (the front door refuses others).
        """
        parts = urllib.parse.urlsplit(ws_url(manager_url))
        host = parts.hostname or "127.0.0.1"
        if host in ("0.0.0.0", "::") and allowed_hosts:
            host = allowed_hosts[0]
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
        self._base = f"{parts.scheme}://{host}{port}"

    def url_of(self, service_id: str) -> str:
        return f"{self._base}{RELAY_PATH}/{urllib.parse.quote(service_id, safe='')}"

    # -- bindings ------------------------------------------------------------------------

    def room_for(self, link: Peer, service_id: str) -> bool:
        """Whether ``link`` may serve one more relayed service (a replacement is no more)."""
        served = self._served_by.get(link, set())
        return len(served - {service_id}) < self.max_per_link

    def bind(self, service_id: str, link: Peer) -> None:
        self.unbind(service_id)
        self._links[service_id] = link
        self._served_by.setdefault(link, set()).add(service_id)

    def unbind(self, service_id: str, link: Peer | None = None) -> None:
        """Forget the binding (only ``link``'s, when given: another may have taken the id)."""
        current = self._links.get(service_id)
        if current is None or (link is not None and current is not link):
            return
        del self._links[service_id]
        served = self._served_by[current]
        served.discard(service_id)
        if not served:
            del self._served_by[current]

    def in_flight(self, service_id: str) -> int:
        return self._in_flight.get(service_id, 0)

    # -- calls -------------------------------------------------------------------------

    def _link_of(self, registration: Registration) -> Peer:
        """The live link of the relayed service a caller dialled, or ``unknown_target``.

        The caller is bound to the key and owner it dialled: an id taken over by another
        registration is not what it asked for.
        """
        current = self._index.get(registration.id)
        link = self._links.get(registration.id)
        if (
            current is None
            or not current.relay
            or current.key != registration.key
            or current.owner != registration.owner
            or link is None
            or link.closed
        ):
            raise RemoteError(
                ErrorCode.UNKNOWN_TARGET,
                f"the relayed service {registration.key} went away (its link to the manager "
                "closed); find it again",
                ERROR_TYPE,
            )
        return link

    async def call(
        self,
        registration: Registration,
        target: str | None,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> Any:
        """One caller's call, sent on the service's link as it came; its answer."""
        link = self._link_of(registration)
        service_id = registration.id
        count = self._in_flight.get(service_id, 0)
        if count >= self.max_in_flight:
            raise RemoteError(
                ErrorCode.OVERLOADED,
                f"{self.max_in_flight} calls are in flight to {registration.key}; retry later",
                ERROR_TYPE,
            )
        self._in_flight[service_id] = count + 1
        try:
            result = await link.call_with(method, relayable(args), relayable(kwargs), target=target)
        except ConnectionLost as exc:
            raise RemoteError(
                ErrorCode.UNKNOWN_TARGET,
                f"the relayed service {registration.key} went away during the call: its link to "
                f"the manager closed ({exc})",
                ERROR_TYPE,
            ) from None
        finally:
            left = self._in_flight[service_id] - 1
            if left:
                self._in_flight[service_id] = left
            else:
                del self._in_flight[service_id]
        return relayable(result)

    async def methods_of(self, registration: Registration) -> list[dict[str, Any]]:
        """The page's own ``meta.methods``, for a caller's ``meta.methods`` ([] if it does not say)."""
        try:
            link = self._link_of(registration)
            found = await link.call("methods", target="meta", timeout=METHODS_TIMEOUT_S)
        except (RemoteError, ConnectionLost, TimeoutError) as exc:
            log.info("relayed service %s did not list its methods: %s", registration.key, exc)
            return []
        return [m for m in found if isinstance(m, dict)] if isinstance(found, list) else []


def relayable(value: Any) -> Any:
    """``value`` with each callback received from one side replaced by a function of ours
    that calls it: what the other side receives is a reference to the manager's function."""
    if isinstance(value, RemoteCallback):
        return functools.partial(_call_back, value)
    if isinstance(value, list):
        return [relayable(v) for v in value]
    if isinstance(value, dict):
        return {k: relayable(v) for k, v in value.items()}
    return value


async def _call_back(callback: RemoteCallback, *args: Any, **kwargs: Any) -> Any:
    return relayable(await callback(*relayable(list(args)), **relayable(kwargs)))


class _Relayed(Registry):
    """What one caller's connection serves: every method of the service's own target (and
    any named target) is a call relayed to the page; ``meta`` stays the manager's."""

    def __init__(self, relay: Relay, registration: Registration, described: list[dict[str, Any]]) -> None:
        super().__init__()
        self._relay = relay
        self._registration = registration
        self._described = described
        self.forwarder = self._forward

    def find(self, target: str | None, name: str) -> Method | None:
        if target is not None:
            return super().find(target, name)
        forward: Callable[..., Any] = functools.partial(self._call, name)
        return Method(name=name, func=forward, auth=True, signature=None, is_async=True)

    def describe(self, target: str | None = None) -> list[dict[str, Any]]:
        return list(self._described) if target is None else super().describe(target)

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return await self._relay.call(self._registration, None, name, list(args), kwargs)

    async def _forward(
        self, _peer: Any, target: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        return await self._relay.call(self._registration, target, method, args, kwargs)


def install(app: FastAPI, runtime: ManagerRuntime) -> None:
    """``WS /relay/{id}``: the protocol, relayed to the service that registered ``id``."""

    async def relay_endpoint(ws: WebSocket) -> None:
        services = runtime.services
        service_id = ws.path_params["id"]
        registration = services.index.get(service_id)
        if registration is None or not registration.relay:
            _audit(ws.scope, service_id, registration, 404)
            refusal = error_response(404, "not_found", f"no relayed service with id {service_id!r}", "id")
            await ws.send_denial_response(refusal)
            return
        _audit(ws.scope, service_id, registration, 101)
        rpc = runtime.rpc
        # One small service per caller: its welcome names the relayed service, and its
        # registry relays; credentials are checked as on /rpc (the same verifier).
        service = Service(
            registration.key.name,
            registration.key.version,
            verifier=rpc.verifier,
            anonymous=rpc.anonymous,
            max_frame_size=rpc.max_frame_size,
            codecs=rpc.codecs,
        )
        service.auth_failures = rpc.auth_failures
        await ws.accept()
        described = await services.relay.methods_of(registration)
        service.registry = _Relayed(services.relay, registration, described)
        auth = ws.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else None
        client = ws.client.host if ws.client is not None else None
        await service.handle(
            ServerWebSocketTransport(ws, rpc.max_frame_size), header_token=token, address=client
        )

    app.router.add_websocket_route(RELAY_PATH + "/{id}", relay_endpoint)


def _audit(scope: Any, service_id: str, registration: Registration | None, status: int) -> None:
    """One line per caller's connection, as the proxy writes one per request."""
    who, role = principal_of(scope)
    client = scope.get("client")
    audit.info(
        "relay who=%s role=%s service=%s key=%s status=%d client=%s",
        urllib.parse.quote(who or "-", safe=""),
        role or "-",
        urllib.parse.quote(service_id, safe=""),
        urllib.parse.quote(str(registration.key), safe="/") if registration is not None else "-",
        status,
        client[0] if client else "-",
    )


__all__ = ["MAX_CALLS_IN_FLIGHT", "MAX_RELAYED_PER_LINK", "RELAY_PATH", "Relay", "install", "relayable"]
