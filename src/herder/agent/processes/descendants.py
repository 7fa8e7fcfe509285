"""Descendants the agent finds by the process tree, which no process can leave.

The environment marker (``procs.sweep``) is inherited, but a process can clear its
environment (``env -i``); a process group or session can be left (``setsid``). What a
process cannot shed is its place in the tree: its parent, or, once its parent died,
the nearest *child subreaper* above it. So:

* The agent that owns its process (``herder agent``) makes itself a child subreaper
  (``become_subreaper``): an orphan among its descendants is re-parented to the agent
  instead of to init, and is seen among the agent's children (``adopted``).
* Each unit's main process is a *root*, registered with its unit's marker when it is
  spawned. A walk of ``/proc/<pid>/task/*/children`` from every root finds what it
  started, however it detached; each find is *recorded* (pid and start time, so that a
  reused pid is never taken for it) under the root's marker. The agent walks on a
  timer, and before it stops a unit, so that what a unit started is recorded while it
  is still attached to the tree.
* An adopted orphan that was not recorded (its parent died before a walk saw it) is
  charged to every unit that could have started it: the roots not yet swept that
  started before it. It is killed when the last of those units is swept: never before
  its own unit ends, never left after it.
* The records are written to a *ledger* in the data dir (``pid start flag`` lines,
  ``L`` for leased work) that outlives the agent: its keeper kills what the ledger
  names when the agent dies (or, for leased work, when it hangs), and the next agent
  on the data dir does the same at start, for anything the keeper missed.

Without a subreaper (an agent embedded in another program), the walks still find
whatever is attached to the tree, and what they recorded is killed by pid: only an
orphan whose parent died before any walk saw it goes to init unseen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
# The environment variables the tracker reads at spawn (procs' markers; worker's lease).
UNIT_MARKER = "HERDER_UNIT"
AGENT_MARKER = "HERDER_AGENT_ID"
LEASED_MARKER = "HERDER_LEASED"
# Freeze-then-kill looks again for what forked between two looks; bounded like a sweep.
KILL_ROUNDS = 10
# A child of the agent that no one registered is an orphan only once it has been seen so
# for this long: the agent's own commands (a build's installer) are children too, and
# are registered (``own``) a moment after their fork, which a walk may fall between.
ADOPT_GRACE_S = 0.5

Ident = tuple[int, int]  # (pid, start time in clock ticks since boot): a process, never its reuse


def become_subreaper() -> bool:
    """Make this process a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER, 1)``)."""
    import ctypes  # only where it is used

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        log.warning("cannot become a child subreaper (%s): orphans go to init", exc)
        return False
    return True


def stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of ``pid``, or None if it is gone."""
    found = _stat(pid)
    return found[:3] if found is not None else None


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, start time, threads) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[1]), int(fields[19]), int(fields[17])
    except (OSError, IndexError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    found = _stat(pid)
    return found[2] if found is not None else None


def alive(ident: Ident) -> bool:
    """True while the process ``ident`` names runs (not a zombie, not a reused pid)."""
    found = _stat(ident[0])
    return found is not None and found[2] == ident[1] and found[0] not in ("Z", "X")


def children(pid: int, threads: int = 0) -> list[int]:
    """The children of ``pid``, every thread's (a thread may fork).

    ``threads``: its thread count if known; a single-threaded process has one list to
    read (most do: the walk of every unit on a timer is mostly this one read each).
    """
    found: list[int] = []
    if threads == 1:
        tasks = [str(pid)]
    else:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as fh:
                found.extend(int(p) for p in fh.read().split())
        except (OSError, ValueError):
            continue
    return found


def _live_children(ident: Ident) -> list[int] | None:
    """The children of the process ``ident``, or None if it no longer runs."""
    found = _stat(ident[0])
    if found is None or found[2] != ident[1] or found[0] in ("Z", "X"):
        return None
    return children(ident[0], found[3])


def _descendants(idents: list[Ident], below: list[int] | None = None) -> list[Ident]:
    """Every live descendant of the live processes ``idents`` (not themselves).

    ``below``: their children, if the caller read them already.
    """
    found: list[Ident] = []
    todo: list[int] = list(below or ())
    if below is None:
        for ident in idents:
            todo.extend(_live_children(ident) or ())
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        info = _stat(pid)
        if info is not None:
            found.append((pid, info[2]))
            todo.extend(children(pid, info[3]))
    return found


def _environ_marker(pid: int) -> tuple[str, str, bool] | None:
    """(unit marker, agent id, leased) from a live process's environment, if it has one."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            entries = fh.read().split(b"\0")
    except OSError:
        return None
    env = dict(e.decode(errors="replace").split("=", 1) for e in entries if b"=" in e)
    return _marker_of(env)


def _marker_of(env: Mapping[str, str]) -> tuple[str, str, bool] | None:
    unit, agent = env.get(UNIT_MARKER), env.get(AGENT_MARKER)
    if not unit or not agent:
        return None
    return unit, agent, env.get(LEASED_MARKER) == agent


@dataclass(slots=True)
class Root:
    """A unit's main process (or a session's host): what it starts is the unit's."""

    ident: Ident
    marker: str | None  # None until read from its environment (a session's host)
    agent_id: str | None
    leased: bool = False
    # The start time (clock ticks since boot) from which it may start anything: a spare
    # session host, started ahead and idle until a session takes it, starts nothing
    # before that (``idle``/``taken``), so it is no candidate for an older orphan.
    busy_from: int | None = None


# Later than any start time: an idle root's ``busy_from`` until it is taken.
_NEVER = 1 << 62


def _ticks_now() -> int:
    """Now, in the unit of ``/proc/<pid>/stat``'s start time (clock ticks since boot)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


@dataclass(slots=True)
class Orphan:
    """An adopted process no walk saw attached: charged to every unit that may own it.

    ``candidates`` are the pids of the roots that may have started it; the processes it
    started share the same ``Orphan`` (and so the same charge).
    """

    candidates: set[int]
    agent_ids: set[str] = field(default_factory=set)
    leased: bool = False


class Tracker:
    """Roots, recorded descendants and adopted orphans of this process; thread-safe.

    One per process (``TRACKER``): ``procs.spawn`` registers roots, ``procs.sweep``
    kills by marker, and sessions' sweep (run in a thread) goes through the same lock.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        # Orders the ledger's writes: an append never lands in a file a rewrite replaces
        # with a snapshot taken before the appended root was registered.
        self._ledger_io = threading.Lock()
        self.subreaper = False
        self.roots: dict[int, Root] = {}
        self.owned: set[int] = set()  # direct children whose exit status someone awaits
        self.known: dict[Ident, tuple[str, str, bool]] = {}  # -> (marker, agent id, leased)
        self.orphans: dict[Ident, Orphan] = {}
        # Unregistered children of this process, and when a walk first saw them: not yet
        # taken for orphans (ADOPT_GRACE_S).
        self.unowned: dict[Ident, float] = {}
        self.ledgers: dict[str, Path] = {}
        # Told of every change, to have the ledger written (batched by the agent).
        self.on_change: Callable[[], None] | None = None
        self._dirty = False  # the ledger is to be rewritten whole (something left, or moved)
        # Roots registered since the last write, to be appended to their agent's ledger:
        # a burst of spawns (200 a second) then costs an append per write, not a rewrite
        # of every line (the rewrite's rename is what costs, on ext4).
        self._appends: dict[str, list[str]] = {}

    # -- registration -------------------------------------------------------------------

    def own(self, pid: int) -> None:
        """``pid`` is a child whose exit status its spawner awaits: never reap it."""
        with self._lock:
            self.owned.add(pid)

    def disown(self, pid: int) -> None:
        with self._lock:
            self.owned.discard(pid)

    def add_root(self, pid: int, env: Mapping[str, str] | None = None, start: int | None = None) -> None:
        """Register a spawned child; its marker comes from ``env`` or, later, its environment.

        ``start``: its start time, if the caller read it from ``/proc`` already.
        """
        if start is None:
            start = start_time(pid)
        if start is None:
            return
        marked = _marker_of(env) if env is not None else None
        with self._lock:
            self.owned.add(pid)
            if marked is None:
                self.roots[pid] = Root((pid, start), None, None)
                self._changed()  # not in any ledger until its marker is read (resolve)
            else:
                self.roots[pid] = Root((pid, start), marked[0], marked[1], marked[2])
            ledger = self.ledgers.get(marked[1]) if marked is not None and marked[2] else None
            if marked is not None and ledger is None and marked[1] in self.ledgers:
                self._appends.setdefault(marked[1], []).append(_line((pid, start), False))
                self._notify()
        if ledger is not None:
            # Leased work must be in the ledger at once (the watchdog goes by it alone): one
            # appended line, not a rewrite (a rewrite per piece of work cost the manager's
            # benchmark a fifth of its tasks/s); the next batched rewrite compacts it.
            with self._ledger_io:
                append_ledger(ledger, _line((pid, start), True))
            self._notify()  # recorded: whoever follows the tracker hears it, as for any root

    def set_ledger(self, agent_id: str, path: Path) -> None:
        with self._lock:
            self.ledgers[agent_id] = path
            self._changed()

    def drop_ledger(self, agent_id: str) -> None:
        with self._lock:
            self.ledgers.pop(agent_id, None)

    def _changed(self) -> None:
        self._dirty = True
        self._notify()

    def _notify(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- walking ------------------------------------------------------------------------

    def refresh(self, marker: str | None = None) -> list[Ident]:
        """Walk the tree from the roots (of ``marker``, or all) and record what hangs below.

        Notes adopted orphans too. Returns the orphans whose every candidate root is gone:
        theirs to kill.
        """
        with self._lock:
            self._resolve_roots()
            before = len(self.known) + len(self.orphans)
            ended: list[int] = []
            for root in list(self.roots.values()):
                if root.marker is None or root.agent_id is None:
                    if marker is None and not alive(root.ident):
                        ended.append(root.ident[0])
                    continue
                owner = (root.marker, root.agent_id, root.leased)
                if (marker is None or root.marker == marker) and not self._record_below(root.ident, owner):
                    ended.append(root.ident[0])
            for ident, owner in list(self.known.items()):
                if marker is None or owner[0] == marker:
                    self._record_below(ident, owner)
            if self.subreaper:
                self._adopt()
            for ident, orphan in list(self.orphans.items()):
                self._charge_below(ident, orphan)
            self._prune(marker, ended)
            if len(self.known) + len(self.orphans) != before:
                self._changed()
            return [i for i, o in self.orphans.items() if not o.candidates]

    def idle(self, pid: int) -> None:
        """The root ``pid`` starts nothing until ``taken``: no orphan is charged to it meanwhile.

        Why: an orphan no walk saw attached is charged to every root alive when it
        started, and dies when the last of them is swept. A spare session host, waiting
        for a session, would be one of those for every orphan of every other session, and
        keep each alive until the spare itself went (an escapee outliving its session's
        close, as tests/regress/test_env_cleared_descendants_are_killed.py found).
        """
        with self._lock:
            root = self.roots.get(pid)
            if root is not None:
                root.busy_from = _NEVER

    def taken(self, pid: int) -> None:
        """The idle root ``pid`` may start things from now on (a tick early, to be sure)."""
        with self._lock:
            root = self.roots.get(pid)
            if root is not None:
                root.busy_from = max(0, _ticks_now() - 1)

    def resolve(self) -> None:
        """Read the markers of roots registered without one (a session's host), now."""
        with self._lock:
            self._resolve_roots()

    def _resolve_roots(self) -> None:
        for pid, root in list(self.roots.items()):
            if root.marker is None and alive(root.ident):
                marked = _environ_marker(pid)
                if marked is not None:
                    root.marker, root.agent_id, root.leased = marked
                    self._changed()

    def _record_below(self, top: Ident, owner: tuple[str, str, bool]) -> bool:
        """Record every descendant of ``top`` (not ``top`` itself) under ``owner``.

        False if ``top`` no longer runs.
        """
        below = _live_children(top)
        if below is None:
            return False
        for ident in _descendants([top], below):
            if ident not in self.known:
                self.orphans.pop(ident, None)
                self.known[ident] = owner
        return True

    def _charge_below(self, top: Ident, orphan: Orphan) -> None:
        for ident in _descendants([top]):
            if ident not in self.known:
                self.orphans.setdefault(ident, orphan)

    def _adopt(self) -> None:
        """Children of this process that no one spawned here: orphans re-parented to it.

        A child seen unregistered for the first time waits ``ADOPT_GRACE_S``: it may be
        one the agent just spawned for itself and is about to ``own``.
        """
        now = time.monotonic()
        unowned, self.unowned = self.unowned, {}
        for pid in children(os.getpid()):
            if pid in self.owned or pid in self.roots:
                continue
            found = stat(pid)
            if found is None or found[0] in ("Z", "X"):
                continue
            ident = (pid, found[2])
            if ident in self.known or ident in self.orphans:
                continue
            first_seen = unowned.get(ident, now)
            if now - first_seen < ADOPT_GRACE_S:
                self.unowned[ident] = first_seen
                continue
            # Any root alive when it started may have started it (an idle one may not).
            live = [
                r
                for r in self.roots.values()
                if r.ident[1] <= ident[1] and (r.busy_from is None or r.busy_from <= ident[1])
            ]
            self.orphans[ident] = Orphan(
                candidates={r.ident[0] for r in live},
                agent_ids={r.agent_id for r in live if r.agent_id is not None},
                leased=any(r.leased for r in live),
            )

    def _prune(self, marker: str | None = None, ended: list[int] | None = None) -> None:
        """Forget what ended: recorded processes (all, or ``marker``'s), orphans, roots.

        ``ended``: the roots a walk found no longer running (a zombie root stays until
        its owner reaps it); without it, every root is looked at.
        """
        known = [i for i, o in self.known.items() if marker is None or o[0] == marker]
        for ident in [i for i in known if not alive(i)]:
            del self.known[ident]
        for ident in [i for i in self.orphans if not alive(i)]:
            del self.orphans[ident]
        looked = list(self.roots) if ended is None else ended
        gone = [p for p in looked if p in self.roots and start_time(p) != self.roots[p].ident[1]]
        for pid in gone:
            del self.roots[pid]
        if gone:
            for orphan in self.orphans.values():
                orphan.candidates.difference_update(gone)

    # -- killing ------------------------------------------------------------------------

    def release(self, marker: str) -> int:
        """The unit ``marker`` ended: kill what it left (recorded or adopted); return how many."""
        with self._lock:
            self.refresh(marker)
            targets = [i for i, owner in self.known.items() if owner[0] == marker]
            mine = [p for p, r in self.roots.items() if r.marker == marker]
            targets += [self.roots[p].ident for p in mine if alive(self.roots[p].ident)]
            for pid in mine:
                del self.roots[pid]
            for ident, orphan in self.orphans.items():
                orphan.candidates.difference_update(mine)
                if not orphan.candidates:
                    targets.append(ident)
            killed = kill_trees(targets)
            if killed and self.subreaper:
                self.reap_adopted()
            self._prune(marker, [])
            self._changed()
            return killed

    def tick(self) -> int:
        """The timer's walk: record, and kill orphans whose every candidate unit is gone."""
        with self._lock:
            lost = self.refresh()
            if not lost:
                return 0
            killed = kill_trees(lost)
            self._prune()
            self._changed()
            return killed

    def release_agent(self, agent_id: str) -> int:
        """Kill everything recorded for ``agent_id`` (the agent stops: all its units ended)."""
        with self._lock:
            self.refresh()
            targets = [i for i, owner in self.known.items() if owner[1] == agent_id]
            targets += [r.ident for r in self.roots.values() if r.agent_id == agent_id and alive(r.ident)]
            targets += [i for i, o in self.orphans.items() if agent_id in o.agent_ids or not o.agent_ids]
            killed = kill_trees(targets)
            self._prune()
            self._changed()
            return killed

    # -- reaping ------------------------------------------------------------------------

    def reap_adopted(self) -> int:
        """Reap zombie children this process did not spawn (a subreaper's duty); how many."""
        reaped = 0
        with self._lock:
            candidates = [p for p in children(os.getpid()) if p not in self.owned and p not in self.roots]
        for pid in candidates:
            found = stat(pid)
            if found is None or found[0] != "Z":
                continue
            with contextlib.suppress(ChildProcessError, OSError):
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG) is not None:
                    reaped += 1
        return reaped

    # -- the ledger ---------------------------------------------------------------------

    def flush(self) -> None:
        """Write each agent's ledger if anything changed since the last write."""
        with self._ledger_io:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            appends, self._appends = self._appends, {}
            rewrite, self._dirty = self._dirty, False
            ledgers = dict(self.ledgers)
            lines = self._lines() if rewrite else {}
        if not rewrite:  # only roots were added: appended (a rewrite names them as well)
            for agent, added in appends.items():
                if agent in ledgers:
                    append_ledger(ledgers[agent], "\n".join(added))
            return
        for agent, path in ledgers.items():
            write_ledger(path, lines[agent])

    def _lines(self) -> dict[str, list[str]]:
        """Every agent's ledger as it is now (under the lock)."""
        lines: dict[str, list[str]] = {agent: [] for agent in self.ledgers}
        for root in self.roots.values():
            if root.agent_id in lines:
                lines[root.agent_id].append(_line(root.ident, root.leased))
        for ident, (_, agent, leased) in self.known.items():
            if agent in lines:
                lines[agent].append(_line(ident, leased))
        for ident, orphan in self.orphans.items():
            for agent in orphan.agent_ids or lines.keys():
                if agent in lines:
                    lines[agent].append(_line(ident, orphan.leased))
        return lines


def _line(ident: Ident, leased: bool) -> str:
    return f"{ident[0]} {ident[1]} {'L' if leased else '-'}"


def append_ledger(path: Path, line: str) -> None:
    """Add a line (or lines) to the ledger at ``path`` (one ``write``: readers see it whole
    or not)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)


def write_ledger(path: Path, lines: Iterable[str]) -> None:
    """Replace the ledger at ``path`` atomically (the keeper may be reading it)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text("".join(f"{line}\n" for line in lines))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)


def read_ledger(path: Path) -> list[tuple[Ident, bool]]:
    """The processes a ledger names, with their leased flag."""
    entries: list[tuple[Ident, bool]] = []
    try:
        text = path.read_text()
    except OSError:
        return entries
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            entries.append(((int(parts[0]), int(parts[1])), parts[2] == "L"))
    return entries


def kill_ledger(path: Path) -> int:
    """Kill what a (dead) agent's ledger names and still runs; how many."""
    return kill_trees([ident for ident, _ in read_ledger(path)])


def kill_trees(idents: Iterable[Ident]) -> int:
    """SIGKILL each live process of ``idents`` with all its descendants; how many.

    Each is stopped first (SIGSTOP), so that it cannot fork while its tree is read;
    what it forked meanwhile is found in the next look. Then all are killed at once.
    """
    me = os.getpid()
    frozen: dict[int, Ident] = {}
    todo = [i for i in idents if i[0] != me and alive(i)]
    for _ in range(KILL_ROUNDS):
        if not todo:
            break
        found: list[Ident] = []
        for ident in todo:
            if ident[0] in frozen or not alive(ident):
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(ident[0], signal.SIGSTOP)
                frozen[ident[0]] = ident
        for ident in list(frozen.values()):
            for child in children(ident[0]):
                start = start_time(child)
                if child not in frozen and child != me and start is not None:
                    found.append((child, start))
        todo = found
    killed = 0
    for pid, ident in frozen.items():
        if start_time(pid) == ident[1]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


TRACKER = Tracker()
