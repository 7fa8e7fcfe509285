"""Reading a child's output pipes into its ``OutputLog`` on the event loop.

Two habits keep the cost per line low without ever blocking the child for long:

* A read that returns little means the child writes in small pieces (a line at a
  time). Reading again at once would cost a system call per line, so the reader
  pauses that pipe for ``READ_PAUSE_S``; the kernel's pipe buffer (enlarged to
  ``PIPE_SIZE_BYTES``) holds what the child writes meanwhile, so the child does not
  wait. A big read is followed at once by the next.
* The log files are flushed ``FLUSH_DELAY_S`` after the first unflushed write, not
  after every read.

What a child wrote reaches the ring buffer and the attached readers at most
``READ_PAUSE_S`` late, and the log files at most ``FLUSH_DELAY_S`` late (at once when
the child exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Callable

from herder.agent.processes import procs
from herder.agent.processes.logs import OutputLog, Stream

# Read at most this much per wake-up: big enough for bulk writers, small enough that one
# noisy child cannot monopolise the loop.
READ_CHUNK_BYTES = 1024 * 1024
# A read shorter than this counts as "small": the next read waits READ_PAUSE_S.
SMALL_READ_BYTES = 64 * 1024
# Long enough to gather a few hundred lines from a line-at-a-time writer, short enough
# that nobody watching a console notices.
READ_PAUSE_S = 0.002
# Files are flushed this long after their first unflushed write.
FLUSH_DELAY_S = 0.05
# Ask the kernel for pipes this big (the default is 64 KiB), so a child does not block
# while the agent pauses or is busy elsewhere. Best effort.
PIPE_SIZE_BYTES = 1024 * 1024
_F_SETPIPE_SZ = 1031


class OutputReader:
    """Owns one run's stdout and stderr read ends; feeds ``output``."""

    def __init__(self, output: OutputLog, on_data: Callable[[], None]) -> None:
        self._output = output
        self._on_data = on_data
        self._loop = asyncio.get_running_loop()
        self._streams: dict[int, Stream] = {}
        self._paused: dict[int, asyncio.TimerHandle] = {}
        self._flush_timer: asyncio.TimerHandle | None = None

    def attach(self, stdout_fd: int, stderr_fd: int) -> None:
        """Start reading two non-blocking pipe read ends (this reader will close them)."""
        for fd, stream in ((stdout_fd, Stream.STDOUT), (stderr_fd, Stream.STDERR)):
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE_BYTES)
            self._streams[fd] = stream
            self._loop.add_reader(fd, self._on_readable, fd)

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_CHUNK_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(fd)
            return
        self._output.feed(self._streams[fd], data)
        if self._flush_timer is None:
            self._flush_timer = self._loop.call_later(FLUSH_DELAY_S, self._flush)
        if len(data) < SMALL_READ_BYTES:
            self._loop.remove_reader(fd)
            self._paused[fd] = self._loop.call_later(READ_PAUSE_S, self._resume, fd)
        self._on_data()

    def _resume(self, fd: int) -> None:
        del self._paused[fd]
        self._loop.add_reader(fd, self._on_readable, fd)

    def _flush(self) -> None:
        self._flush_timer = None
        self._output.flush()

    def _close(self, fd: int) -> None:
        if fd not in self._streams:
            return
        del self._streams[fd]
        timer = self._paused.pop(fd, None)
        if timer is not None:
            timer.cancel()
        self._loop.remove_reader(fd)
        os.close(fd)

    def drain_and_close(self) -> None:
        """The child ended: take what is still in the pipes, close them, flush the files."""
        for fd, stream in list(self._streams.items()):
            rest = procs.drain(fd)
            if rest:
                self._output.feed(stream, rest)
            self._close(fd)
        self.close()

    def close(self) -> None:
        """Close whatever is still open and flush (the last line may lack a newline)."""
        for fd in list(self._streams):
            self._close(fd)
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._output.flush_partial()
