"""Fuzzing the receiving side: frames, then messages, from bytes nobody should trust.

Whatever arrives, ``FrameDecoder`` and ``decode_message`` either give frames and
messages or raise a ``WireError`` (ProtocolError, FrameTooLarge, InvalidMessage):
never another exception, never a hang. The seeded run is deterministic.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herder.wire import (
    Call,
    Cancel,
    Codec,
    Error,
    FrameDecoder,
    InvalidMessage,
    JsonCodec,
    Message,
    MsgpackCodec,
    Notify,
    ProtocolError,
    Result,
    WireError,
    decode_hello,
    decode_message,
    decode_welcome,
    encode_frame,
    encode_message,
)
from tests.test_wire_messages import json_messages, msgpack_messages

CODECS = [pytest.param(JsonCodec(), id="json"), pytest.param(MsgpackCodec(), id="msgpack")]
# Small enough that random prefixes are sometimes accepted, so payloads get decoded too.
FUZZ_MAX_FRAME_SIZE = 4096
SEEDED_CHUNKS = 20_000


def drain(decoder: FrameDecoder, codec: Codec) -> list[Message]:
    """Every message whole in the decoder now; WireError is the only way to fail."""
    return [decode_message(frame, codec) for frame in decoder.frames()]


def consume(data: bytes, codec: Codec, chunk_size: int) -> list[Message]:
    decoder = FrameDecoder(max_frame_size=FUZZ_MAX_FRAME_SIZE)
    received: list[Message] = []
    for start in range(0, len(data), chunk_size):
        decoder.feed(data[start : start + chunk_size])
        received.extend(drain(decoder, codec))
    decoder.feed(b"")
    received.extend(drain(decoder, codec))
    return received


# --- hypothesis -------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
@settings(deadline=None, max_examples=300)
@given(data=st.binary(max_size=2000), chunk_size=st.integers(1, 64))
def test_random_bytes_raise_only_wire_errors(codec: Codec, data: bytes, chunk_size: int) -> None:
    with contextlib.suppress(WireError):
        consume(data, codec, chunk_size)


def hostile_streams(codec: Codec) -> st.SearchStrategy[bytes]:
    """Streams of framed noise, raw noise and framed good messages, run together."""
    messages = json_messages if isinstance(codec, JsonCodec) else msgpack_messages
    pieces = st.one_of(
        st.binary(max_size=100).map(encode_frame),
        st.binary(max_size=8),
        messages.map(lambda m: encode_frame(encode_message(m, codec))),
    )
    return st.lists(pieces, max_size=8).map(b"".join)


@pytest.mark.parametrize("codec", CODECS)
@settings(deadline=None, max_examples=200)
@given(data=st.data(), chunk_size=st.integers(1, 64))
def test_hostile_streams_raise_only_wire_errors(codec: Codec, data: st.DataObject, chunk_size: int) -> None:
    stream = data.draw(hostile_streams(codec), label="stream")
    with contextlib.suppress(WireError):
        for message in consume(stream, codec, chunk_size):
            assert isinstance(message, Call | Notify | Result | Error | Cancel)


@pytest.mark.parametrize("codec", CODECS)
@settings(deadline=None, max_examples=300)
@given(payload=st.binary(max_size=500))
def test_random_payloads_raise_only_invalid_message(codec: Codec, payload: bytes) -> None:
    with contextlib.suppress(InvalidMessage):
        decode_message(payload, codec)


@settings(deadline=None, max_examples=300)
@given(payload=st.binary(max_size=300))
def test_random_handshakes_raise_only_protocol_errors(payload: bytes) -> None:
    for decode in (decode_hello, decode_welcome):
        with contextlib.suppress(ProtocolError):
            decode(payload)


def mutate(payload: bytes, rng: random.Random) -> bytes:
    """``payload`` with one random edit: a flipped byte, a cut, an insertion or a deletion."""
    if not payload:
        return bytes([rng.randrange(256)])
    data = bytearray(payload)
    where = rng.randrange(len(data))
    edit = rng.randrange(4)
    if edit == 0:
        data[where] ^= 1 << rng.randrange(8)
    elif edit == 1:
        del data[where:]
    elif edit == 2:
        data[where:where] = rng.randbytes(rng.randint(1, 4))
    else:
        del data[where]
    return bytes(data)


@settings(deadline=None, max_examples=200)
@given(message=json_messages, seed=st.integers(0, 2**32))
def test_mutated_json_messages_raise_only_invalid_message(message: Message, seed: int) -> None:
    check_mutations(encode_message(message, JsonCodec()), JsonCodec(), random.Random(seed))


@settings(deadline=None, max_examples=200)
@given(message=msgpack_messages, seed=st.integers(0, 2**32))
def test_mutated_msgpack_messages_raise_only_invalid_message(message: Message, seed: int) -> None:
    check_mutations(encode_message(message, MsgpackCodec()), MsgpackCodec(), random.Random(seed))


def check_mutations(payload: bytes, codec: Codec, rng: random.Random) -> None:
    for _ in range(5):
        payload = mutate(payload, rng)
        try:
            decoded = decode_message(payload, codec)
        except InvalidMessage:
            continue
        assert isinstance(decoded, Call | Notify | Result | Error | Cancel)


# --- the seeded run ---------------------------------------------------------------------------------

GOOD: list[Message] = [
    Call(1, "square", None, [4]),
    Call(2, "upload", "files", ["a.txt"], {"mode": "w"}),
    Notify("log", None, ["hello"]),
    Result(1, {"x": [1, 2.5, None]}),
    Error(2, "application_error", "boom", "ValueError"),
    Cancel(3),
]


def random_chunk(rng: random.Random, codec: Codec) -> bytes:
    """One chunk of a hostile stream: noise, good frames, damaged frames, liars."""
    kind = rng.randrange(6)
    if kind == 0:  # noise
        return rng.randbytes(rng.randint(1, 64))
    good = encode_message(rng.choice(GOOD), codec)
    if kind == 1:  # a good frame
        return encode_frame(good)
    if kind == 2:  # a good frame around a damaged message
        return encode_frame(mutate(good, rng))
    if kind == 3:  # a frame of noise
        return encode_frame(rng.randbytes(rng.randint(0, 40)))
    if kind == 4:  # a prefix that lies about the length
        return (len(good) + rng.randint(-3, 3)).to_bytes(4, "big") + good
    return encode_frame(good)[: rng.randint(1, len(good) + 3)]  # half a frame


@pytest.mark.timeout(20)
@pytest.mark.parametrize("codec", CODECS)
def test_seeded_fuzz_run(codec: Codec) -> None:
    rng = random.Random(20240603)
    outcomes: Counter[str] = Counter()
    decoder = FrameDecoder(max_frame_size=FUZZ_MAX_FRAME_SIZE)

    def fail(exc: WireError) -> FrameDecoder:
        outcomes[type(exc).__name__] += 1
        return FrameDecoder(max_frame_size=FUZZ_MAX_FRAME_SIZE)  # the connection closes; a new one opens

    for _ in range(SEEDED_CHUNKS):
        try:
            decoder.feed(random_chunk(rng, codec))
            for frame in decoder.frames():
                try:
                    decode_message(frame, codec)
                    outcomes["message"] += 1
                except InvalidMessage as exc:  # one bad message need not end the stream
                    outcomes[type(exc).__name__] += 1
        except WireError as exc:
            decoder = fail(exc)
        if rng.randrange(200) == 0:  # now and then the stream ends
            try:
                decoder.feed(b"")
                list(decoder.frames())
                outcomes["clean_eof"] += 1
            except WireError as exc:
                outcomes[type(exc).__name__] += 1
            decoder = FrameDecoder(max_frame_size=FUZZ_MAX_FRAME_SIZE)

    # The run reached every outcome, so it exercised more than the first line of defence.
    for outcome in ("message", "InvalidMessage", "FrameTooLarge", "ProtocolError", "clean_eof"):
        assert outcomes[outcome] > 0, outcomes
    assert set(outcomes) <= {"message", "clean_eof", "InvalidMessage", "FrameTooLarge", "ProtocolError"}
