"""The session channel's transport (issue 19): frames read into place, whatever the chunking."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from herder.agent.sessions.channel import LARGE_FRAME, SCRATCH_BYTES, open_channel
from herder.rpc import ConnectionLost
from herder.wire import PREFIX, ProtocolError

SIZES = [0, 1, 100, LARGE_FRAME - 5, LARGE_FRAME - 4, LARGE_FRAME, SCRATCH_BYTES + 3, 3 * 1024 * 1024 + 7]


async def pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.setblocking(False)
    return ours, theirs


async def test_frames_of_every_size_arrive_whole_both_ways() -> None:
    ours, theirs = await pair()
    a = await open_channel(ours)
    b = await open_channel(theirs)
    rnd = random.Random(19)
    payloads = [rnd.randbytes(n) for n in SIZES * 3]

    async def send_all() -> None:
        for p in payloads:
            await a.send(p)

    sender = asyncio.ensure_future(send_all())
    got = [bytes(await b.recv()) for _ in payloads]
    await sender
    assert got == payloads
    await b.send(b"back")
    assert await a.recv() == b"back"
    await a.close()
    with pytest.raises(ConnectionLost):
        await b.recv()
    await b.close()


async def test_any_chunking_of_the_stream_gives_the_same_frames() -> None:
    ours, theirs = await pair()
    ours.setblocking(False)
    channel = await open_channel(theirs)
    rnd = random.Random(5)
    payloads = [rnd.randbytes(rnd.choice(SIZES)) for _ in range(20)]
    stream = b"".join(PREFIX.pack(len(p)) + p for p in payloads)
    loop = asyncio.get_running_loop()

    async def trickle() -> None:
        pos = 0
        while pos < len(stream):
            step = rnd.choice([1, 3, 4, 5, 1000, 70_000, 300_000])
            await loop.sock_sendall(ours, stream[pos : pos + step])
            pos += step

    writer = asyncio.ensure_future(trickle())
    got = [bytes(await channel.recv()) for _ in payloads]
    await writer
    assert got == payloads
    ours.close()
    with pytest.raises(ConnectionLost):
        await channel.recv()
    await channel.close()


async def test_a_truncated_frame_and_a_frame_too_large_are_protocol_errors() -> None:
    for stream, limit in ((PREFIX.pack(10) + b"abc", 100), (PREFIX.pack(101), 100)):
        ours, theirs = await pair()
        channel = await open_channel(theirs, max_frame_size=limit)
        ours.sendall(stream)
        ours.close()
        with pytest.raises(ProtocolError):
            await asyncio.wait_for(channel.recv(), 10)
        await channel.close()
