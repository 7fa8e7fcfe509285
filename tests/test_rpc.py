"""One conformance suite for every transport: WebSocket, TCP, Unix socket, socketpair.

Each test gets a connected client ``Peer`` to a real ``Service`` over the transport
under test (``pair``); what one side sent is what the other side received.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from herder.rpc import (
    CallTimeout,
    ConnectionLost,
    HandshakeRefused,
    Peer,
    RemoteCallback,
    RemoteError,
    Service,
    SharedSecretVerifier,
    StreamTransport,
    connect,
    connect_sync,
)
from herder.rpc.client import handshake

TRANSPORTS = ["ws", "tcp", "unix", "socketpair"]


class Probe:
    """What the service under test saw, for the tests to wait on."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.running = 0
        self.most_running = 0
        self.kept: RemoteCallback | None = None


def build_service(probe: Probe, **options: Any) -> Service:
    svc = Service("math", "1.0.0", **options)
    add_plain_methods(svc)
    add_probed_methods(svc, probe)
    return svc


def add_plain_methods(svc: Service) -> None:
    @svc.method(auth=False)
    async def square(x: float) -> float:
        """Square a number."""
        return x * x

    @svc.method(auth=False)
    def add(a: int, b: int = 0) -> int:
        return a + b

    @svc.method(auth=False)
    async def echo_after(delay: float, value: Any) -> Any:
        await asyncio.sleep(delay)
        return value

    @svc.method(auth=False)
    async def count(n: int, progress: RemoteCallback) -> int:
        for i in range(n):
            await progress(i)
        return n

    @svc.method(auth=False)
    def fail(kind: str) -> None:
        if kind == "value":
            raise ValueError("bad value")
        raise TypeError("a type error inside the handler")

    @svc.method(auth=False)
    async def greet_back(name: str, caller: Peer) -> str:
        """Call the client's own 'hello' method: calls go both ways."""
        answer: str = await caller.call("hello", name)
        return answer.upper()

    @svc.method
    async def secret() -> str:
        return "only with credentials"

    @svc.method(auth=False)
    def blob(size: int) -> str:
        return "x" * size


def add_probed_methods(svc: Service, probe: Probe) -> None:
    @svc.method(auth=False)
    async def wait_forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            probe.cancelled.set()

    @svc.method(auth=False)
    async def slow(delay: float) -> int:
        probe.running += 1
        probe.most_running = max(probe.most_running, probe.running)
        try:
            await asyncio.sleep(delay)
        finally:
            probe.running -= 1
        return probe.most_running

    @svc.method(auth=False)
    async def keep(cb: RemoteCallback) -> None:
        probe.kept = cb

    @svc.method(auth=False)
    async def release_kept() -> None:
        assert probe.kept is not None
        await probe.kept.release()

    @svc.method(auth=False)
    async def call_kept() -> Any:
        assert probe.kept is not None
        return await probe.kept("again")


@contextlib.asynccontextmanager
async def running(svc: Service, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    started = asyncio.Event()
    unix = str(tmp_path / "rpc.sock")
    task = asyncio.create_task(svc.serve("127.0.0.1", 0, tcp_port=0, unix_path=unix, started=started))
    try:
        await asyncio.wait_for(started.wait(), 10)
        yield {
            "ws": f"ws://127.0.0.1:{svc.ws_port}/rpc",
            "tcp": f"tcp://127.0.0.1:{svc.tcp_port}",
            "unix": f"unix://{unix}",
        }
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def socketpair_peer(svc: Service, handlers: dict[str, Callable[..., Any]]) -> AsyncIterator[Peer]:
    left, right = socket.socketpair()
    server_reader, server_writer = await asyncio.open_connection(sock=left)
    serving = asyncio.create_task(svc.handle(StreamTransport(server_reader, server_writer)))
    client_reader, client_writer = await asyncio.open_connection(sock=right)
    try:
        peer = await handshake(
            StreamTransport(client_reader, client_writer), token=None, codecs=("msgpack",), handlers=handlers
        )
        async with peer:
            yield peer
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture(params=TRANSPORTS)
async def pair(request: pytest.FixtureRequest, probe: Probe, tmp_path: Path) -> AsyncIterator[Peer]:
    svc = build_service(probe)
    handlers = {"hello": lambda name: f"hello {name}"}
    if request.param == "socketpair":
        async with socketpair_peer(svc, handlers) as peer:
            yield peer
        return
    async with running(svc, tmp_path) as urls, connect(urls[request.param], handlers=handlers) as peer:
        yield peer


async def test_call_and_result(pair: Peer) -> None:
    assert await pair.call("square", 4) == 16
    assert await pair.call("add", 2, b=3) == 5  # a sync handler, keyword arguments


async def test_calls_go_both_ways(pair: Peer) -> None:
    assert await pair.call("greet_back", "ann") == "HELLO ANN"


async def test_many_in_flight_answered_out_of_order(pair: Peer) -> None:
    finished: list[int] = []

    async def one(i: int) -> int:
        value: int = await pair.call("echo_after", (10 - i) * 0.02, i)
        finished.append(value)
        return value

    results = await asyncio.gather(*(one(i) for i in range(10)))
    assert results == list(range(10))
    assert finished == sorted(finished, reverse=True)


async def test_callback_called_several_times_before_the_reply(pair: Peer) -> None:
    seen: list[int] = []
    assert await pair.call("count", 5, lambda i: seen.append(i)) == 5
    assert seen == [0, 1, 2, 3, 4]

    async def async_progress(i: int) -> None:
        seen.append(i * 10)

    await pair.call("count", 2, async_progress)
    assert seen[-2:] == [0, 10]


async def test_released_callback_cannot_be_called(pair: Peer) -> None:
    received: list[str] = []
    await pair.call("keep", received.append)
    await pair.call("call_kept")
    assert received == ["again"]
    await pair.call("release_kept")
    with pytest.raises(RemoteError) as info:
        await pair.call("call_kept")
    # The service's call to the released callback failed; its error reached us as the reply.
    assert "released_callback" in info.value.message or info.value.code == "released_callback"


async def test_timeout_cancels_the_remote_call(pair: Peer, probe: Probe) -> None:
    with pytest.raises(CallTimeout):
        await pair.call("wait_forever", timeout=0.1)
    await asyncio.wait_for(probe.cancelled.wait(), 5)
    assert await pair.call("square", 3) == 9  # the connection is fine


async def test_cancelling_the_caller_cancels_the_remote_call(pair: Peer, probe: Probe) -> None:
    task = asyncio.create_task(pair.call("wait_forever"))
    await asyncio.sleep(0)  # let it send the call
    await pair.call("square", 1)  # and be sure the service received it
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(probe.cancelled.wait(), 5)


async def test_remote_exceptions(pair: Peer) -> None:
    with pytest.raises(RemoteError) as info:
        await pair.call("fail", "value")
    assert (info.value.code, info.value.type, info.value.message) == (
        "application_error",
        "ValueError",
        "bad value",
    )
    with pytest.raises(RemoteError) as info:
        await pair.call("fail", "type")
    assert info.value.code == "application_error"  # not mistaken for bad parameters
    assert info.value.type == "TypeError"
    with pytest.raises(RemoteError) as info:
        await pair.call("square", 1, 2)
    assert info.value.code == "invalid_params"
    with pytest.raises(RemoteError) as info:
        await pair.call("nope")
    assert info.value.code == "unknown_method"
    with pytest.raises(RemoteError) as info:
        await pair.call("x", target="elsewhere")
    assert info.value.code == "unknown_target"
    with pytest.raises(RemoteError) as info:
        await pair.call("secret")
    assert info.value.code == "unauthorized"


async def test_meta(pair: Peer) -> None:
    assert await pair.call("ping", target="meta") == "pong"
    info = await pair.call("info", target="meta")
    assert info["name"] == "math"
    assert info["version"] == "1.0.0"
    assert info["protocol"] == 1
    methods = {m["name"]: m for m in await pair.call("methods", target="meta")}
    assert methods["square"] == {
        "name": "square",
        "params": "(x: float) -> float",
        "auth": False,
        "doc": "Square a number.",
    }
    assert methods["secret"]["auth"] is True
    assert "caller" not in methods["greet_back"]["params"]  # the injected peer is not a parameter


async def test_connection_loss_fails_pending_calls(pair: Peer) -> None:
    task = asyncio.create_task(pair.call("wait_forever"))
    await pair.call("square", 1)
    await pair.transport.close()
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(task, 5)
    with pytest.raises(ConnectionLost):
        await pair.call("square", 2)


async def test_calls_past_the_in_flight_limit_are_refused(probe: Probe, tmp_path: Path) -> None:
    svc = build_service(probe)
    async with running(svc, tmp_path) as urls, connect(urls["tcp"]) as peer:
        for p in svc.peers:
            p.max_in_flight = 3  # the service side's limit, lowered for the test
        results = await asyncio.gather(*(peer.call("slow", 0.1) for _ in range(12)), return_exceptions=True)
        refused = [r for r in results if isinstance(r, RemoteError)]
        assert {r.code for r in refused} == {"overloaded"}
        assert len(refused) == 9
        assert probe.most_running == 3
        assert await peer.call("square", 2) == 4  # and it serves again once they are done


async def test_callbacks_past_the_limit_do_not_deadlock(probe: Probe, tmp_path: Path) -> None:
    """Handlers waiting for callback answers: the answers are still read."""
    svc = build_service(probe)
    async with running(svc, tmp_path) as urls, connect(urls["tcp"]) as peer:
        for p in svc.peers:
            p.max_in_flight = 4
        ticks: list[int] = []

        async def tick(i: int) -> None:
            await asyncio.sleep(0.01)
            ticks.append(i)

        results = await asyncio.wait_for(
            asyncio.gather(*(peer.call("count", 3, tick) for _ in range(8)), return_exceptions=True), 20
        )
        done = [r for r in results if r == 3]
        assert len(done) >= 4
        assert all(r == 3 or (isinstance(r, RemoteError) and r.code == "overloaded") for r in results)


async def test_json_codec_over_each_transport(probe: Probe, tmp_path: Path) -> None:
    svc = build_service(probe)
    async with running(svc, tmp_path) as urls:
        for url in urls.values():
            async with connect(url, codecs=("json",)) as peer:
                assert peer.codec.name == "json"
                assert await peer.call("square", 1.5) == 2.25


async def test_shared_secret(probe: Probe, tmp_path: Path) -> None:
    svc = build_service(probe, verifier=SharedSecretVerifier("s3cret"))
    async with running(svc, tmp_path) as urls:
        async with connect(urls["tcp"], token="s3cret") as peer:
            assert await peer.call("secret") == "only with credentials"
        async with connect(urls["ws"], token="s3cret") as peer:
            assert await peer.call("secret") == "only with credentials"
        with pytest.raises(HandshakeRefused) as info:
            async with connect(urls["tcp"], token="wrong"):
                pass
        assert info.value.code == "unauthorized"
        async with connect(urls["tcp"]) as anonymous:
            assert await anonymous.call("square", 2) == 4
            with pytest.raises(RemoteError) as err:
                await anonymous.call("secret")
            assert err.value.code == "unauthorized"


async def test_oversized_frame_closes_the_connection_with_a_reason(probe: Probe, tmp_path: Path) -> None:
    svc = build_service(probe, max_frame_size=4096)
    async with running(svc, tmp_path) as urls:
        for url in (urls["tcp"], urls["ws"]):
            async with connect(url) as peer:
                with pytest.raises(ConnectionLost):
                    await asyncio.wait_for(peer.call("square", "x" * 10_000), 10)
            async with connect(url) as fresh:  # the service is fine
                assert await fresh.call("square", 5) == 25


async def test_garbage_after_the_handshake(probe: Probe, tmp_path: Path) -> None:
    svc = build_service(probe)
    async with running(svc, tmp_path) as urls:
        port = int(urls["tcp"].rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        hello = b'{"protocol":"herder","version":1,"codecs":["json"],"token":null}'
        writer.write(struct.pack(">I", len(hello)) + hello)
        junk = b"\xff\x00not json at all"
        writer.write(struct.pack(">I", len(junk)) + junk)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # read until the service closes
        writer.close()
        assert b'"protocol":"herder"' in answer
        assert b"invalid_message" in answer
        async with connect(urls["tcp"]) as peer:
            assert await peer.call("square", 6) == 36


def test_sync_client(probe: Probe, tmp_path: Path) -> None:
    """connect_sync from a plain thread, against a service in its own loop and thread."""
    svc = build_service(probe)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    started = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        ready = asyncio.Event()
        serving = asyncio.create_task(svc.serve("127.0.0.1", 0, tcp_port=0, started=ready))
        await ready.wait()
        started.set()
        await stop.wait()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving

    done = asyncio.run_coroutine_threadsafe(serve(), loop)
    try:
        assert started.wait(10)
        with connect_sync(f"tcp://127.0.0.1:{svc.tcp_port}") as client:
            assert client.call("square", 7) == 49
            with pytest.raises(RemoteError):
                client.call("nope")
    finally:
        loop.call_soon_threadsafe(stop.set)
        done.result(10)  # the service has closed its sockets
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def test_a_client_that_never_reads_is_throttled(probe: Probe, tmp_path: Path) -> None:
    """Clogged: the service stops reading a connection whose answers are not read."""
    svc = build_service(probe)
    async with running(svc, tmp_path) as urls:
        port = int(urls["tcp"].rsplit(":", 1)[1])
        clogged = socket.create_connection(("127.0.0.1", port))
        try:
            clogged.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            clogged.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            hello = b'{"protocol":"herder","version":1,"codecs":["json"],"token":null}'
            clogged.sendall(struct.pack(">I", len(hello)) + hello)
            call = b'{"kind":"call","id":1,"method":"blob","args":[65536]}'
            batch = (struct.pack(">I", len(call)) + call) * 256
            clogged.setblocking(False)
            sent = 0
            blocked = False
            pending = b""
            for _ in range(10_000):  # bounded: 2.5 million calls, far more than any buffer holds
                pending = pending or batch
                try:
                    n = clogged.send(pending)
                except BlockingIOError:
                    # Our send buffer is full: give the service time to read more, then look again.
                    await asyncio.sleep(0.1)
                    try:
                        n = clogged.send(pending)
                    except BlockingIOError:
                        blocked = True
                        break
                sent += n
                pending = pending[n:]  # a partial send keeps the frames aligned
                await asyncio.sleep(0)
            assert blocked, f"the service kept reading ({sent} bytes sent)"
            # Meanwhile other clients are served as usual.
            async with connect(urls["tcp"]) as other:
                assert await asyncio.wait_for(other.call("square", 3), 10) == 9
        finally:
            clogged.close()


async def test_cancel_arriving_with_its_call_leaks_nothing(probe: Probe, tmp_path: Path) -> None:
    """A call and its cancel in one read: answered 'cancelled', and its slot comes back."""
    svc = build_service(probe)
    async with running(svc, tmp_path) as urls:
        port = int(urls["tcp"].rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:

            def frame(doc: bytes) -> bytes:
                return struct.pack(">I", len(doc)) + doc

            writer.write(frame(b'{"protocol":"herder","version":1,"codecs":["json"],"token":null}'))
            await writer.drain()
            welcome_len = struct.unpack(">I", await reader.readexactly(4))[0]
            await reader.readexactly(welcome_len)
            pairs = 300  # more than the 128 calls a connection may run at once
            burst = b"".join(
                frame(b'{"kind":"call","id":%d,"method":"wait_forever"}' % i)
                + frame(b'{"kind":"cancel","id":%d}' % i)
                for i in range(1, pairs + 1)
            )
            writer.write(burst)
            await writer.drain()

            async def answer() -> tuple[int, bytes]:
                size = struct.unpack(">I", await reader.readexactly(4))[0]
                body = await reader.readexactly(size)
                return int(body.split(b'"id":', 1)[1].split(b",", 1)[0]), body

            answers: dict[int, bytes] = {}
            async with asyncio.timeout(20):
                while len(answers) < pairs:  # every call is answered: cancelled, or overloaded
                    call_id, body = await answer()
                    answers[call_id] = body
            codes = {body.split(b'"code":"', 1)[1].split(b'"', 1)[0] for body in answers.values()}
            assert codes <= {b"cancelled", b"overloaded"}
            assert b"cancelled" in codes
            # No slot leaked: the connection still runs calls.
            writer.write(frame(b'{"kind":"call","id":999999,"target":"meta","method":"ping"}'))
            await writer.drain()
            async with asyncio.timeout(10):
                call_id, body = await answer()
            assert call_id == 999999
            assert b'"pong"' in body
        finally:
            writer.close()


async def test_map_keys_must_be_strings(pair: Peer) -> None:
    with pytest.raises(TypeError):
        await pair.call("echo_after", 0, {1: "a"})
    assert await pair.call("echo_after", 0, {"1": "a"}) == {"1": "a"}


async def test_a_client_does_not_claim_the_service_identity(pair: Peer) -> None:
    assert pair.remote["name"] == "math"
    assert "name" not in pair.info


async def test_websocket_from_a_foreign_origin_is_refused(probe: Probe, tmp_path: Path) -> None:
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import InvalidStatus

    svc = build_service(probe)
    async with running(svc, tmp_path) as urls:
        with pytest.raises(InvalidStatus):
            async with ws_connect(urls["ws"], origin="http://evil.example"):
                pass
        host = urls["ws"].removeprefix("ws://").split("/", 1)[0]
        async with ws_connect(urls["ws"], origin=f"http://{host}") as ws:
            await ws.send(b'{"protocol":"herder","version":1,"codecs":["json"],"token":null}')
            welcome = await ws.recv()
            assert '"codec":"json"' in (welcome if isinstance(welcome, str) else welcome.decode())
