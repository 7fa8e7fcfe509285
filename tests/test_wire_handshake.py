"""The handshake: hello, welcome or refusal, and the codec both sides then use.

The last tests run a whole opening as an in-memory pair: what the client framed is what
the server parsed, and the other way round.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from herder.wire import (
    CODEC_NAMES,
    PROTOCOL,
    VERSION,
    Call,
    ErrorCode,
    FrameDecoder,
    Hello,
    InvalidMessage,
    Message,
    ProtocolError,
    Refusal,
    Result,
    Welcome,
    choose_codec,
    codec_for,
    decode_hello,
    decode_message,
    decode_welcome,
    encode_frame,
    encode_hello,
    encode_message,
    encode_welcome,
)
from herder.wire.handshake import MAX_TOKEN_LENGTH


def dump(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def hello_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"protocol": "herder", "version": 1, "codecs": ["msgpack", "json"], "token": None}
    doc.update(changes)
    return doc


# --- hello ------------------------------------------------------------------------------------------


def test_protocol_constants() -> None:
    assert PROTOCOL == "herder"
    assert VERSION == 1
    assert CODEC_NAMES == ("msgpack", "json")


def test_hello_is_the_documented_json() -> None:
    assert json.loads(encode_hello(Hello())) == hello_doc()
    assert json.loads(encode_hello(Hello(codecs=("json",), token="s3cret"))) == hello_doc(
        codecs=["json"], token="s3cret"
    )


@pytest.mark.parametrize(
    "hello",
    [
        Hello(),
        Hello(codecs=("json",)),
        Hello(codecs=("json", "msgpack"), token="bearer-token"),
        Hello(codecs=("cbor",), token="é" * 100, version=7),
        Hello(token="t" * MAX_TOKEN_LENGTH),
    ],
    ids=["default", "json-only", "token", "unknown-codec-and-version", "longest-token"],
)
def test_hello_round_trips(hello: Hello) -> None:
    assert decode_hello(encode_hello(hello)) == hello


def test_hello_without_codecs_means_json() -> None:
    doc = hello_doc()
    del doc["codecs"], doc["token"]
    assert decode_hello(dump(doc)) == Hello(codecs=("json",), token=None)


BAD_HELLOS: list[tuple[str, bytes, str]] = [
    ("not-json", b"hello?", "not JSON"),
    ("not-utf8", b"\xff\xfe\xfd", "not JSON"),
    ("empty", b"", "not JSON"),
    ("deeply-nested", b"[" * 100_000, "not JSON"),
    ("a-list", dump(["herder", 1]), "protocol"),
    ("no-protocol", dump({"version": 1, "codecs": ["json"]}), "protocol"),
    ("other-protocol", dump(hello_doc(protocol="http")), "protocol"),
    ("no-version", dump({"protocol": "herder", "codecs": ["json"]}), "'version'"),
    ("string-version", dump(hello_doc(version="1")), "'version'"),
    ("float-version", dump(hello_doc(version=1.0)), "'version'"),
    ("bool-version", dump(hello_doc(version=True)), "'version'"),
    ("empty-codecs", dump(hello_doc(codecs=[])), "'codecs'"),
    ("codecs-string", dump(hello_doc(codecs="json")), "'codecs'"),
    ("codecs-numbers", dump(hello_doc(codecs=[1])), "'codecs'"),
    ("codecs-null", dump(hello_doc(codecs=None)), "'codecs'"),
    ("token-number", dump(hello_doc(token=5)), "'token'"),
    ("token-list", dump(hello_doc(token=["a"])), "'token'"),
    ("token-too-long", dump(hello_doc(token="t" * (MAX_TOKEN_LENGTH + 1))), "'token'"),
]


@pytest.mark.parametrize(("payload", "reason"), [pytest.param(p, r, id=i) for i, p, r in BAD_HELLOS])
def test_bad_hellos_are_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_hello(payload)


def test_a_type_error_in_a_hello_is_an_invalid_message() -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_hello(dump(hello_doc(version="one")))
    assert caught.value.code == ErrorCode.INVALID_MESSAGE


# --- choosing the codec -----------------------------------------------------------------------------


def test_the_first_client_codec_the_server_supports_wins() -> None:
    assert choose_codec(Hello()) == "msgpack"
    assert choose_codec(Hello(codecs=("json", "msgpack"))) == "json"
    assert choose_codec(Hello(codecs=("cbor", "json", "msgpack"))) == "json"
    assert choose_codec(Hello(codecs=("json", "msgpack")), supported=("msgpack",)) == "msgpack"
    assert choose_codec(Hello(codecs=("msgpack", "json")), supported=("json", "msgpack")) == "msgpack"


@pytest.mark.parametrize("version", [0, 2, -1, 100])
def test_an_unknown_version_is_refused(version: int) -> None:
    answer = choose_codec(Hello(version=version))
    assert isinstance(answer, Refusal)
    assert answer.code == ErrorCode.UNSUPPORTED_VERSION == "unsupported_version"
    assert str(version) in answer.message


def test_the_version_is_checked_before_the_codecs() -> None:
    answer = choose_codec(Hello(codecs=("cbor",), version=2))
    assert isinstance(answer, Refusal)
    assert answer.code == ErrorCode.UNSUPPORTED_VERSION


def test_no_common_codec_is_refused() -> None:
    answer = choose_codec(Hello(codecs=("cbor", "xml")))
    assert isinstance(answer, Refusal)
    assert answer.code == ErrorCode.UNSUPPORTED_CODEC == "unsupported_codec"
    assert "cbor" in answer.message
    answer = choose_codec(Hello(codecs=("json",)), supported=("msgpack",))
    assert isinstance(answer, Refusal)
    assert answer.code == ErrorCode.UNSUPPORTED_CODEC


# --- welcome ----------------------------------------------------------------------------------------


def test_welcome_is_the_documented_json() -> None:
    welcome = Welcome("msgpack", {"name": "math", "version": "1.0.0"})
    assert json.loads(encode_welcome(welcome)) == {
        "protocol": "herder",
        "version": 1,
        "codec": "msgpack",
        "service": {"name": "math", "version": "1.0.0"},
    }
    refusal = Refusal(ErrorCode.UNSUPPORTED_CODEC, "no")
    assert json.loads(encode_welcome(refusal)) == {
        "protocol": "herder",
        "version": 1,
        "error": {"code": "unsupported_codec", "message": "no"},
    }


@pytest.mark.parametrize(
    "answer",
    [
        Welcome("json"),
        Welcome("msgpack", {"name": "math", "version": "1.0.0", "methods": ["square"]}),
        Welcome("json", {}, version=2),
        Refusal("unauthorized", "bad token"),
        Refusal(ErrorCode.UNSUPPORTED_VERSION, "only 1"),
    ],
    ids=["plain", "service", "version", "refusal", "refusal-enum-code"],
)
def test_welcome_and_refusal_round_trip(answer: Welcome | Refusal) -> None:
    assert decode_welcome(encode_welcome(answer)) == answer


def test_refusals_from_choose_codec_round_trip() -> None:
    for hello in (Hello(version=9), Hello(codecs=("cbor",))):
        refusal = choose_codec(hello)
        assert isinstance(refusal, Refusal)
        decoded = decode_welcome(encode_welcome(refusal))
        assert decoded == refusal
        assert isinstance(decoded, Refusal)
        assert type(decoded.code) is str


def test_a_refusal_without_code_is_a_protocol_error() -> None:
    decoded = decode_welcome(dump({"protocol": "herder", "version": 1, "error": {}}))
    assert decoded == Refusal("protocol_error", "")


def test_a_welcome_without_service_or_version_takes_the_defaults() -> None:
    assert decode_welcome(dump({"protocol": "herder", "codec": "json"})) == Welcome("json", {}, VERSION)


BAD_WELCOMES: list[tuple[str, bytes, str]] = [
    ("not-json", b"welcome!", "not JSON"),
    ("deeply-nested", b'{"a":' * 100_000, "not JSON"),
    ("no-protocol", dump({"version": 1, "codec": "json"}), "protocol"),
    ("a-list", dump([]), "protocol"),
    ("no-codec", dump({"protocol": "herder", "version": 1}), "'codec'"),
    ("codec-number", dump({"protocol": "herder", "version": 1, "codec": 1}), "'codec'"),
    ("service-list", dump({"protocol": "herder", "version": 1, "codec": "json", "service": []}), "'service'"),
    ("string-version", dump({"protocol": "herder", "version": "x", "codec": "json"}), "'version'"),
    ("null-version", dump({"protocol": "herder", "version": None, "codec": "json"}), "'version'"),
    ("float-version", dump({"protocol": "herder", "version": 1.5, "codec": "json"}), "'version'"),
]


@pytest.mark.parametrize(("payload", "reason"), [pytest.param(p, r, id=i) for i, p, r in BAD_WELCOMES])
def test_bad_welcomes_are_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_welcome(payload)


# --- a whole opening, as an in-memory pair ----------------------------------------------------------


class Side:
    """One end of a byte pipe: a frame decoder over what the other end wrote."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder()

    def receive(self, data: bytes) -> list[bytes]:
        # one byte at a time, the hardest chunking
        frames: list[bytes] = []
        for i in range(len(data)):
            self.decoder.feed(data[i : i + 1])
            frames.extend(self.decoder.frames())
        return frames


@pytest.mark.parametrize("preferred", ["json", "msgpack"])
def test_a_whole_opening_then_messages_in_the_chosen_codec(preferred: str) -> None:
    client, server = Side(), Side()
    other = "msgpack" if preferred == "json" else "json"

    [hello_frame] = server.receive(encode_frame(encode_hello(Hello(codecs=(preferred, other), token="t"))))
    hello = decode_hello(hello_frame)
    assert hello.token == "t"
    chosen = choose_codec(hello)
    assert chosen == preferred
    assert isinstance(chosen, str)

    [welcome_frame] = client.receive(encode_frame(encode_welcome(Welcome(chosen, {"name": "math"}))))
    welcome = decode_welcome(welcome_frame)
    assert isinstance(welcome, Welcome)
    assert welcome.service == {"name": "math"}

    client_codec, server_codec = codec_for(welcome.codec), codec_for(chosen)
    sent: list[Message] = [Call(1, "square", None, [4]), Call(2, "square", None, [5])]
    wire = b"".join(encode_frame(encode_message(m, client_codec)) for m in sent)
    received = [decode_message(frame, server_codec) for frame in server.receive(wire)]
    assert received == sent

    replies: list[Message] = [Result(2, 25), Result(1, 16)]  # any order
    wire = b"".join(encode_frame(encode_message(m, server_codec)) for m in replies)
    assert [decode_message(frame, client_codec) for frame in client.receive(wire)] == replies


def test_a_refused_opening() -> None:
    client, server = Side(), Side()
    [hello_frame] = server.receive(encode_frame(encode_hello(Hello(codecs=("cbor",)))))
    refusal = choose_codec(decode_hello(hello_frame))
    assert isinstance(refusal, Refusal)
    [answer] = client.receive(encode_frame(encode_welcome(refusal)))
    assert decode_welcome(answer) == Refusal("unsupported_codec", refusal.message)
