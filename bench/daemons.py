"""The three daemons under test, and the bare FastAPI app, behind one shape.

Each class writes its own configuration into a temporary directory, starts the daemon
with its output in a file there, measures the time until its control API answers, and
stops it by its pid. Programs are described once (``Program``) and translated into
each daemon's terms, so that the three run the same commands with the same work:

* every daemon captures both output streams of every program into files (supervisord's
  and herder's default; Circus is given ``FileStream`` for both, else it would do less);
* supervisord and Circus programs are configured not to start on their own, so that a
  benchmark times only the start it asks for.

herder is driven over its REST API with httpx (from ``.venv``), supervisord over XML-RPC
on its unix socket with the standard library, and Circus over ZeroMQ with its own
``CircusClient``, which only ``.bench-venv`` has: a small helper process there
(``peer_bridge.py``) relays those calls, started before any timing begins.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import shlex
import signal
import socket
import ssl
import subprocess
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import harness
from harness import BENCH_DIR, PEER_BIN, VENV_BIN, Deadline

START_TIMEOUT_S = 60.0
HERDER_APP = "bench"


@dataclass
class Program:
    """One program to supervise, in terms every daemon understands."""

    name: str
    argv: list[str]
    restart: bool = True
    processes: int = 1  # only Circus can run several processes under one name
    stdout: Path | None = None  # where supervisord and Circus write it; herder uses its data dir
    stderr: Path | None = None


class Daemon(Protocol):
    """What every benchmark needs of a daemon (and of the reference app)."""

    name: str

    @property
    def pid(self) -> int: ...

    def start(self) -> float: ...

    def stop(self) -> None: ...

    def rss_parts(self) -> dict[str, int]: ...


def http_get(
    host: str, port: int, path: str, timeout_s: float = 10.0, *, tls: ssl.SSLContext | None = None
) -> tuple[int, bytes]:
    """One GET on a fresh connection: the readiness probe (no keep-alive to hide anything);
    over HTTPS, checked with ``tls``, when given."""
    conn = (
        http.client.HTTPConnection(host, port, timeout=timeout_s)
        if tls is None
        else http.client.HTTPSConnection(host, port, timeout=timeout_s, context=tls)
    )
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# -- herder -------------------------------------------------------------------------------


class Herder:
    """``herder agent`` on an ephemeral port with a temporary data dir."""

    name = "herder"
    _LISTENING = re.compile(r"herder agent listening on (https?://127\.0\.0\.1:(\d+))")

    def __init__(
        self, workdir: Path, config_toml: str | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        """``tls``: the client context that trusts the agent's certificate, for an agent whose
        ``config_toml`` has a ``[tls]`` table (it serves HTTPS)."""
        self.workdir = workdir
        self.tls = tls
        self.data_dir = workdir / "herder-data"
        self.log_path = workdir / "herder-agent.log"
        self.config_toml = config_toml
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0
        self._client: Any = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> float:
        """Start the agent; return the seconds until ``GET /`` answers 200."""
        argv: list[str | Path] = [VENV_BIN / "herder", "agent", "--host", "127.0.0.1", "--port", "0"]
        argv += ["--data-dir", self.data_dir, "--no-restore"]
        if self.config_toml is not None:
            config = self.workdir / "herder.toml"
            config.write_text(self.config_toml)
            argv += ["--config", config]
        deadline = Deadline(START_TIMEOUT_S, "herder agent start")
        t0 = time.perf_counter()
        self.proc = harness.start(argv, log_path=self.log_path)
        # The agent prints its URL (the port is the kernel's pick) once it serves.
        while not (match := self._LISTENING.search(self.log_path.read_text(errors="replace"))):
            if self.proc.poll() is not None:
                raise RuntimeError(f"herder agent exited: {self.log_path.read_text()[-2000:]}")
            deadline.check()
            time.sleep(0.001)
        self.url, self.port = match.group(1), int(match.group(2))
        status, _ = http_get("127.0.0.1", self.port, "/", tls=self.tls)
        if status != 200:
            raise RuntimeError(f"herder agent answered {status} to GET /")
        return time.perf_counter() - t0

    @property
    def client(self) -> Any:
        """A keep-alive httpx client on the agent (imported here: the driver's cost only)."""
        if self._client is None:
            import httpx

            self._client = httpx.Client(base_url=self.url, timeout=60.0, verify=self.tls or True)
        return self._client

    @staticmethod
    def create_body(program: Program) -> dict[str, Any]:
        assert program.processes == 1, "herder runs one process per slug"
        return {
            "app": HERDER_APP,
            "node": program.name,
            "command": program.argv,
            "restart": "always" if program.restart else "never",
        }

    def create(self, program: Program) -> dict[str, Any]:
        resp = self.client.post("/create-process", json=self.create_body(program))
        if resp.status_code != 201:
            raise RuntimeError(f"create {program.name}: {resp.status_code} {resp.text}")
        doc: dict[str, Any] = resp.json()
        return doc

    def create_many(self, programs: list[Program], connections: int = 4) -> None:
        """POST every create over ``connections`` keep-alive connections at once.

        A raw HTTP/1.1 client with the requests built beforehand rather than httpx: on a
        2-core machine every millisecond of CPU the client burns is taken from the agent
        or from the children it starts, and supervisord is asked with a single call.
        """
        host = f"127.0.0.1:{self.port}"
        requests = []
        for program in programs:
            body = json.dumps(self.create_body(program)).encode()
            head = f"POST /create-process HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n"
            requests.append(head.encode() + body)
        requests.reverse()  # popped from the end: in order

        async def worker() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                while requests:
                    writer.write(requests.pop())
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head.split(b" ", 2)[1])
                    length = re.search(rb"(?i)content-length: *(\d+)", head)
                    if length is None:
                        raise RuntimeError(f"create: no Content-Length in {head!r}")
                    body = await reader.readexactly(int(length.group(1)))
                    if status != 201:
                        raise RuntimeError(f"create: {status} {body[:300]!r}")
            finally:
                writer.close()
                await writer.wait_closed()

        async def main() -> None:
            async with asyncio.timeout(START_TIMEOUT_S * 2):
                await asyncio.gather(*(worker() for _ in range(connections)))

        asyncio.run(main())

    def processes(self) -> list[dict[str, Any]]:
        resp = self.client.get("/list-processes")
        resp.raise_for_status()
        procs: list[dict[str, Any]] = resp.json()["processes"]
        return procs

    def all_running(self, count: int) -> bool:
        """True when the API reports ``count`` processes, each ``running`` with a pid."""
        procs = self.processes()
        return len(procs) == count and all(p["state"] == "running" and p["pid"] for p in procs)

    def status(self, name: str) -> dict[str, Any]:
        resp = self.client.get(f"/process-status/{HERDER_APP}.{name}")
        resp.raise_for_status()
        doc: dict[str, Any] = resp.json()
        return doc

    def delete(self, name: str) -> None:
        """Stop and forget a process (its log files are closed)."""
        resp = self.client.post(f"/delete-process/{HERDER_APP}.{name}", json={})
        resp.raise_for_status()

    def log_file(self, name: str, stream: str = "out") -> Path:
        return self.data_dir / "logs" / f"{HERDER_APP}.{name}.{stream}.log"

    def rss_parts(self) -> dict[str, int]:
        """The agent's RSS and its keeper's (a ``/bin/sh`` child): the agent's whole cost."""
        parts = {"agent": harness.rss_bytes(self.pid)}
        parts["keeper"] = sum(harness.rss_bytes(p) for p in harness.descendants(self.pid))
        return parts

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is not None:
            harness.stop(self.proc, signal.SIGTERM, timeout_s=60)


# -- supervisord --------------------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class UnixTransport(xmlrpc.client.Transport):
    """XML-RPC over a unix socket, keeping the connection open like supervisorctl does."""

    def __init__(self, path: str, timeout_s: float = 60.0) -> None:
        super().__init__()
        self._path = path
        self._timeout_s = timeout_s

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        if self._connection and host == self._connection[0] and self._connection[1] is not None:
            return self._connection[1]
        conn = _UnixHTTPConnection(self._path, self._timeout_s)
        self._connection = host, conn
        return conn


class Supervisord:
    """``supervisord -n`` with a unix-socket XML-RPC server and the given programs."""

    name = "supervisord"

    def __init__(self, workdir: Path, programs: list[Program]) -> None:
        self.workdir = workdir
        self.programs = programs
        self.socket_path = str(workdir / "supervisor.sock")
        self.log_path = workdir / "supervisord.out"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def config_text(self) -> str:
        w = self.workdir
        lines = [
            "[unix_http_server]",
            f"file={self.socket_path}",
            "[supervisord]",
            f"logfile={w / 'supervisord.log'}",
            f"pidfile={w / 'supervisord.pid'}",
            f"childlogdir={w}",
            "nodaemon=true",
            "minfds=4096",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]",
            f"serverurl=unix://{self.socket_path}",
        ]
        for p in self.programs:
            assert p.processes == 1, "one process per supervisord program here"
            lines += [
                f"[program:{p.name}]",
                f"command={shlex.join(p.argv)}",
                "autostart=false",
                f"autorestart={'true' if p.restart else 'false'}",
                "startsecs=0",
                "stopwaitsecs=10",
                f"stdout_logfile={p.stdout or 'AUTO'}",
                f"stderr_logfile={p.stderr or 'AUTO'}",
            ]
        return "\n".join(lines) + "\n"

    def rpc(self) -> Any:
        """A fresh XML-RPC proxy (one connection, kept alive)."""
        return xmlrpc.client.ServerProxy("http://localhost", transport=UnixTransport(self.socket_path))

    def start(self) -> float:
        """Start supervisord; return the seconds until ``getState`` answers RUNNING."""
        conf = self.workdir / "supervisord.conf"
        conf.write_text(self.config_text())
        deadline = Deadline(START_TIMEOUT_S, "supervisord start")
        t0 = time.perf_counter()
        self.proc = harness.start([PEER_BIN / "supervisord", "-n", "-c", conf], log_path=self.log_path)
        while True:
            harness.wait_connectable(self.socket_path, deadline, self.proc)
            try:
                if self.rpc().supervisor.getState()["statename"] == "RUNNING":
                    return time.perf_counter() - t0
            except (OSError, xmlrpc.client.Fault, http.client.HTTPException):
                pass
            deadline.check()
            time.sleep(0.001)

    def rss_parts(self) -> dict[str, int]:
        return {"supervisord": harness.rss_bytes(self.pid)}

    def stop(self) -> None:
        if self.proc is not None:
            harness.stop(self.proc, signal.SIGTERM, timeout_s=60)


# -- Circus -------------------------------------------------------------------------------


class CircusBridge:
    """A helper in ``.bench-venv`` that relays ``CircusClient`` calls (JSON lines on pipes)."""

    def __init__(self, workdir: Path) -> None:
        self.proc = harness.start(
            [PEER_BIN / "python", BENCH_DIR / "peer_bridge.py"],
            log_path=workdir / "peer_bridge.err",
            pipes=True,
        )
        ready = self._read_line(Deadline(60, "peer bridge start"))
        if ready.get("ready") is not True:
            raise RuntimeError(f"peer bridge did not start: {ready}")

    def _read_line(self, deadline: Deadline) -> dict[str, Any]:
        assert self.proc.stdout is not None
        # The bridge answers every request with one line, within the request's own
        # timeout; a dead bridge gives EOF. The deadline is checked after the read.
        line = self.proc.stdout.readline()
        deadline.check()
        if not line:
            raise RuntimeError(f"peer bridge exited with {self.proc.poll()}")
        doc: dict[str, Any] = json.loads(line)
        return doc

    def call(self, endpoint: str, messages: list[dict[str, Any]], timeout_s: float = 30.0) -> list[Any]:
        """Send ``messages`` one after the other to ``endpoint``; return the answers in order."""
        assert self.proc.stdin is not None
        request = {"endpoint": endpoint, "messages": messages, "timeout": timeout_s}
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        answer = self._read_line(Deadline(timeout_s * len(messages) + 30, "peer bridge call"))
        if "error" in answer:
            raise RuntimeError(f"circus call failed: {answer['error']}")
        responses: list[Any] = answer["responses"]
        bad = [r for r in responses if r.get("status") != "ok"]
        if bad:
            raise RuntimeError(f"circus answered {bad[0]}")
        return responses

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        harness.stop(self.proc, signal.SIGTERM, timeout_s=10)


class Circus:
    """``circusd`` with one watcher per program, controlled over ZeroMQ on 127.0.0.1."""

    name = "circus"

    def __init__(
        self, workdir: Path, programs: list[Program], bridge: CircusBridge, check_delay_s: float | None = None
    ) -> None:
        self.workdir = workdir
        self.programs = programs
        self.bridge = bridge
        self.check_delay_s = check_delay_s
        self.log_path = workdir / "circusd.out"
        self.port = harness.free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def config_text(self) -> str:
        lines = [
            "[circus]",
            f"endpoint = {self.endpoint}",
            f"pubsub_endpoint = tcp://127.0.0.1:{harness.free_port()}",
            "statsd = False",  # no stats_endpoint: giving one would turn statsd on
            "httpd = False",
        ]
        if self.check_delay_s is not None:
            lines.append(f"check_delay = {self.check_delay_s}")
        for p in self.programs:
            stdout = p.stdout or self.workdir / f"{p.name}.circus.out.log"
            stderr = p.stderr or self.workdir / f"{p.name}.circus.err.log"
            lines += [
                f"[watcher:{p.name}]",
                f"cmd = {p.argv[0]}",
                f"args = {shlex.join(p.argv[1:])}",
                f"numprocesses = {p.processes}",
                "autostart = False",
                f"respawn = {p.restart}",
                "copy_env = True",
                "stdout_stream.class = FileStream",
                f"stdout_stream.filename = {stdout}",
                "stderr_stream.class = FileStream",
                f"stderr_stream.filename = {stderr}",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> float:
        """Start circusd; return the seconds until a ``status`` call answers."""
        conf = self.workdir / "circus.ini"
        conf.write_text(self.config_text())
        deadline = Deadline(START_TIMEOUT_S, "circusd start")
        t0 = time.perf_counter()
        self.proc = harness.start([PEER_BIN / "circusd", conf], log_path=self.log_path)
        # Wait for the port first: a ZeroMQ client that connects too early retries only
        # every 100 ms, which would be timed as Circus's start-up.
        harness.wait_connectable(("127.0.0.1", self.port), deadline, self.proc)
        self.call("status")
        return time.perf_counter() - t0

    def call(self, command: str, **properties: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.bridge.call(
            self.endpoint, [{"command": command, "properties": properties}]
        )[0]
        return answer

    def call_many(self, messages: list[dict[str, Any]]) -> list[Any]:
        return self.bridge.call(self.endpoint, messages)

    def rss_parts(self) -> dict[str, int]:
        return {"circusd": harness.rss_bytes(self.pid)}

    def stop(self) -> None:
        # circusd drops a SIGTERM that arrives while its periodic check runs (its stop
        # command is refused as "already running"), so the signal is repeated.
        if self.proc is not None:
            harness.stop(self.proc, signal.SIGTERM, timeout_s=60, repeat_every_s=1.0)


# -- the reference ------------------------------------------------------------------------


class BareFastAPI:
    """``bare_app.py`` (one FastAPI route) on uvicorn: the floor of herder's own stack."""

    name = "fastapi"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = harness.free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> float:
        """Start uvicorn (uvloop and httptools, as herder uses); seconds until ``GET /`` answers."""
        argv: list[str | Path] = [VENV_BIN / "uvicorn", "bare_app:app", "--app-dir", BENCH_DIR]
        argv += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", "--no-access-log"]
        deadline = Deadline(START_TIMEOUT_S, "uvicorn start")
        t0 = time.perf_counter()
        self.proc = harness.start(argv, log_path=self.workdir / "uvicorn.out")
        harness.wait_connectable(("127.0.0.1", self.port), deadline, self.proc)
        status, _ = http_get("127.0.0.1", self.port, "/")
        if status != 200:
            raise RuntimeError(f"bare FastAPI app answered {status}")
        return time.perf_counter() - t0

    def rss_parts(self) -> dict[str, int]:
        return {"uvicorn": harness.rss_bytes(self.pid)}

    def stop(self) -> None:
        if self.proc is not None:
            harness.stop(self.proc, signal.SIGTERM, timeout_s=30)
