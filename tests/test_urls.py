"""URL conversions between a daemon's HTTP and WebSocket forms (``herder.net``)."""

from __future__ import annotations

import pytest

from herder.net import base_url, http_url, rpc_url, ws_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8010", "ws://127.0.0.1:8010"),
        ("https://h.example:443/", "wss://h.example:443"),
        ("http://h/prefix//", "ws://h/prefix"),
        ("ws://h:1/rpc/", "ws://h:1/rpc"),
        ("tcp://h:1", "tcp://h:1"),
        ("unix:///run/herder.sock", "unix:///run/herder.sock"),
        ("not a url", "not a url"),
    ],
)
def test_ws_url(given: str, expected: str) -> None:
    assert ws_url(given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ws://127.0.0.1:8010/rpc", "http://127.0.0.1:8010/rpc"),
        ("wss://h.example/", "https://h.example"),
        ("HTTPS://h/", "https://h"),
        ("tcp://h:1", "tcp://h:1"),
    ],
)
def test_http_url(given: str, expected: str) -> None:
    assert http_url(given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8020", "http://127.0.0.1:8020"),
        ("http://127.0.0.1:8020/", "http://127.0.0.1:8020"),
        ("ws://127.0.0.1:8020/rpc", "http://127.0.0.1:8020"),
        ("wss://m.example/herder/rpc/", "https://m.example/herder"),
    ],
)
def test_base_url(given: str, expected: str) -> None:
    assert base_url(given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8020", "ws://127.0.0.1:8020/rpc"),
        ("http://127.0.0.1:8020/", "ws://127.0.0.1:8020/rpc"),
        ("https://m.example/herder", "wss://m.example/herder/rpc"),
        ("http://127.0.0.1:8020/rpc", "ws://127.0.0.1:8020/rpc"),  # never doubled
        ("ws://127.0.0.1:8020/rpc", "ws://127.0.0.1:8020/rpc"),
        ("ws://127.0.0.1:3636/custom/", "ws://127.0.0.1:3636/custom"),  # a ws URL is the endpoint
        ("tcp://127.0.0.1:9000", "tcp://127.0.0.1:9000"),
        ("unix:///run/herder.sock", "unix:///run/herder.sock"),
    ],
)
def test_rpc_url(given: str, expected: str) -> None:
    assert rpc_url(given) == expected


def test_the_forms_round_trip() -> None:
    for base in ("http://127.0.0.1:8010", "https://h.example:8443/prefix"):
        assert base_url(rpc_url(base)) == base
        assert http_url(ws_url(base)) == base
