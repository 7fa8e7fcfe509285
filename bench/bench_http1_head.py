"""Parsing one request head: the router's own parser against httptools (a callback parser).

    .venv/bin/python bench/bench_http1_head.py

Each figure is microseconds per head, the best of ``REPEATS`` timeit runs (the least
disturbed by other load), for two heads a proxy sees: a short one (curl: 85 bytes, three
headers) and a browser's (504 bytes, eleven headers). Four ways are timed on the same bytes:

* ``herder``: ``find_head_end`` + ``parse_request_head``, what the router runs per request
  (framing checks and the Host rule included);
* ``httptools``: a fresh ``HttpRequestParser`` fed the head, callbacks collecting the URL
  and the header names and values (what a callback parser costs at its least);
* ``httptools, kept parser``: one parser fed head after head (a keep-alive connection);
* ``httptools + framing``: a fresh parser as above, then the header lines rebuilt and
  herder's ``_framing`` checks run on them: the least a proxy on httptools would do.
"""

from __future__ import annotations

import sys
import timeit

import httptools

from herder.agent.router.http1 import _framing, find_head_end, parse_request_head

REPEATS = 7
NUMBER = 20_000

SHORT = b"GET /items/42 HTTP/1.1\r\nHost: 127.0.0.1:8010\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
BROWSER = (
    b"GET /app/static/js/main.3f9c2a.js?v=17 HTTP/1.1\r\n"
    b"Host: pool.example.internal:8080\r\n"
    b"Connection: keep-alive\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/120.0.0.0 Safari/537.36\r\n"
    b"Accept: */*\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"Sec-Fetch-Mode: no-cors\r\n"
    b"Sec-Fetch-Dest: script\r\n"
    b"Referer: http://pool.example.internal:8080/app/\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-GB,en;q=0.9,fr;q=0.8\r\n"
    b"Cookie: session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; theme=dark\r\n"
    b"\r\n"
)


class Collect:
    """httptools callbacks that keep what a proxy needs: the URL and the headers."""

    __slots__ = ("done", "headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.done = True


def herder(head: bytes) -> None:
    parse_request_head(head[: find_head_end(head)])


def httptools_fresh(head: bytes) -> None:
    sink = Collect()
    httptools.HttpRequestParser(sink).feed_data(head)


def httptools_framing(head: bytes) -> None:
    sink = Collect()
    httptools.HttpRequestParser(sink).feed_data(head)
    _framing([(name.lower(), value.strip(b" \t")) for name, value in sink.headers])


def best_us(func: object, head: bytes) -> float:
    timer = timeit.Timer(lambda: func(head))  # type: ignore[operator]
    return min(timer.repeat(REPEATS, NUMBER)) / NUMBER * 1e6


def kept_parser_us(head: bytes) -> float:
    sink = Collect()
    parser = httptools.HttpRequestParser(sink)

    def once() -> None:
        sink.headers.clear()
        sink.url = b""
        parser.feed_data(head)

    timer = timeit.Timer(once)
    return min(timer.repeat(REPEATS, NUMBER)) / NUMBER * 1e6


def main() -> None:
    version = sys.version.split()[0]
    print(f"python {version}, httptools {httptools.__version__}; µs per head, best of {REPEATS}")
    print(f"{'head':<10} {'bytes':>5} {'herder':>8} {'httptools':>10} {'kept':>8} {'+framing':>9}")
    for name, head in (("short", SHORT), ("browser", BROWSER)):
        figures = (
            best_us(herder, head),
            best_us(httptools_fresh, head),
            kept_parser_us(head),
            best_us(httptools_framing, head),
        )
        cells = "".join(f"{f:>{w}.2f}" for f, w in zip(figures, (9, 11, 9, 10), strict=True))
        print(f"{name:<10} {len(head):>5}{cells}")


if __name__ == "__main__":
    main()
