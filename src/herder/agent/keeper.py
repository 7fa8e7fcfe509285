"""The keeper: a tiny watcher that kills the agent's descendants if the agent dies.

SIGKILL cannot be caught, so the agent cannot clean up after itself. At start it
spawns the keeper, a ``/bin/sh`` script in a session of its own whose stdin is a pipe
whose only writer is the agent. The script blocks reading that pipe; when the agent
dies, the read returns end-of-file and the script kills every process whose
environment carries this agent's marker: its children, and any descendant that left
its process group. A graceful agent has stopped everything already; it writes
``done`` into the pipe first, and the keeper exits without scanning.

It is a shell script rather than Python so that it costs about a megabyte of memory
and no interpreter start-up.
"""

from __future__ import annotations

import contextlib
import os
import subprocess

from herder.agent.procs import AGENT_MARKER, SWEEP_ROUNDS, UNIT_MARKER

# Written by a graceful agent that has already stopped and swept everything: the
# keeper then exits without scanning /proc (which forks a grep per process).
_DONE = "done"
# $1 is the marker line (NAME=value). grep -z treats NUL-separated environ entries as
# lines and -x demands the whole entry, so a value that merely contains the id never
# matches. The loop is bounded: kill what is found, look again for what forked meanwhile.
_SCRIPT = f"""
read -r word || true
[ "$word" = "{_DONE}" ] && exit 0
i=0
while [ "$i" -lt {SWEEP_ROUNDS} ]; do
  found=0
  for f in /proc/[0-9]*/environ; do
    if grep -qzx -- "$1" "$f" 2>/dev/null; then
      p=${{f#/proc/}}; p=${{p%/environ}}
      kill -9 "$p" 2>/dev/null && found=1
    fi
  done
  [ "$found" -eq 0 ] && break
  i=$((i+1))
done
"""


class Keeper:
    """Owns the keeper process; ``stop()`` releases it after a graceful shutdown."""

    def __init__(self, agent_id: str) -> None:
        self._agent_id = agent_id
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_fd: int | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Spawn the keeper. The pipe's write end stays in this process only."""
        read_fd, write_fd = os.pipe()  # both ends are close-on-exec
        env = {k: v for k, v in os.environ.items() if k not in (AGENT_MARKER, UNIT_MARKER)}
        try:
            self._proc = subprocess.Popen(
                ["/bin/sh", "-c", _SCRIPT, "herder-keeper", f"{AGENT_MARKER}={self._agent_id}"],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(read_fd)
        self._write_fd = write_fd

    def stop(self, timeout_s: float = 10.0) -> None:
        """Dismiss the keeper after a graceful shutdown (everything is stopped already)."""
        if self._write_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._write_fd, f"{_DONE}\n".encode())
            os.close(self._write_fd)
            self._write_fd = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
                self._proc.wait()
            self._proc = None
