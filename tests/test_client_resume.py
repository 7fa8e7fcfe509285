"""The SDK keeps the events an agent sends while ``resume`` is still waiting for its answer.

The agent starts sending a session's buffered events as soon as the session is attached
again, and on a busy host they can reach the client before the answer to
``resume_session`` does (#16: docs/sessions.md's resume example then hung on a loaded
machine, the program's line and exit dropped as events of an unknown session).
"""

from __future__ import annotations

import asyncio
from typing import Any

from herder.client import Agent as Client
from herder.rpc import META, Method, Peer, Service

SESSION = "0b7adbb3d0089878"
EVENT_METHOD = "session.event"


def early_agent() -> Service:
    """The agent's ``resume_session`` as seen on a loaded host: the buffered events of the
    session go out before the answer does (a real service on loopback)."""
    svc = Service("herder-agent", "0")

    async def resume_session(session_id: str, resume_token: str, peer: Peer) -> dict[str, Any]:
        events = [
            ("proc.output", {"id": 1, "stream": "stdout", "line": "done"}),
            ("proc.exit", {"id": 1, "code": 7}),
        ]
        for seq, (kind, data) in enumerate(events, start=1):
            await peer.notify(EVENT_METHOD, {"session": session_id, "seq": seq, "kind": kind, "data": data})
        return {"id": session_id, "resume_token": resume_token, "product": "shell", "state": "open"}

    svc.registry.add(Method.of(resume_session, auth=False), target=META)
    return svc


async def test_events_before_the_answer_to_resume_are_kept() -> None:
    svc = early_agent()
    started = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        serving = tasks.create_task(svc.serve(port=0, started=started))
        await started.wait()
        async with Client(f"ws://127.0.0.1:{svc.ws_port}/rpc") as client:
            s = await client.resume(SESSION, "token")
            p = s.proc.get(1)
            lines = [line async for line in p.output]
            assert lines == ["done"]
            assert await asyncio.wait_for(p.wait(), 10) == 7
        serving.cancel()
