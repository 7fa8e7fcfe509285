"""OutputLog: line splitting in any chunking, the ring, rotation, and slow subscribers."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from herder.agent.processes.logs import MAX_LINE_BYTES, OutputLog, RotatingFile, Stream


def make_log(tmp_path: Path, **kwargs: int) -> OutputLog:
    return OutputLog(tmp_path, "unit", **kwargs)


def test_lines_split_across_chunks(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    for chunk in (b"one\ntw", b"o\nthr", b"ee", b"\n", b"partial"):
        log.feed(Stream.STDOUT, chunk)
    assert [line for _, line in log.ring] == [b"one", b"two", b"three"]
    log.flush_partial()
    assert [line for _, line in log.ring][-1] == b"partial"
    log.close()
    assert log.path(Stream.STDOUT).read_bytes() == b"one\ntwo\nthree\npartial\n"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=20), st.data())
def test_any_chunking_gives_the_same_lines(tmp_path_factory, pieces: list[bytes], data) -> None:  # type: ignore[no-untyped-def]
    payload = b"\n".join(pieces) + b"\n"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(payload)), max_size=10)))
    log = make_log(tmp_path_factory.mktemp("chunks"))
    start = 0
    for cut in [*cuts, len(payload)]:
        log.feed(Stream.STDOUT, payload[start:cut])
        start = cut
    assert [line for _, line in log.ring] == payload.split(b"\n")[:-1][-1000:]
    log.close()


def test_streams_are_kept_apart_and_in_order(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    log.feed(Stream.STDOUT, b"o1\n")
    log.feed(Stream.STDERR, b"e1\n")
    log.feed(Stream.STDOUT, b"o2\n")
    log.note("restarting")
    assert list(log.ring) == [
        (Stream.STDOUT, b"o1"),
        (Stream.STDERR, b"e1"),
        (Stream.STDOUT, b"o2"),
        (Stream.HERDER, b"restarting"),
    ]
    log.close()
    assert log.path(Stream.STDERR).read_bytes() == b"e1\n[herder] restarting\n"


def test_very_long_line_is_cut(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    log.feed(Stream.STDOUT, b"x" * (MAX_LINE_BYTES * 2 + 10))
    assert [len(line) for _, line in log.ring] == [MAX_LINE_BYTES, MAX_LINE_BYTES]
    log.feed(Stream.STDOUT, b"\n")
    assert len(log.ring[-1][1]) == 10
    log.close()


def test_ring_keeps_the_newest(tmp_path: Path) -> None:
    log = make_log(tmp_path, ring_lines=3)
    log.feed(Stream.STDOUT, b"".join(b"%d\n" % i for i in range(10)))
    assert [line for _, line in log.ring] == [b"7", b"8", b"9"]
    assert log.lines_total == 10
    log.close()


def test_rotation(tmp_path: Path) -> None:
    path = tmp_path / "f.log"
    rf = RotatingFile(path, max_bytes=10, backups=2)
    for i in range(5):
        rf.write(b"%d23456789\n" % i)
    rf.close()
    assert not path.exists()  # created again by the next write
    assert (tmp_path / "f.log.1").read_bytes() == b"423456789\n"
    assert (tmp_path / "f.log.2").read_bytes() == b"323456789\n"
    assert not (tmp_path / "f.log.3").exists()


async def test_slow_subscriber_loses_oldest_and_is_told(tmp_path: Path) -> None:
    log = make_log(tmp_path, ring_lines=2, subscriber_lines=5)
    log.feed(Stream.STDOUT, b"a\nb\n")
    sub = log.subscribe()
    log.feed(Stream.STDOUT, b"".join(b"%d\n" % i for i in range(10)))
    batch = await sub.get_batch()
    assert batch is not None
    lines, dropped = batch
    assert [line for _, line in lines] == [b"5", b"6", b"7", b"8", b"9"]
    assert dropped == 7
    log.unsubscribe(sub)
    assert await sub.get_batch() is None
    log.close()
