"""The ``proc`` extension of the ``shell`` product: programs launched by the session.

A launched program runs in its own session and process group (``setsid``), so a
signal sent to it reaches what it forked, and nothing reaches the host. Its output is
not kept but sent as it comes, a line at a time, as ``proc.output`` events, then one
``proc.exit`` event; the agent buffers events while the client is away. The exit is
reported once the program has exited *and* both its pipes are at their end, so that
every line it wrote reaches the client before its exit does. (A program that leaves a
background child holding its output keeps its exit unreported until that child is
done or killed: ``kill`` signals the whole group until then.)

Every program gets the session's environment, with the ``HERDER_*`` markers the agent
put there forced back after the caller's additions: they are how the agent finds what
a session left behind, however it detached itself, so a caller cannot remove them.

The protocol-level API of the event loop (``loop.subprocess_exec`` with a protocol of
our own) is used rather than ``asyncio.create_subprocess_exec``, its stream wrapper:
the same machinery, but output arrives as callbacks that emit lines directly (no
reader task per pipe) and the transport is ours to close, whatever state the program
is left in when the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal as signals
import subprocess
from collections.abc import Callable, Mapping
from typing import Any, cast

from herder.products import Extension, SessionApi, expose
from herder.products.shell.fs import check_path, resolve_path

log = logging.getLogger(__name__)

# The most programs a session tracks at once. Programs whose exit was reported are
# forgotten, oldest first, to make room; running ones never are.
MAX_PROCESSES = 256
# Lines longer than this are sent in pieces of this size.
MAX_LINE = 64 * 1024
# When the session closes: how long programs get to end after SIGTERM, then after SIGKILL.
TERM_GRACE_S = 5.0
KILL_GRACE_S = 5.0
MARKER_PREFIX = "HERDER_"

ProcInfo = dict[str, Any]
ProcInfos = list[ProcInfo]
_Programs = list["_Program"]


def parse_signal(value: object) -> signals.Signals:
    """A signal by name (``TERM``, ``SIGTERM``, ``term``) or number.

    Raises:
        TypeError, ValueError: not a signal; the message names the argument.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"signal must be a name or a number, not {type(value).__name__}")
    if isinstance(value, int):
        try:
            return signals.Signals(value)
        except ValueError:
            raise ValueError(f"signal {value} is not a signal number") from None
    name = value.strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signals.Signals[name]
    except KeyError:
        raise ValueError(f"signal {value!r} is not a signal name (TERM, KILL, INT, HUP...)") from None


def _check_argv(argv: object) -> list[str]:
    if not isinstance(argv, list | tuple):
        raise TypeError(f"argv must be a list of str, not {type(argv).__name__}")
    if not argv:
        raise ValueError("argv must name a program: it is empty")
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            raise TypeError(f"argv[{i}] must be a str, not {type(arg).__name__}")
        if "\0" in arg:
            raise ValueError(f"argv[{i}] must not contain a NUL character")
    return [str(arg) for arg in argv]


def build_env(session_env: Mapping[str, str], extra: object) -> dict[str, str]:
    """The session's environment, the caller's ``extra`` applied, the markers forced back.

    A ``None`` value in ``extra`` removes the variable (JSON clients send ``null``).
    """
    env = dict(session_env)
    if extra is not None:
        if not isinstance(extra, dict):
            raise TypeError(f"env must be a map of str to str, not {type(extra).__name__}")
        for key, value in extra.items():
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                raise ValueError(f"env: {key!r} is not a variable name")
            if value is None:
                env.pop(key, None)
            elif isinstance(value, str) and "\0" not in value:
                env[key] = value
            else:
                raise ValueError(f"env: the value of {key} must be a str (or null to remove it)")
    env.update((k, v) for k, v in session_env.items() if k.startswith(MARKER_PREFIX))
    return env


def _workdir(session: SessionApi, cwd: str | None) -> str:
    """The directory to start a program in: the root, or ``cwd`` resolved and confined.

    Checked here because the loop's error may not say which of cwd and argv[0] failed
    (uvloop's names neither).
    """
    if cwd is None:
        return os.fspath(session.root)
    workdir = resolve_path(session, check_path(cwd, "cwd"), name="cwd")
    if not os.path.isdir(workdir):
        code = errno.ENOENT if not os.path.exists(workdir) else errno.ENOTDIR
        raise OSError(code, f"cwd: {os.strerror(code)}", cwd)
    return workdir


class _LineSplitter:
    """Bytes in, complete lines out: split on ``\\n``, too-long lines cut in pieces."""

    def __init__(self, emit_line: Callable[[bytes], None]) -> None:
        self._buffer = bytearray()
        self._emit_line = emit_line

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            self._emit_range(start, end)
            start = end + 1
        # No newline in what is left: a piece now keeps the buffer bounded.
        while len(buffer) - start > MAX_LINE:
            cut = _boundary(buffer, start + MAX_LINE, start)
            self._emit_line(bytes(buffer[start:cut]))
            start = cut
        del buffer[:start]

    def _emit_range(self, start: int, end: int) -> None:
        """Emit ``buffer[start:end]``, a whole line, in pieces if it is too long."""
        buffer = self._buffer
        while end - start > MAX_LINE:
            cut = _boundary(buffer, start + MAX_LINE, start)
            self._emit_line(bytes(buffer[start:cut]))
            start = cut
        self._emit_line(bytes(buffer[start:end]))

    def close(self) -> None:
        """The pipe ended: what is left is the last line (it had no newline)."""
        if self._buffer:
            self._emit_line(bytes(self._buffer))
            self._buffer.clear()


def _boundary(data: bytearray, cut: int, start: int) -> int:
    """``cut``, moved back (at most 3 bytes) so as not to split a UTF-8 character.

    ``data[cut]`` is the first byte of the next piece: if it continues a character,
    the piece ends before that character's first byte instead. Data that is not UTF-8
    (no first byte within reach) is cut where asked.
    """
    at = cut
    while at > max(cut - 3, start + 1) and (data[at] & 0xC0) == 0x80:
        at -= 1
    return at if (data[at] & 0xC0) != 0x80 else cut


class _Program(asyncio.SubprocessProtocol):
    """One launched program: its output turned into events, its exit awaited."""

    def __init__(self, session: SessionApi, id: int, argv: list[str]) -> None:
        self.session = session
        self.id = id
        self.argv = argv
        self.pid = 0
        self.transport: asyncio.SubprocessTransport | None = None
        self.code: int | None = None  # set with ``done``: the exit, once reported
        self.done = asyncio.Event()
        self._exited = False
        self._open_pipes = {1, 2}
        self._splitters = {
            1: _LineSplitter(lambda line: self._line("stdout", line)),
            2: _LineSplitter(lambda line: self._line("stderr", line)),
        }

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        try:
            self.session.emit(kind, data)
        except Exception:  # a failing client channel must not break the pipe's reading
            log.exception("process %d: could not emit %s", self.id, kind)

    def _line(self, stream: str, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace")
        self._emit("proc.output", {"id": self.id, "stream": stream, "line": text})

    # -- asyncio.SubprocessProtocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not subclass asyncio's (the host runs on uvloop)
        self.transport = cast(asyncio.SubprocessTransport, transport)
        self.pid = self.transport.get_pid()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        splitter = self._splitters.get(fd)
        if splitter is not None:
            splitter.feed(data.encode() if isinstance(data, str) else data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd in self._open_pipes:
            self._splitters[fd].close()
            self._open_pipes.discard(fd)
            self._maybe_done()

    def process_exited(self) -> None:
        self._exited = True
        self._maybe_done()

    # ----------------------------------------------------------------------------------

    def _maybe_done(self) -> None:
        if self.done.is_set() or not self._exited or self._open_pipes:
            return
        assert self.transport is not None
        code = self.transport.get_returncode()
        self.code = code if code is not None else -signals.SIGKILL
        self.transport.close()
        self._emit("proc.exit", {"id": self.id, "code": self.code})
        self.done.set()

    def signal(self, sig: signals.Signals) -> None:
        """Send ``sig`` to the program's process group, if anything of it may be left."""
        if self.done.is_set() or self.pid <= 0:
            return
        with contextlib.suppress(ProcessLookupError):  # the group ended meanwhile
            os.killpg(self.pid, sig)

    def abandon(self) -> None:
        """Stop following a program that outlived every signal (left its group, holds a pipe).

        Closing the transport closes our ends of the pipes; the exit is reported as
        known, or as a kill if the program never ended.
        """
        if self.transport is not None:
            self.transport.close()
        if not self.done.is_set():
            self._exited = True
            self._open_pipes.clear()
            self._maybe_done()

    def describe(self) -> ProcInfo:
        return {
            "id": self.id,
            "pid": self.pid,
            "argv": list(self.argv),
            "running": not self.done.is_set(),
            "code": self.code,
        }


class Proc(Extension):
    """Programs launched by the session: started, streamed, awaited, signalled, ended."""

    def __init__(self, session: SessionApi) -> None:
        super().__init__(session)
        self._programs: dict[int, _Program] = {}
        self._next_id = 1  # never reused: a stale id cannot signal a newer program
        self._closing = False
        self.max_processes = MAX_PROCESSES
        self.term_grace_s = TERM_GRACE_S
        self.kill_grace_s = KILL_GRACE_S

    def _program(self, id: object) -> _Program:
        if not isinstance(id, int) or isinstance(id, bool):
            raise TypeError(f"id must be an int, not {type(id).__name__}")
        program = self._programs.get(id)
        if program is None:
            raise LookupError(f"process {id} is not known to this session")
        return program

    def _make_room(self) -> None:
        """Forget the oldest finished programs until one more fits, or refuse."""
        while len(self._programs) >= self.max_processes:
            finished = next((p for p in self._programs.values() if p.done.is_set()), None)
            if finished is None:
                raise OSError(
                    errno.EAGAIN,
                    f"this session already runs {len(self._programs)} processes, the most it may:"
                    " wait for or kill some first",
                )
            del self._programs[finished.id]

    @expose
    async def launch(
        self,
        argv: list[str],
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        stdin: bytes | str | None = None,
    ) -> ProcInfo:
        """Start a program; its output comes as ``proc.output`` events, then ``proc.exit``.

        ``cwd`` is relative to the session's directory (and confined like ``fs`` paths);
        ``env`` adds to the session's environment (``null`` removes a variable, the
        ``HERDER_*`` markers cannot be changed); ``stdin``, if given, is what the
        program reads (str as UTF-8), else it reads nothing.
        """
        if self._closing:
            raise RuntimeError("the session is closing: no new processes")
        args = _check_argv(argv)
        workdir = _workdir(self.session, cwd)
        environment = build_env(self.session.env, env)
        if stdin is not None and not isinstance(stdin, str | bytes | bytearray):
            raise TypeError(f"stdin must be bytes, str or None, not {type(stdin).__name__}")
        self._make_room()
        program = _Program(self.session, self._next_id, args)
        self._next_id += 1
        self._programs[program.id] = program  # holds its place while it starts
        try:
            transport, _ = await asyncio.get_running_loop().subprocess_exec(
                lambda: program,
                *args,
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=environment,
                start_new_session=True,
            )
        except OSError as exc:
            del self._programs[program.id]
            if exc.errno is not None and exc.filename in (None, workdir):
                # The client's name for what failed (uvloop names nothing; asyncio may name
                # the resolved cwd, which was checked above, so it is argv[0] that failed).
                raise OSError(exc.errno, exc.strerror, cwd if exc.filename else args[0]) from None
            raise
        except BaseException:
            del self._programs[program.id]
            raise
        program.pid = transport.get_pid()
        if self._closing:  # the session closed while it started: it must not outlive it
            program.signal(signals.SIGKILL)
            transport.close()
            raise RuntimeError("the session closed while the process started: it was killed")
        if stdin is not None:
            pipe = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))
            # Buffered by the transport and written as the program reads; closed once
            # written. A program that exits without reading it all just ends the pipe.
            pipe.write(stdin.encode("utf-8") if isinstance(stdin, str) else bytes(stdin))
            pipe.close()
        return {"id": program.id, "pid": program.pid}

    @expose
    async def wait(self, id: int, timeout: float | None = None) -> int:  # noqa: ASYNC109 - the client's argument
        """The program's exit code (negative: the signal that ended it), once its output is sent."""
        program = self._program(id)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0
        ):
            raise ValueError(f"timeout must be a number of seconds ≥ 0 or null, not {timeout!r}")
        if not program.done.is_set():  # (wait_for with 0 would time out even then)
            try:
                async with asyncio.timeout(timeout):
                    await program.done.wait()
            except TimeoutError:
                raise TimeoutError(f"process {id} still runs after {timeout} s") from None
        assert program.code is not None
        return program.code

    @expose
    def kill(self, id: int, signal: str | int = "TERM") -> None:
        """Send a signal (name or number) to the program's process group; nothing if it ended."""
        program = self._program(id)
        program.signal(parse_signal(signal))

    @expose
    def list(self) -> ProcInfos:
        """Every program the session tracks, oldest first."""
        return [p.describe() for p in self._programs.values()]

    async def shutdown(self) -> None:
        """End every program still running: SIGTERM, a grace, SIGKILL, then wait for them.

        Every wait is bounded: a program that left its group and still holds a pipe after
        both signals is abandoned (our pipe ends closed) rather than waited for forever;
        the agent's marker sweep is what finds such a program.
        """
        self._closing = True
        running = [p for p in self._programs.values() if not p.done.is_set()]
        for sig, grace in ((signals.SIGTERM, self.term_grace_s), (signals.SIGKILL, self.kill_grace_s)):
            if not running:
                break
            for program in running:
                with contextlib.suppress(OSError):  # not ours to signal any more: nothing to do
                    program.signal(sig)
            await self._wait_done(running, grace)
            running = [p for p in running if not p.done.is_set()]
        for program in running:
            log.warning("process %d (pid %d) outlived SIGKILL: abandoned", program.id, program.pid)
            program.abandon()
        for program in self._programs.values():
            if program.transport is not None:
                program.transport.close()

    @staticmethod
    async def _wait_done(programs: _Programs, within_s: float) -> None:
        """Wait until every one of ``programs`` is done, or ``within_s`` passed."""
        waits = [asyncio.ensure_future(p.done.wait()) for p in programs]
        if not waits:
            return
        _, pending = await asyncio.wait(waits, timeout=within_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


__all__ = ["MAX_LINE", "MAX_PROCESSES", "Proc", "build_env", "parse_signal"]
