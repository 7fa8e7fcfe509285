"""Low-level process handling: spawn in a new group, await exit, kill trees.

Everything here is Linux-first and uses only the kernel's own facilities:

* every child gets its own session and process group (``setsid``), so a signal to the
  group reaches what it forked without reaching the agent;
* exit is awaited through a pidfd registered with the event loop, never a timer loop
  nor a thread per child;
* processes that left their group (``setsid``, double fork) are still found: by the
  process tree (``descendants``: every spawned child is a root whose descendants are
  walked and recorded, the agent adopts orphans as a child subreaper), which no process
  can leave; and by a marker in their environment (``HERDER_AGENT_ID`` and
  ``HERDER_UNIT``) that descendants inherit unless they clear it. ``sweep()`` uses both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from herder.agent.limits import ChildSetup, SetupError
from herder.agent.processes import descendants
from herder.agent.processes.descendants import AGENT_MARKER, LEASED_MARKER, TRACKER, UNIT_MARKER
from herder.agent.processes.usage import read_first

log = logging.getLogger(__name__)

__all__ = ["AGENT_MARKER", "LEASED_MARKER", "UNIT_MARKER", "Child", "spawn", "sweep", "sweep_async"]

# A sweep kills what it finds, then looks again, because a process may fork between
# the scan and the kill. Ten rounds covers any tree that is not a fork bomb; a fork bomb
# is out of scope (use a pids cgroup for that).
SWEEP_ROUNDS = 10

# A sweep after a short-lived process examines only the pids allocated since it was
# spawned (see ``_pid_window``), if the kernel cannot have handed out every pid since:
# that takes pid_max forks, and no machine forks faster than this.
MAX_FORKS_PER_S = 100_000

# A process caught in the middle of exec() shows an empty environment for a moment (the
# kernel has installed its new memory but not yet written its arguments and environment
# into it). A sweep that reads an empty one waits this long and looks again; a process
# that still shows none after this many looks was started without one (``env -i``).
# The wait doubles from EXEC_SETTLE_S up to 8 times it; a sweep waits at most
# EXEC_SETTLE_WAITS times in all, however many such processes come and go.
EXEC_SETTLE_S = 0.001
EXEC_SETTLE_LOOKS = 4
EXEC_SETTLE_WAITS = 8

# A root registered without a marker (a session's host) has it read from its
# environment this long after its spawn, and at every walk after that.
RESOLVE_AFTER_S = 0.05

PF_KTHREAD = 0x00200000  # the kernel's flag for its own threads, in /proc/<pid>/stat

# A child with rlimits or a cgroup starts as this shell, which waits on its stdin for
# the agent's word (its limits are set by then), puts /dev/null there and execs the
# program: read and exec are the shell's builtins, so nothing else runs before the
# program. Without the word (the agent died first) it exits 125 and runs nothing.
GATE_WORD = b"go\n"
GATE_ARGV = ("/bin/sh", "-c", 'read -r w; [ "$w" = go ] || exit 125; exec "$@" </dev/null', "herder-gate")


@dataclass(slots=True)
class Child:
    """One spawned process: its pid, its pidfd and the read ends of its output pipes."""

    popen: subprocess.Popen[bytes]
    pidfd: int
    stdout_fd: int
    stderr_fd: int
    spawned: float = field(default_factory=time.monotonic)  # bounds the pids a sweep examines
    setup: ChildSetup | None = None  # its limits: the cgroup goes when it has exited
    # (CPU seconds, resident bytes) read at its spawn, with its start time (usage.read_first).
    first_usage: tuple[float, int] | None = None

    def __post_init__(self) -> None:
        # Its exit status is its owner's (wait_exit); what it starts is tracked. A child
        # spawned elsewhere (a session's host) gets its marker read from its environment
        # once its exec() is surely over.
        if self.popen.pid not in TRACKER.roots:
            TRACKER.add_root(self.popen.pid)
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_later(RESOLVE_AFTER_S, TRACKER.resolve)

    @property
    def pid(self) -> int:
        return self.popen.pid


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    setup: ChildSetup | None = None,
) -> Child:
    """Start ``argv`` in a new session with piped, non-blocking stdout and stderr.

    The child's stdin is ``/dev/null`` and it inherits no other descriptor. ``setup``
    (``herder.agent.limits``): its umask is applied by subprocess's C code between
    fork and exec, its user and group by ``setpriv`` in front of the program; its
    rlimits and cgroup while the child waits at the gate (``GATE_ARGV``), so they hold
    from the program's first instruction.

    Raises:
        OSError: the program could not be executed (missing, not executable, bad cwd),
            or a limit could not be set (``SetupError``; the child is killed). Behind
            the gate or setpriv, a missing program is their exit 127 instead.
    """
    gated = setup is not None and setup.gated
    gate_r = gate_w = -1
    if gated:
        gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
    # The output pipes are made here, not by Popen: its PIPE wraps each read end in a
    # buffered file object that would be dup'ed and closed again at once (nothing may
    # buffer in Python), and DEVNULL opens /dev/null for each child.
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    try:
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
    except BaseException:
        _close(out_r, out_w)
        raise
    try:
        popen = subprocess.Popen(
            setup.argv(list(argv), GATE_ARGV) if setup is not None else list(argv),
            stdin=gate_r if gated else _devnull(),
            stdout=out_w,
            stderr=err_w,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            **(setup.popen_kwargs() if setup is not None else {}),
        )
    except BaseException:
        _close(out_r, err_r)
        if gated:
            os.close(gate_w)
        if setup is not None:
            setup.release()  # its cgroup, made for a child that never came
        raise
    finally:
        _close(out_w, err_w)
        if gated:
            os.close(gate_r)
    if gated:
        assert setup is not None
        # Known (and, for leased work, in the ledger) before the program runs: an agent
        # stopped from here on leaves its keeper a record of anything that runs.
        TRACKER.add_root(popen.pid, env)
        try:
            setup.apply(popen.pid)
        except OSError as exc:
            os.close(gate_w)
            _close(out_r, err_r)
            _kill_at_gate(popen)
            setup.release()
            raise SetupError(str(exc)) from exc
        try:
            os.write(gate_w, GATE_WORD)  # the gate opens: the shell execs the program
        finally:
            os.close(gate_w)
    os.set_blocking(out_r, False)
    os.set_blocking(err_r, False)
    pidfd = os.pidfd_open(popen.pid)
    first = None
    if not gated:
        # One read of its /proc stat file for the tracker and the unit's first figures.
        first = read_first(popen.pid)
        TRACKER.add_root(popen.pid, env, start=first[2] if first is not None else None)
    return Child(
        popen=popen,
        pidfd=pidfd,
        stdout_fd=out_r,
        stderr_fd=err_r,
        setup=setup,
        first_usage=first[:2] if first is not None else None,
    )


_DEVNULL = -1  # /dev/null, opened once (close-on-exec): every child's stdin


def _devnull() -> int:
    """The agent's one descriptor of /dev/null, opened on first use."""
    global _DEVNULL
    if _DEVNULL < 0:
        _DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _DEVNULL


def _close(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _kill_at_gate(popen: subprocess.Popen[bytes]) -> None:
    """Kill and reap a child still waiting at the gate (it has run nothing of its own)."""
    with contextlib.suppress(ProcessLookupError):
        popen.kill()
    popen.wait()  # at the gate, SIGKILL ends it at once


async def wait_exit(child: Child) -> int:
    """Wait until ``child`` ends, reap it and return its status as ``Popen.returncode``.

    A negative value is the signal that killed it. The pidfd is closed on return.
    """
    loop = asyncio.get_running_loop()
    exited = loop.create_future()

    def on_readable() -> None:
        if not exited.done():
            exited.set_result(None)

    fd = child.pidfd
    loop.add_reader(fd, on_readable)
    try:
        await exited
    finally:
        if child.pidfd == fd:  # not closed meanwhile by a cancelled owner
            loop.remove_reader(fd)
    os.close(fd)
    child.pidfd = -1
    _, status = os.waitpid(child.pid, 0)  # noqa: ASYNC222 - the pidfd said it exited: no wait
    TRACKER.disown(child.pid)
    if child.setup is not None:
        child.setup.release()
    code = os.waitstatus_to_exitcode(status)
    child.popen.returncode = code  # tell Popen it was reaped, so it never waits again
    return code


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to process group ``pgid``; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("not allowed to signal process group %d", pgid)
        return False
    return True


@dataclass(slots=True)
class Scan:
    """What one look through ``/proc`` found: marked pids, and pids showing no environment."""

    marked: list[int] = field(default_factory=list)
    blank: list[int] = field(default_factory=list)


def _scan_marked(marker: bytes, window: tuple[int, int] | None = None) -> Scan:
    """Find the pids whose initial environment holds exactly ``marker`` (``NAME=value``).

    With a ``window`` (first, last), only pids in it are examined. A live user process
    whose environment reads empty goes into ``blank``: it may be in the middle of
    exec(), and the caller should look at it again.
    """
    needle = b"\0" + marker + b"\0"
    me = os.getpid()
    scan = Scan()
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            if pid == me or (window is not None and not window[0] <= pid <= window[1]):
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    environ = fh.read()
            except OSError:  # gone, or not ours: neither is ours to kill
                continue
            if not environ:
                if not _never_has_environment(pid):
                    scan.blank.append(pid)
            elif needle in b"\0" + environ + b"\0":
                scan.marked.append(pid)
    return scan


def _never_has_environment(pid: int) -> bool:
    """True for a kernel thread or a zombie (or a pid that is gone): none will show one."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        state, flags = fields[0], int(fields[6])
    except (OSError, IndexError, ValueError):
        return True
    return state in (b"Z", b"X") or bool(flags & PF_KTHREAD)


def _read_int(path: str) -> int | None:
    try:
        with open(path, "rb") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return None


def _pid_window(since: Child | None) -> tuple[int, int] | None:
    """The pids the descendants of ``since`` can have, or None when any pid can be one.

    Pids are handed out in increasing order, wrapping at ``pid_max``: everything forked
    after ``since`` (its descendants included) has a pid between its own and the last
    one handed out, unless the counter wrapped meanwhile. It wrapped if the last pid is
    below ``since``'s, or may have come round again if ``since`` is older than pid_max
    forks at ``MAX_FORKS_PER_S``. Either way: None, and the sweep looks at every pid.
    """
    if since is None:
        return None
    pid_max = _read_int("/proc/sys/kernel/pid_max")
    last = _read_int("/proc/sys/kernel/ns_last_pid")
    if pid_max is None or last is None or last < since.pid:
        return None
    if time.monotonic() - since.spawned >= pid_max / MAX_FORKS_PER_S:
        return None
    return (since.pid, last)


def sweep(name: str, value: str, since: Child | None = None) -> int:
    """SIGKILL what the unit (or agent) ``value`` started, and every process whose
    environment holds ``name=value``; return how many.

    The tree (``descendants.TRACKER``) finds what a unit started however it hid; the
    environment finds descendants that left the tree before any walk saw them, if they
    kept their environment (a new session or a double fork does not change it).
    ``since``: the process they all descend from, if it is known; a short-lived one
    lets the sweep skip the pids it cannot be their parent of (``_pid_window``).
    It may pause a few milliseconds for a process caught inside exec(); in the event
    loop, ``sweep_async`` waits those out without blocking it.
    """
    killed = _release(name, value)
    sweeper = _Sweep(name, value, since)
    while (pause := sweeper.step()) is not None:
        time.sleep(pause)
    return killed + sweeper.killed


async def sweep_async(name: str, value: str, since: Child | None = None) -> int:
    """``sweep``, whose pauses for a process inside exec() let the event loop run."""
    killed = _release(name, value)
    sweeper = _Sweep(name, value, since)
    # Polling is the point here: nothing signals when another process leaves exec().
    while (pause := sweeper.step()) is not None:  # noqa: ASYNC110
        await asyncio.sleep(pause)
    return killed + sweeper.killed


def record(unit_marker: str) -> None:
    """Walk the unit's tree now and record what it started (before it is stopped:
    what its main process started is still attached to the tree)."""
    TRACKER.refresh(unit_marker)


def _release(name: str, value: str) -> int:
    """Kill by the tree first (what a unit started, however it hid), then by the marker."""
    if name == UNIT_MARKER:
        return TRACKER.release(value)
    if name == AGENT_MARKER:
        return TRACKER.release_agent(value)
    return 0


class _Sweep:
    """The sweep, one look at a time, so that its pauses can be slept or awaited.

    Kills what it finds and looks again, up to ``SWEEP_ROUNDS`` times. When it finds
    nothing but a process shows no environment (``Scan.blank``), it pauses and looks
    again, doubling the pause, up to ``EXEC_SETTLE_WAITS`` pauses in all.
    """

    def __init__(self, name: str, value: str, since: Child | None) -> None:
        self.killed = 0
        self._marker = f"{name}={value}".encode()
        self._since = since
        self._kill_rounds = 0
        self._waits = 0
        self._blank_looks: dict[int, int] = {}

    def step(self) -> float | None:
        """Look (and kill) until done (None) or until a pause is due (its length in s)."""
        while self._kill_rounds < SWEEP_ROUNDS:
            scan = _scan_marked(self._marker, _pid_window(self._since))
            if scan.marked:
                self._kill_rounds += 1
                self._kill(scan.marked)
                continue
            for pid in scan.blank:
                self._blank_looks[pid] = self._blank_looks.get(pid, 0) + 1
            unsettled = any(self._blank_looks[pid] < EXEC_SETTLE_LOOKS for pid in scan.blank)
            if not unsettled or self._waits >= EXEC_SETTLE_WAITS:
                break
            # One of them may be ours, between two programs: it shows its environment
            # again as soon as it gets the CPU. Bounded, and only while one exists.
            pause: float = EXEC_SETTLE_S * 2 ** min(self._waits, 3)
            self._waits += 1
            return pause
        return None

    def _kill(self, pids: list[int]) -> None:
        """Kill each marked process with what it started (which may have shed the marker)."""
        idents = []
        for pid in pids:
            start = descendants.start_time(pid)
            if start is not None:
                idents.append((pid, start))
        self.killed += descendants.kill_trees(idents)


def drain(fd: int, max_bytes: int = 1 << 20) -> bytes:
    """Read what is buffered in a non-blocking pipe right now, up to ``max_bytes``."""
    chunks: list[bytes] = []
    total = 0
    while total < max_bytes:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            break
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)
