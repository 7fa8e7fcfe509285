"""Leased work runs only once its ledger line is written (the keeper goes by the ledger).

Until this change, the agent appended leased work to its ledger after ``Popen`` had
returned, when the program was already running: an agent stopped in between (SIGSTOP,
a hung loop) left work its keeper did not know, which ran on past its lease while the
manager handed the piece to another worker. Now a leased child waits at the gate
(``procs.GATE_ARGV``) until the record is written. The test looks at the child, in
``/proc``, at the moment the tracker records it: it must still be the gate's shell.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from herder.agent.limits import ChildSetup
from herder.agent.processes import procs
from herder.agent.processes.descendants import (
    AGENT_MARKER,
    LEASED_MARKER,
    TRACKER,
    UNIT_MARKER,
    read_ledger,
)
from tests.helpers import poll, wait_dead


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


@pytest.mark.parametrize("leased", [True, False])
async def test_a_leased_child_is_in_the_ledger_before_its_program_runs(tmp_path: Path, leased: bool) -> None:
    agent_id = f"test-{uuid.uuid4().hex[:8]}"
    ledger = tmp_path / "ledger"
    env = {"PATH": os.environ["PATH"], AGENT_MARKER: agent_id, UNIT_MARKER: f"u-{agent_id}"}
    if leased:
        env[LEASED_MARKER] = agent_id
    seen_at_record: list[list[str]] = []
    before = TRACKER.on_change

    def on_change() -> None:
        for pid, root in list(TRACKER.roots.items()):
            if root.agent_id == agent_id and not seen_at_record:
                seen_at_record.append(_cmdline(pid))
        if before is not None:
            before()

    TRACKER.set_ledger(agent_id, ledger)
    TRACKER.on_change = on_change
    try:
        child = procs.spawn(
            ["sleep", "30"], env=env, cwd=str(tmp_path), setup=ChildSetup(cwd=str(tmp_path), hold=leased)
        )
    finally:
        TRACKER.on_change = before
        TRACKER.drop_ledger(agent_id)
    try:
        assert seen_at_record, "the child was never recorded"
        if leased:
            assert seen_at_record[0][: len(procs.GATE_ARGV)] == list(procs.GATE_ARGV), seen_at_record
            assert any(ident[0] == child.pid and flag for ident, flag in read_ledger(ledger))
        else:  # nothing to wait for: no gate, no cost
            assert seen_at_record[0] == ["sleep", "30"], seen_at_record
        await poll(lambda: _cmdline(child.pid) == ["sleep", "30"])  # the gate opened: the program runs
    finally:
        os.kill(child.pid, signal.SIGKILL)
        assert await procs.wait_exit(child) == -signal.SIGKILL
        TRACKER.release(env[UNIT_MARKER])  # the tracker forgets the unit
        for fd in (child.stdout_fd, child.stderr_fd):
            os.close(fd)
        await wait_dead([child.pid], timeout_s=5)
