"""The pieces of ``outputshare`` that need no database: how a reader joins lines that
come from several sources, and the payloads' bound (#17). The managers themselves, on
PostgreSQL, are tested in ``test_several_managers_output.py``."""

from __future__ import annotations

import asyncio
import json

from herder.manager import outputshare
from herder.manager.output import LiveLine
from herder.manager.outputshare import Follow, LineOrder


def test_a_stream_sends_each_line_once_in_order_and_says_where_lines_are_missing() -> None:
    order = LineOrder()
    sent: list[LiveLine] = []
    for seq in (0, 1, 1, 0, 2, 6, 5, 7):  # a snapshot and forwarded lines overlapping, then a gap
        sent.extend(order.accept((9, 1, "stdout", f"line {seq}", seq)))
    assert [(line[2], line[3]) for line in sent] == [
        ("stdout", "line 0"),
        ("stdout", "line 1"),
        ("stdout", "line 2"),
        (outputshare.MARKER_STREAM, "[3 lines not shown here: more output than is sent to a reader]"),
        ("stdout", "line 6"),
        ("stdout", "line 7"),
    ]


async def test_a_follow_puts_forwarded_lines_after_the_snapshot_that_came_later() -> None:
    got: list[LiveLine] = []
    follow = Follow(1, expected={9}, sink=got.append)
    follow.gather()
    follow.lines([(9, n, 1, "stdout", f"line {n}") for n in (5, 6)])  # forwarded first
    follow.lines([(9, n, 1, "stdout", f"line {n}") for n in range(2, 6)])  # then the snapshot
    assert got == []  # gathered until the holder says its snapshot is complete
    follow.covered([[9, 0]])  # it keeps item 9's lines from seq 0: 0 and 1 fell off the bound
    assert follow.settled.is_set()
    assert [line[3] for line in got] == [
        "[2 lines not shown here: more output than is sent to a reader]",
        "line 2",
        "line 3",
        "line 4",
        "line 5",  # in both: once
        "line 6",
    ]
    follow.lines([(9, 7, 1, "stdout", "line 7")])
    assert got[-1][3] == "line 7"  # settled: at once
    follow.close()


async def test_a_follow_waits_for_its_holders_a_bounded_time() -> None:
    follow = Follow(1, expected={9}, sink=lambda _: None)
    follow.gather()
    async with asyncio.timeout(outputshare.SNAPSHOT_WAIT_S + 1):
        await follow.settled.wait()


def test_payloads_stay_under_postgresqls_bound_whatever_the_lines() -> None:
    entries = [(1, n, 1, "stdout", outputshare._cut("é\x01" * 40_000)) for n in range(30)]
    payloads = outputshare._payloads({"k": "l", "m": "m" * 16, "to": ["b" * 16] * 3, "t": 1}, "l", entries)
    assert len(payloads) > 1
    assert all(len(p.encode()) <= outputshare.PAYLOAD_BYTES for p in payloads)
    assert sum(len(json.loads(p)["l"]) for p in payloads) == len(entries)
