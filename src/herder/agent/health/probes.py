"""One health check: an HTTP GET, a TCP connect or a command; each bounded in time and size.

Every probe returns None when the check passed, or one line saying why it failed (the
status document's ``last_error``); none raises for a failed check. They run on the
agent's event loop: sockets through asyncio, a command through ``procs.spawn`` and its
pidfd (no thread waits on it).

Against a hostile user: HTTP and TCP only ever connect to ``127.0.0.1`` and the port the
agent gave the process; the request line is built here from a validated path
(``models.HTTP_PATH_PATTERN``); only the status line is read, at most
``MAX_STATUS_LINE_BYTES`` of it, never the body; a command's output is kept up to
``MAX_OUTPUT_BYTES`` and the command is killed, with its group, at its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import socket
from collections.abc import Mapping, Sequence

from herder.agent.limits import ChildSetup
from herder.agent.processes import procs

HOST = "127.0.0.1"  # the only address a check connects to
# An HTTP status line is ~15 bytes; a server that sends a longer first line is not one.
MAX_STATUS_LINE_BYTES = 1024
# Of a failed command's output, what ``last_error`` quotes.
MAX_OUTPUT_BYTES = 4096
MAX_QUOTED_CHARS = 200
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] ([1-5][0-9][0-9])(?: |\r?$)")


async def check_tcp(port: int, timeout_s: float) -> str | None:
    """Passed if ``127.0.0.1:port`` accepts a connection within ``timeout_s``."""
    try:
        with _socket() as sock:
            async with asyncio.timeout(timeout_s):
                await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    except TimeoutError:
        return f"no connection to port {port} within {timeout_s:g} s"
    except OSError as exc:
        return f"cannot connect to port {port}: {_reason(exc)}"
    return None


async def check_http(port: int, path: str, timeout_s: float) -> str | None:
    """Passed if ``GET path`` on ``127.0.0.1:port`` answers 2xx or 3xx within ``timeout_s``.

    ``path`` must match ``models.HTTP_PATH_PATTERN`` (the request line is built from it).
    Only the status line is read; the connection is then dropped, the body unread.
    """
    loop = asyncio.get_running_loop()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: herder-health-check\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    try:
        with _socket() as sock:
            async with asyncio.timeout(timeout_s):
                await loop.sock_connect(sock, (HOST, port))
                await loop.sock_sendall(sock, request)
                line = await _status_line(loop, sock)
    except TimeoutError:
        return f"GET {path}: no answer within {timeout_s:g} s"
    except OSError as exc:
        return f"GET {path}: {_reason(exc)}"
    if line is None:
        return f"GET {path}: no status line in the first {MAX_STATUS_LINE_BYTES} bytes"
    match = _STATUS_LINE.match(line)
    if match is None:
        return f"GET {path}: not an HTTP answer ({_quote(line)})"
    status = int(match.group(1))
    if 200 <= status < 400:
        return None
    return f"GET {path}: HTTP {status}"


def _socket() -> socket.socket:
    """A non-blocking TCP socket for one check: a bare socket on the loop costs half of
    a stream's transport and protocol, and a check says one thing and reads one line."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


async def _status_line(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes | None:
    """The answer's first line (without its end), read up to ``MAX_STATUS_LINE_BYTES``.

    None if it does not end within the bound: whatever it is, it is no status line.
    """
    head = b""
    while b"\n" not in head and len(head) < MAX_STATUS_LINE_BYTES:
        chunk = await loop.sock_recv(sock, MAX_STATUS_LINE_BYTES - len(head))
        if not chunk:
            break
        head += chunk
    line, end, _ = head.partition(b"\n")
    if not end and len(head) >= MAX_STATUS_LINE_BYTES:
        return None
    return line.rstrip(b"\r")


async def check_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    timeout_s: float,
    setup: ChildSetup | None = None,
) -> str | None:
    """Passed if ``argv`` exits 0 within ``timeout_s``; killed with its group otherwise.

    ``setup`` is the checked process's (``herder.agent.limits``): the check runs as its
    user, with its umask and rlimits, so a check can do nothing the process could not
    (an agent running as root never runs a user's check as root). Not in its cgroup: the
    cgroup is removed when the child given it ends, and it is the process's, not a
    check's. The caller bounds how many run at once. The command's stdout and stderr
    share what ``last_error`` quotes (the first ``MAX_OUTPUT_BYTES``).
    """
    if setup is not None and setup.cgroup is not None:
        setup = dataclasses.replace(setup, cgroup=None)
    try:
        child = procs.spawn(argv, env=env, cwd=cwd, setup=setup)
    except OSError as exc:
        return f"cannot run {argv[0]!r}: {exc.strerror or exc}"
    exit_wait = asyncio.ensure_future(procs.wait_exit(child))
    try:
        async with asyncio.timeout(timeout_s):
            code = await asyncio.shield(exit_wait)
    except TimeoutError:
        procs.signal_group(child.pid, signal.SIGKILL)
        await exit_wait
        return f"the command took more than {timeout_s:g} s (killed)"
    finally:
        if not exit_wait.done():  # cancelled: the check must not outlive its monitor
            procs.signal_group(child.pid, signal.SIGKILL)
            with contextlib.suppress(asyncio.CancelledError):
                await exit_wait
        output = procs.drain(child.stdout_fd, MAX_OUTPUT_BYTES) + procs.drain(
            child.stderr_fd, MAX_OUTPUT_BYTES
        )
        os.close(child.stdout_fd)
        os.close(child.stderr_fd)
    procs.signal_group(child.pid, signal.SIGKILL)  # what it left in its group
    if code == 0:
        return None
    what = f"exited {code}" if code > 0 else f"killed by signal {-code}"
    said = output.decode(errors="replace").strip().splitlines()
    return f"the command {what}" + (f": {_quote(said[-1].encode())}" if said else "")


def _reason(exc: OSError) -> str:
    """``Connection refused``: asyncio's connect errors repeat the address in ``strerror``."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _quote(data: bytes) -> str:
    text = data.decode("ascii", errors="replace")
    return text if len(text) <= MAX_QUOTED_CHARS else text[:MAX_QUOTED_CHARS] + "..."
