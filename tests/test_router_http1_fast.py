"""The router's fast path for heads (#19) reads every head exactly as the line-by-line rules.

``parse_request_head`` and ``parse_response_head`` first match a whole head in one
regular expression and look only at the headers the proxy acts on; what does not match
goes through the rules line by line. Both paths must give the same head or the same
refusal (status and message) for any input, and a head forwarded as received (``plain``),
or with its hop-by-hop lines cut out by position, must carry what the line-by-line
rewriting would have carried.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herder.agent.router.http1 import (
    HttpError,
    _forwarded_request_line_by_line,
    _forwarded_response_line_by_line,
    _parse_request_line_by_line,
    _parse_response_line_by_line,
    forwarded_request_head,
    forwarded_response_head,
    parse_request_head,
    parse_response_head,
)
from tests.test_router_http1 import HEAD_NOISE, as_head, head, header_values, valid_requests


def outcome(parse: object, data: bytes) -> object:
    """What ``parse(data)`` gives: the head's fields, or the refusal's status and message."""
    assert callable(parse)
    try:
        parsed = parse(data)
    except HttpError as exc:
        return ("refused", exc.status, str(exc))
    return dataclasses.asdict(parsed) | {"lines": parsed.lines, "names": parsed.names}


def same_request_reading(data: bytes) -> None:
    assert outcome(parse_request_head, data) == outcome(_parse_request_line_by_line, data)


def same_response_reading(data: bytes) -> None:
    assert outcome(parse_response_head, data) == outcome(_parse_response_line_by_line, data)


TRICKY_REQUESTS = [
    head(b"GET / HTTP/1.1", b"Host: a", b"X-Host: b", b"Hostname: c", b"host-x: d"),
    head(b"GET / HTTP/1.1", b"HOST:   a.example \t"),
    head(b"GET / HTTP/1.1", b"Host: a", b"hOsT: a"),
    head(b"GET / HTTP/1.1", b"Host:"),
    head(b"GET / HTTP/1.0"),
    head(b"GET / HTTP/1.0", b"Connection: keep-alive"),
    head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 007"),
    head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 0"),
    head(b"POST / HTTP/1.1", b"Host: a", b"content-length: 5", b"Content-Length: 5"),
    head(b"POST / HTTP/1.1", b"Host: a", b"Content-Lengthy: 5"),
    head(b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 5", b"Transfer-Encoding: chunked"),
    head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: CHUNKED "),
    head(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked", b"transfer-encoding: chunked"),
    head(b"GET / HTTP/1.1", b"Host: a", b"Connection: Upgrade", b"Upgrade: websocket"),
    head(b"GET / HTTP/1.1", b"Host: a", b"X-Forwarded-For: 192.0.2.1"),
    head(b"GET / HTTP/1.1", b"Host: a", b"TE: trailers", b"Tea: green"),
    head(b"GET / HTTP/1.1", b"Host: a", b"X: \x80\xff\tvalue"),
    head(b"GET / HTTP/1.1", b"Host: a", b"X: a", b" folded"),
    b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
]


@pytest.mark.parametrize("data", TRICKY_REQUESTS)
def test_tricky_requests_read_the_same_both_ways(data: bytes) -> None:
    same_request_reading(data)


def test_a_name_that_only_contains_host_is_not_the_host() -> None:
    request = parse_request_head(TRICKY_REQUESTS[0])
    assert request.host == b"a"
    assert request.plain


def test_the_host_value_keeps_its_case_without_the_whitespace_around_it() -> None:
    assert parse_request_head(TRICKY_REQUESTS[1]).host == b"a.example"


def test_a_content_length_with_leading_zeros_is_written_again_as_the_number() -> None:
    request = parse_request_head(TRICKY_REQUESTS[6])
    assert not request.plain
    out = forwarded_request_head(
        request, client_ip="127.0.0.1", proto=b"http", body_framing=b"content-length: 7"
    )
    assert header_values(out)[b"content-length"] == [b"7"]


def test_a_plain_request_is_forwarded_with_its_block_as_received() -> None:
    data = head(b"GET /a?b HTTP/1.1", b"Host: h", b"Accept: */*")
    request = parse_request_head(data)
    assert request.plain
    out = forwarded_request_head(request, client_ip="127.0.0.1", proto=b"http", body_framing=None)
    assert out == (
        b"GET /a?b HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n"
        b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: h\r\n\r\n"
    )


def test_a_plain_response_is_forwarded_as_received() -> None:
    data = head(b"HTTP/1.1 200 OK", b"Content-Type: text/plain", b"Content-Length: 13")
    response = parse_response_head(data)
    assert response.plain
    assert forwarded_response_head(response, body_framing=b"content-length: 13", close=False) is data


TRICKY_RESPONSES = [
    head(b"HTTP/1.1 200 OK", b"Content-Length: 13"),
    head(b"HTTP/1.1 200 OK", b"content-length:13 "),
    head(b"HTTP/1.1 200 OK", b"Content-Length: 013"),
    head(b"HTTP/1.1 200 OK", b"Content-Length: 1e3"),
    head(b"HTTP/1.1 200 OK", b"Content-Length: " + b"9" * 19),
    head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"content-length: 5"),
    head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Transfer-Encoding: chunked"),
    head(b"HTTP/1.1 200 OK", b"Content-Lengths: 5"),
    head(b"HTTP/1.0 200 OK"),
    head(b"HTTP/1.0 200 OK", b"Content-Length: 2"),
    head(b"HTTP/1.1 204"),
    head(b"HTTP/1.1 101 Switching Protocols", b"Connection: upgrade", b"Upgrade: websocket"),
    head(b"HTTP/1.1 200 OK", b"Keep-Alive: timeout=5", b"Content-Length: 1"),
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\n\r\n",
]


@pytest.mark.parametrize("data", TRICKY_RESPONSES)
def test_tricky_responses_read_the_same_both_ways(data: bytes) -> None:
    same_response_reading(data)


FORWARDED_RESPONSES = [
    *TRICKY_RESPONSES[:3],
    *TRICKY_RESPONSES[8:13],
    head(b"HTTP/1.1 200 OK", b"Connection: keep-alive", b"Keep-Alive: timeout=5", b"Content-Length: 2"),
    head(b"HTTP/1.1 200 OK", b"Connection: close, X-Hop", b"X-Hop: 1", b"Content-Type: text/plain"),
    head(b"HTTP/1.1 200 OK", b"Connection: close", b"Close: 1", b"Transfer-Encoding: chunked"),
    head(b"HTTP/1.0 200 OK", b"connection: Keep-Alive", b"TE: x", b"Trailer: y", b"Proxy-Authenticate: z"),
]


@pytest.mark.parametrize("data", FORWARDED_RESPONSES)
@pytest.mark.parametrize("close", [False, True])
def test_responses_are_forwarded_as_the_line_by_line_rewriting_would(data: bytes, close: bool) -> None:
    response = parse_response_head(data)
    length = response.content_length
    for framing in (None, b"transfer-encoding: chunked", b"content-length: %d" % (length or 0)):
        fast = forwarded_response_head(response, body_framing=framing, close=close)
        slow = _forwarded_response_line_by_line(response, body_framing=framing, close=close)
        assert fast.split(b"\r\n", 1)[0] == slow.split(b"\r\n", 1)[0]
        assert header_values(fast) == header_values(slow)


@settings(deadline=None, max_examples=500)
@given(data=st.binary(max_size=300))
def test_random_bytes_read_the_same_both_ways(data: bytes) -> None:
    same_request_reading(as_head(data))
    same_response_reading(as_head(data))


RESPONSE_NOISE = st.one_of(
    HEAD_NOISE, st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 204", b"Content-Length: 3"])
)


@settings(deadline=None, max_examples=1000)
@given(parts=st.lists(HEAD_NOISE, max_size=40))
def test_head_shaped_noise_reads_the_same_both_ways(parts: list[bytes]) -> None:
    same_request_reading(as_head(b"".join(parts)))


@settings(deadline=None, max_examples=1000)
@given(parts=st.lists(RESPONSE_NOISE, max_size=40))
def test_response_shaped_noise_reads_the_same_both_ways(parts: list[bytes]) -> None:
    same_response_reading(as_head(b"".join(parts)))


@settings(deadline=None, max_examples=300)
@given(data=valid_requests())
def test_valid_requests_read_and_forward_the_same_both_ways(data: bytes) -> None:
    same_request_reading(data)
    request = parse_request_head(data)
    framing = (
        b"transfer-encoding: chunked"
        if request.chunked
        else (b"content-length: %d" % request.content_length if request.content_length is not None else None)
    )
    fast = forwarded_request_head(request, client_ip="127.0.0.1", proto=b"http", body_framing=framing)
    slow = _forwarded_request_line_by_line(
        request, client_ip="127.0.0.1", proto=b"http", body_framing=framing, default_host=b"localhost"
    )
    assert fast.split(b"\r\n", 1)[0] == slow.split(b"\r\n", 1)[0]
    assert header_values(fast) == header_values(slow)


BROWSER = head(
    b"GET /app/main.js?v=17 HTTP/1.1",
    b"Host: pool.example.internal:8080",
    b"Connection: keep-alive",
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)",
    b"Accept: */*",
    b"Cookie: session=9f8e; theme=dark",
)


@pytest.mark.parametrize(
    "data",
    [
        BROWSER,
        head(b"GET /ws HTTP/1.1", b"Host: h", b"Connection: keep-alive, Upgrade", b"Upgrade: websocket"),
        head(
            b"POST / HTTP/1.1", b"Host: h", b"Transfer-Encoding: chunked", b"TE: trailers", b"Connection: TE"
        ),
        head(b"GET / HTTP/1.1", b"Host: h", b"Connection: close", b"Close: 1", b"X: 2"),
        head(b"GET / HTTP/1.1", b"Host: h", b"Connection: x-hop", b"X-Hop: 1"),
        head(b"GET / HTTP/1.1", b"Connection: host", b"Host: h"),
        head(b"GET / HTTP/1.1", b"Host: h", b"X-Forwarded-Proto: https", b"X-Forwarded-Host: evil"),
        head(b"GET / HTTP/1.1", b"Host: h", b"X-Forwarded-For: 192.0.2.1", b"Connection: keep-alive"),
        head(b"PUT / HTTP/1.1", b"Host: h", b"Content-Length: 03", b"Keep-Alive: 1"),
    ],
)
def test_requests_with_hop_by_hop_lines_are_forwarded_as_the_line_by_line_rewriting_would(
    data: bytes,
) -> None:
    request = parse_request_head(data)
    framing = (
        b"transfer-encoding: chunked"
        if request.chunked
        else (b"content-length: %d" % request.content_length if request.content_length is not None else None)
    )
    fast = forwarded_request_head(request, client_ip="10.0.0.1", proto=b"https", body_framing=framing)
    slow = _forwarded_request_line_by_line(
        request, client_ip="10.0.0.1", proto=b"https", body_framing=framing, default_host=b"localhost"
    )
    assert fast.split(b"\r\n", 1)[0] == slow.split(b"\r\n", 1)[0]
    assert header_values(fast) == header_values(slow)
    assert list(header_values(fast)) == list(header_values(slow))  # the same order too


def test_a_browsers_connection_line_is_cut_and_the_rest_kept_as_received() -> None:
    out = forwarded_request_head(
        parse_request_head(BROWSER), client_ip="10.0.0.1", proto=b"http", body_framing=None
    )
    assert out.startswith(
        b"GET /app/main.js?v=17 HTTP/1.1\r\nHost: pool.example.internal:8080\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: */*\r\nCookie: session=9f8e; theme=dark\r\n"
    )
    assert b"onnection" not in out
