"""The router's HTTP/1.1 layer (``herder.agent.router.http1``), sans-IO.

What the proxy accepts must have exactly one reading: every way two parsers could
disagree about where a request ends (request smuggling) is refused with the status the
proxy answers with, and the head sent on to an instance carries only end-to-end
headers, the proxy's own framing and ``X-Forwarded-*``. The chunked decoder gives the
same body and stops at the same byte however its input is cut. Random input raises
``HttpError`` or parses: nothing else.
"""

from __future__ import annotations

import contextlib
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herder.agent.router.http1 import (
    LAST_CHUNK,
    MAX_CHUNK_LINE_BYTES,
    ChunkedDecoder,
    HttpError,
    RequestHead,
    encode_chunk,
    find_head_end,
    forwarded_request_head,
    forwarded_response_head,
    parse_request_head,
    parse_response_head,
    response_has_body,
    simple_response,
)


def head(*lines: bytes) -> bytes:
    """A complete head: the lines, each ending in CRLF, then the blank line."""
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n"


def header_values(forwarded: bytes) -> dict[bytes, list[bytes]]:
    """Lower-cased header names of a head → their values, in order."""
    values: dict[bytes, list[bytes]] = {}
    for line in forwarded.split(b"\r\n")[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        values.setdefault(name.lower(), []).append(value.strip(b" \t"))
    return values


def refusal(parse: object, data: bytes) -> int:
    """The status of the HttpError ``parse(data)`` raises (fails if it parses)."""
    assert callable(parse)
    with pytest.raises(HttpError) as caught:
        parse(data)
    return caught.value.status


# --- request heads: accepted ------------------------------------------------------------------------


def test_a_plain_get_is_parsed() -> None:
    request = parse_request_head(head(b"GET /path?q=1 HTTP/1.1", b"Host: example.com", b"Accept: */*"))
    assert request.method == b"GET"
    assert request.target == b"/path?q=1"
    assert request.host == b"example.com"
    assert request.http11
    assert request.content_length is None
    assert not request.chunked
    assert not request.close
    assert request.upgrade is None
    assert request.lines == [b"Host: example.com", b"Accept: */*"]
    assert request.names == [b"host", b"accept"]


def test_content_length_is_read_with_whitespace_around_the_value() -> None:
    request = parse_request_head(head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Length: \t42 "))
    assert request.content_length == 42
    assert not request.chunked


def test_leading_zeros_in_content_length_are_one_number() -> None:
    request = parse_request_head(head(b"POST /echo HTTP/1.1", b"Host: x", b"Content-Length: 007"))
    assert request.content_length == 7


@pytest.mark.parametrize("value", [b"chunked", b"Chunked", b"CHUNKED", b" chunked ", b"\tchunked"])
def test_plain_chunked_is_accepted_in_any_case_and_surrounding_whitespace(value: bytes) -> None:
    request = parse_request_head(head(b"POST /echo HTTP/1.1", b"Host: x", b"Transfer-Encoding:" + value))
    assert request.chunked
    assert request.content_length is None


def test_http10_needs_no_host_and_closes_unless_keep_alive() -> None:
    request = parse_request_head(head(b"GET / HTTP/1.0"))
    assert not request.http11
    assert request.host is None
    assert request.close
    kept = parse_request_head(head(b"GET / HTTP/1.0", b"Connection: Keep-Alive"))
    assert not kept.close


@pytest.mark.parametrize(
    ("connection", "close"),
    [(b"close", True), (b"Close", True), (b"keep-alive, close", True), (b"keep-alive", False), (b"x", False)],
)
def test_connection_close_is_seen_in_any_case_and_position(connection: bytes, close: bool) -> None:
    request = parse_request_head(head(b"GET / HTTP/1.1", b"Host: x", b"Connection: " + connection))
    assert request.close is close


def test_upgrade_counts_only_when_connection_names_it() -> None:
    asked = parse_request_head(
        head(b"GET /ws HTTP/1.1", b"Host: x", b"Connection: keep-alive, Upgrade", b"Upgrade: websocket")
    )
    assert asked.upgrade == b"websocket"
    not_asked = parse_request_head(head(b"GET /ws HTTP/1.1", b"Host: x", b"Upgrade: websocket"))
    assert not_asked.upgrade is None


def test_values_may_hold_tabs_and_non_ascii_bytes() -> None:
    request = parse_request_head(head(b"GET / HTTP/1.1", b"Host: x", b"X-Note: a\tb \xc3\xa9"))
    assert request.lines[1] == b"X-Note: a\tb \xc3\xa9"


def test_asterisk_form_and_odd_but_valid_targets() -> None:
    assert parse_request_head(head(b"OPTIONS * HTTP/1.1", b"Host: x")).target == b"*"
    target = b"/a/b%20c;p?x=1&y=[2]#frag"
    assert parse_request_head(head(b"GET " + target + b" HTTP/1.1", b"Host: x")).target == target


def test_find_head_end() -> None:
    data = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY"
    assert find_head_end(data) == len(data) - 4
    assert find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n") == -1
    assert find_head_end(data, start=len(data) - 3) == -1


# --- request heads: refused ------------------------------------------------------------------------

REQUEST_REFUSALS = [
    pytest.param(
        head(b"POST / HTTP/1.1", b"Host: x", b"Content-Length: 5", b"Transfer-Encoding: chunked"),
        400,
        id="CL+TE",
    ),
    pytest.param(
        head(b"POST / HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked", b"Content-Length: 5"),
        400,
        id="TE+CL",
    ),
    pytest.param(
        head(b"POST / HTTP/1.1", b"Host: x", b"Content-Length: 5", b"Content-Length: 5"),
        400,
        id="two-equal-CLs",
    ),
    pytest.param(
        head(b"POST / HTTP/1.1", b"Host: x", b"Content-Length: 5", b"Content-Length: 6"),
        400,
        id="two-different-CLs",
    ),
    pytest.param(head(b"POST / HTTP/1.1", b"Host: x", b"Content-Length: 5, 5"), 400, id="CL-list"),
    pytest.param(head(b"POST / HTTP/1.1", b"Host: x", b"Content-Length: 5,5"), 400, id="CL-list-no-space"),
    pytest.param(head(b"POST / HTTP/1.1", b"Host: x", b"Content-Length: +5"), 400, id="CL-plus"),
    pytest.param(head(b"POST / HTTP/1.1", b"Host: x", b"Content-Length: -1"), 400, id="CL-negative"),
    pytest.param(head(b"POST / HTTP/1.1", b"Host: x", b"Content-Length: 0x10"), 400, id="CL-hex"),
    pytest.param(head(b"POST / HTTP/1.1", b"Host: x", b"Content-Length: 5 5"), 400, id="CL-inner-space"),
    pytest.param(head(b"POST / HTTP/1.1", b"Host: x", b"Content-Length: 1e3"), 400, id="CL-exponent"),
    pytest.param(head(b"POST / HTTP/1.1", b"Host: x", b"Content-Length:"), 400, id="CL-empty"),
    pytest.param(head(b"POST / HTTP/1.1", b"Host: x", b"Content-Length: " + b"9" * 19), 400, id="CL-huge"),
    pytest.param(
        head(b"POST / HTTP/1.1", b"Host: x", b"Content-Length: \xd9\xa5"), 400, id="CL-arabic-digit"
    ),
    pytest.param(
        head(b"POST / HTTP/1.1", b"Host: x", b"Transfer-Encoding: gzip, chunked"), 400, id="TE-gzip,chunked"
    ),
    pytest.param(
        head(b"POST / HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked, identity"),
        400,
        id="TE-chunked,identity",
    ),
    pytest.param(
        head(b"POST / HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked,"), 400, id="TE-trailing-comma"
    ),
    pytest.param(head(b"POST / HTTP/1.1", b"Host: x", b"Transfer-Encoding: xchunked"), 400, id="TE-xchunked"),
    pytest.param(head(b"POST / HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunkedx"), 400, id="TE-chunkedx"),
    pytest.param(head(b"POST / HTTP/1.1", b"Host: x", b'Transfer-Encoding: "chunked"'), 400, id="TE-quoted"),
    pytest.param(head(b"POST / HTTP/1.1", b"Host: x", b"Transfer-Encoding: identity"), 400, id="TE-identity"),
    pytest.param(head(b"POST / HTTP/1.1", b"Host: x", b"Transfer-Encoding:"), 400, id="TE-empty"),
    pytest.param(
        head(b"POST / HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"),
        400,
        id="two-TEs",
    ),
    pytest.param(
        head(b"POST / HTTP/1.1", b"Host: x", b"Transfer-Encoding: identity", b"Transfer-Encoding: chunked"),
        400,
        id="two-different-TEs",
    ),
    pytest.param(b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400, id="bare-LF-after-request-line"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\n\r\n", 400, id="bare-LF-after-header"),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\nContent-Length: 3\r\n\r\n",
        400,
        id="bare-LF-hiding-a-CL",
    ),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\rX-Y: z\r\n\r\n", 400, id="bare-CR-between-headers"),
    pytest.param(head(b"GET / HTTP/1.1", b"Host: x", b"X-Y: a\rb"), 400, id="bare-CR-in-value"),
    pytest.param(head(b"GET / HTTP/1.1\r", b"Host: x"), 400, id="CR-CR-LF"),
    pytest.param(head(b"GET / HTTP/1.1", b"Host: x", b"X-Long: a", b" folded"), 400, id="obs-fold-space"),
    pytest.param(
        head(b"POST / HTTP/1.1", b"Host: x", b"Transfer-Encoding:", b"\tchunked"), 400, id="obs-fold-tab-TE"
    ),
    pytest.param(head(b"POST / HTTP/1.1", b"Host: x", b"Content-Length : 5"), 400, id="space-before-colon"),
    pytest.param(
        head(b"POST / HTTP/1.1", b"Host: x", b"Transfer-Encoding\t: chunked"), 400, id="tab-before-colon"
    ),
    pytest.param(head(b"GET / HTTP/1.1", b" Host: x"), 400, id="space-before-name"),
    pytest.param(head(b"GET / HTTP/1.1", b"Host: x", b": no-name"), 400, id="empty-name"),
    pytest.param(head(b"GET / HTTP/1.1", b"Host: x", b"No colon here"), 400, id="no-colon"),
    pytest.param(head(b"GET / HTTP/1.1", b"Host: x", b"X(Y): z"), 400, id="separator-in-name"),
    pytest.param(head(b"GET / HTTP/1.1", b"Host: x", b"X-Y: a\x00b"), 400, id="NUL-in-value"),
    pytest.param(head(b"GET / HTTP/1.1", b"Host: x", b"X-Y: a\x7fb"), 400, id="DEL-in-value"),
    pytest.param(head(b"GET / HTTP/1.1", b"Host: x", b"X-Y: a\x0bb"), 400, id="VT-in-value"),
    pytest.param(head(b"GET / HTTP/1.1", b"Accept: */*"), 400, id="no-Host"),
    pytest.param(head(b"GET / HTTP/1.1", b"Host: a", b"Host: b"), 400, id="two-Hosts"),
    pytest.param(head(b"GET / HTTP/1.1", b"Host: a", b"host: a"), 400, id="two-equal-Hosts"),
    pytest.param(head(b"GET / HTTP/1.0", b"Host: a", b"Host: b"), 400, id="two-Hosts-http10"),
    pytest.param(head(b"GET / HTTP/2.0", b"Host: x"), 505, id="HTTP/2.0"),
    pytest.param(head(b"GET / HTTP/1.2", b"Host: x"), 505, id="HTTP/1.2"),
    pytest.param(head(b"GET / HTTP/0.9", b"Host: x"), 505, id="HTTP/0.9"),
    pytest.param(head(b"GET / http/1.1", b"Host: x"), 400, id="lower-case-version"),
    pytest.param(head(b"GET / FTP/1.1", b"Host: x"), 400, id="not-HTTP"),
    pytest.param(head(b"GET /", b"Host: x"), 400, id="no-version"),
    pytest.param(head(b"GET http://example.com/ HTTP/1.1", b"Host: example.com"), 400, id="absolute-form"),
    pytest.param(head(b"CONNECT example.com:443 HTTP/1.1", b"Host: example.com"), 400, id="authority-form"),
    pytest.param(head(b"GET path HTTP/1.1", b"Host: x"), 400, id="relative-target"),
    pytest.param(head(b"GET  / HTTP/1.1", b"Host: x"), 400, id="two-spaces"),
    pytest.param(head(b"GET / HTTP/1.1 ", b"Host: x"), 400, id="trailing-space"),
    pytest.param(head(b"GET\t/\tHTTP/1.1", b"Host: x"), 400, id="tabs"),
    pytest.param(head(b"G(T / HTTP/1.1", b"Host: x"), 400, id="bad-method"),
    pytest.param(head(b"GET /a\x7fb HTTP/1.1", b"Host: x"), 400, id="DEL-in-target"),
    pytest.param(head(b"", b"Host: x"), 400, id="empty-request-line"),
]


@pytest.mark.parametrize(("data", "status"), REQUEST_REFUSALS)
def test_request_head_refusals(data: bytes, status: int) -> None:
    assert refusal(parse_request_head, data) == status


def test_refusals_name_what_was_wrong() -> None:
    messages = {
        "both Content-Length and Transfer-Encoding": head(
            b"POST / HTTP/1.1", b"Host: x", b"Content-Length: 5", b"Transfer-Encoding: chunked"
        ),
        "more than one Content-Length": head(
            b"POST / HTTP/1.1", b"Host: x", b"Content-Length: 5", b"Content-Length: 5"
        ),
        "only plain 'chunked'": head(b"POST / HTTP/1.1", b"Host: x", b"Transfer-Encoding: gzip, chunked"),
        "bare LF": b"GET / HTTP/1.1\nHost: x\r\n\r\n",
        "obsolete line folding": head(b"GET / HTTP/1.1", b"Host: x", b"X: a", b" b"),
        "whitespace around the header name": head(b"GET / HTTP/1.1", b"Host: x", b"X : a"),
        "exactly one Host": head(b"GET / HTTP/1.1"),
    }
    for expected, data in messages.items():
        with pytest.raises(HttpError, match=expected):
            parse_request_head(data)


# --- response heads ---------------------------------------------------------------------------------


def test_a_plain_response_is_parsed() -> None:
    response = parse_response_head(
        head(b"HTTP/1.1 200 OK", b"Content-Length: 12", b"Content-Type: text/plain")
    )
    assert response.status == 200
    assert response.status_line == b"HTTP/1.1 200 OK"
    assert response.content_length == 12
    assert not response.chunked
    assert response.http11
    assert not response.close


@pytest.mark.parametrize(
    ("data", "status", "chunked", "close", "upgrade"),
    [
        (head(b"HTTP/1.1 204 No Content"), 204, False, False, None),
        (head(b"HTTP/1.1 200"), 200, False, False, None),
        (head(b"HTTP/1.1 200 "), 200, False, False, None),
        (head(b"HTTP/1.1 500 Internal\tServer Error"), 500, False, False, None),
        (head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked"), 200, True, False, None),
        (head(b"HTTP/1.1 200 OK", b"Connection: close"), 200, False, True, None),
        (head(b"HTTP/1.0 200 OK"), 200, False, True, None),
        (head(b"HTTP/1.0 200 OK", b"Connection: keep-alive"), 200, False, False, None),
        (
            head(b"HTTP/1.1 101 Switching Protocols", b"Connection: Upgrade", b"Upgrade: websocket"),
            101,
            False,
            False,
            b"websocket",
        ),
    ],
)
def test_response_heads_accepted(
    data: bytes, status: int, chunked: bool, close: bool, upgrade: bytes | None
) -> None:
    response = parse_response_head(data)
    assert response.status == status
    assert response.chunked is chunked
    assert response.close is close
    assert response.upgrade == upgrade


RESPONSE_REFUSALS = [
    pytest.param(head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Transfer-Encoding: chunked"), id="CL+TE"),
    pytest.param(head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Content-Length: 6"), id="two-CLs"),
    pytest.param(head(b"HTTP/1.1 200 OK", b"Content-Length: 5, 5"), id="CL-list"),
    pytest.param(head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip, chunked"), id="TE-not-plain"),
    pytest.param(
        head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), id="two-TEs"
    ),
    pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", id="bare-LF"),
    pytest.param(head(b"HTTP/1.1 200 OK", b"X: a\rb"), id="bare-CR"),
    pytest.param(head(b"HTTP/1.1 200 OK", b"X: a", b" b"), id="obs-fold"),
    pytest.param(head(b"HTTP/1.1 200 OK", b"Content-Length : 0"), id="space-before-colon"),
    pytest.param(head(b"HTTP/1.1 20 OK"), id="two-digit-status"),
    pytest.param(head(b"HTTP/1.1 099 Low"), id="status-below-100"),
    pytest.param(head(b"HTTP/1.1 2000 OK"), id="four-digit-status"),
    pytest.param(head(b"HTTP/2 200 OK"), id="HTTP/2"),
    pytest.param(head(b"HTTP/1.1  200 OK"), id="two-spaces"),
    pytest.param(head(b"ICY 200 OK"), id="not-HTTP"),
]


@pytest.mark.parametrize("data", RESPONSE_REFUSALS)
def test_response_head_refusals_are_bad_gateway(data: bytes) -> None:
    assert refusal(parse_response_head, data) == 502


@pytest.mark.parametrize(
    ("method", "status", "has_body"),
    [
        (b"GET", 200, True),
        (b"POST", 500, True),
        (b"HEAD", 200, False),
        (b"GET", 204, False),
        (b"GET", 304, False),
        (b"GET", 101, False),
        (b"GET", 100, False),
    ],
)
def test_response_has_body(method: bytes, status: int, has_body: bool) -> None:
    assert response_has_body(method, status) is has_body


@pytest.mark.parametrize("status", [400, 408, 413, 421, 431, 502, 503, 504, 505, 599])
def test_the_proxys_own_responses_are_valid_heads(status: int) -> None:
    data = simple_response(status, "what went wrong: é", retry_after=7)
    end = find_head_end(data)
    response = parse_response_head(data[:end])
    assert response.status == status
    assert response.close
    assert response.content_length == len(data) - end
    assert data[end:] == "what went wrong: é\n".encode()
    assert header_values(data[:end])[b"retry-after"] == [b"7"]
    kept = simple_response(status, "x", close=False)
    assert not parse_response_head(kept[: find_head_end(kept)]).close


# --- forwarded heads --------------------------------------------------------------------------------

HOP_BY_HOP_REQUEST = head(
    b"POST /submit?x=1 HTTP/1.1",
    b"Host: app.example:8080",
    b"Connection: keep-alive, X-Custom-Hop, close",
    b"Keep-Alive: timeout=5",
    b"TE: trailers",
    b"Trailer: X-Checksum",
    b"Transfer-Encoding: chunked",
    b"Upgrade: h2c",
    b"Proxy-Authorization: Basic Zm9vOmJhcg==",
    b"Proxy-Connection: keep-alive",
    b"X-Custom-Hop: 1",
    b"x-custom-hop: 2",
    b"X-Forwarded-For: 203.0.113.7",
    b"X-Forwarded-For: 198.51.100.2, 192.0.2.1",
    b"X-Forwarded-Proto: https",
    b"X-Forwarded-Host: evil.example",
    b"Content-Type: text/plain",
    b"X-End-To-End: kept",
)


def test_forwarded_head_drops_hop_by_hop_headers_and_sets_x_forwarded() -> None:
    request = parse_request_head(HOP_BY_HOP_REQUEST)
    out = forwarded_request_head(
        request, client_ip="10.0.0.9", proto=b"http", body_framing=b"transfer-encoding: chunked"
    )
    assert out.startswith(b"POST /submit?x=1 HTTP/1.1\r\n")
    assert out.endswith(b"\r\n\r\n")
    assert out.count(b"\r\n\r\n") == 1
    again = parse_request_head(out)  # what the instance gets is itself a valid, unambiguous head
    assert again.chunked
    assert again.content_length is None
    values = header_values(out)
    for dropped in (
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-connection",
        b"x-custom-hop",
    ):
        assert dropped not in values, dropped
    assert values[b"host"] == [b"app.example:8080"]
    assert values[b"content-type"] == [b"text/plain"]
    assert values[b"x-end-to-end"] == [b"kept"]
    assert values[b"transfer-encoding"] == [b"chunked"]
    assert values[b"x-forwarded-for"] == [b"203.0.113.7, 198.51.100.2, 192.0.2.1, 10.0.0.9"]
    assert values[b"x-forwarded-proto"] == [b"http"]
    assert values[b"x-forwarded-host"] == [b"app.example:8080"]


def test_forwarded_head_sets_x_forwarded_for_when_the_client_sent_none() -> None:
    request = parse_request_head(head(b"GET / HTTP/1.1", b"Host: h"))
    out = forwarded_request_head(request, client_ip="127.0.0.1", proto=b"https", body_framing=None)
    values = header_values(out)
    assert values[b"x-forwarded-for"] == [b"127.0.0.1"]
    assert values[b"x-forwarded-proto"] == [b"https"]
    assert values[b"x-forwarded-host"] == [b"h"]
    assert b"content-length" not in values
    assert b"transfer-encoding" not in values


def test_forwarded_head_replaces_the_clients_content_length_with_the_framing_given() -> None:
    request = parse_request_head(head(b"PUT /f HTTP/1.1", b"Host: h", b"Content-Length: 12"))
    out = forwarded_request_head(request, client_ip="::1", proto=b"http", body_framing=b"content-length: 12")
    values = header_values(out)
    assert values[b"content-length"] == [b"12"]
    assert values[b"x-forwarded-for"] == [b"::1"]
    assert parse_request_head(out).content_length == 12


def test_forwarded_head_of_http10_is_sent_as_http11() -> None:
    request = parse_request_head(head(b"GET /old HTTP/1.0", b"Host: h"))
    out = forwarded_request_head(request, client_ip="127.0.0.1", proto=b"http", body_framing=None)
    assert out.startswith(b"GET /old HTTP/1.1\r\n")


def test_connection_named_headers_are_dropped_whatever_their_case() -> None:
    request = parse_request_head(
        head(b"GET / HTTP/1.1", b"Host: h", b"CONNECTION: X-A ,x-b", b"x-a: 1", b"X-B: 2", b"X-C: 3")
    )
    values = header_values(
        forwarded_request_head(request, client_ip="1.2.3.4", proto=b"http", body_framing=None)
    )
    assert b"x-a" not in values
    assert b"x-b" not in values
    assert values[b"x-c"] == [b"3"]


def test_an_upgrade_keeps_its_upgrade_and_connection_headers() -> None:
    request = parse_request_head(
        head(
            b"GET /ws HTTP/1.1",
            b"Host: h",
            b"Connection: keep-alive, Upgrade",
            b"Upgrade: websocket",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            b"Sec-WebSocket-Version: 13",
        )
    )
    out = forwarded_request_head(request, client_ip="127.0.0.1", proto=b"http", body_framing=None)
    values = header_values(out)
    assert values[b"connection"] == [b"upgrade"]
    assert values[b"upgrade"] == [b"websocket"]
    assert values[b"sec-websocket-key"] == [b"dGhlIHNhbXBsZSBub25jZQ=="]
    assert parse_request_head(out).upgrade == b"websocket"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(head(b"GET /headers HTTP/1.0"), id="http10-without-host"),
        pytest.param(
            head(b"GET /headers HTTP/1.1", b"Host: h", b"Connection: host"), id="connection-names-host"
        ),
    ],
)
def test_forwarded_head_always_carries_one_host(data: bytes) -> None:
    """The instance gets HTTP/1.1, which must carry exactly one Host (RFC 9112 3.2)."""
    request = parse_request_head(data)
    out = forwarded_request_head(request, client_ip="127.0.0.1", proto=b"http", body_framing=None)
    assert len(header_values(out).get(b"host", [])) == 1, out
    parse_request_head(out)


def test_forwarded_response_head_drops_hop_by_hop_and_sets_its_framing() -> None:
    response = parse_response_head(
        head(
            b"HTTP/1.1 200 OK",
            b"Connection: keep-alive, X-Hop",
            b"Keep-Alive: timeout=5",
            b"X-Hop: 1",
            b"Transfer-Encoding: chunked",
            b"Trailer: X-Sum",
            b"Content-Type: text/html",
        )
    )
    out = forwarded_response_head(response, body_framing=b"transfer-encoding: chunked", close=True)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    values = header_values(out)
    assert values == {
        b"content-type": [b"text/html"],
        b"transfer-encoding": [b"chunked"],
        b"connection": [b"close"],
    }
    kept = forwarded_response_head(
        parse_response_head(head(b"HTTP/1.1 200 OK", b"Content-Length: 3")),
        body_framing=b"content-length: 3",
        close=False,
    )
    assert header_values(kept) == {b"content-length": [b"3"]}


def test_forwarded_101_keeps_the_upgrade() -> None:
    response = parse_response_head(
        head(
            b"HTTP/1.1 101 Switching Protocols",
            b"Connection: Upgrade",
            b"Upgrade: websocket",
            b"Sec-WebSocket-Accept: a",
        )
    )
    values = header_values(forwarded_response_head(response, body_framing=None, close=False))
    assert values == {
        b"sec-websocket-accept": [b"a"],
        b"connection": [b"upgrade"],
        b"upgrade": [b"websocket"],
    }


# --- chunked bodies ---------------------------------------------------------------------------------


def decode_all(data: bytes, cuts: list[int] | None = None) -> tuple[bytes, int, bool]:
    """Feed ``data`` to a decoder in pieces (cut at ``cuts``; whole if None).

    Returns the body, the bytes consumed in total, and whether the decoder is done.
    Stops feeding once the decoder is done (as the proxy does).
    """
    decoder = ChunkedDecoder()
    bounds = [0, *sorted(c for c in (cuts or []) if 0 < c < len(data)), len(data)]
    body: list[bytes] = []
    consumed = 0
    for start, end in itertools.pairwise(bounds):
        if decoder.done:
            break
        pieces, used = decoder.feed(data[start:end])
        assert 0 <= used <= end - start
        if not decoder.done:
            assert used == end - start  # an unfinished body takes everything it is given
        body.extend(pieces)
        consumed += used
    return b"".join(body), consumed, decoder.done


def byte_by_byte(data: bytes) -> tuple[bytes, int, bool]:
    return decode_all(data, list(range(1, len(data))))


CHUNKED_BODIES = [
    pytest.param(b"5\r\nhello\r\n0\r\n\r\n", b"hello", id="one-chunk"),
    pytest.param(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world", id="two-chunks"),
    pytest.param(b"0\r\n\r\n", b"", id="empty"),
    pytest.param(b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", id="upper-hex"),
    pytest.param(b"000a\r\n0123456789\r\n0000\r\n\r\n", b"0123456789", id="leading-zeros"),
    pytest.param(b"5;name=value\r\nhello\r\n0;last\r\n\r\n", b"hello", id="extensions"),
    pytest.param(b'5 ; a="b;c" ; d\r\nhello\r\n0\r\n\r\n', b"hello", id="extension-whitespace-quoted"),
    pytest.param(b"5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-Other: two\r\n\r\n", b"hello", id="trailers"),
    pytest.param(b"3\r\n\r\n\r\r\n0\r\n\r\n", b"\r\n\r", id="CRLF-in-data"),
    pytest.param(b"10\r\n" + bytes(range(16)) + b"\r\n0\r\n\r\n", bytes(range(16)), id="binary"),
]


@pytest.mark.parametrize(("data", "body"), CHUNKED_BODIES)
def test_chunked_whole_and_byte_by_byte_agree(data: bytes, body: bytes) -> None:
    after = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    whole = decode_all(data + after)
    assert whole == (body, len(data), True)
    assert byte_by_byte(data + after) == whole


def test_trailers_are_dropped_from_the_body() -> None:
    decoder = ChunkedDecoder()
    pieces, consumed = decoder.feed(b"2\r\nok\r\n0\r\nX-Sum: abc\r\n\r\n")
    assert consumed == 24
    assert b"".join(pieces) == b"ok"
    assert decoder.done


def test_feeding_after_the_end_consumes_nothing() -> None:
    decoder = ChunkedDecoder()
    decoder.feed(b"0\r\n\r\n")
    assert decoder.feed(b"more") == ([], 0)
    assert decoder.done


def test_an_unfinished_body_is_not_done() -> None:
    decoder = ChunkedDecoder()
    pieces, consumed = decoder.feed(b"5\r\nhel")
    assert (b"".join(pieces), consumed, decoder.done) == (b"hel", 6, False)
    pieces, consumed = decoder.feed(b"lo\r\n0\r\n")
    assert (b"".join(pieces), consumed, decoder.done) == (b"lo", 7, False)
    pieces, consumed = decoder.feed(b"\r\nNEXT")
    assert (pieces, consumed, decoder.done) == ([], 2, True)


CHUNKED_REFUSALS = [
    pytest.param(b"5\nhello\r\n0\r\n\r\n", id="bare-LF-after-size"),
    pytest.param(b"5\r\nhello\r\n0\n\r\n", id="bare-LF-after-last-size"),
    pytest.param(b"5;ext\nhello\r\n0\r\n\r\n", id="bare-LF-after-extension"),
    pytest.param(b"5\r\r\nhello\r\n0\r\n\r\n", id="bare-CR-in-size-line"),
    pytest.param(b"5\r\nhelloXX0\r\n\r\n", id="no-CRLF-after-data"),
    pytest.param(b"5\r\nhello\n0\r\n\r\n", id="bare-LF-after-data"),
    pytest.param(b"5\r\nhello\r0\r\n\r\n", id="bare-CR-after-data"),
    pytest.param(b"5\r\nhelloo\r\n0\r\n\r\n", id="data-longer-than-size"),
    pytest.param(b"g\r\nhello\r\n0\r\n\r\n", id="non-hex-size"),
    pytest.param(b"0x5\r\nhello\r\n0\r\n\r\n", id="0x-prefix"),
    pytest.param(b"-5\r\nhello\r\n0\r\n\r\n", id="negative-size"),
    pytest.param(b"+5\r\nhello\r\n0\r\n\r\n", id="plus-size"),
    pytest.param(b" 5\r\nhello\r\n0\r\n\r\n", id="space-before-size"),
    pytest.param(b"5 \r\nhello\r\n0\r\n\r\n", id="space-after-size-without-extension"),
    pytest.param(b"\r\nhello\r\n0\r\n\r\n", id="empty-size-line"),
    pytest.param(b"1" * 17 + b"\r\nhello\r\n0\r\n\r\n", id="17-hex-digits"),
    pytest.param(b"0" * 17 + b"\r\n\r\n", id="17-zeros"),
    pytest.param(b"5\r\nhello\r\n0\r\nX-Sum: 1\n\r\n", id="bare-LF-in-trailer"),
    pytest.param(b"5\r\nhello\r\n0\r\nno colon\r\n\r\n", id="trailer-without-colon"),
    pytest.param(b"5" * 5000, id="size-line-without-end"),
]


@pytest.mark.parametrize("data", CHUNKED_REFUSALS)
def test_chunked_refusals(data: bytes) -> None:
    for feed in (decode_all, byte_by_byte):
        with pytest.raises(HttpError) as caught:
            feed(data)
        assert caught.value.status == 400


def test_sixteen_hex_digits_are_the_limit() -> None:
    decoder = ChunkedDecoder()
    decoder.feed(b"0000000000000005\r\nhello\r\n")
    assert decoder.feed(b"0\r\n\r\n") == ([], 5)
    assert decoder.done


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            b"5;" + b"e" * (MAX_CHUNK_LINE_BYTES + 10) + b"\r\nhello\r\n0\r\n\r\n", id="long-extension"
        ),
        pytest.param(b"0\r\nX-Long: " + b"v" * (MAX_CHUNK_LINE_BYTES + 10) + b"\r\n\r\n", id="long-trailer"),
    ],
)
def test_chunk_line_limit_does_not_depend_on_how_the_bytes_arrive(data: bytes) -> None:
    """The same bytes get the same answer whether they come in one read or in many."""

    def outcome(feed: object) -> object:
        assert callable(feed)
        try:
            return feed(data)
        except HttpError as exc:
            return exc.status

    assert outcome(decode_all) == outcome(byte_by_byte)


def test_encode_chunk() -> None:
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"


# --- properties -------------------------------------------------------------------------------------


@st.composite
def chunked_messages(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(a body, a chunked encoding of it: odd but valid size lines, extensions, trailers)."""
    body = draw(st.binary(max_size=3000))
    encoded: list[bytes] = []
    position = 0
    while position < len(body):
        size = draw(st.integers(1, max(1, len(body) - position)))
        piece = body[position : position + size]
        position += size
        if draw(st.booleans()):
            encoded.append(encode_chunk(piece))
            continue
        digits = (b"%X" if draw(st.booleans()) else b"%x") % len(piece)
        digits = digits.rjust(draw(st.integers(len(digits), 16)), b"0")
        extension = draw(st.sampled_from([b"", b";a", b";a=b", b' ; q="x;y"', b"\t;z"]))
        encoded.append(digits + extension + b"\r\n" + piece + b"\r\n")
    trailers = draw(
        st.lists(st.sampled_from([b"X-Sum: 1\r\n", b"Expires: never\r\n", b"x:\r\n"]), max_size=3)
    )
    encoded.append(b"0\r\n" + b"".join(trailers) + b"\r\n" if trailers else LAST_CHUNK)
    return body, b"".join(encoded)


@settings(deadline=None, max_examples=300)
@given(message=chunked_messages(), after=st.binary(max_size=50), data=st.data())
def test_chunked_bodies_survive_any_cutting(
    message: tuple[bytes, bytes], after: bytes, data: st.DataObject
) -> None:
    body, encoded = message
    stream = encoded + after
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30), label="cuts")
    assert decode_all(stream, cuts) == (body, len(encoded), True)


@settings(deadline=None, max_examples=200)
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=200), max_size=10),
    after=st.binary(max_size=50),
    seed=st.integers(0, 2**32),
)
def test_encode_chunk_round_trips(pieces: list[bytes], after: bytes, seed: int) -> None:
    encoded = b"".join(encode_chunk(p) for p in pieces) + LAST_CHUNK
    rng = random.Random(seed)
    stream = encoded + after
    cuts = [rng.randrange(len(stream) + 1) for _ in range(rng.randrange(20))]
    assert decode_all(stream, cuts) == (b"".join(pieces), len(encoded), True)


@settings(deadline=None, max_examples=500)
@given(data=st.binary(max_size=400), chunk_size=st.integers(1, 40))
def test_random_bytes_to_the_decoder_raise_only_http_errors(data: bytes, chunk_size: int) -> None:
    with contextlib.suppress(HttpError):
        decode_all(data, list(range(chunk_size, len(data), chunk_size)))


CHUNK_NOISE = st.sampled_from(
    [
        b"0",
        b"5",
        b"a",
        b"F",
        b"ffffffffffffffff",
        b"\r\n",
        b"\n",
        b"\r",
        b";",
        b" ",
        b"hello",
        b":",
        b"X: y",
        b"\x00",
    ]
)


@settings(deadline=None, max_examples=500)
@given(parts=st.lists(CHUNK_NOISE, max_size=30), chunk_size=st.integers(1, 16))
def test_chunk_shaped_noise_raises_only_http_errors(parts: list[bytes], chunk_size: int) -> None:
    data = b"".join(parts)
    try:
        whole = decode_all(data)
    except HttpError:
        return
    # Accepted input decodes the same in pieces (for lines within the length limit).
    assert decode_all(data, list(range(chunk_size, len(data), chunk_size))) == whole


def check_request_invariants(request: RequestHead) -> None:
    assert not (request.chunked and request.content_length is not None)
    assert request.content_length is None or request.content_length >= 0
    assert len(request.names) == len(request.lines)
    for name, line in zip(request.names, request.lines, strict=True):
        assert b"\r" not in line
        assert b"\n" not in line
        assert line.lower().startswith(name + b":")
    if request.http11:
        assert request.host is not None
    assert request.target.startswith(b"/") or request.target == b"*"


def check_parsed_or_refused(data: bytes) -> None:
    """``data`` parses into a consistent head, or is refused with 400 or 505."""
    try:
        request = parse_request_head(data)
    except HttpError as exc:
        status = exc.status
    else:
        check_request_invariants(request)
        return
    assert status in (400, 505)


def as_head(data: bytes) -> bytes:
    """What the proxy would hand to the parser: up to the first blank line."""
    data += b"\r\n\r\n"
    return data[: find_head_end(data)]


@settings(deadline=None, max_examples=500)
@given(data=st.binary(max_size=300))
def test_random_bytes_to_parse_request_head_raise_only_http_errors(data: bytes) -> None:
    check_parsed_or_refused(as_head(data))


HEAD_NOISE = st.sampled_from(
    [
        b"GET",
        b"POST",
        b" ",
        b"/",
        b"/path",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"HTTP/2.0",
        b"\r\n",
        b"\n",
        b"\r",
        b"\t",
        b":",
        b",",
        b"Host",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Connection",
        b"Upgrade",
        b"chunked",
        b"identity",
        b"close",
        b"keep-alive",
        b"5",
        b"0",
        b"-",
        b"\x00",
        b"\x7f",
        b"\xff",
    ]
)


@settings(deadline=None, max_examples=1000)
@given(parts=st.lists(HEAD_NOISE, max_size=40))
def test_head_shaped_noise_raises_only_http_errors(parts: list[bytes]) -> None:
    check_parsed_or_refused(as_head(b"".join(parts)))


@st.composite
def valid_requests(draw: st.DrawFn) -> bytes:
    """Valid HTTP/1.1 request heads with a Host and a mix of ordinary and hop-by-hop headers."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH"]))
    target = draw(st.sampled_from([b"/", b"/a/b?c=d", b"/x%20y"]))
    lines = [b"Host: " + draw(st.sampled_from([b"a.example", b"web.localhost:8080", b"127.0.0.1"]))]
    optional = [
        b"Accept: */*",
        b"Connection: keep-alive",
        b"Connection: close",
        b"Connection: x-hop",
        b"X-Hop: 1",
        b"Keep-Alive: timeout=1",
        b"TE: trailers",
        b"Proxy-Authorization: Basic x",
        b"X-Forwarded-For: 192.0.2.1",
        b"X-Forwarded-Proto: https",
        b"X-Forwarded-Host: evil",
        b"Content-Type: application/json",
    ]
    lines += draw(st.lists(st.sampled_from(optional), max_size=8))
    framing = draw(st.sampled_from([None, b"Content-Length: 7", b"Transfer-Encoding: chunked"]))
    if framing is not None:
        lines.append(framing)
    draw(st.randoms()).shuffle(lines)
    return head(method + b" " + target + b" HTTP/1.1", *lines)


@settings(deadline=None, max_examples=300)
@given(data=valid_requests())
def test_forwarded_heads_are_valid_and_carry_only_what_they_should(data: bytes) -> None:
    request = parse_request_head(data)
    framing = (
        b"transfer-encoding: chunked"
        if request.chunked
        else (b"content-length: %d" % request.content_length if request.content_length is not None else None)
    )
    out = forwarded_request_head(request, client_ip="127.0.0.1", proto=b"http", body_framing=framing)
    again = parse_request_head(out)
    assert (again.method, again.target, again.host) == (request.method, request.target, request.host)
    assert (again.chunked, again.content_length) == (request.chunked, request.content_length)
    assert not again.close  # the proxy keeps its connection to the instance
    values = header_values(out)
    for name in (b"connection", b"keep-alive", b"te", b"proxy-authorization"):
        assert name not in values
    named = b"Connection: x-hop" in request.lines
    assert (b"x-hop" in values) is (not named and b"X-Hop: 1" in request.lines)
    assert values[b"x-forwarded-for"][-1].endswith(b"127.0.0.1")
    assert len(values[b"x-forwarded-for"]) == 1
    assert values[b"x-forwarded-proto"] == [b"http"]
    assert values[b"x-forwarded-host"] == [request.host]
