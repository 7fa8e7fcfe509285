"""The wire protocol, sans I/O: frames, the handshake and the message envelope.

No sockets, no asyncio, nothing else of herder: ``rpc`` wraps this in transports.
The specification is docs/protocol.md.
"""

from herder.wire.errors import ErrorCode, FrameTooLarge, InvalidMessage, ProtocolError, WireError
from herder.wire.frames import DEFAULT_MAX_FRAME_SIZE, NEED_DATA, PREFIX, FrameDecoder, NeedData, encode_frame
from herder.wire.handshake import (
    PROTOCOL,
    VERSION,
    Hello,
    Refusal,
    Welcome,
    choose_codec,
    decode_hello,
    decode_welcome,
    encode_hello,
    encode_welcome,
)
from herder.wire.messages import (
    CODEC_NAMES,
    Call,
    Cancel,
    Codec,
    Error,
    JsonCodec,
    Kind,
    Message,
    MsgpackCodec,
    Notify,
    Result,
    codec_for,
    decode_message,
    encode_message,
    error_for,
    from_document,
    to_document,
)
from herder.wire.raw import RawEnvelope, peek_envelope, rebuild_message

__all__ = [
    "CODEC_NAMES",
    "DEFAULT_MAX_FRAME_SIZE",
    "NEED_DATA",
    "PREFIX",
    "PROTOCOL",
    "VERSION",
    "Call",
    "Cancel",
    "Codec",
    "Error",
    "ErrorCode",
    "FrameDecoder",
    "FrameTooLarge",
    "Hello",
    "InvalidMessage",
    "JsonCodec",
    "Kind",
    "Message",
    "MsgpackCodec",
    "NeedData",
    "Notify",
    "ProtocolError",
    "RawEnvelope",
    "Refusal",
    "Result",
    "Welcome",
    "WireError",
    "choose_codec",
    "codec_for",
    "decode_hello",
    "decode_message",
    "decode_welcome",
    "encode_frame",
    "encode_hello",
    "encode_message",
    "encode_welcome",
    "error_for",
    "from_document",
    "peek_envelope",
    "rebuild_message",
    "to_document",
]
