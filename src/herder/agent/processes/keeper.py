"""The keeper: a tiny watcher that kills the agent's descendants if the agent dies or hangs.

SIGKILL cannot be caught, so the agent cannot clean up after itself; a SIGSTOPped (or
otherwise hung) agent cannot stop anything either. At start it spawns the keeper, a
``/bin/sh`` script in a session of its own whose stdin is a pipe whose only writer is
the agent.

* **Death.** The script blocks reading that pipe; when the agent dies, the read returns
  end-of-file and the script kills what the agent's *ledger* names (the processes it
  found by the tree, ``descendants``: pid and start time, so a reused pid is spared),
  each with what it forked since (stopped first, so it cannot fork while its tree is
  read), then every process whose environment carries this agent's marker, with what
  it started (the ledger may miss what started within the last moments). A graceful
  agent has stopped everything already; it writes ``done`` into the pipe first, and the
  keeper exits without scanning.
* **Hang (watchdog, as systemd's ``WatchdogSec``).** Once the agent works for a manager
  it writes ``lease <tick>`` into the pipe (the tick is a quarter of its window: the
  manager's lease less its margin) and touches a ping file every tick. A background loop
  of the keeper wakes every tick and checks that the ping file is newer than a reference
  file it touched a window ago (``test -nt``, a shell built-in: no process per check);
  if not, the agent showed no life for the window, and the keeper kills its **leased**
  work (the ledger's ``L`` lines: units run for the manager, which gives that work to
  another worker once the lease and its margin ran out; the window plus a tick stays
  within them). Nothing else of the agent's is touched; the agent may wake up and
  carry on.
* **Its own death.** The agent watches the keeper's pidfd on its event loop: a keeper
  that dies is reported (a warning) and replaced at once.

It is a shell script rather than Python so that it costs about a megabyte of memory
and no interpreter start-up (dash's ``read`` has no timeout, hence the background loop,
which is one more ``sh`` and a ``sleep`` per tick).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from pathlib import Path

from herder.agent.processes.descendants import TRACKER
from herder.agent.processes.procs import AGENT_MARKER, LEASED_MARKER, SWEEP_ROUNDS, UNIT_MARKER

log = logging.getLogger(__name__)

# The watchdog wakes every 1/_REFS of its window and compares the ping file with the
# reference it touched _REFS wakes ago: a hang is seen at most 1/_REFS of the window late.
_REFS = 4
# Written by a graceful agent that has already stopped and swept everything: the
# keeper then exits without scanning /proc (which forks a grep per process).
_DONE = "done"
# $1 is the marker line (NAME=value), $2 the ledger, $3 the ping file, $4 the file its
# watchdog notes what it did in. grep -z treats NUL-separated environ entries as lines
# and -x demands the whole entry, so a value that merely contains the id never matches.
# Every loop is bounded: kill what is found, look again for what forked meanwhile.
_SCRIPT = f"""
marker=$1 ledger=$2 ping=$3 note=$4
victims=
freeze() {{
  local t kids k
  kill -STOP "$1" 2>/dev/null || return 0
  victims="$victims $1"
  for t in /proc/"$1"/task/*/children; do
    kids=
    read -r kids < "$t" 2>/dev/null
    for k in $kids; do freeze "$k"; done
  done
}}
kill_listed() {{
  local mode p s f st
  mode=$1 victims=
  [ -r "$ledger" ] || return 0
  while read -r p s f; do
    [ "$mode" = all ] || [ "$f" = L ] || continue
    st=
    read -r st < "/proc/$p/stat" 2>/dev/null
    [ -n "$st" ] || continue
    set -- ${{st##*) }}
    [ "${{20}}" = "$s" ] && freeze "$p"
  done < "$ledger"
  [ -z "$victims" ] || kill -KILL $victims 2>/dev/null
}}
watchdog() {{
  local n r
  n=0
  while sleep "$1"; do
    kill -0 $$ 2>/dev/null || exit 0
    r=$ping.$((n % {_REFS})); n=$((n + 1))
    if [ "$n" -gt {_REFS} ] && [ ! "$ping" -nt "$r" ]; then
      kill_listed leased
      [ -z "$victims" ] || echo "no sign of life from the agent: killed its leased work:$victims" >> "$note"
    fi
    : > "$r"
  done
}}
wd=
while read -r word arg; do
  case $word in
    {_DONE}) [ -z "$wd" ] || kill "$wd" 2>/dev/null; exit 0 ;;
    lease) [ -z "$wd" ] || kill "$wd" 2>/dev/null; watchdog "$arg" & wd=$! ;;
  esac
done
[ -z "$wd" ] || kill "$wd" 2>/dev/null
kill_listed all
i=0
while [ "$i" -lt {SWEEP_ROUNDS} ]; do
  victims=
  for f in /proc/[0-9]*/environ; do
    if grep -qzx -- "$marker" "$f" 2>/dev/null; then
      p=${{f#/proc/}}; freeze "${{p%/environ}}"
    fi
  done
  [ -z "$victims" ] && break
  kill -KILL $victims 2>/dev/null
  i=$((i+1))
done
"""


def ledger_path(data_dir: Path) -> Path:
    """Where the agent of ``data_dir`` records its descendants (``descendants``)."""
    return data_dir / "descendants"


class Keeper:
    """Owns the keeper process: starts it, replaces it if it dies, pings it, dismisses it."""

    def __init__(self, agent_id: str, data_dir: Path) -> None:
        self._agent_id = agent_id
        self._ledger = ledger_path(data_dir)
        self._ping = data_dir / "agent.alive"
        self._note = data_dir / "keeper.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_fd: int | None = None
        self._pidfd: int | None = None
        self._lease_s: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def lease_s(self) -> float | None:
        return self._lease_s

    def start(self) -> None:
        """Spawn the keeper. The pipe's write end stays in this process only.

        In an event loop, the keeper's death is watched (its pidfd): it is replaced at once.
        """
        read_fd, write_fd = os.pipe()  # both ends are close-on-exec
        hidden = (AGENT_MARKER, UNIT_MARKER, LEASED_MARKER)
        env = {k: v for k, v in os.environ.items() if k not in hidden}
        argv = [str(self._ledger), str(self._ping), str(self._note)]
        try:
            self._proc = subprocess.Popen(
                ["/bin/sh", "-c", _SCRIPT, "herder-keeper", f"{AGENT_MARKER}={self._agent_id}", *argv],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(read_fd)
        TRACKER.own(self._proc.pid)
        self._write_fd = write_fd
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        if self._loop is not None:
            self._pidfd = os.pidfd_open(self._proc.pid)
            self._loop.add_reader(self._pidfd, self._died)
        if self._lease_s is not None:
            self.set_lease(self._lease_s)

    def _unwatch(self) -> None:
        if self._pidfd is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def _died(self) -> None:
        """The keeper ended while the agent runs: say so, and start another."""
        self._unwatch()
        proc, self._proc = self._proc, None
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
        code = proc.wait() if proc is not None else None
        if proc is not None:
            TRACKER.disown(proc.pid)
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"code {code}"
        pid = proc.pid if proc is not None else "?"
        try:
            self.start()
        except OSError as exc:
            log.error("the keeper (pid %s) died (%s) and cannot be replaced: %s", pid, how, exc)
            return
        log.warning("the keeper (pid %s) died (%s); started another (pid %s)", pid, how, self.pid)

    def set_lease(self, lease_s: float) -> None:
        """Have the keeper stop leased work if the agent shows no life for ``lease_s``."""
        self._lease_s = lease_s
        self.ping()
        self._send(f"lease {lease_s / _REFS:.3f}")

    def ping(self) -> None:
        """A sign of life for the watchdog (the ping file's mtime)."""
        try:
            os.utime(self._ping)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                self._ping.touch()
        except OSError:
            pass

    def _send(self, line: str) -> None:
        if self._write_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._write_fd, f"{line}\n".encode())

    def stop(self, timeout_s: float = 10.0) -> None:
        """Dismiss the keeper after a graceful shutdown (everything is stopped already)."""
        self._unwatch()
        if self._write_fd is not None:
            self._send(_DONE)
            os.close(self._write_fd)
            self._write_fd = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
                self._proc.wait()
            TRACKER.disown(self._proc.pid)
            self._proc = None
        for path in (
            self._ping,
            self._ping.with_name(self._ping.name + ".0"),
            self._ping.with_name(self._ping.name + ".1"),
        ):
            with contextlib.suppress(OSError):
                path.unlink()
