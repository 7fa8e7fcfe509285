"""The router: every pool of the agent, where each one is reached, and their lifecycle.

A pool is reached two ways: on its own ``listen`` address, where all traffic is its
own (the Kit seed: an agent whose pool listens on 8010 *is* a Kit agent), and on the
agent's port, where a request whose ``Host`` is ``<pool>.<anything>`` goes to the
pool (``front.py`` hands such connections over). A Host that names the agent itself
(loopback names, the bound address, ``allowed_hosts``) always reaches the agent's API.

Pools come from the API (recorded in ``<data dir>/pools/``) and from ``[[pools]]`` in
the config file (not recorded: the file is their record; on a name clash the file
wins). Both are started when the agent starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pydantic import ValidationError

from herder.agent.config import AgentConfig
from herder.agent.errors import ConfigError, Conflict, NotFound
from herder.agent.processes.supervisor import Supervisor
from herder.agent.router.client import ClientConnection, ProxyContext, ProxyLimits
from herder.agent.router.models import PoolSpec, listen_is_loopback, split_listen
from herder.agent.router.pools import Pool
from herder.agent.router.store import PoolStore
from herder.taskgroup import OwnedTaskGroup

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

SWEEP_TICK_S = 1.0


class ListenError(Conflict):
    """The pool's listen address cannot be bound (in use, not an address here)."""


class Router:
    """All pools of one agent."""

    def __init__(
        self,
        config: AgentConfig,
        supervisor: Supervisor,
        *,
        agent_names: Iterable[str] = (),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._config = config
        self._tls = tls  # the agent's: a pool's own address serves HTTPS when the agent's port does
        self._supervisor = supervisor
        self._store = PoolStore(config.data_dir / "pools")
        limits = config.router
        self.context = ProxyContext(
            limits=ProxyLimits(
                header_timeout_s=limits.header_timeout_s,
                keepalive_timeout_s=limits.keepalive_timeout_s,
                read_timeout_s=limits.read_timeout_s,
                connect_timeout_s=limits.connect_timeout_s,
                max_body_bytes=limits.max_body_bytes,
            ),
            resolve=self.pool_for_host,
        )
        self.pools: dict[str, Pool] = {}
        # Called with a pool when it opens, changes and is removed (the agent's WS /events):
        # it is in ``pools`` until it is removed.
        self.watchers: list[Callable[[Pool], None]] = []
        self._listeners: dict[str, asyncio.Server] = {}
        self._agent_names = frozenset(n.lower() for n in agent_names)
        # run()'s task group: the sweeper, every pool's group, the client connections'
        # waits. The agent opens its pools while it starts, before its own task group
        # could take the router, so start() runs run() in a task of the router's own,
        # which close() ends and awaits.
        self._tasks = OwnedTaskGroup("router")
        self.context.tasks = self._tasks
        self._runner: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # -- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        """Start ``run()``, then the recorded pools and those of the config file."""
        self._runner = asyncio.get_running_loop().create_task(self.run(), name="router")
        try:
            await self._tasks.wait_up()  # run()'s first step
            tick = min(SWEEP_TICK_S, self.context.limits.header_timeout_s / 4)
            self._sweeper = self._tasks.spawn(self._sweep(tick), "router:sweeper")
            await self._open_all()
        except BaseException:
            self._runner.cancel()  # what the start got to stops with it
            await asyncio.wait({self._runner})
            raise

    async def _open_all(self) -> None:
        from_config = self._config_pools()
        recorded = self._store.load_all() if self._config.restore else []
        for spec in recorded:
            if spec.name in from_config:
                log.warning("pool %s: the config file declares it too; the file's pool is used", spec.name)
            else:
                await self._open_at_start(spec, origin="api")
        for spec in from_config.values():
            await self._open_at_start(spec, origin="config")

    async def run(self) -> None:
        """Own the connection sweeper, every pool's task group and the client connections'
        waits (for an instance, for a connection to one) until ``close()`` (or cancelled)."""
        await self._tasks.run()

    def _config_pools(self) -> dict[str, PoolSpec]:
        return config_pools(self._config)

    async def close(self) -> None:
        """Stop listening, close client connections, stop every pool's instances, end ``run()``."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.wait({self._sweeper})
        for server in self._listeners.values():
            server.close()
        for conn in list(self.context.connections):
            conn.close()
        await asyncio.gather(*(pool.close() for pool in self.pools.values()))
        self._listeners.clear()
        await self._tasks.stop()  # what is left (a wait for an instance) is cancelled
        if self._runner is not None:
            await asyncio.wait({self._runner})

    async def _sweep(self, tick: float) -> None:
        """Close connections past their deadlines, every ``tick`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(tick)
            self.context.sweep()

    # -- routing -------------------------------------------------------------------------

    def pool_for_host(self, host: bytes | None) -> Pool | None:
        """The pool a ``Host`` header names (``<pool>.<anything>``), or None."""
        if not host or not self.pools:
            return None
        name = host.decode("latin-1").lower()
        if name.startswith("["):
            return None  # an IPv6 literal names an address, not a pool
        name = name.rsplit(":", 1)[0]
        if name in self._agent_names:
            return None
        label, dot, _ = name.partition(".")
        return self.pools.get(label) if dot else None

    # -- operations ----------------------------------------------------------------------

    def get(self, name: str) -> Pool:
        try:
            return self.pools[name]
        except KeyError:
            raise NotFound(f"no pool named {name!r}") from None

    async def create(self, spec: PoolSpec) -> Pool:
        """Create, record and start a pool.

        Raises:
            Conflict: a pool with this name exists.
            ListenError: its listen address cannot be bound.
            ConfigError: its listen address is off loopback while the agent runs open.
        """
        if spec.name in self.pools:
            raise Conflict(f"a pool named {spec.name!r} exists already")
        self._check_listen(spec)
        pool = await self._open(spec, origin="api")
        try:
            await asyncio.to_thread(self._store.save, spec)
        except OSError:
            await self._remove(pool, timeout_s=0)
            raise
        return pool

    async def delete(self, name: str, timeout_s: float) -> Pool:
        """Drain the pool (bounded by ``timeout_s``), stop it, forget it."""
        pool = self.get(name)
        await pool.drain(timeout_s)
        await self._remove(pool, timeout_s)
        if pool.origin == "api":
            await asyncio.to_thread(self._store.remove, name)
        return pool

    async def scale(self, name: str, min_instances: int | None, max_instances: int | None) -> Pool:
        pool = self.get(name)
        await pool.scale(min_instances, max_instances)
        if pool.origin == "api":
            await asyncio.to_thread(self._store.save, pool.spec)
        return pool

    async def record(self, pool: Pool) -> None:
        """Write an API pool's spec to its record again (a deploy changed what it runs)."""
        if pool.origin == "api" and self.pools.get(pool.name) is pool:
            await asyncio.to_thread(self._store.save, pool.spec)

    async def open_declared(self, spec: PoolSpec) -> None:
        """Open a pool the config file declares, as a reload does: not recorded (the file is
        its record); one that cannot listen is reached by Host only, as at start."""
        await self._open_at_start(spec, origin="config")

    # -- internals --------------------------------------------------------------------------

    def _check_listen(self, spec: PoolSpec) -> None:
        check_listen(spec, self._config)

    async def _open_at_start(self, spec: PoolSpec, *, origin: str) -> None:
        """Open a pool at start; one that cannot listen runs without its own address.

        A port taken by something else must not keep the agent (and every process it
        supervises) from starting: the pool is still reached by Host on the agent's
        port, and its document says what went wrong.
        """
        try:
            await self._open(spec, origin=origin)
        except ListenError as exc:
            log.error("%s; it is reached by Host only until it is created again", exc)
            pool = await self._open(spec.model_copy(update={"listen": None}), origin=origin)
            pool.spec = spec
            pool.error = str(exc)

    async def _open(self, spec: PoolSpec, *, origin: str) -> Pool:
        pool = Pool(spec, self._supervisor, origin=origin)
        await pool.launch(self._tasks)  # its task group is up before any request can reach it
        try:
            await self._listen(pool)
        except BaseException:
            await pool.close()
            raise
        self.pools[spec.name] = pool
        pool.watchers.append(lambda: self._changed(pool))
        pool.start()
        self._changed(pool)
        log.info("pool %s: %s", spec.name, f"listening on {pool.url}" if pool.url else "routed by Host")
        return pool

    async def _listen(self, pool: Pool) -> None:
        """Bind the pool's own ``listen`` address, if it has one.

        Raises:
            ListenError: it cannot be bound.
        """
        spec = pool.spec
        if spec.listen is not None:
            host, port = split_listen(spec.listen)
            loop = asyncio.get_running_loop()
            try:
                server = await loop.create_server(
                    lambda: ClientConnection(self.context, pool), host, port, backlog=1024, ssl=self._tls
                )
            except OSError as exc:
                message = f"pool {spec.name!r} cannot listen on {spec.listen}: {exc.strerror}"
                raise ListenError(message) from None
            self._listeners[spec.name] = server
            bound = server.sockets[0].getsockname()
            shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
            pool.url = f"{'https' if self._tls is not None else 'http'}://{shown}:{bound[1]}"

    async def _remove(self, pool: Pool, timeout_s: float) -> None:
        server = self._listeners.pop(pool.name, None)
        if server is not None:
            server.close()
        for conn in list(self.context.connections):
            if conn.pool is pool:
                conn.close()
        await pool.close()
        if self.pools.get(pool.name) is pool:
            del self.pools[pool.name]
            self._changed(pool)

    def _changed(self, pool: Pool) -> None:
        for watcher in self.watchers:
            watcher(pool)


def check_listen(spec: PoolSpec, config: AgentConfig) -> None:
    """Off loopback, a pool may listen only if the agent itself runs with auth.

    Raises:
        ConfigError: it may not.
    """
    if spec.listen is not None and not listen_is_loopback(spec.listen) and not config.auth_token:
        raise ConfigError(
            f"pool {spec.name!r}: listening on {spec.listen} (off loopback) needs the agent to run "
            "with auth configured; use a loopback address"
        )


def config_pools(config: AgentConfig) -> dict[str, PoolSpec]:
    """The config file's ``[[pools]]``, validated.

    Raises:
        ConfigError: naming the entry and the field that is wrong.
    """
    specs: dict[str, PoolSpec] = {}
    for index, raw in enumerate(config.pools):
        try:
            spec = PoolSpec.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"pools[{index}].{'.'.join(str(p) for p in e['loc']) or '(entry)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigError(f"in the config file: {problems}") from None
        if spec.name in specs:
            raise ConfigError(f"pools[{index}] in the config file: pool {spec.name!r} is declared twice")
        check_listen(spec, config)
        specs[spec.name] = spec
    return specs
