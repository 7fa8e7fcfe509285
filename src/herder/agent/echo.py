"""The output of declared processes on the agent's stdout, as honcho and foreman show it.

``herder agent --procfile`` is a developer's foreground tool: the output of every
process type belongs in the terminal, one line per line, prefixed with the time and
the process (``12:00:01 web.1    | Listening on 5000``). The agent's own notes (exits,
restarts) come as ``[herder] ...`` lines of the process they concern. The lines still
go to the processes' log files and attach ring; this is one more reader of them.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, TextIO

from herder.agent.declared import is_declared
from herder.agent.processes.logs import Stream

if TYPE_CHECKING:
    from herder.agent.processes.logs import Subscriber
    from herder.agent.processes.supervisor import Supervisor, Unit

# Labels are padded to this width at least, so that the bars line up (honcho's look).
MIN_LABEL_CHARS = 8


class ProcessEcho:
    """Prints the lines of the supervisor's declared processes on ``out`` until cancelled."""

    def __init__(self, supervisor: Supervisor, out: TextIO) -> None:
        self._supervisor = supervisor
        self._out = out
        self._followed: set[Unit] = set()
        self._tg: asyncio.TaskGroup | None = None

    async def run(self) -> None:
        """Follow every declared process now and every one that starts later (a reload), until
        cancelled; a process's reader ends when the process is deleted."""
        never = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for unit in list(self._supervisor.units.values()):
                self._follow(unit)
            self._supervisor.watchers.append(self._follow)
            try:
                await never.wait()  # until cancelled: the readers go with the group
            finally:
                self._supervisor.watchers.remove(self._follow)
                self._tg = None

    def _follow(self, unit: Unit) -> None:
        """Start reading ``unit`` (a watcher: called on every change of every unit)."""
        if self._tg is None or unit in self._followed or unit.done or not is_declared(unit.spec):
            return
        self._followed.add(unit)
        sub = unit.output.subscribe(replay=True)  # what it said before we looked, too
        self._tg.create_task(self._pump(unit, sub), name=f"echo:{unit.slug}")

    async def _pump(self, unit: Unit, sub: Subscriber) -> None:
        label = unit.spec.node.ljust(MIN_LABEL_CHARS)
        try:
            while (batch := await sub.get_batch()) is not None:
                lines, dropped = batch
                stamp = time.strftime("%H:%M:%S")
                text = [f"{stamp} {label} | [herder] {dropped} lines dropped\n"] if dropped else []
                for stream, line in lines:
                    note = "[herder] " if stream is Stream.HERDER else ""
                    text.append(f"{stamp} {label} | {note}{line.decode('utf-8', 'replace')}\n")
                try:
                    self._out.write("".join(text))
                    self._out.flush()
                except OSError:
                    return  # stdout closed (a pipe's reader left): the processes run on, unseen
        finally:
            unit.output.unsubscribe(sub)
            self._followed.discard(unit)
