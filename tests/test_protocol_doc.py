"""docs/protocol.md, checked two ways.

1. A client written from the document alone (``socket``, ``struct`` and ``json``; nothing of
   ``herder.wire`` or ``herder.rpc``) talks to a real math service over raw TCP: the
   handshake, calls, meta, errors, callbacks, cancellation, the frame size limit. herder is
   imported only to start the service under test, in a thread of its own.
2. Every byte-level example marked in the document (``<!-- example: NAME -->`` before a
   ``hex`` or ``json`` block) is exactly what ``herder.wire`` produces, and the documented
   TCP conversations, replayed byte for byte, get the documented answers.
"""

import asyncio
import contextlib
import json
import re
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
HOST = "127.0.0.1"
WAIT_S = 10.0  # bounds every wait of the raw client and of the service's start and stop

# ---------------------------------------------------------------------------------------
# The client, from the document only.
# ---------------------------------------------------------------------------------------

PREFIX = struct.Struct(">I")  # 2.1: a 4-byte unsigned big-endian length, then the payload
MAX_FRAME_SIZE = 16 * 1024 * 1024  # 3: 16 MiB = 16,777,216 bytes of payload


class Closed(Exception):
    """The service closed the connection."""


class RawClient:
    """One TCP connection speaking the protocol as docs/protocol.md describes it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=WAIT_S)
        self.sock.settimeout(WAIT_S)
        self.next_id = 1

    def close(self) -> None:
        self.sock.close()

    # -- framing (2.1) ------------------------------------------------------------------

    def send_frame(self, payload: bytes) -> None:
        self.sock.sendall(PREFIX.pack(len(payload)) + payload)

    def _read_exact(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed(f"closed after {len(data)} of {n} bytes")
            data += chunk
        return bytes(data)

    def recv_frame(self) -> bytes:
        (length,) = PREFIX.unpack(self._read_exact(PREFIX.size))
        assert length <= MAX_FRAME_SIZE, f"the service sent a frame of {length} bytes"
        return self._read_exact(length)

    def assert_closed(self) -> None:
        """The service closes the connection, sending nothing more."""
        try:
            data = self.sock.recv(1)
        except ConnectionResetError:
            data = b""
        assert data == b"", f"expected the connection to be closed, got {data!r}"

    # -- JSON messages (5, 6.1) ---------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        self.send_frame(json.dumps(message, separators=(",", ":")).encode())

    def recv(self) -> dict[str, Any]:
        message = json.loads(self.recv_frame())
        assert isinstance(message, dict)
        return message

    def hello(self, codecs: list[str], token: str | None = None) -> dict[str, Any]:
        """4.1 and 4.2: say hello, return the welcome (or the refusal)."""
        self.send({"protocol": "herder", "version": 1, "codecs": codecs, "token": token})
        return self.recv()

    def start_call(self, method: str, *args: Any, target: str | None = None, **kwargs: Any) -> int:
        call_id = self.next_id
        self.next_id += 1
        self.send(
            {"kind": "call", "id": call_id, "target": target, "method": method, "args": list(args)}
            | ({"kwargs": kwargs} if kwargs else {})
        )
        return call_id

    def call(self, method: str, *args: Any, target: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Send a call and return its answer (a result or an error with the call's id)."""
        call_id = self.start_call(method, *args, target=target, **kwargs)
        answer = self.recv()
        assert answer["kind"] in ("result", "error"), answer
        assert answer["id"] == call_id, answer
        return answer


@pytest.fixture
def client(math_service: int) -> Iterator[RawClient]:
    raw = RawClient(math_service)
    try:
        yield raw
    finally:
        raw.close()


def error_code(answer: dict[str, Any]) -> str:
    assert answer["kind"] == "error", answer
    code: str = answer["error"]["code"]
    return code


# ---------------------------------------------------------------------------------------
# The service under test: the math service of docs/protocol.md section 15, in a thread.
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def math_service() -> Iterator[int]:
    """Serve the math service on 127.0.0.1 (ephemeral ports); yield its raw TCP port."""
    from herder.rpc import RemoteCallback, Service

    svc = Service("math", "1.0.0")

    @svc.method(auth=False)
    async def square(x: float) -> float:
        """The square of x."""
        return x * x

    @svc.method(auth=False)
    async def countdown(n: int, tick: RemoteCallback) -> str:
        for i in range(n, 0, -1):
            await tick(i)
        await tick.release()
        return "liftoff"

    @svc.method
    async def secret() -> str:
        return "needs credentials"

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        started = asyncio.Event()
        serving = asyncio.create_task(svc.serve(HOST, 0, tcp_port=0, started=started))
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        ready.set()
        waiting.cancel()
        try:
            if not serving.done():
                await stop.wait()
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            others = asyncio.all_tasks() - {asyncio.current_task()}
            if others:  # connections still winding down
                await asyncio.wait(others, timeout=WAIT_S)

    thread = threading.Thread(target=loop.run_forever, name="math-service", daemon=True)
    thread.start()
    done = asyncio.run_coroutine_threadsafe(main(), loop)
    try:
        assert ready.wait(WAIT_S), "the service did not start"
        if done.done():
            done.result()  # serve() failed: raise its error
        assert svc.tcp_port is not None
        yield svc.tcp_port
    finally:
        loop.call_soon_threadsafe(stop.set)
        try:
            done.result(timeout=WAIT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(WAIT_S)
            assert not thread.is_alive(), "the service's thread did not stop"
            loop.close()


# ---------------------------------------------------------------------------------------
# 1. The raw client against the real service.
# ---------------------------------------------------------------------------------------


def test_handshake_then_square_over_json(client: RawClient) -> None:
    welcome = client.hello(["json"])
    assert welcome == {
        "protocol": "herder",
        "version": 1,
        "codec": "json",
        "service": {"name": "math", "version": "1.0.0"},
    }
    assert client.call("square", 4) == {"kind": "result", "id": 1, "result": 16}
    assert client.call("square", 1.5)["result"] == 2.25
    assert client.call("square", x=3)["result"] == 9  # kwargs bind by name
    assert client.call("square", 5, target="math")["result"] == 25  # the service's own name


def test_meta_target(client: RawClient) -> None:
    client.hello(["json"])
    assert client.call("ping", target="meta")["result"] == "pong"
    methods = client.call("methods", target="meta")["result"]
    assert [m["name"] for m in methods] == ["countdown", "secret", "square"]
    square = next(m for m in methods if m["name"] == "square")
    documented = {"name": "square", "params": "(x: float) -> float", "auth": False, "doc": "The square of x."}
    assert square == documented
    assert next(m for m in methods if m["name"] == "secret")["auth"] is True
    info = client.call("info", target="meta")["result"]
    assert info == {"name": "math", "version": "1.0.0", "protocol": 1, "codec": "json"}
    assert error_code(client.call("nope", target="meta")) == "unknown_method"


def test_errors_answer_the_call_and_keep_the_connection(client: RawClient) -> None:
    client.hello(["json"])
    unknown = client.call("cube", 3)
    assert error_code(unknown) == "unknown_method"
    assert set(unknown["error"]) >= {"code", "type", "message", "data"}
    assert error_code(client.call("square", 4, target="nowhere")) == "unknown_target"
    assert error_code(client.call("square")) == "invalid_params"
    failed = client.call("square", "four")
    assert error_code(failed) == "application_error"
    assert failed["error"]["type"] == "TypeError"
    assert error_code(client.call("secret")) == "unauthorized"  # no token: no principal
    assert error_code(client.call("7", target="callback")) == "released_callback"
    # A notify is never answered, not even for an unknown method.
    client.send({"kind": "notify", "method": "cube", "args": [3]})
    # Unknown keys are ignored; absent args and kwargs default to [] and {}.
    client.send({"kind": "call", "id": 50, "target": "meta", "method": "ping", "later": {"x": 1}})
    assert client.recv() == {"kind": "result", "id": 50, "result": "pong"}


def test_invalid_message_gets_an_error_then_a_close(client: RawClient) -> None:
    client.hello(["json"])
    client.send({"kind": "call", "id": "one", "method": "square", "args": [4]})
    answer = client.recv()
    assert answer["id"] is None
    assert error_code(answer) == "invalid_message"
    client.assert_closed()


def test_frame_of_exactly_the_maximum_is_read(client: RawClient) -> None:
    client.hello(["json"])
    message = b'{"kind":"call","id":7,"target":"meta","method":"ping"}'
    client.send_frame(message + b" " * (MAX_FRAME_SIZE - len(message)))  # JSON allows the spaces
    assert client.recv() == {"kind": "result", "id": 7, "result": "pong"}


def test_frame_over_the_maximum_closes_the_connection(client: RawClient) -> None:
    client.hello(["json"])
    client.sock.sendall(PREFIX.pack(MAX_FRAME_SIZE + 1))  # the prefix alone is enough
    answer = client.recv()
    assert answer["id"] is None
    assert error_code(answer) == "frame_too_large"
    client.assert_closed()


def test_oversized_hello_is_refused_then_closed(client: RawClient) -> None:
    client.sock.sendall(PREFIX.pack(MAX_FRAME_SIZE + 1))
    refusal = client.recv()
    assert refusal["error"]["code"] == "frame_too_large"
    client.assert_closed()


@pytest.mark.parametrize(
    ("hello", "code"),
    [
        ({"protocol": "herder", "version": 2, "codecs": ["json"]}, "unsupported_version"),
        ({"protocol": "herder", "version": 1, "codecs": ["cbor"]}, "unsupported_codec"),
        ({"protocol": "herder", "version": 1, "codecs": ["json"], "token": "t"}, "unauthorized"),
    ],
)
def test_refusals(client: RawClient, hello: dict[str, Any], code: str) -> None:
    client.send(hello)
    refusal = client.recv()
    assert refusal["protocol"] == "herder"
    assert refusal["version"] == 1
    assert refusal["error"]["code"] == code
    assert isinstance(refusal["error"]["message"], str)
    client.assert_closed()


def test_unreadable_hello_is_refused_then_closed(client: RawClient) -> None:
    client.send_frame(b"GET / HTTP/1.1")
    refusal = client.recv()
    assert refusal["error"]["code"] == "invalid_message"
    client.assert_closed()


def test_codec_is_the_first_the_client_prefers(client: RawClient) -> None:
    welcome = client.hello(["cbor", "msgpack", "json"])
    assert welcome["codec"] == "msgpack"


def test_callbacks_as_the_document_shows(client: RawClient) -> None:
    """9.5 played by the raw client: each message is the documented one, byte for byte."""
    ex = examples()
    client.hello(["json"])
    client.send_frame(ex["cb-call"][1])
    assert client.recv_frame() == ex["cb-invoke-1"][1]
    client.send_frame(ex["cb-answer-1"][1])
    assert client.recv_frame() == ex["cb-invoke-2"][1]
    client.send_frame(ex["cb-answer-2"][1])
    assert client.recv_frame() == ex["cb-release"][1]
    assert client.recv_frame() == ex["cb-done"][1]
    assert client.call("ping", target="meta")["result"] == "pong"  # id 1 is free again


def test_cancel_reaches_the_handler(client: RawClient) -> None:
    client.hello(["json"])
    call_id = client.start_call("countdown", 1, {"$cb": 1})
    invoke = client.recv()
    assert invoke["kind"] == "call"
    assert invoke["target"] == "callback"
    assert invoke["method"] == "1"
    # We never answer tick(1): cancel our call instead.
    client.send({"kind": "cancel", "id": call_id})
    # The handler is stopped: it answers our call with "cancelled", and it cancels the call it
    # was waiting on (its own call to our callback), in either order.
    answers = [client.recv(), client.recv()]
    answers.sort(key=lambda m: m["kind"])
    assert answers[0] == {"kind": "cancel", "id": invoke["id"]}
    assert answers[1]["id"] == call_id
    assert error_code(answers[1]) == "cancelled"
    # A late answer to a cancelled call, and a cancel for no call, are ignored.
    client.send({"kind": "result", "id": invoke["id"], "result": None})
    client.send({"kind": "cancel", "id": 999})
    assert client.call("ping", target="meta")["result"] == "pong"


# ---------------------------------------------------------------------------------------
# 2. The document's examples are what the code produces.
# ---------------------------------------------------------------------------------------

EXAMPLE = re.compile(r"<!-- example: ([a-z0-9-]+) -->\n```(hex|json)\n(.*?)\n```", re.DOTALL)


def parse_hex(block: str) -> bytes:
    """Hex pairs separated by white space; ``#`` starts a comment to the end of the line."""
    pairs = [pair for line in block.splitlines() for pair in line.split("#", 1)[0].split()]
    assert all(re.fullmatch(r"[0-9a-f]{2}", p) for p in pairs), block
    return bytes(int(p, 16) for p in pairs)


def examples() -> dict[str, tuple[str, bytes]]:
    """Every marked example of the document: name -> (block type, bytes)."""
    found: dict[str, tuple[str, bytes]] = {}
    for name, kind, block in EXAMPLE.findall(DOC.read_text()):
        assert name not in found, f"example {name!r} appears twice"
        found[name] = (kind, parse_hex(block) if kind == "hex" else block.strip().encode())
    return found


def produced_by_the_code() -> dict[str, bytes]:
    """What herder.wire sends for each example (payloads for json blocks, frames for hex)."""
    from herder.wire import (
        Call,
        Cancel,
        ErrorCode,
        FrameDecoder,
        FrameTooLarge,
        Hello,
        Notify,
        Result,
        Welcome,
        choose_codec,
        codec_for,
        encode_frame,
        encode_hello,
        encode_message,
        encode_welcome,
        error_for,
    )

    json_codec, msgpack = codec_for("json"), codec_for("msgpack")
    math = {"name": "math", "version": "1.0.0"}
    square = Call(1, "square", None, [4], {})
    unknown = error_for(2, ErrorCode.UNKNOWN_METHOD, "no method 'cube'")
    decoder = FrameDecoder()
    decoder.feed(PREFIX.pack(MAX_FRAME_SIZE + 1))
    with pytest.raises(FrameTooLarge) as too_large:
        decoder.next_frame()
    refusal = choose_codec(Hello(codecs=("json",), version=2))
    assert not isinstance(refusal, str)
    payloads = {
        "hello-json": encode_hello(Hello(codecs=("json",))),
        "welcome-json": encode_welcome(Welcome("json", math)),
        "call-json": encode_message(square, json_codec),
        "result-json": encode_message(Result(1, 16), json_codec),
        "call-unknown-json": encode_message(Call(2, "cube", None, [3], {}), json_codec),
        "error-json": encode_message(unknown, json_codec),
        "cancel-json": encode_message(Cancel(3), json_codec),
        "refusal-version": encode_welcome(refusal),
        "error-frame-too-large": encode_message(
            error_for(None, too_large.value.code, str(too_large.value), "FrameTooLarge"), json_codec
        ),
        "cb-call": encode_message(Call(1, "countdown", None, [2, {"$cb": 1}], {}), json_codec),
        "cb-invoke-1": encode_message(Call(1, "1", "callback", [2], {}), json_codec),
        "cb-answer-1": encode_message(Result(1, None), json_codec),
        "cb-invoke-2": encode_message(Call(2, "1", "callback", [1], {}), json_codec),
        "cb-answer-2": encode_message(Result(2, None), json_codec),
        "cb-release": encode_message(Notify("release", "meta", [1], {}), json_codec),
        "cb-done": encode_message(Result(1, "liftoff"), json_codec),
    }
    frames = {
        "hello-tcp": encode_hello(Hello()),
        "welcome-tcp": encode_welcome(Welcome("msgpack", math)),
        "call-msgpack-tcp": encode_message(square, msgpack),
        "result-msgpack-tcp": encode_message(Result(1, 16), msgpack),
        "error-msgpack-tcp": encode_message(unknown, msgpack),
        "cancel-msgpack-tcp": encode_message(Cancel(3), msgpack),
        "hello-json-tcp": payloads["hello-json"],
        "welcome-json-tcp": payloads["welcome-json"],
        "call-json-tcp": payloads["call-json"],
        "result-json-tcp": payloads["result-json"],
        "error-json-tcp": payloads["error-json"],
        "cancel-json-tcp": payloads["cancel-json"],
    }
    return payloads | {name: encode_frame(payload) for name, payload in frames.items()}


def test_every_example_is_what_the_code_produces() -> None:
    documented, produced = examples(), produced_by_the_code()
    assert sorted(documented) == sorted(produced), "the examples in the document changed"
    for name, (kind, data) in documented.items():
        assert kind == ("hex" if name.endswith("-tcp") else "json"), name
        assert data == produced[name], f"example {name!r} differs from what herder.wire produces"


def test_annotated_lengths_match_the_prefix() -> None:
    """A ``# length: N`` comment in a hex block is the prefix's value and the payload's size."""
    checked = 0
    for name, kind, block in EXAMPLE.findall(DOC.read_text()):
        declared = re.search(r"# length: (\d+)", block)
        if kind == "hex" and declared:
            data = parse_hex(block)
            assert PREFIX.unpack_from(data)[0] == len(data) - PREFIX.size == int(declared[1]), name
            checked += 1
    assert checked >= 5


def test_documented_tcp_conversations_replayed(math_service: int) -> None:
    """Send the documented bytes; the live service answers with the documented bytes."""
    ex = {name: data for name, (_, data) in examples().items()}
    msgpack = RawClient(math_service)
    try:
        msgpack.sock.sendall(ex["hello-tcp"])
        assert msgpack._read_exact(len(ex["welcome-tcp"])) == ex["welcome-tcp"]
        msgpack.sock.sendall(ex["call-msgpack-tcp"])
        assert msgpack._read_exact(len(ex["result-msgpack-tcp"])) == ex["result-msgpack-tcp"]
        msgpack.sock.sendall(ex["cancel-msgpack-tcp"])  # no call 3: ignored
        msgpack.sock.sendall(ex["call-msgpack-tcp"])  # id 1 is free again: its call was answered
        assert msgpack._read_exact(len(ex["result-msgpack-tcp"])) == ex["result-msgpack-tcp"]
    finally:
        msgpack.close()
    plain = RawClient(math_service)
    try:
        plain.sock.sendall(ex["hello-json-tcp"])
        assert plain._read_exact(len(ex["welcome-json-tcp"])) == ex["welcome-json-tcp"]
        plain.sock.sendall(ex["call-json-tcp"])
        assert plain._read_exact(len(ex["result-json-tcp"])) == ex["result-json-tcp"]
        plain.send_frame(ex["call-unknown-json"])
        assert plain._read_exact(len(ex["error-json-tcp"])) == ex["error-json-tcp"]
        plain.sock.sendall(ex["cancel-json-tcp"])
        plain.sock.sendall(PREFIX.pack(MAX_FRAME_SIZE + 1))
        assert plain.recv_frame() == ex["error-frame-too-large"]
        plain.assert_closed()
    finally:
        plain.close()
    refused = RawClient(math_service)
    try:
        refused.send_frame(ex["hello-json"].replace(b'"version":1', b'"version":2'))
        assert refused.recv_frame() == ex["refusal-version"]
        refused.assert_closed()
    finally:
        refused.close()
