"""Wiring: one manager = its database (migrated at start) + the HTTP API + its components.

``Manager`` is the embeddable form (tests and ``herder manager`` use it)::

    async with Manager(ManagerConfig(port=0, data_dir=tmp)) as manager:
        print(manager.url)

Every state the manager keeps lives in the database, so a manager killed at any moment
and started again (or a second manager on the same PostgreSQL) carries on from there:
what was submitted was committed before ``POST /tasks`` answered, and reports likewise.

``ManagerRuntime`` builds the components and wires each to the narrow interfaces it
needs of the others: the agents' RPC service (``agents``), the dispatcher
(``dispatch``), output kept per work item (``output``), the lease keeper (``leases``)
and the registry (``services``). ``Manager.run`` owns one task group: the HTTP server
and a group of the long-running components (lease keeper, dispatcher, registry sweeper,
the writer's quiet heartbeats);
stopping the manager stops the server, then cancels that group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from herder import __version__, ui
from herder.auth import weak_secret
from herder.clock import SYSTEM_CLOCK, Clock
from herder.daemon import Component, Daemon, run_components
from herder.frontdoor import AccessTokens, Authenticate, Door, RouteLimit, SharedSecret, server_options
from herder.manager.agents import AgentsService, LinkedWorkers, LinkTerms
from herder.manager.authority import KEYS_CHANNEL, Authority, TokenVerifier, UnknownDatabase
from herder.manager.config import ManagerConfig
from herder.manager.dispatch import Dispatcher
from herder.manager.errors import ManagerError as ManagerError  # re-exported: what the CLI catches
from herder.manager.errors import StartupError
from herder.manager.events import DELETIONS_CHANNEL, Events
from herder.manager.keywatch import KeyWatch
from herder.manager.leases import LeaseKeeper
from herder.manager.models import TaskSubmission
from herder.manager.output import Output
from herder.manager.outputshare import CHANNEL as OUTPUT_CHANNEL
from herder.manager.outputshare import OutputShare
from herder.manager.registry_store import RegistryStore
from herder.manager.schedules import Scheduler
from herder.manager.services import Services
from herder.manager.stops import CHANNEL as STOPS_CHANNEL
from herder.manager.stops import Stops
from herder.manager.store import db as database
from herder.manager.store import logs as item_logs
from herder.manager.store import queries
from herder.manager.store.logs import FinalLog
from herder.manager.store.single import SqliteGuard
from herder.manager.store.submissions import NewTask
from herder.net import listen_socket
from herder.rpc import Principal, Service, SharedSecretVerifier, Verifier
from herder.tls import TlsError, served_with, server_context

log = logging.getLogger(__name__)

GRACEFUL_HTTP_SHUTDOWN_S = 5
# Routes that need no token: liveness, the public key, the one that checks its own key,
# the dashboard's files and the API pages (a browser loads them before it has a token;
# herder.ui).
PUBLIC_PATHS = (
    frozenset({"/healthz", "/auth/jwks.json", "/auth/token"})
    | ui.public_paths()
    | ui.api_pages_public_paths()
)


def rpc_service(config: ManagerConfig, authority: Authority | None) -> Service:
    """The ``herder-manager`` RPC service at ``/rpc``, checking the manager's credentials.

    With keys, access tokens; else the shared secret if there is one; else anyone is
    an admin (loopback only: ``Manager`` refuses to listen elsewhere without auth).
    """
    verifier: Verifier | None = None
    if authority is not None:
        verifier = TokenVerifier(authority)
    elif config.auth_token:
        verifier = SharedSecretVerifier(config.auth_token)
    anonymous = None if verifier is not None else Principal("anonymous", "admin")
    return Service("herder-manager", __version__, verifier=verifier, anonymous=anonymous)


class ManagerRuntime:
    """The manager's components, wired to one another; what the routes use, by reference.

    Each component depends on narrow protocols of the others (``agents``, ``dispatch``,
    ``output``, ``leases``, ``services``); this is the one place that knows them all.
    The long-running ones (``components()``) run in the manager's task group.
    """

    def __init__(
        self,
        config: ManagerConfig,
        engine: Any,
        authority: Authority | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        from herder.manager.targets import Targets
        from herder.manager.writes import Writes

        self.config = config
        self.authority = authority
        # Coroutines run when the manager stops (the proxy's HTTP client, ...).
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        self.sessions = database.sessions(engine)
        self.writes = Writes(
            engine,
            config.lease_s,
            config.heartbeat_interval_s,
            database.create_round_engine(config.database_url()),
            offline_after_s=config.offline_after_s,
        )
        self.started = asyncio.Event()
        self.targets = Targets(config)  # what the proxy reaches (and registrations may name)
        self.output = Output(self, self)
        self.linked = LinkedWorkers(silent_after_s=max(2 * config.heartbeat_interval_s, 3.0))
        self.dispatcher = Dispatcher(self.writes, self.linked, self.output)
        terms = LinkTerms(config.heartbeat_interval_s, config.lease_s, config.lease_margin)
        self.agents = AgentsService(
            self.writes, self, self.output, self.dispatcher, terms, linked=self.linked, revocations=authority
        )
        store = RegistryStore(engine)  # the registry's rows, shared by every manager (#17)
        self.services = Services(
            authority is not None,
            self.targets,
            config.service_quota,
            config.service_quota_overrides,
            store=store,
        )
        # Revocations made through another manager, heard on the registry's LISTEN (#17).
        self.keywatch = KeyWatch(authority, self) if authority is not None else None
        if self.keywatch is not None:
            store.follow(KEYS_CHANNEL, self.keywatch.changed)
        # Cancels and deletes reach workers linked to another manager (#17).
        self.stops = Stops(self.linked, self.dispatcher, store.manager_id, self.output)
        store.follow(STOPS_CHANNEL, self.stops.heard)
        # A task's live output read through any manager; deletions told to every dashboard (#17).
        self.manager_id = store.manager_id
        self.output_share = OutputShare(self.output, self, store.manager_id, enabled=store.postgres)
        if store.postgres:
            self.output.tap = self.output_share
            store.follow(OUTPUT_CHANNEL, self.output_share.heard)
        self.leases = LeaseKeeper(
            self,
            heartbeat_interval_s=config.heartbeat_interval_s,
            lease_s=config.lease_s,
            lease_margin_s=config.lease_margin,
            revocations=authority,
            ended_work=self.output,
        )
        self.rpc = rpc_service(config, authority)  # /rpc: the agents' methods and the registry's
        for method in (*self.agents.methods(), *self.services.methods()):
            self.rpc.registry.add(method)
        # Rounds of writes that free or add work claim for the linked workers themselves.
        self.writes.dispatch_to = self.linked.live_ids
        self.writes.on_claimed = self.dispatcher.push
        self.events = Events(self)  # WS /events: the dashboard's feed, told of beats and rounds
        self.writes.on_beat = self.events.beat
        self.writes.on_round = self.events.changed
        store.follow(DELETIONS_CHANNEL, self.events.heard_deleted)
        self.events.on_deleted_elsewhere = self.output.task_deleted  # its log streams end here too
        self.schedules = Scheduler(self, clock)  # fires the schedules' runs (#18), on ``clock``

    def components(self) -> dict[str, Component]:
        """The manager's long-running parts, by name: each runs until cancelled."""
        components: dict[str, Component] = {
            "lease-keeper": self.leases,
            "dispatcher": self.dispatcher,
            "services-sweeper": self.services,
            "quiet-heartbeats": self.writes,
            "events": self.events,
            "stops": self.stops,
            "schedules": self.schedules,
        }
        if self.keywatch is not None:
            components["key-watch"] = self.keywatch
        if self.output_share.enabled:
            components["output-share"] = self.output_share
        return components

    async def parser_of_item(self, item_id: int) -> str | None:
        """The parser a work item's task names (None: no such item); ``output.ParserNames``."""
        async with self.transaction() as db:
            return await queries.parser_of_item(db, item_id)

    async def keep_ended_logs(self, logs: list[FinalLog]) -> list[int]:
        """Store the output of those of these items that ended; their ids (``output.EndedLogs``)."""
        async with self.transaction() as db:
            return await item_logs.keep_ended(db, logs)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A database session inside a transaction, committed on success."""
        async with self.sessions() as db, db.begin():
            yield db

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        self.started.set()
        yield

    async def compile(self, req: TaskSubmission) -> NewTask:
        """The task and its work items' rows, from the compiler its ``type`` names.

        Raises:
            InvalidTask: naming the field (``type``, ``parser``, ``settings.<key>``); the
                compilers' ``TaskTypeError`` is one.
        """
        from herder.manager.states import ItemStatus, TaskStatus
        from herder.manager.tasktypes import load_compiler, load_parser, normalize_settings

        def work() -> NewTask:
            settings = normalize_settings(req.settings)
            compiled = compiler.compile(settings)
            now = time.time()
            task = {
                "task_id": req.task_id,
                "type": req.type,
                "parser": req.parser,
                "settings": settings,
                "priority": req.priority,
                "tags": list(req.tags),
                "status": TaskStatus.QUEUED,
                "paused": False,
                "frame_start": compiled.frame_start,
                "frame_end": compiled.frame_end,
                "format": compiled.format,
                "max_attempts": req.max_attempts or self.config.max_attempts,
                "created_at": now,
                "updated_at": now,
            }
            items = [
                {
                    "index": index,
                    "argv": list(item.argv),
                    "env": dict(item.env),
                    "cwd": item.cwd,
                    "label": item.label,
                    "frame_start": item.frame_start,
                    "frame_end": item.frame_end,
                    "status": ItemStatus.QUEUED,
                    "priority": req.priority,
                    "tags": list(req.tags),
                    "paused": False,
                    "attempt": 0,
                    "created_at": now,
                }
                for index, item in enumerate(compiled.items)
            ]
            return NewTask(task, items)

        compiler = load_compiler(req.type)
        load_parser(req.parser)  # an unknown parser is refused now, not when output arrives
        if getattr(compiler, "inline", False):
            return work()
        return await asyncio.to_thread(work)  # the largest tasks take a few hundred ms

    async def stop_running(self, db: Any, running: list[tuple[int, int, int]]) -> None:
        """Work that was canceled (in ``db``'s transaction) while a worker runs it.

        Its attempt is fenced off in the database already: the worker's next report or
        heartbeat tells it the work is no longer its own, and it stops it. It is told at
        once too, by this manager or the one holding its link (``stops``).
        """
        for worker_id, item_id, attempt in running:
            log.info(
                "work item %d (attempt %d) canceled while worker %d runs it", item_id, attempt, worker_id
            )
        await self.stops.stop(db, running)


class FrontDoor(Door):
    """The manager's configuration of the shared front door (``herder.frontdoor``).

    * ``Host`` must name the manager (loopback names, its bound address, the configured
      ``allowed_hosts``), and a state-changing request or a WebSocket from a foreign
      ``Origin`` is refused: the manager reads JSON whatever the content type says, so
      without this any web page open on this host could submit tasks (commands);
    * with keys in the data dir (``herder keys init``), every route but the public ones
      needs a valid access token (``Authority.verify_token``); without keys but with a
      shared secret configured, every route but the public ones needs that secret;
    * ``config.limits`` bound every client; bodies through ``/proxy/`` get their own,
      bigger bound (they are streamed to the service, never held);
    * a refused WebSocket is closed before it opens (clients see 403).
    """

    def __init__(self, app: Any, config: ManagerConfig, authority: Authority | None = None) -> None:
        limits = config.limits
        credentials: Authenticate | None = None
        if authority is not None:
            credentials = AccessTokens(
                authority.verify_token,
                missing="an access token is required: 'Authorization: Bearer <token>' "
                "(herder keys token prints one for a key)",
            )
        elif config.auth_token:
            credentials = SharedSecret(config.auth_token)
        super().__init__(
            app,
            limits=limits,
            hosts=[config.host, *config.allowed_hosts],
            authenticate=credentials,
            public_paths=PUBLIC_PATHS,
            routes=[RouteLimit("/proxy/", limits.proxy_max_body_bytes, limits.proxy_body_timeout_s)],
            websocket_denial=False,
        )


class Manager(Daemon):
    """A running manager; use as an async context manager."""

    name = "manager"

    def __init__(self, config: ManagerConfig | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__()
        self.config = config or ManagerConfig()
        self._clock = clock  # what the schedules fire by (a test's own)
        self._sock: socket.socket | None = None
        self._server: Any = None
        self.runtime: ManagerRuntime | None = None
        self.engine: Any = None
        self.authority: Authority | None = None
        self._guard: SqliteGuard | None = None  # held while running on a SQLite file
        self._tls: Any = None  # its ssl.SSLContext, with TLS on

    @property
    def url(self) -> str:
        assert self._sock is not None, "the manager is not running"
        host, port = self._sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self._tls is not None else 'http'}://{host}:{port}"

    async def __aenter__(self) -> Manager:
        try:
            return await self._open()
        except BaseException:  # a start that failed lets the next manager onto the file
            self._release_guard()
            raise

    def _release_guard(self) -> None:
        if self._guard is not None:
            self._guard.release()
            self._guard = None

    async def _open(self) -> Manager:
        cfg = self.config
        from herder.auth import AuthKeyError

        try:
            self.authority = Authority.load(cfg.data_dir)
        except AuthKeyError as exc:
            raise StartupError(str(exc)) from exc
        if not cfg.is_loopback() and not cfg.auth_token and self.authority is None:
            raise StartupError(
                f"refusing to listen on {cfg.host}: off loopback the manager requires auth "
                f"(herder keys init --data-dir {cfg.data_dir}, or --auth-token-file FILE), "
                "or listen on 127.0.0.1"
            )
        weak = weak_secret(cfg.host, cfg.auth_token, loopback=cfg.is_loopback())
        if weak is not None:
            raise StartupError(weak)
        self._load_tls()
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # 0700 whatever the umask
        path = database.sqlite_path(cfg.database_url())
        if path is not None:  # one manager per SQLite file (#17)
            self._guard = SqliteGuard(path)
            self._guard.acquire()
        try:
            self.engine = database.create_engine(
                cfg.database_url(),
                idle_in_transaction=database.idle_in_transaction_s(cfg.heartbeat_interval_s),
            )
            await database.migrate(self.engine)
        except database.DatabaseError as exc:
            raise StartupError(str(exc)) from exc
        self.runtime = ManagerRuntime(cfg, self.engine, self.authority, self._clock)
        if self.authority is not None:
            try:
                async with self.runtime.transaction() as db:
                    await self.authority.check_database(db, cfg.data_dir, accept_new=cfg.accept_new_database)
                    await self.authority.refresh(db)
            except UnknownDatabase as exc:
                await self.engine.dispose()
                raise StartupError(str(exc)) from None
        try:
            self._sock = listen_socket(cfg.host, cfg.port)
        except OSError as exc:
            raise StartupError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}") from exc
        try:
            await self.runtime.services.start()  # the registrations in the database, before serving
        except Exception as exc:
            self._sock.close()
            await self.engine.dispose()
            raise StartupError(f"cannot read the service registry from the database: {exc}") from exc
        self.runtime.targets.listen(*self._sock.getsockname()[:2])
        self.runtime.services.relay.listening(self.url, cfg.allowed_hosts)  # relayed services' URLs
        self._launch()
        try:
            await self._wait_ready(
                self.runtime.started, StartupError("the manager's HTTP server stopped during start-up")
            )
        except BaseException:  # what the start got to, it takes back
            await self._abandon_main()
            self._sock.close()
            await self.engine.dispose()
            raise
        return self

    def _load_tls(self) -> None:
        """The TLS context, with TLS on: a file that cannot be used stops the start, naming it."""
        if self.config.tls is not None:
            try:
                self._tls = server_context(self.config.tls)
            except TlsError as exc:
                raise StartupError(str(exc)) from None

    async def run(self) -> None:
        """Serve HTTP and run the components until ``request_stop()``; the owner of their tasks."""
        import uvicorn

        from herder.manager import events, metrics, relay
        from herder.manager.api import build_app

        assert self.runtime is not None
        assert self._sock is not None
        routes = build_app(self.runtime)
        relay.install(routes, self.runtime)  # WS /relay/{id}: services reached over their link (#15)
        events.install(routes, self.runtime.events)  # WS /events: the dashboard's live feed (#15)
        auth = "keys" if self.authority is not None else "secret" if self.config.auth_token else "none"
        ui.install(routes, "manager", auth)  # /ui/: the dashboard (#15)
        http_counts = metrics.install(routes, self.runtime)  # GET /metrics (#16)
        http_counts.app = FrontDoor(routes, self.config, self.authority)
        config = uvicorn.Config(
            http_counts,  # outermost: the door's refusals are counted too
            **server_options(self.config.limits),
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_HTTP_SHUTDOWN_S,
            ssl_context_factory=served_with(self._tls),
        )
        self._server = uvicorn.Server(config)
        self._server.capture_signals = contextlib.nullcontext  # the owner decides about signals
        runtime = self.runtime
        try:
            async with asyncio.TaskGroup() as tg:
                components = tg.create_task(run_components(runtime.components()), name="components")
                await self._server.serve(sockets=[self._sock])
                components.cancel()
        finally:
            await runtime.linked.close_all("the manager is stopping")
            await runtime.writes.close()
            for hook in runtime.on_stop:
                with contextlib.suppress(Exception):
                    await hook()

    def request_stop(self) -> None:
        """Begin a graceful stop: in-flight requests get ``GRACEFUL_HTTP_SHUTDOWN_S``."""
        self._stop_requested = True
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
            if self.engine is not None:
                await self.engine.dispose()
            self._release_guard()
