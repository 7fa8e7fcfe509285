"""Frames: a 4-byte big-endian length, then the payload; the incremental decoder.

Every decoding test feeds its input three ways (all at once, one byte at a time, and
followed by the start of another frame), and the property tests feed arbitrary chunkings.
"""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herder.wire import (
    DEFAULT_MAX_FRAME_SIZE,
    NEED_DATA,
    ErrorCode,
    FrameDecoder,
    FrameTooLarge,
    NeedData,
    ProtocolError,
    encode_frame,
)

PAYLOADS = [b"", b"x", b"hello, world", bytes(range(256)), b"\x00\x00\x00\x05", b"z" * 70_000]


def prefix(length: int) -> bytes:
    return struct.pack(">I", length)


def stream_of(payloads: Iterable[bytes]) -> bytes:
    return b"".join(encode_frame(p) for p in payloads)


def all_at_once(data: bytes) -> list[bytes]:
    return [data]


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_chunks(data: bytes, rng: random.Random, max_chunk: int = 7) -> list[bytes]:
    chunks, start = [], 0
    while start < len(data):
        end = start + rng.randint(1, max_chunk)
        chunks.append(data[start:end])
        start = end
    return chunks


def cut_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def decode_chunks(chunks: Iterable[bytes], decoder: FrameDecoder | None = None) -> list[bytes]:
    """Feed each chunk and take out every frame it completes, as a transport would."""
    decoder = decoder if decoder is not None else FrameDecoder()
    frames: list[bytes] = []
    for chunk in chunks:
        decoder.feed(chunk)
        frames.extend(decoder.frames())
    return frames


Chunker = Callable[[bytes], list[bytes]]

CHUNKERS = [
    pytest.param(all_at_once, id="all-at-once"),
    pytest.param(byte_by_byte, id="byte-by-byte"),
    pytest.param(lambda data: random_chunks(data, random.Random(7)), id="random-chunks"),
]


# --- encoding ---------------------------------------------------------------------------------------


def test_encode_frame_is_big_endian_length_then_payload() -> None:
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"y" * 258) == b"\x00\x00\x01\x02" + b"y" * 258


def test_encode_frame_refuses_a_payload_over_the_maximum() -> None:
    assert encode_frame(b"x" * 10, max_frame_size=10) == prefix(10) + b"x" * 10
    with pytest.raises(FrameTooLarge, match="11 bytes") as caught:
        encode_frame(b"x" * 11, max_frame_size=10)
    assert caught.value.code == ErrorCode.FRAME_TOO_LARGE


def test_encode_frame_default_maximum_is_16_mib() -> None:
    assert DEFAULT_MAX_FRAME_SIZE == 16 * 1024 * 1024
    big = bytes(DEFAULT_MAX_FRAME_SIZE)
    assert len(encode_frame(big)) == DEFAULT_MAX_FRAME_SIZE + 4
    with pytest.raises(FrameTooLarge):
        encode_frame(big + b"x")


# --- decoding, three ways ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunker", CHUNKERS)
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: f"{len(p)}B")
def test_one_frame_round_trips(chunker: Chunker, payload: bytes) -> None:
    assert decode_chunks(chunker(encode_frame(payload))) == [payload]


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_many_frames_round_trip(chunker: Chunker) -> None:
    assert decode_chunks(chunker(stream_of(PAYLOADS))) == PAYLOADS


@pytest.mark.parametrize("chunker", CHUNKERS)
@pytest.mark.parametrize("trailing", [b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x09", b"\x00\x00\x00\x09123"])
def test_trailing_bytes_of_the_next_frame_stay_buffered(chunker: Chunker, trailing: bytes) -> None:
    decoder = FrameDecoder()
    frames = decode_chunks(chunker(encode_frame(b"first") + trailing), decoder)
    assert frames == [b"first"]
    assert decoder.next_frame() is NEED_DATA
    assert decoder.buffered == len(trailing) - (4 if len(trailing) >= 4 else 0)
    decoder.feed(encode_frame(b"123456789")[len(trailing) :])
    assert list(decoder.frames()) == [b"123456789"]
    assert decoder.buffered == 0


def test_many_frames_in_one_feed_come_out_one_by_one() -> None:
    decoder = FrameDecoder()
    decoder.feed(stream_of([b"a", b"", b"bc"]) + b"\x00\x00")
    assert decoder.next_frame() == b"a"
    assert decoder.next_frame() == b""
    assert decoder.next_frame() == b"bc"
    assert decoder.next_frame() is NEED_DATA
    assert decoder.next_frame() is NEED_DATA
    assert decoder.buffered == 2


def test_zero_length_frames() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x00\x00\x00" * 3)
    assert list(decoder.frames()) == [b"", b"", b""]
    assert decoder.buffered == 0
    assert decode_chunks(byte_by_byte(b"\x00" * 4 * 5)) == [b""] * 5


def test_need_data_is_a_singleton_sentinel() -> None:
    decoder = FrameDecoder()
    result = decoder.next_frame()
    assert result is NEED_DATA
    assert isinstance(result, NeedData)
    assert repr(result) == "NEED_DATA"
    assert list(decoder.frames()) == []


def test_buffered_counts_bytes_not_yet_returned() -> None:
    decoder = FrameDecoder()
    assert decoder.buffered == 0
    decoder.feed(prefix(10) + b"abc")
    assert decoder.buffered == 7
    assert decoder.next_frame() is NEED_DATA
    assert decoder.buffered == 3  # the prefix is consumed once read
    decoder.feed(b"defghij")
    assert decoder.next_frame() == b"abcdefghij"
    assert decoder.buffered == 0


# --- the maximum frame size -------------------------------------------------------------------------


def test_a_frame_of_exactly_the_maximum_is_accepted() -> None:
    decoder = FrameDecoder(max_frame_size=10)
    decoder.feed(encode_frame(b"0123456789"))
    assert decoder.next_frame() == b"0123456789"


@pytest.mark.parametrize("announced", [11, 2**16, DEFAULT_MAX_FRAME_SIZE + 1, 2**32 - 1])
def test_an_oversized_prefix_raises_as_soon_as_it_is_read(announced: int) -> None:
    maximum = 10 if announced < DEFAULT_MAX_FRAME_SIZE else DEFAULT_MAX_FRAME_SIZE
    decoder = FrameDecoder(max_frame_size=maximum)
    head = prefix(announced)
    for byte in head[:-1]:
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is NEED_DATA
    decoder.feed(head[-1:])
    with pytest.raises(FrameTooLarge, match=f"{announced} bytes") as caught:
        decoder.next_frame()
    assert caught.value.code == ErrorCode.FRAME_TOO_LARGE
    assert isinstance(caught.value, ProtocolError)
    assert decoder.buffered <= 4  # nothing of the payload was waited for or kept


def test_default_decoder_refuses_past_16_mib_without_buffering() -> None:
    decoder = FrameDecoder()
    decoder.feed(prefix(DEFAULT_MAX_FRAME_SIZE + 1))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()
    assert decoder.buffered == 4


def test_oversized_frame_after_good_ones_yields_the_good_ones_first() -> None:
    decoder = FrameDecoder(max_frame_size=8)
    decoder.feed(encode_frame(b"ok") + prefix(9) + b"123456789")
    assert decoder.next_frame() == b"ok"
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()


# --- end of stream ----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_eof_at_a_frame_boundary_is_clean(chunker: Chunker) -> None:
    decoder = FrameDecoder()
    assert decode_chunks([*chunker(stream_of([b"a", b""])), b""], decoder) == [b"a", b""]
    assert decoder.next_frame() is NEED_DATA
    assert decoder.next_frame() is NEED_DATA
    decoder.feed(b"")  # a second EOF is harmless
    assert decoder.next_frame() is NEED_DATA


def test_eof_on_an_empty_stream_is_clean() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"")
    assert decoder.next_frame() is NEED_DATA


@pytest.mark.parametrize("cut", [1, 2, 3], ids=lambda n: f"{n}-prefix-bytes")
def test_eof_inside_a_prefix_raises(cut: int) -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"whole") + encode_frame(b"next")[:cut])
    decoder.feed(b"")
    assert decoder.next_frame() == b"whole"
    with pytest.raises(ProtocolError, match="truncated"):
        decoder.next_frame()


@pytest.mark.parametrize("cut", [4, 5, 8], ids=lambda n: f"{n}-bytes")
def test_eof_inside_a_payload_raises(cut: int) -> None:
    data = encode_frame(b"12345")[:cut]
    for chunks in (all_at_once(data), byte_by_byte(data)):
        decoder = FrameDecoder()
        with pytest.raises(ProtocolError, match="truncated"):
            decode_chunks([*chunks, b""], decoder)


def test_eof_after_a_prefix_read_without_its_payload_raises() -> None:
    decoder = FrameDecoder()
    decoder.feed(prefix(3))
    assert decoder.next_frame() is NEED_DATA  # the prefix is consumed now
    assert decoder.buffered == 0
    decoder.feed(b"")
    with pytest.raises(ProtocolError, match="truncated"):
        decoder.next_frame()


def test_eof_after_a_zero_length_prefix_is_clean() -> None:
    decoder = FrameDecoder()
    decoder.feed(prefix(0))
    decoder.feed(b"")
    assert decoder.next_frame() == b""
    assert decoder.next_frame() is NEED_DATA


def test_data_after_eof_raises() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"a"))
    decoder.feed(b"")
    with pytest.raises(ProtocolError, match="after the end"):
        decoder.feed(b"x")
    assert decoder.next_frame() == b"a"
    assert decoder.next_frame() is NEED_DATA


# --- properties -------------------------------------------------------------------------------------

payload_lists = st.lists(st.binary(max_size=300), max_size=12)


@settings(deadline=None, max_examples=200)
@given(payloads=payload_lists, data=st.data())
def test_framed_payloads_survive_any_chunking(payloads: list[bytes], data: st.DataObject) -> None:
    stream = stream_of(payloads)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30), label="cuts")
    decoder = FrameDecoder()
    assert decode_chunks([*cut_at(stream, cuts), b""], decoder) == payloads
    assert decoder.buffered == 0


@settings(deadline=None, max_examples=100)
@given(payloads=payload_lists, seed=st.integers(0, 2**32))
def test_framed_payloads_survive_byte_by_byte_and_random_chunks(payloads: list[bytes], seed: int) -> None:
    stream = stream_of(payloads)
    assert decode_chunks(byte_by_byte(stream)) == payloads
    assert decode_chunks(random_chunks(stream, random.Random(seed), max_chunk=50)) == payloads


@settings(deadline=None, max_examples=100)
@given(payloads=st.lists(st.binary(min_size=1, max_size=50), min_size=1, max_size=5), data=st.data())
def test_a_stream_cut_short_always_raises_at_eof(payloads: list[bytes], data: st.DataObject) -> None:
    stream = stream_of(payloads)
    boundaries = {len(stream_of(payloads[:i])) for i in range(len(payloads) + 1)}
    end = data.draw(st.integers(1, len(stream) - 1).filter(lambda n: n not in boundaries), label="end")
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="truncated"):
        decode_chunks([stream[:end], b""], decoder)
