"""One front door for every herder HTTP server: the agent, the manager, RPC services.

What a client may cost a server, and who gets in, decided before any route runs and
before credentials are checked where it is about cost:

* ``protocol``: the request head's deadline and size (431), in uvicorn's protocol;
* ``door``: ``Host`` and ``Origin``, the body's size per route (413, before reading it
  when ``Content-Length`` says so) and deadline (408), credentials (``SharedSecret``,
  ``AccessTokens``), the JSON nesting bound handed to ``herder.apierrors.read_json``;
* ``authlog``: failed authentications, logged and rate-limited;
* ``limits``: the settings (``HttpLimits``), with their defaults;
* ``server_options``: the uvicorn options that go with them (the connection cap).

The agent's ``Guard`` and the manager's ``FrontDoor`` are configurations of ``Door``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from herder.lazy import lazy_exports

if TYPE_CHECKING:  # what __getattr__ finds, for type checkers
    from herder.frontdoor.authlog import FailureLog as FailureLog
    from herder.frontdoor.authlog import claimed_subject as claimed_subject
    from herder.frontdoor.door import JSON_DEPTH_KEY as JSON_DEPTH_KEY
    from herder.frontdoor.door import AccessTokens as AccessTokens
    from herder.frontdoor.door import Authenticate as Authenticate
    from herder.frontdoor.door import Door as Door
    from herder.frontdoor.door import Refused as Refused
    from herder.frontdoor.door import SharedSecret as SharedSecret
    from herder.frontdoor.door import note_failed_authentication as note_failed_authentication
    from herder.frontdoor.jsondepth import too_deep as too_deep
    from herder.frontdoor.limits import DEFAULT_MAX_JSON_DEPTH as DEFAULT_MAX_JSON_DEPTH
    from herder.frontdoor.limits import HttpLimits as HttpLimits
    from herder.frontdoor.limits import RouteLimit as RouteLimit
    from herder.frontdoor.protocol import HeadLimitProtocol as HeadLimitProtocol
    from herder.frontdoor.protocol import protocol_class as protocol_class

# Imported on first use: the settings (``limits``) are read by every configuration
# module, which should not pay for uvicorn and the token code to define a model.
_HOMES = {
    "JSON_DEPTH_KEY": "door",
    "AccessTokens": "door",
    "Authenticate": "door",
    "Door": "door",
    "Refused": "door",
    "SharedSecret": "door",
    "HttpLimits": "limits",
    "RouteLimit": "limits",
    "HeadLimitProtocol": "protocol",
    "protocol_class": "protocol",
    "FailureLog": "authlog",
    "claimed_subject": "authlog",
    "note_failed_authentication": "door",
    "too_deep": "jsondepth",
    "DEFAULT_MAX_JSON_DEPTH": "limits",
}

__getattr__ = lazy_exports(__name__, _HOMES)
__all__ = [*_HOMES, "server_options"]


def server_options(limits: HttpLimits, protocol: type[HeadLimitProtocol] | None = None) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments enforcing ``limits`` (head bounds, connection cap)."""
    from herder.frontdoor.protocol import protocol_class

    return {
        "http": protocol or protocol_class(limits),
        "limit_concurrency": limits.max_connections,
        # The peer is who connected: a client's X-Forwarded-For must not rename it (uvicorn
        # trusts it from loopback by default), or the auth log and the manager's proxy
        # audit and Forwarded headers would name whoever the client claims to be.
        "proxy_headers": False,
    }
