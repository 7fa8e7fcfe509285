"""Wiring: one agent = data dir lock + keeper + supervisor + HTTP server.

``Agent`` is the embeddable form (tests and ``herder agent`` use it)::

    async with Agent(AgentConfig(port=0, data_dir=tmp)) as agent:
        print(agent.url)

Start-up order matters: take the data dir's lock (two agents on one data dir would
fight over the same processes), kill whatever a dead predecessor left (the keeper
should have, but it may have been killed too: what its ledger names, then what carries
its marker), start the keeper, restore recorded processes, then serve. Shutdown is the
reverse: stop serving, stop every process gracefully (records are kept, so the next
start brings them back), stop the keeper.

While it runs, a timer walks the process tree below every unit and writes what it
found to the ledger (``descendants``), and pings the keeper, the agent's watchdog, once
the agent works for a manager (``keeper``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import resource
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from herder.agent.api.rpc import build_service
from herder.agent.apps.fetch import Fetcher
from herder.agent.apps.launch import Apps
from herder.agent.builds.builds import Builds
from herder.agent.config import AgentConfig
from herder.agent.declared import declared_requests, start_declared
from herder.agent.errors import ConfigError, DataDirBusy
from herder.agent.link.tls import LinkTls
from herder.agent.link.trust import Trust
from herder.agent.link.worker import WorkerLink
from herder.agent.processes import descendants, procs
from herder.agent.processes.descendants import TRACKER
from herder.agent.processes.keeper import Keeper, ledger_path
from herder.agent.processes.store import RecordStore
from herder.agent.processes.supervisor import Supervisor
from herder.agent.reload import Reloader
from herder.agent.router.router import Router, config_pools
from herder.agent.sessions.manager import SessionManager
from herder.agent.sysinfo import SysInfo
from herder.auth import weak_secret
from herder.daemon import Daemon
from herder.net import LOOPBACK_NAMES, host_name, listen_socket, rpc_url
from herder.rpc import Service
from herder.tls import TlsError, served_with, server_context
from herder.wire import DEFAULT_MAX_FRAME_SIZE

log = logging.getLogger(__name__)

# In-flight requests get this long to finish once shutdown starts.
GRACEFUL_HTTP_SHUTDOWN_S = 5
# A change to the ledger (a spawn, a walk's find) is written this long after, at most:
# a write costs ~1 ms (a file replaced on ext4), and 200 spawns a second would pay it
# each. The keeper's sweep by marker covers what started in the meantime (with what it
# started), and the timer's walk is slower anyway.
LEDGER_DELAY_S = 0.1
# The keeper's watchdog looks 4 times per window; the agent pings as often.
PINGS_PER_WINDOW = 4


def agent_id_for(data_dir: Path) -> str:
    """A stable id for the agent that owns ``data_dir``: its processes carry it."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]


class DataDirLock:
    """An exclusive ``flock`` on ``<data dir>/agent.lock``, holding the owner's pid."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "agent.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise DataDirBusy(
                    f"data dir {self.path.parent} is in use by another agent (pid {owner})"
                ) from exc
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def raise_fd_limit() -> None:
    """Lift the soft limit on open files to the hard one.

    Each process costs the agent five descriptors (two pipes, a pidfd, two log files);
    a soft limit of 1024, common on Linux, would cap the agent near 200 processes.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: the kernel picks).

    Raises:
        ConfigError: the address cannot be bound.
    """
    try:
        return listen_socket(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


class AgentRuntime:
    """The parts the HTTP routes use, shared by reference."""

    def __init__(self, config: AgentConfig, supervisor: Supervisor, sysinfo: SysInfo) -> None:
        self.config = config
        self.supervisor = supervisor
        self.sysinfo = sysinfo
        self.router: Router | None = None
        self.sessions: SessionManager | None = None
        self.worker: WorkerLink | None = None
        self.trust: Trust | None = None
        self.rpc: Service | None = None
        self.reloader = Reloader(self)  # herder reload, SIGHUP (herder.agent.reload)
        self.started = asyncio.Event()
        self.stopping = False

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        self.started.set()
        yield


class Agent(Daemon):
    """A running agent; use as an async context manager."""

    name = "agent"

    def __init__(self, config: AgentConfig | None = None) -> None:
        super().__init__()
        self.config = config or AgentConfig()
        self._server: Any = None
        self._sock: socket.socket | None = None
        self._protocol_sock: socket.socket | None = None
        self.runtime: AgentRuntime | None = None
        self._keeper: Keeper | None = None
        self._builds: Builds | None = None
        self._ledger_due = False
        self._on_change: Callable[[], None] | None = None
        self._tls: Any = None  # the ssl.SSLContext of the port and the pools', with TLS on

    @property
    def url(self) -> str:
        """``http://host:port`` the agent answers on (``https://`` with TLS on)."""
        assert self._sock is not None, "the agent is not running"
        host, port = self._sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self._tls is not None else 'http'}://{host}:{port}"

    @property
    def protocol_url(self) -> str | None:
        """``tcp://host:port`` of the wire protocol over TCP, when ``protocol_port`` is set."""
        if self._protocol_sock is None:
            return None
        host, port = self._protocol_sock.getsockname()[:2]
        return f"tcp://{host}:{port}"

    @property
    def rpc_url(self) -> str:
        """``ws://host:port/rpc``: the wire protocol on the agent's own port."""
        return rpc_url(self.url)

    @property
    def supervisor(self) -> Supervisor:
        assert self.runtime is not None, "the agent is not running"
        return self.runtime.supervisor

    def check_config(self) -> None:
        """Refuse configurations that would be unsafe to run.

        Raises:
            ConfigError: a non-loopback bind without an auth token.
        """
        cfg = self.config
        config_pools(cfg)  # raises on a bad [[pools]] entry before anything starts
        declared_requests(cfg)  # and on a bad [[processes]] entry, or procfile
        has_key = cfg.manager is not None and cfg.manager.key is not None
        if not cfg.is_loopback() and not cfg.auth_token and not has_key:
            raise ConfigError(
                f"refusing to listen on {cfg.host}: off loopback the agent requires auth. "
                "Set an auth token (--auth-token-file FILE or auth_token in the config file), "
                "link it to a manager with a key (--manager URL --key-file FILE), "
                "or listen on 127.0.0.1."
            )
        weak = weak_secret(cfg.host, cfg.auth_token, loopback=cfg.is_loopback())
        if weak is not None:
            raise ConfigError(weak)
        try:  # a missing or mismatched file, said before anything starts
            if cfg.tls is not None:
                self._tls = server_context(cfg.tls)
            if cfg.manager is not None:
                LinkTls(cfg.manager).check()
        except TlsError as exc:
            raise ConfigError(str(exc)) from None

    async def __aenter__(self) -> Agent:
        self.check_config()
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # 0700 whatever the umask
        self._lock = DataDirLock(cfg.data_dir)
        self._lock.acquire()
        try:
            await self._start()
        except BaseException:
            await self._abandon_main()  # what the start got to, it takes back
            await self._dismiss_keeper()
            for sock in (self._sock, self._protocol_sock):
                if sock is not None:
                    sock.close()
            self._lock.release()
            raise
        return self

    async def _start(self) -> None:
        cfg = self.config
        raise_fd_limit()
        agent_id = agent_id_for(cfg.data_dir)
        ledger = ledger_path(cfg.data_dir)
        leftovers = descendants.kill_ledger(ledger) + procs.sweep(procs.AGENT_MARKER, agent_id)
        if leftovers:
            log.warning("killed %d processes left by a previous agent on %s", leftovers, cfg.data_dir)
        self._start_tracking(agent_id, ledger)
        self._keeper = Keeper(agent_id, cfg.data_dir)
        self._keeper.start()
        fetcher = Fetcher(cfg.data_dir / "cache", cfg.fetch)
        self._builds = Builds(cfg.data_dir / "builds", cfg.builds, cfg.build_env())
        apps = Apps(fetcher, cfg.unpack, cfg.data_dir / "run", self._builds)
        store = RecordStore(cfg.data_dir / "processes")
        supervisor = Supervisor(cfg, apps, store, agent_id)
        self.runtime = AgentRuntime(cfg, supervisor, SysInfo(cfg.data_dir))
        self.runtime.sessions = SessionManager(cfg, agent_id)
        if cfg.manager is not None and cfg.manager.key is not None:
            self.runtime.trust = Trust()  # the manager's tokens open this agent's API too
        self.runtime.rpc = build_service(cfg, self.runtime.sessions, self.runtime.trust)
        if cfg.manager is not None:
            from herder.agent.link.inventory import take_inventory

            runtime = self.runtime  # its router is made later: read when the manager asks
            self.runtime.worker = WorkerLink(
                cfg,
                supervisor,
                self.runtime.sysinfo,
                lambda: self.url,
                trust=self.runtime.trust,
                inventory=lambda: take_inventory(supervisor, runtime.router, runtime.sessions, self.url),
            )
        self._sock = bind_socket(cfg.host, cfg.port)
        if cfg.protocol_port is not None:
            self._protocol_sock = bind_socket(cfg.host, cfg.protocol_port)
        self._launch()
        await supervisor.wait_ready()
        start_declared(supervisor, store, cfg)  # the recorded processes, then the declared ones
        guard_names = [*LOOPBACK_NAMES, cfg.host, *cfg.allowed_hosts]
        self.runtime.router = Router(
            cfg, supervisor, agent_names=[host_name(h) for h in guard_names], tls=self._tls
        )
        try:
            await self.runtime.router.start()
        except BaseException:
            self.request_stop()
            with contextlib.suppress(Exception):
                await self.wait_stopped()
            raise
        await self._wait_ready(
            self.runtime.started, ConfigError("the agent's HTTP server stopped during start-up")
        )

    async def run(self) -> None:
        """Serve and supervise until ``request_stop()``; the owner of every task the agent runs.

        The tracking timer runs until the last unit has stopped (it pings the keeper, the
        watchdog, while they stop); the rest is ``_serve_and_supervise``.
        """
        async with asyncio.TaskGroup() as tg:
            tracking = tg.create_task(self._track(), name="tracking")
            try:
                await self._serve_and_supervise()
            finally:
                tracking.cancel()

    async def _serve_and_supervise(self) -> None:
        """The HTTP server, the supervisor, the sessions and the manager link, in one group."""
        import uvicorn

        from herder import ui
        from herder.agent import metrics
        from herder.agent.api.events import event_routes
        from herder.agent.api.guard import Guard
        from herder.agent.api.routes import build_app
        from herder.agent.router.front import front_protocol
        from herder.frontdoor import server_options

        assert self.runtime is not None
        assert self._sock is not None
        cfg = self.config
        # The router starts after the HTTP server's task (it needs the supervisor's
        # task group); the front protocol looks it up on the runtime when it is there.
        routes = build_app(self.runtime)
        auth = "token" if self.runtime.trust is not None else "secret" if cfg.auth_token else "none"
        ui.install(routes, "agent", auth)  # /ui/: the dashboard and herder.js (#15)
        routes.include_router(event_routes(self.runtime))  # WS /events: the agent's page, live
        http_counts = metrics.install(routes, self.runtime)  # GET /metrics (#16)
        http_counts.app = Guard(
            routes,
            allowed_hosts=[*cfg.allowed_hosts, cfg.host],
            auth_token=cfg.auth_token,
            limits=cfg.limits,
            pool_for_host=self._pool_for_host,
            trust=self.runtime.trust,
        )
        server_config = uvicorn.Config(
            http_counts,  # outermost: the door's refusals are counted too
            **server_options(cfg.limits, front_protocol(cfg.limits, self.runtime, http_counts)),
            ws="websockets-sansio",
            ws_per_message_deflate=False,  # see rpc.client: compression costs more than it saves
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_HTTP_SHUTDOWN_S,
            # The protocol's own limit: a session moves files in messages of megabytes.
            ws_max_size=DEFAULT_MAX_FRAME_SIZE,
            ssl_context_factory=served_with(self._tls),
        )
        self._server = _QuietServer(server_config)
        supervisor = self.runtime.supervisor
        sessions = self.runtime.sessions
        assert sessions is not None
        protocol_server = await self._serve_protocol()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(supervisor.run(), name="supervisor")
                reaper = tg.create_task(sessions.run(), name="sessions")
                reloads = tg.create_task(self.runtime.reloader.run(), name="reloads")
                link = None
                if self.runtime.worker is not None:
                    link = tg.create_task(self.runtime.worker.run(), name="manager-link")
                await self._server.serve(sockets=[self._sock])
                if link is not None:
                    link.cancel()
                self.runtime.stopping = True
                if protocol_server is not None:
                    protocol_server.close()
                if self.runtime.router is not None:
                    await self.runtime.router.close()
                await sessions.shutdown()
                reaper.cancel()
                reloads.cancel()
                supervisor.shutdown()
        finally:
            supervisor.shutdown()
            if self._builds is not None:
                await self._builds.close()

    # -- descendants and the keeper ------------------------------------------------------

    def _start_tracking(self, agent_id: str, ledger: Path) -> None:
        """Own this process's orphans if told to; have the ledger written when it changes."""
        loop = asyncio.get_running_loop()
        if self.config.supervision.subreaper and not TRACKER.subreaper:
            TRACKER.subreaper = descendants.become_subreaper()

        def changed() -> None:
            if self._ledger_due:
                return  # a write is on its way
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing left to write
                loop.call_soon_threadsafe(self._ledger_changed)

        self._on_change = changed
        TRACKER.on_change = changed
        TRACKER.set_ledger(agent_id, ledger)

    def _ledger_changed(self) -> None:
        if not self._ledger_due:
            self._ledger_due = True
            asyncio.get_running_loop().call_later(LEDGER_DELAY_S, self._write_ledger)

    def _write_ledger(self) -> None:
        self._ledger_due = False
        TRACKER.flush()

    async def _track(self) -> None:
        """Walk and record the tree every ``track_interval_s``; ping the keeper, the watchdog.

        The watchdog runs once the manager said its lease: it stops leased work after
        ``lease - margin`` without a ping (the manager gives it away at ``lease + margin``).
        """
        interval = self.config.supervision.track_interval_s
        keeper = self._keeper
        assert keeper is not None
        next_walk = 0.0
        while True:
            worker = self.runtime.worker if self.runtime is not None else None
            lease = getattr(worker, "lease", None)
            watchdog = lease[0] - lease[1] if lease is not None else None
            if watchdog is not None and watchdog != keeper.lease_s:
                keeper.set_lease(watchdog)
            if watchdog is not None:
                keeper.ping()
            now = asyncio.get_running_loop().time()
            if now >= next_walk:
                next_walk = now + interval
                killed = TRACKER.tick()
                if TRACKER.subreaper:  # orphans it adopted that ended (SIGCHLD is uvloop's)
                    TRACKER.reap_adopted()
                if killed:
                    log.warning("killed %d processes left by processes that ended", killed)
                TRACKER.flush()
            if watchdog is not None:
                await asyncio.sleep(min(interval, watchdog / PINGS_PER_WINDOW))
            elif worker is not None and not worker.connected.is_set():
                with contextlib.suppress(TimeoutError):  # armed as soon as the link is up
                    await asyncio.wait_for(worker.connected.wait(), interval)
            else:
                await asyncio.sleep(interval)

    async def _serve_protocol(self) -> asyncio.Server | None:
        """The wire protocol over TCP on ``protocol_port``, if configured."""
        if self._protocol_sock is None or self.runtime is None or self.runtime.rpc is None:
            return None
        return await asyncio.start_server(
            self.runtime.rpc.serve_stream, sock=self._protocol_sock, limit=DEFAULT_MAX_FRAME_SIZE
        )

    def _pool_for_host(self, host: str) -> str | None:
        router = self.runtime.router if self.runtime is not None else None
        pool = router.pool_for_host(host.encode("latin-1")) if router is not None else None
        return pool.name if pool is not None else None

    def request_reload(self) -> None:
        """Apply the config file again, soon (SIGHUP); what it did is logged (``herder.agent.reload``)."""
        if self.runtime is not None:
            self.runtime.reloader.request_nowait()

    def request_stop(self) -> None:
        """Begin a graceful stop: no new requests, then every process stopped."""
        self._stop_requested = True
        if self.runtime is not None:
            self.runtime.stopping = True
        if self._server is not None:
            self._server.should_exit = True
        elif self._main is not None:
            self._main.cancel()  # not serving yet: nothing to let finish

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self._stop_main()
        finally:
            if self._sock is not None:
                self._sock.close()
            if self._protocol_sock is not None:
                self._protocol_sock.close()
            await self._dismiss_keeper()
            self._lock.release()

    async def _dismiss_keeper(self) -> None:
        """Sweep what is left, dismiss the keeper, drop the ledger (the timer ended with ``run``)."""
        # Every unit swept its own descendants; this catches anything that slipped
        # between units (a few ms), so the keeper can be dismissed without a scan.
        agent_id = agent_id_for(self.config.data_dir)
        procs.sweep(procs.AGENT_MARKER, agent_id)
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
        TRACKER.drop_ledger(agent_id)
        if TRACKER.on_change is self._on_change:
            TRACKER.on_change = None
        with contextlib.suppress(OSError):
            ledger_path(self.config.data_dir).unlink()
        if TRACKER.subreaper:
            TRACKER.reap_adopted()


def _quiet_server_class() -> type[Any]:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn without its own signal handling: the agent's owner decides."""

        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    return QuietServer


def _QuietServer(config: Any) -> Any:
    return _quiet_server_class()(config)
