"""The relay of calls to sessions as bytes: a client's call reaches the host undecoded.

A call to a session is the client's message with two fields changed: its ``id`` (the
host's channel has its own) and its ``target`` (the session's id becomes the product's
name). Its arguments, often a file's megabytes, need not be decoded by the agent and
encoded again, nor the host's answer on the way back: ``herder.wire.peek_envelope`` reads the
routing fields, and the message is rebuilt around the body's bytes as they came, one
copy instead of a decode, an encode and the copies in between (issue 19).

Only what passes unchanged is taken: a MessagePack call from a connection with
credentials, to a session attached to it, without a callback in its arguments (those
need the agent's own callback relay), within the frame limit. Anything else, and every
JSON connection, goes the ordinary way (``SessionManager.forward``), which answers the
errors as before.

What the ordinary relay did, this one does too: the client's cancel reaches the host
and the client is answered ``cancelled`` at once; a client that goes away has its calls
cancelled in the host; a host that goes away has its calls answered with the reason
its session ended; a result carrying a callback (which cannot be passed back) becomes
the same error; every call is counted under ``forwarded`` in the connection's stats.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgpack

from herder.rpc import ConnectionLost, Peer
from herder.wire import (
    Error,
    ErrorCode,
    RawEnvelope,
    encode_message,
    error_for,
    peek_envelope,
    rebuild_message,
)

if TYPE_CHECKING:
    from herder.agent.sessions.manager import Session, SessionManager

log = logging.getLogger(__name__)

# Ids of relayed calls on a host's channel: far above the agent's own calls there
# (describe, close), which count from 1, and below the protocol's 2**53.
RELAYED_IDS_FROM = 2**52
MAX_ID = 2**53
MAX_NAME_LENGTH = 256
# Keyword arguments larger than this are left to the ordinary relay (their keys are
# checked by decoding them here; positional arguments carry the bulk).
MAX_CHECKED_KWARGS = 4096
_ARRAY_FIRST = frozenset((*range(0x90, 0xA0), 0xDC, 0xDD))
_MAP_FIRST = frozenset((*range(0x80, 0x90), 0xDE, 0xDF))
# The labels herder.rpc's call stats count a forwarded call under (rpc/stats.py: the
# method of every call to a forwarded target, and the outcomes of an answer and of a
# third peer's error passed on).
_FORWARDED = "forwarded"
_OK = "ok"
_RELAYED_ERROR = "remote_error"
_CALLBACK_IN_RESULT = "a callback received from the other side cannot be passed back"


@dataclass(slots=True)
class _Relayed:
    """One call in flight through the relay."""

    client: Peer
    client_id: int
    session: Session
    started: float


class RawRelay:
    """Calls from clients to their sessions' hosts, and the answers, passed on as bytes."""

    def __init__(self, manager: SessionManager) -> None:
        self._manager = manager
        self._ids = itertools.count(RELAYED_IDS_FROM)
        self._calls: dict[int, _Relayed] = {}  # by the id on the host's channel
        self._by_client: dict[tuple[Peer, int], int] = {}  # (client, its id) -> the id on the channel
        self.relayed = 0  # calls passed on as bytes, since the agent started

    # -- wiring ---------------------------------------------------------------------------

    def watch_client(self, client: Peer) -> None:
        """Relay ``client``'s calls to its sessions as bytes, if it speaks MessagePack."""
        if client.codec.name == "msgpack" and client.intercept is None:
            client.intercept = lambda payload: self._from_client(client, payload)

    def watch_host(self, session: Session, host: Peer) -> None:
        """Pass the host's answers to relayed calls back as bytes; answer them if it goes."""
        host.intercept = lambda payload: self._from_host(host, payload)
        host.on_close.append(lambda _peer: self._host_gone(session))

    def client_gone(self, client: Peer) -> None:
        """A connection ended: its calls in flight are cancelled in their hosts."""
        for key, relayed_id in list(self._by_client.items()):
            if key[0] is client:
                relayed = self._forget(relayed_id)
                if relayed is not None:
                    self._record(relayed, ErrorCode.CANCELLED.value)
                    self._cancel_in_host(relayed.session, relayed_id)

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    # -- client to host -------------------------------------------------------------------

    def _from_client(self, client: Peer, payload: bytes) -> Awaitable[None] | None:
        envelope = peek_envelope(payload)
        if envelope is None:
            return None
        if envelope.kind == "cancel":
            relayed_id = self._by_client.get((client, envelope.id)) if envelope.id is not None else None
            return None if relayed_id is None else self._cancel(relayed_id)
        if envelope.kind != "call" or not self._plain_call(client, envelope, payload):
            return None
        assert envelope.id is not None
        assert envelope.target is not None
        session = self._manager.relayable(client, envelope.target)
        if session is None or session.host is None or session.host.peer.closed:
            return None
        if (client, envelope.id) in self._by_client:
            return None  # an id already in flight: the ordinary way says what it says
        relayed_id = next(self._ids)
        data = rebuild_message(payload, envelope, id=relayed_id, target=session.product)
        if len(data) > session.host.peer.transport.max_frame_size:
            return None
        self._calls[relayed_id] = _Relayed(client, envelope.id, session, time.monotonic())
        self._by_client[(client, envelope.id)] = relayed_id
        self.relayed += 1
        return self._to_host(session, data)

    def _plain_call(self, client: Peer, envelope: RawEnvelope, payload: bytes) -> bool:
        """Whether the call can pass unchanged (else the ordinary relay serves it)."""
        target, method, call_id = envelope.target, envelope.method, envelope.id
        if envelope.callbacks or client.principal is None:
            return False
        if type(call_id) is not int or not 0 <= call_id < MAX_ID:
            return False
        if not isinstance(target, str) or not 0 < len(target) <= MAX_NAME_LENGTH:
            return False
        if not isinstance(method, str) or not 0 < len(method) <= MAX_NAME_LENGTH:
            return False
        if target in ("meta", "callback") or target == client.info.get("name"):
            return False
        if client.registry.has_target(target):
            return False
        if set(envelope.spans) != {"args", "kwargs"}:
            return False  # defaults, or keys the protocol ignores: the ordinary way handles those
        return _plain_body(payload, envelope)

    async def _to_host(self, session: Session, data: bytes) -> None:
        host = session.host
        assert host is not None
        with contextlib.suppress(ConnectionLost, OSError):
            # A lost channel is the host going away: _host_gone answers what is in flight.
            await host.peer.transport.send(data)

    async def _cancel(self, relayed_id: int) -> None:
        relayed = self._forget(relayed_id)
        if relayed is None:
            return
        self._record(relayed, ErrorCode.CANCELLED.value)
        self._cancel_in_host(relayed.session, relayed_id)
        answer = error_for(relayed.client_id, ErrorCode.CANCELLED, "the call was cancelled")
        await self._to_client(relayed.client, encode_message(answer, relayed.client.codec))

    def _cancel_in_host(self, session: Session, relayed_id: int) -> None:
        host = session.host
        if host is None or host.peer.closed:
            return
        cancel = msgpack.packb({"kind": "cancel", "id": relayed_id})
        with contextlib.suppress(Exception):  # the agent is stopping: nothing to cancel then
            self._manager.spawn_quietly(self._to_host(session, cancel), f"relay-cancel-{relayed_id}")

    # -- host to client -------------------------------------------------------------------

    def _from_host(self, host: Peer, payload: bytes) -> Awaitable[None] | None:
        envelope = peek_envelope(payload)
        if envelope is None or envelope.kind not in ("result", "error") or envelope.id is None:
            return None
        if envelope.id not in self._calls:
            return None
        relayed = self._forget(envelope.id)
        assert relayed is not None
        if envelope.kind == "result" and envelope.callbacks:
            self._record(relayed, ErrorCode.APPLICATION_ERROR.value)
            error = error_for(
                relayed.client_id, ErrorCode.APPLICATION_ERROR, _CALLBACK_IN_RESULT, "TypeError"
            )
            return self._to_client(relayed.client, encode_message(error, relayed.client.codec))
        self._record(relayed, _OK if envelope.kind == "result" else _RELAYED_ERROR)
        return self._to_client(relayed.client, rebuild_message(payload, envelope, id=relayed.client_id))

    async def _to_client(self, client: Peer, data: bytes) -> None:
        with contextlib.suppress(ConnectionLost, OSError):  # it went away: nobody to tell
            await client.transport.send(data)

    def _host_gone(self, session: Session) -> None:
        """The host's channel closed: its calls in flight are answered once the session has ended."""
        gone = [rid for rid, relayed in self._calls.items() if relayed.session is session]
        relayed_calls = [r for rid in gone if (r := self._forget(rid)) is not None]
        if relayed_calls:
            with contextlib.suppress(Exception):  # the agent is stopping: the clients go too
                self._manager.spawn_quietly(
                    self._answer_gone(session, relayed_calls), f"relay-gone-{session.id}"
                )

    async def _answer_gone(self, session: Session, relayed_calls: list[_Relayed]) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.ended.wait(), self._manager.end_wait_s)
        gone = self._manager.gone(session.id)
        for relayed in relayed_calls:
            self._record(relayed, gone.code)
            answer = Error(relayed.client_id, gone.code, gone.message, gone.type)
            await self._to_client(relayed.client, encode_message(answer, relayed.client.codec))

    # -- bookkeeping ----------------------------------------------------------------------

    def _forget(self, relayed_id: int) -> _Relayed | None:
        relayed = self._calls.pop(relayed_id, None)
        if relayed is not None:
            self._by_client.pop((relayed.client, relayed.client_id), None)
        return relayed

    @staticmethod
    def _record(relayed: _Relayed, outcome: str) -> None:
        relayed.client.registry.stats.record(_FORWARDED, outcome, time.monotonic() - relayed.started)


def _plain_body(payload: bytes, envelope: RawEnvelope) -> bool:
    """Whether ``args`` is an array and ``kwargs`` a small map with string keys (as the
    envelope requires: the host would close its channel on anything else)."""
    args_start, _ = envelope.spans["args"]
    kwargs_start, kwargs_end = envelope.spans["kwargs"]
    if payload[args_start] not in _ARRAY_FIRST or payload[kwargs_start] not in _MAP_FIRST:
        return False
    if payload[kwargs_start] == 0x80:  # {}: the usual case
        return True
    if kwargs_end - kwargs_start > MAX_CHECKED_KWARGS:
        return False
    kwargs = msgpack.unpackb(payload[kwargs_start:kwargs_end], raw=False)
    return all(isinstance(k, str) for k in kwargs)


__all__ = ["RELAYED_IDS_FROM", "RawRelay"]
