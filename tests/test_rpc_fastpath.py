"""The RPC layer's short cuts (issue 19) give what the long way gives.

``Method.prepare`` passes positional arguments as they are when the signature allows it:
the same call ``Signature.bind`` would make, and the same ``InvalidParams`` otherwise.
``StreamTransport`` writes the frames sent in one pass of the event loop together: they
arrive whole and in order, and a close right after them loses none.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from typing import Any

import pytest

from herder.rpc import InvalidParams, Method, Peer, StreamTransport
from herder.wire import FrameDecoder, NeedData


def plain(a: int, b: int) -> None: ...


def with_default(a: int, b: int = 2) -> None: ...


def with_peer(a: int, caller: Peer, b: int = 2) -> None: ...


def peer_first(caller: Peer, a: int) -> None: ...


def peer_last(a: int, b: int = 2, *, caller: Peer) -> None: ...


def keyword_only(a: int, *, b: int) -> None: ...


def keyword_only_default(a: int, *, b: int = 1) -> None: ...


def star_args(a: int, *rest: int) -> None: ...


def star_kwargs(a: int, **rest: int) -> None: ...


def positional_only(a: int, /, b: int = 0) -> None: ...


def nothing() -> None: ...


HANDLERS = [
    plain,
    with_default,
    with_peer,
    peer_first,
    peer_last,
    keyword_only,
    keyword_only_default,
    star_args,
    star_kwargs,
    positional_only,
    nothing,
]
PEER = object()


# What a handler is called with: positional and keyword arguments.
Call = tuple[tuple[Any, ...], dict[str, Any]]


def by_bind(method: Method, args: list[Any], kwargs: dict[str, Any]) -> Call:
    """What the handler gets the long way: everything bound to the signature."""
    assert method.signature is not None
    extra = {name: PEER for name in method.peer_params}
    try:
        bound = method.signature.bind(*args, **kwargs, **extra)
    except TypeError as exc:
        raise InvalidParams(str(exc)) from None
    return bound.args, bound.kwargs


def called(func: Any, call: Call) -> dict[str, Any]:
    """The handler's parameters as it would see them, called this way."""
    return dict(inspect.signature(func).bind(*call[0], **call[1]).arguments)


@pytest.mark.parametrize("func", HANDLERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("count", range(4))
def test_prepare_calls_the_handler_as_bind_does(func: Any, count: int) -> None:
    method = Method.of(func, auth=False)
    args = list(range(10, 10 + count))
    for kwargs in ({}, {"b": 5}):
        try:
            expected: dict[str, Any] | str = called(func, by_bind(method, args, kwargs))
        except InvalidParams as exc:
            expected = f"InvalidParams: {exc}"
        try:
            got: dict[str, Any] | str = called(func, method.prepare(args, kwargs, PEER))
        except InvalidParams as exc:
            got = f"InvalidParams: {exc}"
        assert got == expected


def test_only_plain_positional_signatures_take_the_short_cut() -> None:
    ranges = {f.__name__: Method.of(f, auth=False).positional for f in HANDLERS}
    assert ranges == {
        "plain": (2, 2),
        "with_default": (1, 2),
        "with_peer": None,  # a parameter after the peer's: bind places them
        "peer_first": None,
        "peer_last": (1, 2),
        "keyword_only": None,
        "keyword_only_default": None,
        "star_args": None,
        "star_kwargs": None,
        "positional_only": (1, 2),
        "nothing": (0, 0),
    }


async def read_frames(sock: socket.socket, count: int) -> list[bytes]:
    loop = asyncio.get_running_loop()
    decoder = FrameDecoder()
    frames: list[bytes] = []
    async with asyncio.timeout(10):
        while len(frames) < count:
            data = await loop.sock_recv(sock, 65536)
            decoder.feed(data)
            if not data:
                break
            while not isinstance(frame := decoder.next_frame(), NeedData):
                frames.append(frame)
    return frames


async def test_frames_sent_in_one_pass_arrive_whole_and_in_order() -> None:
    left, right = socket.socketpair()
    right.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=left)
    transport = StreamTransport(reader, writer)
    try:
        sent = [b"small %d" % i for i in range(50)]
        sent.insert(20, b"x" * 200_000)  # a large frame goes out at once, after those before it
        await asyncio.gather(*(transport.send(p) for p in sent))
        assert await read_frames(right, len(sent)) == sent
    finally:
        await transport.close()
        right.close()


async def test_close_right_after_sending_loses_nothing() -> None:
    left, right = socket.socketpair()
    right.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=left)
    transport = StreamTransport(reader, writer)
    sent = [b"last words %d" % i for i in range(5)]
    # One pass of the loop: the first frame goes out at once, the others would wait for
    # the pass's end, but the close comes first (as after a protocol error's answer).
    for payload in sent:
        await transport.send(payload)
    await transport.close()
    try:
        assert await read_frames(right, len(sent) + 1) == sent  # then the end of the stream
    finally:
        right.close()


CALL_DOCS: list[Any] = [
    {"kind": "call", "id": 1, "method": "echo"},
    {"kind": "call", "id": 1, "target": None, "method": "echo", "args": [1], "kwargs": {"a": 2}},
    {"kind": "call", "id": 0, "target": "math", "method": "m" * 256, "args": [], "kwargs": {}},
    {"kind": "call", "id": 2**53 - 1, "method": "echo", "extra": "ignored"},
    {"kind": "call", "id": 2**53, "method": "echo"},
    {"kind": "call", "id": -1, "method": "echo"},
    {"kind": "call", "id": True, "method": "echo"},
    {"kind": "call", "id": 1.0, "method": "echo"},
    {"kind": "call", "method": "echo"},
    {"kind": "call", "id": 1, "method": ""},
    {"kind": "call", "id": 1, "method": "m" * 257},
    {"kind": "call", "id": 1, "method": 5},
    {"kind": "call", "id": 1},
    {"kind": "call", "id": 1, "method": "echo", "target": ""},
    {"kind": "call", "id": 1, "method": "echo", "target": 3},
    {"kind": "call", "id": 1, "method": "echo", "args": None},
    {"kind": "call", "id": 1, "method": "echo", "args": {"a": 1}},
    {"kind": "call", "id": 1, "method": "echo", "kwargs": None},
    {"kind": "call", "id": 1, "method": "echo", "kwargs": []},
    {"kind": "call", "id": 1, "method": "echo", "kwargs": {1: "a"}},
]


@pytest.mark.parametrize("doc", CALL_DOCS)
def test_the_read_loops_call_checks_are_from_documents(doc: dict[str, Any]) -> None:
    """A call the read loop takes as it is passes every check of from_document, and
    anything else is left to from_document (which names what is wrong)."""
    from herder.rpc.peer import _plain_call
    from herder.wire import Call, InvalidMessage, from_document

    fields = _plain_call(doc)
    try:
        message = from_document(doc)
    except InvalidMessage:
        assert fields is None
        return
    assert isinstance(message, Call)
    assert fields == (message.id, message.target, message.method, message.args, message.kwargs)
