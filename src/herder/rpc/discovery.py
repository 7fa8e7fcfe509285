"""Finding services by name through a manager's registry, and being found.

    registration = await svc.register("/alice/prod/math/1.0.0/eu/host-1/math-1",
                                      manager="http://127.0.0.1:8020")
    async with dial("/alice/prod/math", manager="http://127.0.0.1:8020") as math:
        print(await math.call("square", 4))

A registration is kept alive by its open link to the manager (``ttl_s`` 0 at the
registry): when the service stops, or its host dies, the link closes and the service
drops out. The keeper reconnects with backoff and registers again if the manager was
away. ``dial`` asks the registry for the live instances under a prefix (the version part
may be a range) and connects to the first that answers, in a random order so that
clients spread over instances.

A **relayed** registration (``"relay": true``: an instance that cannot listen, a browser
tab, registered without a URL) is dialled through the manager that was asked, at its
``/relay/<id>``, with the manager's credentials: the manager passes each call over the
instance's own link (``herder.manager.relay``). A Python peer that cannot listen makes
one with ``Registration(key, None, metadata, manager, token, handlers={...})``: its
handlers answer the calls relayed over its link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from herder.net import base_url, rpc_url, ws_url
from herder.rpc.client import connect
from herder.rpc.errors import ConnectionLost, HandshakeRefused, RpcError
from herder.rpc.managers import ManagerClient
from herder.rpc.peer import Peer

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 10.0


RELAY_PATH = "/relay"


def manager_rpc_url(manager: str) -> str:
    """``http://host:8020`` (or a ``ws://.../rpc`` URL) as the manager's RPC endpoint."""
    return rpc_url(manager)


def relay_url(manager: str, service_id: str) -> str:
    """Where a relayed service is dialled: ``ws://host:8020/relay/<id>`` on ``manager``."""
    return f"{ws_url(base_url(manager))}{RELAY_PATH}/{urllib.parse.quote(service_id, safe='')}"


def endpoint_of(
    registration: Mapping[str, Any], manager: str, manager_token: str | None, service_token: str | None
) -> tuple[str, str | None]:
    """The URL to dial for a registration document, and the token to present there.

    A relayed one is reached through ``manager`` (the one that was asked, whatever name
    the document's own URL carries) with the manager's credential; any other at its URL,
    with the service's.
    """
    if registration.get("relay") is True:
        return relay_url(manager, str(registration["id"])), manager_token
    return str(registration["url"]), service_token


async def buy_token(manager: str, key: str) -> str:
    """A fresh access token from the manager for a key it issued (``POST /auth/token``).

    Raises:
        TokenRefused: the manager refused the key (revoked, expired, not its own), or has
            no auth (a ``HandshakeRefused``).
        ConnectionLost: the manager could not be reached.
    """
    return (await ManagerClient(manager, key=key).buy_token()).token


async def find(
    query: str,
    *,
    manager: str,
    token: str | None = None,
    key: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> list[dict[str, Any]]:
    """The live registrations under ``query`` (``/alice/prod/math``, ``.../>=1.2,<2``).

    ``key``: a key the manager issued, which buys the access token (instead of ``token``).
    ``tls``: the context an ``https`` manager is reached with (a client certificate for one
    run with ``--tls-client-ca``); default: the system's CAs.
    """
    found, _ = await _find(query, ManagerClient(manager, key=key, token=token, tls=tls), tls)
    return found


async def _find(
    query: str, client: ManagerClient, tls: ssl.SSLContext | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The registrations under ``query``, and the credential that asked (relays want it)."""
    credential = await client.credential()
    async with connect(client.rpc_url, token=credential, tls=tls) as registry:
        found: list[dict[str, Any]] = await registry.call("find_services", query)
    return found, credential


@contextlib.asynccontextmanager
async def dial(
    query: str,
    *,
    manager: str,
    token: str | None = None,
    key: str | None = None,
    service_token: str | None = None,
) -> AsyncIterator[Peer]:
    """Connect to a live instance of the service ``query`` names (``token`` for the manager,
    ``service_token`` for the service, if it wants one). A relayed instance is dialled
    through the manager, with the manager's credential.

    Raises:
        LookupError: no live instance is registered, or none answered.
    """
    found, credential = await _find(query, ManagerClient(manager, key=key, token=token))
    random.shuffle(found)
    failures: list[str] = []
    for candidate in found:
        url, presented = endpoint_of(candidate, manager, credential, service_token)
        async with contextlib.AsyncExitStack() as stack:
            try:
                peer = await stack.enter_async_context(connect(url, token=presented))
            except (OSError, ConnectionLost, HandshakeRefused) as exc:
                failures.append(f"{candidate['key']}: {exc}")
                continue
            yield peer
            return
    reason = "; ".join(failures) if failures else "none is registered"
    raise LookupError(f"no live instance of {query}: {reason}")


class Registration:
    """A service's registration, kept alive by its link to the manager until ``close()``.

    ``url`` None registers a relayed service: ``handlers`` (as ``connect``'s) answer the
    calls the manager relays over the link, and a new link registers them again.
    """

    def __init__(
        self,
        key: str,
        url: str | None,
        metadata: dict[str, Any],
        manager: str,
        token: str | None,
        auth_key: str | None = None,
        handlers: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        self.key = key
        self.url = url
        self.metadata = metadata
        self._handlers = handlers
        # A token bought with ``auth_key`` is kept for the links made during its life.
        self._manager = ManagerClient(manager, key=auth_key, token=token)
        self._link: Peer | None = None
        self._stack = contextlib.AsyncExitStack()
        self._keeper: asyncio.Task[None] | None = None
        self.registered = asyncio.Event()

    async def start(self) -> None:
        """Register now (errors are raised here), then keep it up in the background.

        The keeper is ``run()`` in the one task the registration owns (a service registers
        from anywhere, not only from inside a task group); ``close()`` cancels and awaits it.
        """
        await self._register_once()
        self._keeper = asyncio.get_running_loop().create_task(self.run(), name=f"register:{self.key}")

    async def _register_once(self) -> None:
        stack = contextlib.AsyncExitStack()
        credential = await self._manager.credential()
        try:
            peer = await stack.enter_async_context(
                connect(self._manager.rpc_url, token=credential, handlers=self._handlers)
            )
        except HandshakeRefused:
            self._manager.forget_token()  # revoked meanwhile, or the manager's key changed
            raise
        try:
            await peer.call("register_service", self.key, self.url, self.metadata, 0)
        except BaseException:
            await stack.aclose()
            raise
        self._link, self._stack = peer, stack
        self.registered.set()

    async def run(self) -> None:
        """Keep the registration up until cancelled: when the link to the manager closes,
        register again, with backoff while the manager is away (after a first registration)."""
        delay = BACKOFF_INITIAL_S
        while True:
            assert self._link is not None
            await self._link.wait_closed()
            self.registered.clear()
            await self._stack.aclose()
            while True:
                await asyncio.sleep(delay)
                try:
                    await self._register_once()
                    delay = BACKOFF_INITIAL_S
                    break
                except (OSError, RpcError) as exc:
                    log.warning("registering %s again: %s; retrying in %.1f s", self.key, exc, delay)
                    delay = min(delay * 2, BACKOFF_MAX_S)

    async def close(self) -> None:
        """Deregister: the link closes, and the service drops out of the registry."""
        if self._keeper is not None:
            self._keeper.cancel()
            # wait() lets a cancellation of close() itself through, which suppressing would not.
            await asyncio.wait({self._keeper})
            if not self._keeper.cancelled():
                self._keeper.result()  # the keeper crashed: raised here, to its owner
        if self._link is not None:
            await self._stack.aclose()
            self._link = None
