"""The message envelope and its two codecs: round trips, defaults, and what is refused.

The hypothesis strategies here (values and messages per codec) are shared with
``test_wire_fuzz.py``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herder.wire import (
    CODEC_NAMES,
    Call,
    Cancel,
    Codec,
    Error,
    ErrorCode,
    FrameDecoder,
    InvalidMessage,
    JsonCodec,
    Kind,
    Message,
    MsgpackCodec,
    Notify,
    ProtocolError,
    Result,
    codec_for,
    decode_message,
    encode_frame,
    encode_message,
    error_for,
    from_document,
    to_document,
)
from herder.wire.messages import MAX_ID, MAX_NAME_LENGTH

CODECS = [pytest.param(JsonCodec(), id="json"), pytest.param(MsgpackCodec(), id="msgpack")]

# --- strategies -------------------------------------------------------------------------------------

# Integers every JSON implementation reads exactly (IEEE doubles).
SAFE_INT = 2**53
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-SAFE_INT, SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
msgpack_scalars = json_scalars | st.binary(max_size=20)


def values_from(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=12,
    )


json_values = values_from(json_scalars)
msgpack_values = values_from(msgpack_scalars)

ids = st.integers(0, MAX_ID - 1)
names = st.text(min_size=1, max_size=MAX_NAME_LENGTH)
targets = st.none() | names


def messages_from(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Message]:
    args = st.lists(values, max_size=4)
    kwargs = st.dictionaries(st.text(max_size=8), values, max_size=4)
    return st.one_of(
        st.builds(Call, id=ids, method=names, target=targets, args=args, kwargs=kwargs),
        st.builds(Notify, method=names, target=targets, args=args, kwargs=kwargs),
        st.builds(Result, id=ids, result=values),
        st.builds(
            Error,
            id=st.none() | ids,
            code=st.text(max_size=20),
            message=st.text(max_size=40),
            type=st.text(max_size=20),
            data=values,
        ),
        st.builds(Cancel, id=ids),
    )


json_messages = messages_from(json_values)
msgpack_messages = messages_from(msgpack_values)


def typed(value: Any) -> Any:
    """``value`` with every leaf tagged by its type, so that 1 == True == 1.0 no longer holds."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


def assert_same_message(got: Message, want: Message) -> None:
    assert type(got) is type(want)
    assert got == want
    assert typed(to_document(got)) == typed(to_document(want))


# --- examples of every kind -------------------------------------------------------------------------

EXAMPLES: list[Message] = [
    Call(1, "square", None, [4]),
    Call(2, "add", "math", [1, 2.5], {"round": True, "note": None}),
    Call(MAX_ID - 1, "m" * MAX_NAME_LENGTH, "meta", [[], {}, [1, [2, [3]]]], {"nested": {"a": ["b"]}}),
    Call(0, "ünïcødé ✓", "svc", ["\x00", "line\nbreak", "😀"], {"ключ": "значение"}),
    Notify("log", None, ["started"]),
    Notify("progress", "jobs", [], {"done": 3, "total": 10, "ratio": 0.3}),
    Result(3),
    Result(4, {"items": [1, 2, 3], "more": False}),
    Result(5, -(2**53)),
    Result(6, "text"),
    Result(7, [None, True, 1e300, -0.5]),
    Error(8, "unknown_method", "no method 'cube'"),
    Error(9, "application_error", "boom", "ZeroDivisionError", {"trace": ["a", "b"]}),
    Error(None, "protocol_error", "garbage", ""),
    Cancel(10),
    Cancel(0),
]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_kind_round_trips_through_both_codecs(codec: Codec, message: Message) -> None:
    payload = encode_message(message, codec)
    assert isinstance(payload, bytes)
    assert_same_message(decode_message(payload, codec), message)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_kind_round_trips_through_its_document(message: Message) -> None:
    document = to_document(message)
    assert document["kind"] in set(Kind)
    assert_same_message(from_document(document), message)


def test_documents_have_the_documented_keys() -> None:
    assert to_document(Call(7, "square", None, [4])) == {
        "kind": "call",
        "id": 7,
        "target": None,
        "method": "square",
        "args": [4],
        "kwargs": {},
    }
    assert to_document(Notify("tick", "clock", [], {"n": 1})) == {
        "kind": "notify",
        "target": "clock",
        "method": "tick",
        "args": [],
        "kwargs": {"n": 1},
    }
    assert to_document(Result(7, 16)) == {"kind": "result", "id": 7, "result": 16}
    assert to_document(Error(7, "cancelled", "gone", "CancelledError", [1])) == {
        "kind": "error",
        "id": 7,
        "error": {"code": "cancelled", "type": "CancelledError", "message": "gone", "data": [1]},
    }
    assert to_document(Cancel(7)) == {"kind": "cancel", "id": 7}


def test_json_bytes_on_the_wire() -> None:
    json_codec = JsonCodec()
    assert encode_message(Cancel(3), json_codec) == b'{"kind":"cancel","id":3}'
    assert encode_message(Result(1, "é"), json_codec) == '{"kind":"result","id":1,"result":"é"}'.encode()
    assert (
        encode_message(Call(1, "square", None, [4]), json_codec)
        == b'{"kind":"call","id":1,"target":null,"method":"square","args":[4],"kwargs":{}}'
    )


def test_msgpack_bytes_on_the_wire() -> None:
    # fixmap of 2: "kind" -> "cancel", "id" -> 3
    assert encode_message(Cancel(3), MsgpackCodec()) == b"\x82\xa4kind\xa6cancel\xa2id\x03"
    # a bytes value is a bin 8 (0xc4), not a str
    assert encode_message(Result(1, b"\xff"), MsgpackCodec()).endswith(b"\xa6result\xc4\x01\xff")


def test_defaults() -> None:
    call = Call(1, "m")
    assert (call.target, call.args, call.kwargs) == (None, [], {})
    notify = Notify("m")
    assert (notify.target, notify.args, notify.kwargs) == (None, [], {})
    assert Result(1).result is None
    error = Error(1, "c", "msg")
    assert (error.type, error.data) == ("", None)
    assert Call(1, "m").args is not Call(2, "m").args  # no shared mutable default


@pytest.mark.parametrize("codec", CODECS)
def test_missing_optional_fields_take_their_defaults(codec: Codec) -> None:
    assert decode_message(codec.encode({"kind": "call", "id": 1, "method": "m"}), codec) == Call(1, "m")
    assert decode_message(codec.encode({"kind": "notify", "method": "m"}), codec) == Notify("m")
    assert decode_message(codec.encode({"kind": "result", "id": 1}), codec) == Result(1, None)
    error = {"kind": "error", "error": {"code": "c", "message": "m"}}
    assert decode_message(codec.encode(error), codec) == Error(None, "c", "m", "", None)


def test_bytes_survive_msgpack() -> None:
    codec = MsgpackCodec()
    message = Call(1, "upload", None, [b"\x00\xff" * 100, "text"], {"chunk": b"", "nested": [b"x"]})
    decoded = decode_message(encode_message(message, codec), codec)
    assert_same_message(decoded, message)
    assert isinstance(decoded, Call)
    assert isinstance(decoded.args[0], bytes)
    assert isinstance(decoded.args[1], str)
    assert_same_message(decode_message(encode_message(Result(2, b"raw"), codec), codec), Result(2, b"raw"))


@pytest.mark.parametrize(
    "message",
    [
        Result(1, b"bytes"),
        Call(1, "m", None, [b"x"]),
        Result(1, math.nan),
        Result(1, math.inf),
        Notify("m", None, [], {"x": -math.inf}),
        Error(1, "c", "m", "", {1, 2}),
    ],
    ids=["bytes", "bytes-arg", "nan", "inf", "-inf", "set"],
)
def test_json_refuses_what_it_cannot_represent(message: Message) -> None:
    with pytest.raises((TypeError, ValueError)):
        encode_message(message, JsonCodec())


@pytest.mark.parametrize("codec", CODECS)
def test_a_value_nested_too_deeply_to_encode_is_a_value_error(codec: Codec) -> None:
    with pytest.raises(ValueError, match=r"deep|recursion"):
        encode_message(Result(1, nested(5_000)), codec)


def test_json_refuses_nan_and_infinity_when_decoding() -> None:
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        payload = b'{"kind":"result","id":1,"result":' + constant + b"}"
        with pytest.raises(InvalidMessage, match="not JSON"):
            decode_message(payload, JsonCodec())


def test_unknown_extra_keys_are_ignored() -> None:
    doc = {"kind": "call", "id": 1, "method": "m", "future": {"x": 1}, "trace": "abc"}
    assert from_document(doc) == Call(1, "m")
    error = {"kind": "error", "id": 2, "error": {"code": "c", "message": "m", "hint": "later"}}
    assert from_document(error) == Error(2, "c", "m")
    for codec in (JsonCodec(), MsgpackCodec()):
        assert decode_message(codec.encode({"kind": "cancel", "id": 3, "why": "bored"}), codec) == Cancel(3)


def test_error_for_uses_the_stable_codes() -> None:
    error = error_for(4, ErrorCode.UNKNOWN_METHOD, "no method 'cube'", "LookupError", {"method": "cube"})
    assert error == Error(4, "unknown_method", "no method 'cube'", "LookupError", {"method": "cube"})
    assert type(error.code) is str
    for codec in (JsonCodec(), MsgpackCodec()):
        assert decode_message(encode_message(error, codec), codec) == error
    assert error_for(None, ErrorCode.PROTOCOL_ERROR, "bad").id is None


def test_codec_for() -> None:
    assert isinstance(codec_for("json"), JsonCodec)
    assert isinstance(codec_for("msgpack"), MsgpackCodec)
    assert [codec_for(name).name for name in CODEC_NAMES] == list(CODEC_NAMES)
    with pytest.raises(InvalidMessage, match="cbor"):
        codec_for("cbor")


# --- invalid envelopes ------------------------------------------------------------------------------


def call(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": "call", "id": 1, "target": None, "method": "m", "args": [], "kwargs": {}}
    doc.update(changes)
    return {key: value for key, value in doc.items() if value is not REMOVED}


REMOVED = object()

INVALID: list[tuple[str, Any, str]] = [
    ("list", [1, 2], "must be a map"),
    ("string", "call", "must be a map"),
    ("null", None, "must be a map"),
    ("no-kind", {"id": 1, "method": "m"}, "kind"),
    ("unknown-kind", call(kind="reply"), "kind 'reply'"),
    ("kind-not-string", call(kind=1), "kind"),
    ("missing-id", call(id=REMOVED), "'id'"),
    ("null-id", call(id=None), "'id'"),
    ("negative-id", call(id=-1), "'id'"),
    ("bool-id", call(id=True), "'id'"),
    ("float-id", call(id=1.0), "'id'"),
    ("string-id", call(id="1"), "'id'"),
    ("too-large-id", call(id=MAX_ID), "'id'"),
    ("huge-id", call(id=2**63), "'id'"),
    ("result-without-id", {"kind": "result", "result": 1}, "'id'"),
    ("cancel-bad-id", {"kind": "cancel", "id": -5}, "'id'"),
    ("error-negative-id", {"kind": "error", "id": -1, "error": {"code": "c", "message": "m"}}, "'id'"),
    ("missing-method", call(method=REMOVED), "'method'"),
    ("empty-method", call(method=""), "'method'"),
    ("non-string-method", call(method=5), "'method'"),
    ("list-method", call(method=["m"]), "'method'"),
    ("too-long-method", call(method="m" * (MAX_NAME_LENGTH + 1)), "'method'"),
    ("notify-without-method", {"kind": "notify"}, "'method'"),
    ("empty-target", call(target=""), "'target'"),
    ("non-string-target", call(target=3), "'target'"),
    ("args-map", call(args={"a": 1}), "'args'"),
    ("args-string", call(args="abc"), "'args'"),
    ("args-null", call(args=None), "'args'"),
    ("kwargs-list", call(kwargs=[1]), "'kwargs'"),
    ("kwargs-null", call(kwargs=None), "'kwargs'"),
    ("notify-kwargs-string", {"kind": "notify", "method": "m", "kwargs": "x"}, "'kwargs'"),
    ("error-without-error", {"kind": "error", "id": 1}, "'error'"),
    ("error-not-map", {"kind": "error", "id": 1, "error": "boom"}, "'error'"),
    ("error-without-code", {"kind": "error", "id": 1, "error": {"message": "m"}}, "'code'"),
    ("error-without-message", {"kind": "error", "id": 1, "error": {"code": "c"}}, "'message'"),
    ("error-code-not-string", {"kind": "error", "id": 1, "error": {"code": 1, "message": "m"}}, "'code'"),
    ("error-type-not-string", {"kind": "error", "error": {"code": "c", "message": "m", "type": 1}}, "'type'"),
]


@pytest.mark.parametrize(("doc", "field"), [pytest.param(d, f, id=i) for i, d, f in INVALID])
def test_invalid_documents_name_the_field(doc: Any, field: str) -> None:
    with pytest.raises(InvalidMessage, match=field) as caught:
        from_document(doc)
    assert caught.value.code == ErrorCode.INVALID_MESSAGE
    assert isinstance(caught.value, ProtocolError)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(("doc", "field"), [pytest.param(d, f, id=i) for i, d, f in INVALID])
def test_invalid_envelopes_are_refused_after_either_codec(codec: Codec, doc: Any, field: str) -> None:
    with pytest.raises(InvalidMessage, match=field):
        decode_message(codec.encode(doc), codec)


def test_kwargs_with_non_string_keys_are_refused() -> None:
    with pytest.raises(InvalidMessage, match="'kwargs'"):
        from_document(call(kwargs={1: "a"}))
    with pytest.raises(InvalidMessage, match="'kwargs'"):
        from_document(call(kwargs={"a": 1, None: 2}))
    # MessagePack can carry bin keys; the envelope still wants strings.
    codec = MsgpackCodec()
    with pytest.raises(InvalidMessage, match="'kwargs'"):
        decode_message(codec.encode(call(kwargs={b"a": 1})), codec)
    # and integer keys are refused by the codec itself
    with pytest.raises(InvalidMessage):
        decode_message(msgpack.packb(call(kwargs={1: "a"})), codec)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("field", ["kind", "id"])
def test_a_deeply_nested_field_is_refused_not_a_crash(field: str) -> None:
    # as deep as each codec's own decoder accepts: the error message must not recurse into it
    deep_msgpack = msgpack.packb({"kind": "cancel", "id": 1, field: nested(1020)})
    deep_json = b'{"kind":"cancel","id":1,"%s":%s1%s}' % (field.encode(), b"[" * 900, b"]" * 900)
    for payload, codec in ((deep_msgpack, MsgpackCodec()), (deep_json, JsonCodec())):
        with pytest.raises(InvalidMessage, match=f"{field}.*a list"):
            decode_message(payload, codec)


def test_an_invalid_value_is_quoted_short() -> None:
    with pytest.raises(InvalidMessage) as caught:
        from_document({"kind": "x" * 100_000})
    assert len(str(caught.value)) < 200
    with pytest.raises(InvalidMessage) as caught:
        from_document(call(id="9" * 100_000))
    assert len(str(caught.value)) < 200
    with pytest.raises(InvalidMessage) as caught:
        from_document(call(id={"a": list(range(100_000))}))
    assert "a dict" in str(caught.value)
    assert len(str(caught.value)) < 200


def test_id_bounds() -> None:
    assert from_document(call(id=0)) == Call(0, "m")
    assert from_document(call(id=MAX_ID - 1)) == Call(MAX_ID - 1, "m")
    with pytest.raises(InvalidMessage):
        from_document(call(id=MAX_ID))


def test_a_null_target_is_the_default_target() -> None:
    for doc in (call(target=None), call(target=REMOVED)):
        message = from_document(doc)
        assert isinstance(message, Call)
        assert message.target is None


# --- garbage bytes ----------------------------------------------------------------------------------

deep_json = b"[" * 100_000 + b"]" * 100_000
GARBAGE_JSON = [
    b"",
    b"\xff\xfe\x00",
    b"{",
    b"not json",
    b'{"kind":"call"',
    b'{"kind":"call","id":1}{"kind":"call"}',
    b"\xef\xbb\xbf{}",
    b'{"a":"\xff"}',
    deep_json,
    b'{"a":' * 50_000,
    b"1" * 5_000,  # an integer past Python's digit limit
    b"[]",
    b"42",
    b'"call"',
    b"null",
]
GARBAGE_MSGPACK = [
    b"",
    b"\xc1",  # never used
    b"\x82\xa4kind",  # truncated map
    b"\x81\xa4kind\xa6cancel\x00",  # extra data after the document
    b"\xa3\xff\xfe\xfd",  # a str that is not UTF-8
    b"\x81\x01\x02",  # an integer map key
    b"\x81\x90\x02",  # an array as map key
    b"\x91" * 100_000,  # nested past the unpacker's stack
    b"\xdd\xff\xff\xff\xff",  # an array announcing 4 billion items
    b"\xc6\xff\xff\xff\xff",  # a bin announcing 4 GiB
    b"\xd6\xff\x00\x00\x00",  # a timestamp ext of the right size: a valid value, not a map
    b"\xd7\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a timestamp ext with nanoseconds out of range
    b"\x93\x01\x02\x03",
    b"\xc0",
]


@pytest.mark.parametrize("payload", GARBAGE_JSON, ids=lambda p: repr(p[:12]))
def test_garbage_json_raises_invalid_message(payload: bytes) -> None:
    with pytest.raises(InvalidMessage):
        decode_message(payload, JsonCodec())


@pytest.mark.parametrize("payload", GARBAGE_MSGPACK, ids=lambda p: repr(p[:12]))
def test_garbage_msgpack_raises_invalid_message(payload: bytes) -> None:
    with pytest.raises(InvalidMessage):
        decode_message(payload, MsgpackCodec())


@pytest.mark.parametrize("codec", CODECS)
def test_the_other_codecs_bytes_are_garbage(codec: Codec) -> None:
    other: Codec = MsgpackCodec() if isinstance(codec, JsonCodec) else JsonCodec()
    for message in EXAMPLES:
        with pytest.raises(InvalidMessage):
            decode_message(encode_message(message, other), codec)


# --- properties -------------------------------------------------------------------------------------


@settings(deadline=None, max_examples=300)
@given(message=json_messages)
def test_any_json_message_round_trips(message: Message) -> None:
    codec = JsonCodec()
    payload = encode_message(message, codec)
    json.loads(payload)  # it is plain JSON
    assert_same_message(decode_message(payload, codec), message)


@settings(deadline=None, max_examples=300)
@given(message=msgpack_messages)
def test_any_msgpack_message_round_trips(message: Message) -> None:
    codec = MsgpackCodec()
    assert_same_message(decode_message(encode_message(message, codec), codec), message)


@settings(deadline=None, max_examples=200)
@given(message=msgpack_messages)
def test_any_message_round_trips_through_its_document(message: Message) -> None:
    assert_same_message(from_document(to_document(message)), message)


@settings(deadline=None, max_examples=50)
@given(batch=st.lists(msgpack_messages, max_size=8), data=st.data())
def test_framed_messages_arrive_whole_and_in_order(batch: list[Message], data: st.DataObject) -> None:
    codec = MsgpackCodec()
    stream = b"".join(encode_frame(encode_message(m, codec)) for m in batch)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=20), label="cuts")))
    decoder = FrameDecoder()
    received: list[Message] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        if end > start:  # feeding b"" would mean EOF
            decoder.feed(stream[start:end])
        received.extend(decode_message(frame, codec) for frame in decoder.frames())
    assert received == batch
