"""Rolling deploys of a pool: a new version of its program replaces its instances, batch by batch.

A deploy (``POST /pools/{name}/deploy``) is Nomad's ``update`` stanza on one agent:

* it starts ``max_parallel`` instances of the new version *beside* the old ones; each
  takes requests once ready, as any instance does (the pool's ``_control`` checks it);
* once every one of the batch is **healthy** (ready, and still running without an exit
  ``min_healthy_time`` later), as many old instances are taken out of service (no new
  request; those in flight, WebSockets included, get ``drain_timeout`` to end) and
  stopped; then the next batch, until no old instance is left. The pool's spec then
  becomes the new version's, and is recorded;
* a new instance that exits, fails (its build, say) or is not healthy within
  ``healthy_deadline`` fails the deploy, which is **rolled back** (Nomad's ``auto_revert``):
  old instances are started again for those already replaced, then the new ones are
  retired; the deployment says why;
* with ``canary: N``, N new instances run beside all the old ones and the deploy waits,
  once they are healthy, for a promote (then it goes on as above, the canaries counting
  as its first batch) or a revert.

The old version serves throughout: no old instance is taken out before a new one is
healthy in its place, so a pool under load answers every request (each goes to a ready
instance, old or new). This module drives the pool only through a narrow interface
(``start_version``, ``retire``, ``spawn``, ``changed``, ``serving``, ``instances``,
``watchers``); how instances are chosen and checked stays the pool's.

Deploys are not recorded: an agent restarted during one runs the pool's recorded spec
(the old version, until a deploy succeeded), and the history starts again.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from herder.agent.errors import Conflict
from herder.agent.processes.crashes import last_output
from herder.agent.processes.states import State
from herder.agent.router.models import DeployRequest, PoolSpec
from herder.agent.router.pools import InstanceState
from herder.apierrors import FieldError

if TYPE_CHECKING:
    from herder.agent.router.pools import Instance, Pool

log = logging.getLogger(__name__)

MAX_HISTORY = 10
# What an instance's process is in while its app is fetched or built: not yet on the clock.
_PREPARING = (State.FETCHING, State.BUILDING)
_EXITED = (State.BACKOFF, State.EXITED, State.STOPPED)

Record = Callable[["Pool"], Awaitable[None]]


class DeployState(enum.StrEnum):
    RUNNING = "running"
    CANARY = "canary"  # the canaries are healthy: waiting for a promote (or a revert)
    ROLLING_BACK = "rolling_back"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # rolled back
    CANCELLED = "cancelled"  # the pool was drained or deleted under it


class DeployFailed(Exception):
    """The new version is not healthy (or a revert was asked): roll back, saying this."""


class _Cancelled(Exception):
    """The pool stopped serving (drained, deleted): nothing to roll out or back."""


@dataclass(eq=False)
class Deployment:
    """One deploy of a pool, as its document shows it."""

    id: int
    version: int
    from_version: int
    request: DeployRequest
    spec: PoolSpec  # the new version (with the pool's bounds when it started)
    state: DeployState = DeployState.RUNNING
    reason: str | None = None
    target: int = 0
    started: int = 0
    healthy: int = 0
    replaced: int = 0
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    switched: bool = False  # every instance runs the new version: past reverting
    retired: list[Instance] = field(default_factory=list)  # until it ends: then only figures are kept

    @property
    def under_way(self) -> bool:
        return self.finished_at is None

    def document(self) -> dict[str, Any]:
        req = self.request
        return {
            "id": self.id,
            "version": self.version,
            "from_version": self.from_version,
            "state": self.state.value,
            "reason": self.reason,
            "runs": {
                "command": self.spec.command,
                "source_url": self.spec.source_url,
                "process_type": self.spec.process_type,
                "env": dict(self.spec.env),
            },
            "max_parallel": req.max_parallel,
            "canary": req.canary,
            "healthy_deadline": req.healthy_deadline,
            "min_healthy_time": req.min_healthy_time,
            "drain_timeout": req.drain_timeout,
            "target": self.target,
            "started": self.started,
            "healthy": self.healthy,
            "replaced": self.replaced,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


def deploys_of(pool: Pool) -> Deploys:
    """The pool's deploys, made at the first use."""
    if pool.deploys is None:
        pool.deploys = Deploys(pool)
    return pool.deploys


class Deploys:
    """One pool's deploys: the one under way (at most one), the last ones that ended."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self.current: Deployment | None = None
        self.history: deque[Deployment] = deque(maxlen=MAX_HISTORY)
        self._ids = 0
        self._last_version = pool.version
        self._wake = asyncio.Event()
        self._promoted = False
        self._abort: str | None = None

    # -- operations -------------------------------------------------------------------------

    def start(self, request: DeployRequest, record: Record) -> Deployment:
        """Begin a deploy of ``request`` (it goes on in the pool's task group).

        Raises:
            Conflict: a deploy is under way, or the pool is drained.
            FieldError: ``canary`` is above the pool's ``max_instances``.
        """
        pool = self._pool
        if self.current is not None:
            raise Conflict(
                f"deploy {self.current.id} of pool {pool.name!r} is {self.current.state}: "
                "promote or revert it, or wait for it to end"
            )
        if not pool.serving:
            raise Conflict(f"pool {pool.name!r} is {pool.state}: resume it before deploying")
        if request.canary > pool.spec.max_instances:
            raise FieldError(
                "canary",
                f"canary ({request.canary}) may not exceed max_instances ({pool.spec.max_instances})",
            )
        self._ids += 1
        self._last_version = max(self._last_version, pool.version) + 1
        deployment = Deployment(
            id=self._ids,
            version=self._last_version,
            from_version=pool.version,
            request=request,
            spec=pool.spec.model_copy(update=request.runs()),
            target=max(len(pool.instances), 1),
        )
        self.current = deployment
        self._promoted = False
        self._abort = None
        pool.spawn(self._run(deployment, record), f"deploy:{deployment.id}")
        pool.changed()
        log.info("pool %s: deploy %d of version %d begins", pool.name, deployment.id, deployment.version)
        return deployment

    def promote(self) -> Deployment:
        """Let a canary deploy go on to replace the old instances.

        Raises:
            Conflict: no deploy awaits promotion (none under way, no canary, canaries not
                healthy yet).
        """
        current = self.current
        if current is None or current.state is not DeployState.CANARY:
            why = "no deploy is under way" if current is None else self._not_promotable(current)
            raise Conflict(f"pool {self._pool.name!r}: nothing to promote: {why}")
        self._promoted = True
        current.state = DeployState.RUNNING  # its answer says so, before the task wakes
        self._wake.set()
        self._pool.changed()
        return current

    def revert(self) -> Deployment:
        """Abandon the deploy under way: roll back to the old version.

        Raises:
            Conflict: no deploy is under way, or it is rolling back already.
        """
        current = self.current
        if current is None or current.state not in (DeployState.RUNNING, DeployState.CANARY):
            state = "no deploy is under way" if current is None else f"deploy {current.id} is {current.state}"
            raise Conflict(f"pool {self._pool.name!r}: nothing to revert: {state}")
        if current.switched:
            raise Conflict(
                f"pool {self._pool.name!r}: deploy {current.id} has replaced every instance already "
                "(its old ones are stopping); deploy the old version to go back"
            )
        self._abort = "reverted on request"
        current.state, current.reason = DeployState.ROLLING_BACK, self._abort  # as its answer says
        self._wake.set()
        self._pool.changed()
        return current

    @staticmethod
    def _not_promotable(current: Deployment) -> str:
        if current.request.canary == 0:
            return f"deploy {current.id} has no canary"
        if current.state is DeployState.RUNNING and current.healthy < current.request.canary:
            return f"its canaries are not healthy yet ({current.healthy}/{current.request.canary})"
        return f"deploy {current.id} is {current.state}"

    # -- the deploy's task ------------------------------------------------------------------

    async def _run(self, d: Deployment, record: Record) -> None:
        pool = self._pool
        pool.watchers.append(self._wake.set)
        try:
            try:
                await self._roll_out(d, record)
            except DeployFailed as exc:
                await self._roll_back(d, str(exc))
            except _Cancelled as exc:
                d.state, d.reason = DeployState.CANCELLED, str(exc)
        finally:
            pool.watchers.remove(self._wake.set)
            d.finished_at = time.time()
            d.retired.clear()  # the history keeps no instance (nor its output) alive
            self.current = None
            self.history.appendleft(d)
            pool.changed()
            log.info("pool %s: deploy %d %s%s", pool.name, d.id, d.state, f": {d.reason}" if d.reason else "")

    async def _roll_out(self, d: Deployment, record: Record) -> None:
        pool, req = self._pool, d.request
        first = True
        if req.canary:
            canaries = self._start(d, req.canary)
            await self._until_healthy(d, canaries)
            d.state = DeployState.CANARY
            pool.changed()
            await self._until_promoted(d)
            d.state = DeployState.RUNNING
            self._replace(d, sum(1 for i in canaries if not i.stopping))
            first = False
        while True:
            self._check(d)
            old = self._old(d)
            if not old and not first:
                break
            batch = self._start(d, min(req.max_parallel, len(old)) if old else 1)
            first = False
            await self._until_healthy(d, batch)
            self._replace(d, sum(1 for i in batch if not i.stopping))  # a scale may have taken some
        # Every instance runs the new version: it becomes the pool's (with its bounds now).
        pool.spec = pool.spec.model_copy(update=req.runs())
        pool.version = d.version
        d.switched = True
        pool.changed()
        try:
            await record(pool)
        except OSError as exc:
            log.warning("pool %s: the deployed spec could not be recorded: %s", pool.name, exc)
        await self._until_stopped(d.retired)
        d.state = DeployState.SUCCEEDED

    async def _roll_back(self, d: Deployment, reason: str) -> None:
        """Old instances again for those replaced, then the new ones out (gracefully)."""
        pool, req = self._pool, d.request
        d.state, d.reason = DeployState.ROLLING_BACK, reason
        pool.changed()
        log.warning(
            "pool %s: deploy %d of version %d failed, rolling back: %s", pool.name, d.id, d.version, reason
        )
        new = [i for i in pool.instances if i.version == d.version]
        serving = [i for i in new if i.state is InstanceState.READY]
        for inst in new:
            if inst not in serving:
                pool.retire(inst, req.drain_timeout)
        if pool.serving and d.replaced:
            again = [pool.start_version(pool.spec, pool.version) for _ in range(d.replaced)]
            try:
                async with asyncio.timeout(req.healthy_deadline):
                    await self._until(
                        lambda: all(i.state is InstanceState.READY or i.stopping for i in again)
                    )
            except TimeoutError:
                log.warning("pool %s: the old version's instances are not all ready again", pool.name)
        for inst in serving:
            pool.retire(inst, req.drain_timeout)
        await self._until_stopped(new)
        d.state = DeployState.FAILED

    # -- steps ------------------------------------------------------------------------------

    def _old(self, d: Deployment) -> list[Instance]:
        """The pool's instances of another version than the deploy's, still in service."""
        return [i for i in self._pool.instances if i.version != d.version]

    def _start(self, d: Deployment, count: int) -> list[Instance]:
        batch = []
        for _ in range(count):
            rebuild = d.request.rebuild and d.started == 0  # one build made again, not one per instance
            batch.append(self._pool.start_version(d.spec, d.version, rebuild=rebuild))
            d.started += 1
        self._pool.changed()
        return batch

    def _replace(self, d: Deployment, count: int) -> None:
        """Take ``count`` old instances out of service (fewest requests in flight first)."""
        victims = sorted(self._old(d), key=lambda i: (i.in_flight, -i.last_used))[:count]
        for inst in victims:
            self._pool.retire(inst, d.request.drain_timeout)
            d.retired.append(inst)
            d.replaced += 1
        self._pool.changed()

    def _check(self, d: Deployment) -> None:
        if self._abort is not None:
            raise DeployFailed(self._abort)
        if not self._pool.serving:
            raise _Cancelled(f"pool {self._pool.name!r} was drained or deleted")

    async def _until_promoted(self, d: Deployment) -> None:
        while True:
            self._wake.clear()
            self._check(d)
            if self._promoted:
                return
            await self._wake.wait()

    async def _until_healthy(self, d: Deployment, batch: list[Instance]) -> None:
        """Return once every instance of ``batch`` is healthy.

        Raises:
            DeployFailed: one exited or failed, or was not healthy in time; a revert.
            _Cancelled: the pool stopped serving.
        """
        req = d.request
        restarts = {inst: inst.unit.restarts for inst in batch}
        on_clock: dict[Instance, float] = {}  # since when: its app is ready, the deadline runs
        ready_since: dict[Instance, float] = {}
        healthy: set[Instance] = set()
        while True:
            self._wake.clear()
            self._check(d)
            now = time.monotonic()
            wake_at = float("inf")
            for inst in batch:
                if inst in healthy:
                    continue
                self._check_alive(inst, restarts[inst])
                if inst.stopping:  # taken out by someone else (a scale): not the version's fault
                    healthy.add(inst)
                    continue
                if inst.unit.state in _PREPARING:
                    continue
                start = on_clock.setdefault(inst, now)
                if inst.state is InstanceState.READY:
                    since = ready_since.setdefault(inst, now)
                    if now - since >= req.min_healthy_time:
                        healthy.add(inst)
                        d.healthy += 1
                        self._pool.changed()
                        continue
                    wake_at = min(wake_at, since + req.min_healthy_time)
                else:
                    ready_since.pop(inst, None)
                if now >= start + req.healthy_deadline:
                    raise DeployFailed(
                        f"instance {inst.id} was not healthy within {req.healthy_deadline:g} s "
                        f"({inst.state}, {inst.unit.error or inst.unit.state})"
                    )
                wake_at = min(wake_at, start + req.healthy_deadline)
            if len(healthy) == len(batch):
                return
            await self._wait(wake_at - now)

    @staticmethod
    def _check_alive(inst: Instance, restarts: int) -> None:
        """Raises DeployFailed if ``inst``'s process exited or cannot run."""
        unit = inst.unit
        if unit.state is State.FAILED:
            raise DeployFailed(f"instance {inst.id} failed: {unit.error}")
        if unit.restarts != restarts or (unit.state in _EXITED and not inst.stopping):
            code = f" with code {unit.exit_code}" if unit.exit_code is not None else ""
            said = last_output(unit.output)
            raise DeployFailed(f"instance {inst.id} exited{code} before it was healthy{said}")

    async def _wait(self, timeout_s: float) -> None:
        """Until the pool changes (an instance's state, a promote, a revert) or ``timeout_s``."""
        if timeout_s == float("inf"):
            await self._wake.wait()
            return
        try:
            async with asyncio.timeout(max(timeout_s, 0.001)):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _until(self, holds: Callable[[], bool]) -> None:
        while not holds():
            self._wake.clear()
            await self._wake.wait()

    @staticmethod
    async def _until_stopped(instances: list[Instance]) -> None:
        await asyncio.gather(*(inst.unit.wait_done() for inst in instances))
