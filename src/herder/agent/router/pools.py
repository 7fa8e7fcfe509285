"""Pools: instances started on demand, kept ready, replaced when they crash (the Kit seed).

The seed's three parts: the *facility* is a ``Pool`` (it hands out instances), the
*controller* is an ``Instance`` with its controlling task (it knows how its process was
started, where it runs and how to reach it, and notices when it must be reached again
after a crash). Each instance is a supervised unit (``supervisor.Unit``), so it gets
the same restart, backoff, output capture and no-orphans guarantees as any process.

How requests get instances (``try_acquire`` on the fast path, ``acquire`` otherwise):

* the ready instance with the fewest requests in flight, below the concurrency limit;
* if there is none, the request waits in a FIFO queue and the pool starts instances
  for the load that waits, counting what is already starting: 100 requests on a cold
  pool with a concurrency of 80 start two instances, not a hundred, and never more
  than ``max_instances``;
* a request that waited ``start_timeout`` gets a 503 with ``Retry-After``; sooner when
  the pool knows no instance is coming: one failed for good, or every one is in a crash
  loop (its process keeps exiting: the 503 and the pool's ``error`` quote its last exit
  and stderr line).

An instance is ``ready`` when its readiness check passes on its current process; it
becomes ``unready`` when its process changes (crash, restart) or when the proxy saw a
connection to it fail, and is checked again. Instances above ``min_instances`` that
served nothing for ``idle_timeout`` are stopped. ``drain`` stops taking requests,
waits (bounded) for those in flight, and stops every instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from herder.agent.models import ProcessSpec, RestartPolicy
from herder.agent.processes.states import State
from herder.agent.processes.supervisor import Supervisor, Unit, pick_port
from herder.agent.router import probe
from herder.agent.router.models import PORT_PLACEHOLDER, PoolSpec
from herder.metrics import Buckets
from herder.taskgroup import OwnedTaskGroup

if TYPE_CHECKING:
    from herder.agent.router.deploys import Deploys
    from herder.agent.router.upstream import UpstreamConnection

log = logging.getLogger(__name__)

INSTANCE_HOST = "127.0.0.1"
MAX_IDLE_CONNECTIONS = 128
# How often idle instances are looked for, at most (shorter for short idle timeouts).
REAP_TICK_S = 1.0


class Unavailable(Exception):
    """No instance can take the request; answered 503 with ``Retry-After``."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InstanceState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    UNREADY = "unready"
    STOPPING = "stopping"


class PoolState(enum.StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"
    DRAINED = "drained"


# The members as module constants: in Python 3.11 ``InstanceState.READY`` goes through
# ``EnumType.__getattr__`` (~0.25 µs a read, 15 times cheaper as a global); each request
# reads a few (#19).
_STARTING, _READY, _UNREADY, _STOPPING = (
    InstanceState.STARTING,
    InstanceState.READY,
    InstanceState.UNREADY,
    InstanceState.STOPPING,
)
_ACTIVE, _DRAINING, _DRAINED = PoolState.ACTIVE, PoolState.DRAINING, PoolState.DRAINED


class Instance:
    """One running copy of the pool's program, and how to reach it."""

    __slots__ = (
        "_changed",
        "host",
        "id",
        "idle",
        "in_flight",
        "last_used",
        "port",
        "requests",
        "state",
        "unit",
        "version",
    )

    def __init__(self, instance_id: str, unit: Unit, port: int, version: int = 1) -> None:
        self.id = instance_id
        self.version = version  # the pool's version it runs (a deploy starts the next one)
        self.unit = unit
        self.host = INSTANCE_HOST
        self.port = port
        self.state = _STARTING
        self.in_flight = 0
        self.requests = 0
        self.last_used = time.monotonic()
        self.idle: list[UpstreamConnection] = []
        self._changed = asyncio.Event()
        unit.watchers.append(self._changed.set)

    def take_connection(self) -> UpstreamConnection | None:
        """An idle keep-alive connection to this instance, if one is open."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.reusable():
                return conn
        return None

    def put_connection(self, conn: UpstreamConnection) -> None:
        """Keep ``conn`` for the next request (or close it if it may not be kept)."""
        if self.state is _READY and len(self.idle) < MAX_IDLE_CONNECTIONS:
            self.idle.append(conn)
        else:
            conn.close()

    def forget_connection(self, conn: UpstreamConnection) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()

    @property
    def stopping(self) -> bool:
        return self.state is _STOPPING

    def changed(self) -> None:
        self._changed.set()

    async def wait_change(self, timeout_s: float | None = None) -> None:
        """Wait for a change (process state, suspicion, in-flight to zero) or the timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()


class Pool:
    """A named template for instances, and the instances it runs."""

    def __init__(self, spec: PoolSpec, supervisor: Supervisor, *, origin: str) -> None:
        self.spec = spec
        self.name = spec.name
        self.origin = origin
        self.state = _ACTIVE
        self.instances: list[Instance] = []
        self._ready: list[Instance] = []
        self._waiters: deque[asyncio.Future[Instance]] = deque()
        self._supervisor = supervisor
        self._numbers = 0
        # Asked to make a failed build again: the next instance does, once (not each
        # instance of a pool whose build still fails).
        self._rebuild = spec.rebuild
        # run()'s task group: the idle reaper, each instance's control, retirements.
        self._tasks = OwnedTaskGroup(f"pool {spec.name}")
        self._closed = False
        self._limit = spec.concurrency
        self.url: str | None = None  # set by the router when the pool listens on its own
        self.error: str | None = None  # the last thing that went wrong, for its document
        # Instances started because requests waited with none free (not the minimum kept
        # ready, not a replacement): each is a request that waited for a process to start.
        self.cold_starts = 0
        # How long instances took to answer, from the request sent to the response's last
        # byte (``client.py``), counted in integers and read at scrape time (#16).
        self.latency = Buckets()
        # Called after anything its document shows changed (the agent's WS /events).
        self.watchers: list[Callable[[], None]] = []
        # The version of ``spec`` the pool runs, and its deploys (``deploys.py``), made at the first.
        self.version = 1
        self.deploys: Deploys | None = None

    # -- life -------------------------------------------------------------------------

    async def launch(self, router_tasks: OwnedTaskGroup) -> None:
        """Run the pool's task group in the router's; return once it is up.

        Raises:
            Unavailable: the router is stopping.
        """
        self._tasks.start_in(router_tasks, f"pool:{self.name}")
        await self._tasks.wait_up()
        if not self._tasks.running:
            raise Unavailable(f"pool {self.name!r}: the router is stopping")

    async def run(self) -> None:
        """Own every task of the pool until ``close()`` has stopped its instances (or cancelled).

        What is left then (the reaper, controls, retirements under way) is cancelled and
        awaited here.
        """
        await self._tasks.run()

    def start(self) -> None:
        """Begin (once ``launch()`` returned): the minimum of instances, and the idle reaper."""
        self._spawn(self._reap_idle(), "reaper")
        self._ensure_minimum()

    async def close(self) -> None:
        """Stop everything the pool runs (the agent is stopping or the pool is deleted)."""
        self._closed = True
        self._fail_waiters(Unavailable(f"pool {self.name!r} is shutting down"))
        await asyncio.gather(*(self._retire(inst, 0) for inst in list(self.instances)))
        await self._tasks.stop()  # what is left (the reaper, controls) is cancelled

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        """Run ``coro`` in run()'s task group; a failure is logged, never spread to the others.

        Once the group is gone or closing (the pool is closed), nothing is started: what
        it would have done, ``close()`` has done.
        """
        self._tasks.spawn(coro, f"pool:{self.name}:{what}")

    # -- handing out instances ---------------------------------------------------------------

    def try_acquire(self, avoid: Instance | None = None) -> Instance | None:
        """The fast path: a ready instance with room, or None (then ``acquire``)."""
        if self._waiters or self.state is not _ACTIVE:
            return None
        return self._pick(avoid)

    def _pick(self, avoid: Instance | None = None) -> Instance | None:
        limit = self._limit
        best: Instance | None = None
        for inst in self._ready:
            if (limit and inst.in_flight >= limit) or inst is avoid:
                continue
            if best is None or inst.in_flight < best.in_flight:
                best = inst
        if (
            best is None
            and avoid is not None
            and avoid.state is _READY
            and (not limit or avoid.in_flight < limit)
        ):
            best = avoid  # the only one: a retry goes back to it after its check
        if best is not None:
            best.in_flight += 1
            best.requests += 1
            self._changed_now()
        return best

    async def acquire(self, avoid: Instance | None = None) -> Instance:
        """An instance for one request; waits for one to start or free up.

        Raises:
            Unavailable: the pool is draining, or no instance was ready within
                ``start_timeout``.
        """
        inst = self.try_acquire(avoid)
        if inst is not None:
            return inst
        if self.state is not _ACTIVE or self._closed:
            raise Unavailable(f"pool {self.name!r} is {self.state}", retry_after=5)
        if self._only_crash_loops():
            raise Unavailable(f"pool {self.name!r}: {self.error}", retry_after=5)
        waiter: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._changed_now()
        self._wake()
        self._grow()
        timeout = self.spec.start_timeout
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            if _granted(waiter):  # granted in the instant the deadline passed
                return waiter.result()
            self._forget_waiter(waiter)
            raise Unavailable(
                f"no instance of pool {self.name!r} was ready within {timeout:g} s "
                f"({self._describe_instances()})",
                retry_after=max(1, round(timeout / 4)),
            ) from None
        except BaseException:  # cancelled: the client went away
            if _granted(waiter):
                self.release(waiter.result())
            else:
                self._forget_waiter(waiter)
            raise

    def _forget_waiter(self, waiter: asyncio.Future[Instance]) -> None:
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        self._changed_now()

    def release(self, inst: Instance, now: float | None = None) -> None:
        """One request on ``inst`` is over (at ``now``, ``time.monotonic()``, if the caller knows)."""
        inst.in_flight -= 1
        inst.last_used = time.monotonic() if now is None else now
        self._changed_now()
        if inst.state is _STOPPING and inst.in_flight == 0:
            inst.changed()
        if self._waiters:
            self._wake()

    def suspect(self, inst: Instance) -> None:
        """A connection to ``inst`` failed: stop choosing it until its check passes again."""
        if inst.state is _READY:
            self._set_unready(inst)
            inst.changed()

    def _changed_now(self) -> None:
        for watcher in self.watchers:
            watcher()

    def _wake(self) -> None:
        """Hand free capacity to waiting requests, oldest first."""
        waiters = self._waiters
        while waiters:
            waiter = waiters[0]
            if waiter.done():
                waiters.popleft()
                continue
            inst = self._pick()
            if inst is None:
                break
            waiters.popleft()
            waiter.set_result(inst)

    def _grow(self) -> None:
        """Start as many instances as the waiting requests need, within ``max_instances``."""
        waiting = sum(1 for w in self._waiters if not w.done())
        if not waiting or self.state is not _ACTIVE or self._closed:
            return
        coming = [i for i in self.instances if i.state in (_STARTING, _UNREADY)]
        per_instance = self._limit or waiting
        need = waiting - len(coming) * per_instance
        while need > 0 and len(self.instances) < self.spec.max_instances:
            self._start_instance()
            self.cold_starts += 1
            need -= per_instance

    def _fail_waiters(self, error: Unavailable) -> None:
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self._changed_now()

    # -- instances --------------------------------------------------------------------------

    def _start_instance(self, spec: PoolSpec | None = None, version: int | None = None) -> Instance:
        self._numbers += 1
        number = self._numbers
        port = pick_port()
        spec = spec or self.spec
        command = spec.command
        if isinstance(command, str):
            command = command.replace(PORT_PLACEHOLDER, str(port))
        elif command is not None:
            command = [part.replace(PORT_PLACEHOLDER, str(port)) for part in command]
        process = ProcessSpec.model_construct(
            app=spec.name,
            node=str(number),
            process_type=spec.process_type,
            source_url=spec.source_url,
            command=command,
            env=dict(spec.env),
            restart=RestartPolicy.ALWAYS,
            created_at=time.time(),
            archive_sha256=None,
            rebuild=self._rebuild,
        )
        self._rebuild = False
        instance_id = f"{spec.name}.{number}"
        unit = self._supervisor.start_detached(process, slug=f"@{instance_id}", port=port)
        inst = Instance(instance_id, unit, port, self.version if version is None else version)
        unit.watchers.append(self._changed_now)
        self.instances.append(inst)
        self._changed_now()
        self._spawn(self._control(inst), f"control:{number}")
        log.info("pool %s: started instance %s on port %d", self.name, instance_id, port)
        return inst

    async def _control(self, inst: Instance) -> None:
        """Follow ``inst``: check it until ready, notice when it must be checked again."""
        unit = inst.unit
        path = self.spec.ready.path if self.spec.ready is not None else None
        attempts = 0
        pid: int | None = None
        looping: str | None = None
        while not inst.stopping:
            inst._changed.clear()
            if unit.done:
                break
            if unit.state is State.FAILED:
                self._instance_failed(inst)
                break
            looping = self._follow_crash_loop(inst, looping)
            if unit.state is not State.RUNNING:
                await inst.wait_change()
                continue
            if unit.pid != pid:
                attempts = 0  # a new process: check it quickly again
            pid = unit.pid
            if not await probe.check(inst.host, inst.port, path):
                attempts += 1
                await inst.wait_change(probe.interval_after(attempts))
                continue
            if inst.stopping:
                break
            attempts = 0
            self._set_ready(inst)
            while inst.state is _READY and unit.pid == pid and not unit.done:
                inst._changed.clear()
                if unit.pid != pid:
                    break
                await inst.wait_change()
            if inst.state is _READY:
                self._set_unready(inst)
                log.info("pool %s: instance %s is being replaced", self.name, inst.id)

    def _instance_failed(self, inst: Instance) -> None:
        """``inst`` cannot run at all (its app failed to fetch, its Procfile is wrong...).

        It is removed, and requests waiting for it get a 503 that says why at once,
        rather than after the start timeout; the next request tries a new instance.
        """
        self.error = f"instance {inst.id} failed: {inst.unit.error}"
        log.warning("pool %s: %s", self.name, self.error)
        self._take_out(inst)
        self._spawn(self._retire(inst, 0), f"retire:{inst.id}")
        if not any(i.state in (_STARTING, _READY) for i in self.instances):
            self._fail_waiters(Unavailable(f"pool {self.name!r}: {self.error}", retry_after=5))

    def _follow_crash_loop(self, inst: Instance, known: str | None) -> str | None:
        """Report ``inst``'s crash loop if it began or went on since ``known``; return it."""
        looping = inst.unit.crash_loop
        if looping is not None and looping != known:
            self._instance_crash_looping(inst, looping, began=known is None)
        return looping

    def _instance_crash_looping(self, inst: Instance, description: str, *, began: bool) -> None:
        """``inst``'s process keeps exiting (or exited again): say so, and stop making requests wait.

        The instance stays (its unit keeps trying, with a growing delay, and may recover);
        when no instance is ready and every one is looping, waiting requests get a 503
        quoting the loop now rather than at the start timeout.
        """
        self.error = f"instance {inst.id}: {description}"
        self._changed_now()
        if began:
            log.warning("pool %s: %s", self.name, self.error)
        if self._only_crash_loops():
            self._fail_waiters(Unavailable(f"pool {self.name!r}: {self.error}", retry_after=5))

    def _only_crash_loops(self) -> bool:
        """No instance is ready, and every one the pool has is in a crash loop."""
        if self._ready or not self.instances:
            return False
        return all(i.unit.crash_loop is not None for i in self.instances)

    def _set_ready(self, inst: Instance) -> None:
        inst.state = _READY
        self._ready.append(inst)
        log.debug("pool %s: instance %s ready on port %d", self.name, inst.id, inst.port)
        self._changed_now()
        self._wake()

    def _set_unready(self, inst: Instance) -> None:
        inst.state = _UNREADY
        with contextlib.suppress(ValueError):
            self._ready.remove(inst)
        inst.close_idle()
        self._changed_now()

    def _take_out(self, inst: Instance) -> None:
        """No more requests for ``inst``; it no longer counts as one of the pool's."""
        if inst.state is not _STOPPING:
            if inst.state is _READY:
                self._set_unready(inst)
            inst.state = _STOPPING
            with contextlib.suppress(ValueError):
                self.instances.remove(inst)
            self._changed_now()

    async def _retire(self, inst: Instance, timeout_s: float) -> None:
        """Take ``inst`` out of service, wait (bounded) for its requests, stop it."""
        self._take_out(inst)
        deadline = time.monotonic() + timeout_s
        while inst.in_flight > 0 and (left := deadline - time.monotonic()) > 0:
            inst._changed.clear()
            await inst.wait_change(left)
        inst.close_idle()
        await inst.unit.stop()
        inst.changed()
        log.info("pool %s: instance %s stopped", self.name, inst.id)

    def _ensure_minimum(self) -> None:
        if self.state is not _ACTIVE or self._closed:
            return
        while len(self.instances) < self.spec.min_instances:
            self._start_instance()

    async def _reap_idle(self) -> None:
        """Stop instances above the minimum that served nothing for ``idle_timeout``."""
        tick = min(REAP_TICK_S, self.spec.idle_timeout / 4)
        while not self._closed:
            await asyncio.sleep(tick)
            for inst in self._idle_surplus():
                self._spawn(self._retire(inst, 0), f"retire:{inst.id}")

    def _idle_surplus(self) -> list[Instance]:
        surplus = len(self.instances) - self.spec.min_instances
        if surplus <= 0 or self._waiters:
            return []
        cutoff = time.monotonic() - self.spec.idle_timeout
        idle = [i for i in self.instances if i.in_flight == 0 and i.last_used <= cutoff]
        idle.sort(key=lambda i: i.last_used)
        return idle[:surplus]

    # -- operations ---------------------------------------------------------------------------

    async def drain(self, timeout_s: float) -> None:
        """Stop taking requests, let those in flight finish (bounded), stop every instance."""
        self.state = _DRAINING
        self._fail_waiters(Unavailable(f"pool {self.name!r} is draining", retry_after=5))
        await asyncio.gather(*(self._retire(inst, timeout_s) for inst in list(self.instances)))
        if self.state is _DRAINING:
            self.state = _DRAINED
            self._changed_now()

    def resume(self) -> None:
        """Take requests again after a drain."""
        self.state = _ACTIVE
        self._changed_now()
        self._ensure_minimum()

    async def scale(self, min_instances: int | None, max_instances: int | None) -> None:
        """New bounds: start up to the minimum, retire (gracefully) down to the maximum."""
        update: dict[str, int] = {}
        if min_instances is not None:
            update["min_instances"] = min_instances
        if max_instances is not None:
            update["max_instances"] = max_instances
        spec = PoolSpec.model_validate({**self.spec.model_dump(), **update})
        self.spec = spec
        self._changed_now()
        self._ensure_minimum()
        excess = len(self.instances) - spec.max_instances
        if excess > 0:
            victims = sorted(self.instances, key=lambda i: (i.in_flight, -i.last_used))[:excess]
            await asyncio.gather(*(self._retire(inst, 30.0) for inst in victims))
        self._grow()

    # -- for a deploy (``deploys.py``) ------------------------------------------------------

    def start_version(self, spec: PoolSpec, version: int, *, rebuild: bool = False) -> Instance:
        """Start one instance of ``spec`` (another version of the pool's program) beside the
        others; it takes requests once ready, as any instance."""
        self._rebuild = self._rebuild or rebuild
        return self._start_instance(spec, version)

    def retire(self, inst: Instance, timeout_s: float) -> None:
        """Take ``inst`` out now; stop it once its requests are done (at most ``timeout_s``)."""
        self._take_out(inst)
        self._spawn(self._retire(inst, timeout_s), f"retire:{inst.id}")

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        self._spawn(coro, what)

    def changed(self) -> None:
        """Something the document shows changed (a deploy's progress)."""
        self._changed_now()

    @property
    def serving(self) -> bool:
        """Active and not closed: a deploy may go on."""
        return self.state is _ACTIVE and not self._closed

    # -- reporting ------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def _describe_instances(self) -> str:
        if not self.instances:
            return "no instance running"
        return ", ".join(f"{i.id}: {i.state} ({i.unit.error or i.unit.state})" for i in self.instances)


def _granted(waiter: asyncio.Future[Instance]) -> bool:
    return waiter.done() and not waiter.cancelled() and waiter.exception() is None
