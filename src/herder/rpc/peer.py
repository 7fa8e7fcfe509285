"""A peer: one end of a connection, which can both call and serve.

``Peer.run()`` reads messages until the connection ends and owns every task it starts
(one per incoming call) in one ``TaskGroup``. Calls go out with ``call()``; many may be
in flight and their answers may come in any order.

Callbacks (the dnode idea in Kite): a callable passed as an argument, anywhere inside
the arguments, is sent as ``{"$cb": <id>}`` and kept in this peer's callback table; the
other side gets a ``RemoteCallback`` which, when awaited, calls it back with target
``callback`` and method ``"<id>"``. A callback stays callable until the side holding it
calls ``release()`` (a ``meta.release`` notify) or the connection ends.

Back-pressure: at most ``max_in_flight`` incoming calls run at once; a call past that is
answered at once with ``overloaded``. Answers wait for the connection to drain, so a
client that floods without reading is slowed by TCP, not by the peer's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from herder.rpc import stats
from herder.rpc.errors import CallTimeout, ConnectionLost, InvalidParams, RemoteError, RpcError
from herder.rpc.handlers import Method, Registry
from herder.rpc.transport import Transport
from herder.wire import (
    Call,
    Cancel,
    Codec,
    Error,
    ErrorCode,
    Message,
    Notify,
    ProtocolError,
    Result,
    WireError,
    encode_message,
    error_for,
    from_document,
)

log = logging.getLogger(__name__)

META = "meta"
CALLBACK = "callback"
CALLBACK_KEY = "$cb"
# What an exception's ``code`` must look like to be sent as the application's code (else
# its class name goes): snake_case, so that it can never be mistaken for a class name.
_APPLICATION_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Incoming calls running at once on one connection before the peer stops reading.
DEFAULT_MAX_IN_FLIGHT = 128
# Ids are below 2**53 (docs/protocol.md, 5.3); what ``from_document`` checks, for the
# answers the read loop settles without building a message (``_read_loop``).
_MAX_ID = 2**53
_MAX_NAME_LENGTH = 256  # of a method's or a target's name (5.1), as from_document checks
# Values passed on as they are by ``_encode_value`` and ``_decode_value``: nothing inside.
_LEAVES = frozenset({str, int, float, bool, bytes, type(None)})


class RemoteCallback:
    """A function the other side passed us; ``await cb(*args)`` calls it there."""

    def __init__(self, peer: Peer, callback_id: int) -> None:
        self._peer = peer
        self.id = callback_id
        self.released = False

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await self._peer.call(str(self.id), *args, target=CALLBACK, **kwargs)

    async def release(self) -> None:
        """Tell the other side it may forget this callback."""
        if not self.released:
            self.released = True
            with contextlib.suppress(ConnectionLost):
                await self._peer.notify("release", self.id, target=META)

    def __repr__(self) -> str:
        return f"<RemoteCallback {self.id}>"


class _Fault(Exception):
    """An incoming call fails with a protocol-level code (not an application error)."""

    def __init__(self, code: ErrorCode, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class _ConnectionEnded(Exception):
    """Raised in ``run()``'s task group once reading is over, to cancel the handlers left."""


class Peer:
    """One end of an RPC connection."""

    def __init__(
        self,
        transport: Transport,
        codec: Codec,
        *,
        registry: Registry | None = None,
        info: dict[str, Any] | None = None,
        remote: dict[str, Any] | None = None,
        principal: Any = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.transport = transport
        self.codec = codec
        # A WebSocket speaking JSON sends text messages, readable in a browser's devtools.
        transport.text_payloads = codec.name == "json"
        self.registry = registry or Registry()
        self.info = info or {}  # who this side is (a service's name and version)
        self.remote = remote or {}  # who the other side said it is in the handshake
        self.principal = principal
        self.max_in_flight = max_in_flight
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._running = 0  # incoming calls and notifies running (tasks of run()'s group)
        self._serving: dict[int, asyncio.Task[None]] = {}  # calls, by id, for cancel
        self._callbacks: dict[int, Callable[..., Any]] = {}
        self._callback_ids = itertools.count(1)
        self._tg: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self.close_reason = ""
        self._meta: dict[str, Method] | None = None
        # Called once the connection has ended (a relay forgets what it kept for it).
        self.on_close: list[Callable[[Peer], None]] = []
        # Shown every payload before it is decoded: a relay that passes messages on as
        # bytes (the agent's sessions) takes one by returning an awaitable, which the
        # read loop awaits instead of decoding it; None leaves it to the peer.
        self.intercept: Callable[[bytes], Awaitable[None] | None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Peer:
        self._runner = asyncio.create_task(self.run(), name="rpc-peer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def close(self, reason: str = "closed by this side") -> None:
        """Close the connection; calls in flight fail with ConnectionLost."""
        if not self.close_reason:
            self.close_reason = reason
        await self.transport.close()
        if self._runner is not None and self._runner is not asyncio.current_task():
            # wait() does not raise what ended the runner, but lets our own cancellation through.
            await asyncio.wait({self._runner})

    async def run(self) -> None:
        """Read and dispatch messages until the connection ends, then fail what is pending."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                await self._read_loop(tg)
                # Handlers waiting on the other side (callbacks) learn at once that it is gone.
                self._fail_pending()
                if self._running:
                    raise _ConnectionEnded  # leaving the group this way cancels the handlers
        except* _ConnectionEnded:
            pass
        finally:
            self._tg = None
            self._closed.set()
            self._fail_pending()
            self._callbacks.clear()
            await self.transport.close()
            for hook in self.on_close:
                try:
                    hook(self)
                except Exception:  # one owner's bug must not hide the others' hooks
                    log.exception("an on_close hook failed")

    def _fail_pending(self) -> None:
        lost = ConnectionLost(f"connection lost: {self.close_reason or 'closed'}")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(lost)
        self._pending.clear()

    async def _read_loop(self, tg: asyncio.TaskGroup) -> None:
        recv = self.transport.recv
        decode = self.codec.decode
        pending = self._pending
        while True:
            try:
                payload = await recv()
                if self.intercept is not None and (taken := self.intercept(payload)) is not None:
                    await taken
                    continue
                doc = decode(payload)
                # An answer to one of this side's calls, the most frequent message of a
                # client: settled here, with from_document's checks but without building
                # a Result (anything unusual goes the whole way and fails there).
                if type(doc) is dict and doc.get("kind") == "result":
                    call_id = doc.get("id")
                    if type(call_id) is int and 0 <= call_id < _MAX_ID:
                        future = pending.pop(call_id, None)
                        if future is not None and not future.done():
                            future.set_result(doc.get("result"))
                        continue
                # A call, the most frequent message of a service: the same.
                call = _plain_call(doc) if type(doc) is dict and doc.get("kind") == "call" else None
                message = from_document(doc) if call is None else None
            except ConnectionLost as exc:
                self.close_reason = self.close_reason or str(exc)
                return
            except WireError as exc:
                await self._protocol_failure(exc)
                return
            if call is not None:
                await self._start(*call, tg)
            else:
                assert message is not None
                await self._dispatch(message, tg)

    async def _protocol_failure(self, exc: WireError) -> None:
        """Tell the other side what was wrong (best effort), then end the connection."""
        self.close_reason = f"protocol error: {exc}"
        log.warning("closing an RPC connection: %s", exc)
        with contextlib.suppress(ConnectionLost, WireError, OSError):
            await self._send(error_for(None, exc.code, str(exc), type(exc).__name__))

    async def _dispatch(self, message: Message, tg: asyncio.TaskGroup) -> None:
        if isinstance(message, Notify) and self._run_inline(message):
            return
        if isinstance(message, Call | Notify):
            call_id = message.id if isinstance(message, Call) else None
            await self._start(call_id, message.target, message.method, message.args, message.kwargs, tg)
        elif isinstance(message, Result):
            future = self._pending.pop(message.id, None)
            if future is not None and not future.done():
                future.set_result(message.result)
        elif isinstance(message, Error):
            self._on_error(message)
        else:  # Cancel
            serving = self._serving.get(message.id)
            if serving is not None:
                serving.cancel()

    async def _start(
        self,
        call_id: int | None,
        target: str | None,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        tg: asyncio.TaskGroup,
    ) -> None:
        """Run a call (``call_id`` None: a notification) in a task of its own."""
        if self._running >= self.max_in_flight:
            self.registry.stats.record(self._label(target, name), ErrorCode.OVERLOADED.value, None)
            # Refuse rather than stop reading: a reader that waited here could never
            # see the answers its own handlers wait for (callbacks), a deadlock. The
            # send still waits on a clogged connection, so back-pressure remains.
            if call_id is not None:
                limit = self.max_in_flight
                await self._send_quietly(
                    error_for(call_id, ErrorCode.OVERLOADED, f"{limit} calls are running on this connection")
                )
            else:
                log.warning("dropped a %r notification: %d calls are running", name, self._running)
            return
        task = tg.create_task(self._serve(call_id, target, name, args, kwargs))
        self._running += 1
        task.add_done_callback(functools.partial(self._served, call_id))
        if call_id is not None:
            self._serving[call_id] = task

    def _run_inline(self, message: Notify) -> bool:
        """Run a notification's handler now if it is a plain function; True if it ran.

        Notifications carry streams (a program's output, session events): run in the
        read loop they keep their order and cannot pile up past ``max_in_flight`` (they
        would be dropped there), and the reading itself is the back-pressure.
        """
        if message.target in (CALLBACK, META):
            return False
        try:
            method = self._resolve(message.target, message.method)
        except _Fault:
            return False
        if method.is_async or (method.auth and self.principal is None):
            return False
        outcome = stats.OK
        try:
            args = [self._decode_value(a) for a in message.args]
            kwargs = {k: self._decode_value(v) for k, v in message.kwargs.items()}
            call_args, call_kwargs = method.prepare(args, kwargs, self)
            method.func(*call_args, **call_kwargs)
        except InvalidParams as exc:
            outcome = ErrorCode.INVALID_PARAMS.value
            log.warning("a %r notification with invalid arguments was ignored: %s", message.method, exc)
        except Exception:
            outcome = stats.APPLICATION_ERROR
            log.exception("the handler of a %r notification failed", message.method)
        self.registry.stats.record(self._label(message.target, message.method), outcome, None)
        return True

    def _served(self, call_id: int | None, task: asyncio.Task[None]) -> None:
        """A handler task ended, possibly cancelled before it ever ran (then answer for it)."""
        self._running -= 1
        if call_id is None:
            return
        if self._serving.get(call_id) is task:
            del self._serving[call_id]
        if task.cancelled():
            self._send_in_background(error_for(call_id, ErrorCode.CANCELLED, "the call was cancelled"))

    def _on_error(self, message: Error) -> None:
        if message.id is None:
            log.warning("the other side reports [%s] %s", message.code, message.message)
            return
        future = self._pending.pop(message.id, None)
        if future is not None and not future.done():
            future.set_exception(RemoteError(message.code, message.message, message.type, message.data))

    # -- serving -------------------------------------------------------------------

    async def _serve(
        self, call_id: int | None, target: str | None, name: str, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        started = time.monotonic()
        outcome = stats.OK
        result: Any = None
        reply: Message | None = None
        try:
            result = await self._invoke(target, name, args, kwargs)
        except asyncio.CancelledError:
            outcome = ErrorCode.CANCELLED.value
            reply = (
                error_for(call_id, ErrorCode.CANCELLED, "the call was cancelled")
                if call_id is not None
                else None
            )
        except _Fault as fault:
            outcome = fault.code.value
            if call_id is not None:
                reply = error_for(call_id, fault.code, str(fault), data=fault.data)
            else:
                reply = None
                if fault.code is ErrorCode.INVALID_PARAMS:  # a peer that breaks the method's contract
                    log.warning("dropped a %r notification with invalid arguments: %s", name, fault)
        except RemoteError as exc:  # relayed from a third peer: passed on as it came
            outcome = stats.RELAYED_ERROR
            reply = Error(call_id, exc.code, exc.message, exc.type, exc.data) if call_id is not None else None
        except Exception as exc:
            outcome = stats.APPLICATION_ERROR
            reply = application_error(call_id, exc) if call_id is not None else None
        self.registry.stats.record(self._label(target, name), outcome, time.monotonic() - started)
        if outcome == stats.OK:
            if call_id is not None:
                await self._reply_result(call_id, result)
        elif reply is not None:
            await self._reply(reply)

    def _label(self, target: str | None, name: str) -> str:
        """The ``method`` a call is counted under: bounded by what this side serves.

        The service's own methods by name, another target's as ``target.name``, meta's as
        ``meta.name``; callbacks (named by id) as ``callback``; a target the forwarder
        serves as ``forwarded``; anything else as ``unknown``.
        """
        if target == CALLBACK:
            return CALLBACK
        if target == META:
            known = self._meta_method(name) or self.registry.find(META, name)
            return f"{META}.{name}" if known is not None else stats.UNKNOWN
        if target is not None and target == self.info.get("name"):
            target = None
        if self.registry.find(target, name) is not None:
            return name if target is None else f"{target}.{name}"
        registry = self.registry
        if target is not None and registry.forwarder is not None and not registry.has_target(target):
            return stats.FORWARDED
        return stats.UNKNOWN

    async def _reply_result(self, call_id: int, result: Any) -> None:
        """Answer a call with its result: ``_reply(Result(...))``, with the document
        written here rather than built from a message (the same map, key for key)."""
        try:
            await self.transport.send(self.codec.encode({"kind": "result", "id": call_id, "result": result}))
        except (TypeError, ValueError, WireError) as exc:  # a result the codec or frame cannot carry
            why = f"the result cannot be encoded: {exc}"
            await self._send(error_for(call_id, ErrorCode.INTERNAL_ERROR, why))
        except ConnectionLost:
            pass

    async def _reply(self, reply: Message) -> None:
        try:
            await self._send(reply)
        except (TypeError, ValueError, WireError) as exc:  # a result the codec or frame cannot carry
            assert isinstance(reply, Result)
            await self._send(
                error_for(reply.id, ErrorCode.INTERNAL_ERROR, f"the result cannot be encoded: {exc}")
            )
        except ConnectionLost:
            pass

    async def _invoke(self, target: str | None, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        args = [self._decode_value(a) for a in args]
        kwargs = {k: self._decode_value(v) for k, v in kwargs.items()} if kwargs else {}
        if target == CALLBACK:
            return await self._run_callback(name, args, kwargs)
        forwarder = self.registry.forwarder
        if (
            forwarder is not None
            and target is not None
            and target != META
            and target != self.info.get("name")
            and not self.registry.has_target(target)
        ):
            if self.principal is None:
                raise _Fault(ErrorCode.UNAUTHORIZED, f"calls to {target!r} require credentials")
            return self._encode_value(await forwarder(self, target, name, args, kwargs))
        method = self._resolve(target, name)
        if method.auth and self.principal is None:
            raise _Fault(ErrorCode.UNAUTHORIZED, f"{name!r} requires credentials")
        try:
            call_args, call_kwargs = method.prepare(args, kwargs, self)
        except InvalidParams as exc:
            data = {"field": exc.field} if exc.field is not None else None
            raise _Fault(
                ErrorCode.INVALID_PARAMS, f"{name}{method.describe()['params']}: {exc}", data
            ) from None
        result = method.func(*call_args, **call_kwargs)
        if method.is_async or inspect.isawaitable(result):
            result = await result
        if method.params is not None:
            result = method.encode_result(result)
        return self._encode_value(result)

    def _resolve(self, target: str | None, name: str) -> Method:
        if target == META:
            meta = self._meta_method(name) or self.registry.find(META, name)
            if meta is None:
                raise _Fault(ErrorCode.UNKNOWN_METHOD, f"meta has no method {name!r}")
            return meta
        if target is not None and target == self.info.get("name"):  # the service named itself
            target = None
        if not self.registry.has_target(target) and target is not None:
            raise _Fault(ErrorCode.UNKNOWN_TARGET, f"no target {target!r} here")
        method = self.registry.find(target, name)
        if method is None:
            raise _Fault(ErrorCode.UNKNOWN_METHOD, f"no method {name!r}")
        return method

    async def _run_callback(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        func = self._callbacks.get(int(name)) if name.isascii() and name.isdigit() else None
        if func is None:
            raise _Fault(ErrorCode.RELEASED_CALLBACK, f"callback {name} was released or never existed")
        result = func(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return self._encode_value(result)

    # -- meta --------------------------------------------------------------------------

    def _meta_method(self, name: str) -> Method | None:
        if self._meta is None:  # built on first use: inspecting signatures costs ~17 us each
            table: dict[str, Callable[..., Any]] = {
                "ping": self._meta_ping,
                "methods": self._meta_methods,
                "info": self._meta_info,
                "release": self._meta_release,
            }
            self._meta = {n: Method.of(f, name=n, auth=False) for n, f in table.items()}
        return self._meta.get(name)

    def _meta_ping(self) -> str:
        """Answer "pong": the connection works."""
        return "pong"

    def _meta_methods(self) -> list[dict[str, Any]]:
        """The methods this side serves: name, parameters, whether auth is needed, summary
        (methods added to ``meta`` carry ``"target": "meta"``)."""
        extra = [{**m, "target": META} for m in self.registry.describe(META)]
        return self.registry.describe() + extra

    def _meta_info(self) -> dict[str, Any]:
        """Who this side is: name, version, protocol version, codec in use."""
        from herder.wire import VERSION

        return {**self.info, "protocol": VERSION, "codec": self.codec.name}

    def _meta_release(self, callback_id: int) -> None:
        """Forget a callback this side passed: the other side will not call it again."""
        self._callbacks.pop(callback_id, None)

    # -- calling ---------------------------------------------------------------------

    async def call(
        self,
        method: str,
        *args: Any,
        target: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-call timeout is part of the RPC contract
        **kwargs: Any,
    ) -> Any:
        """Call ``method`` on the other side and return its result.

        Raises:
            RemoteError: the other side answered with an error.
            CallTimeout: ``timeout`` seconds passed (the call is cancelled there).
            ConnectionLost: the connection ended before the answer.
        """
        return await self.call_with(method, list(args), kwargs, target=target, timeout=timeout)

    async def call_with(
        self,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
        *,
        target: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-call timeout is part of the RPC contract
    ) -> Any:
        """``call`` with the arguments as a list and a dict: for relays, whose keyword
        arguments may be named anything (``target`` and ``timeout`` included)."""
        if self.closed:
            raise ConnectionLost(f"connection lost: {self.close_reason or 'closed'}")
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        try:
            try:
                # The map encode_message(Call(...)) would write, key for key, built here.
                document = {
                    "kind": "call",
                    "id": call_id,
                    "target": target,
                    "method": method,
                    "args": [self._encode_value(a) for a in args],
                    "kwargs": self._encode_kwargs(kwargs) if kwargs else {},
                }
                await self.transport.send(self.codec.encode(document))
            except WireError as exc:  # e.g. arguments larger than a frame
                raise RpcError(f"{method!r} cannot be sent: {exc}") from exc
            if timeout is None:
                return self._decode_value(await future)
            try:
                async with asyncio.timeout(timeout):
                    return self._decode_value(await future)
            except TimeoutError:
                raise CallTimeout(f"{method!r} did not answer within {timeout:g} s") from None
        except (asyncio.CancelledError, CallTimeout):
            self._cancel_remote(call_id)
            raise
        finally:
            self._pending.pop(call_id, None)

    async def notify(self, method: str, *args: Any, target: str | None = None, **kwargs: Any) -> None:
        """Send a call that expects no answer."""
        await self._send(Notify(method, target, self._encode_args(args), self._encode_kwargs(kwargs)))

    def _cancel_remote(self, call_id: int) -> None:
        self._send_in_background(Cancel(call_id))

    def _send_in_background(self, message: Message) -> None:
        """Send from a callback, as a task of the peer's group; nothing once it is closing.

        A group that is shutting down refuses new tasks: the coroutine is then closed
        here, never left unawaited (which would surface as a warning at collection).
        """
        if self._tg is None or self.closed:
            return
        sending = self._send_quietly(message)
        try:
            self._tg.create_task(sending)
        except RuntimeError:  # the group is shutting down: no answer is needed
            sending.close()

    async def _send_quietly(self, message: Message) -> None:
        with contextlib.suppress(ConnectionLost, ProtocolError, OSError):
            await self._send(message)

    async def _send(self, message: Message) -> None:
        await self.transport.send(encode_message(message, self.codec))

    # -- callbacks in values ------------------------------------------------------------

    def _encode_args(self, args: tuple[Any, ...]) -> list[Any]:
        return [self._encode_value(a) for a in args]

    def _encode_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {k: self._encode_value(v) for k, v in kwargs.items()}

    def _encode_value(self, value: Any) -> Any:
        if type(value) in _LEAVES:  # most values: nothing to look into
            return value
        if callable(value) and not isinstance(value, type):
            if isinstance(value, RemoteCallback):
                raise TypeError("a callback received from the other side cannot be passed back")
            callback_id = next(self._callback_ids)
            self._callbacks[callback_id] = value
            return {CALLBACK_KEY: callback_id}
        if isinstance(value, list | tuple):
            return [self._encode_value(v) for v in value]
        if isinstance(value, dict):
            if len(value) == 1 and CALLBACK_KEY in value:
                raise TypeError(f"a map whose only key is {CALLBACK_KEY!r} is reserved for callbacks")
            if not all(isinstance(k, str) for k in value):
                raise TypeError("map keys must be strings (JSON and the other side's decoder require it)")
            return {k: self._encode_value(v) for k, v in value.items()}
        return value

    def _decode_value(self, value: Any) -> Any:
        if type(value) in _LEAVES:
            return value
        if isinstance(value, dict):
            if len(value) == 1 and type(value.get(CALLBACK_KEY)) is int:
                return RemoteCallback(self, value[CALLBACK_KEY])
            return {k: self._decode_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._decode_value(v) for v in value]
        return value


def _plain_call(doc: dict[str, Any]) -> tuple[int, str | None, str, list[Any], dict[str, Any]] | None:
    """A call's id, target, method, args and kwargs, if the map passes every check of
    ``from_document``; None for anything else, which then goes the whole way (and
    fails there with the message that says why)."""
    call_id, name, target = doc.get("id"), doc.get("method"), doc.get("target")
    args, kwargs = doc.get("args", []), doc.get("kwargs", {})
    if (
        type(call_id) is int
        and 0 <= call_id < _MAX_ID
        and type(name) is str
        and 0 < len(name) <= _MAX_NAME_LENGTH
        and (target is None or (type(target) is str and 0 < len(target) <= _MAX_NAME_LENGTH))
        and type(args) is list
        and type(kwargs) is dict
        and all(type(k) is str for k in kwargs)
    ):
        return call_id, target, name, args, kwargs
    return None


def application_error(call_id: int, exc: Exception) -> Error:
    """The answer to a call whose handler raised ``exc``.

    ``type`` is the exception's ``code`` when it carries one (a snake_case string: the
    application's stable code, which programs match), else its class name; ``data`` is
    ``{"field": ...}`` when the exception names the field at fault.
    """
    code = getattr(exc, "code", None)
    kind = code if isinstance(code, str) and _APPLICATION_CODE.fullmatch(code) else type(exc).__name__
    field = getattr(exc, "field", None)
    data = {"field": field} if isinstance(field, str) else None
    return error_for(call_id, ErrorCode.APPLICATION_ERROR, str(exc), kind, data)
