"""``herder reload`` and SIGHUP: make what runs match the config file again (supervisord's
``update``, Circus's ``reloadconfig``).

A reload reads the file again, with the command-line options the agent started with
laid over it, and validates all of it before touching anything: a file that does not
read, a declared process or pool that does not validate, and nothing changes (the
reload is refused with every problem, one line each; the agent keeps running as it was).

Then, for declared processes (``[[processes]]``, ``procfile``) and ``[[pools]]``:

* declared and running as declared, every field equal: **unchanged**, not touched
  (same pid, same instances);
* declared and running otherwise (another field, or an API process or pool of that
  name: the file wins): **changed**, stopped and started again as the file says;
* declared and not running (new in the file, or deleted over the API since):
  **started**;
* running as declared and no longer in the file: **stopped** (deleted).

What the file says beyond these (``port``, ``supervision``...) takes an agent restart:
the answer lists such keys as ``restart_needed``. One reload runs at a time; a second
waits for the first, then reads the file as it is then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from herder.agent.config import AgentConfig
from herder.agent.declared import declared_requests, is_declared, new_spec, same_request
from herder.agent.errors import AgentError, ConfigError, NotFound

if TYPE_CHECKING:
    from herder.agent.models import CreateRequest
    from herder.agent.router.models import PoolSpec
    from herder.agent.router.router import Router
    from herder.agent.server import AgentRuntime

log = logging.getLogger(__name__)

# A pool the file no longer declares (or declares otherwise) is drained this long before
# it stops: the API's default for deleting a pool.
POOL_DRAIN_S = 30.0
# The keys a reload applies; a change to any other takes an agent restart.
APPLIED_KEYS = frozenset({"processes", "pools", "procfile", "concurrency"})
# How pools are named in a report beside process slugs (neither a slug nor a pool name
# has a colon).
POOL_PREFIX = "pool:"


class ReloadRefused(AgentError):
    """The config file cannot be applied: nothing was changed. ``problems``: one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class ReloadReport:
    """What a reload did: process slugs, and pools as ``pool:<name>``."""

    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return asdict(self)

    def summary(self) -> str:
        """One line for the log: ``started 1, stopped 0, changed 2, unchanged 5``."""
        parts = [
            f"{name} {len(items)}" + (f" ({', '.join(items)})" if items and name != "unchanged" else "")
            for name, items in asdict(self).items()
            if name != "restart_needed"
        ]
        if self.restart_needed:
            parts.append(f"needs an agent restart for {', '.join(self.restart_needed)}")
        return ", ".join(parts)


@dataclass
class _Plan:
    """A reload's decisions, made before anything is touched."""

    report: ReloadReport
    to_delete: list[str]
    to_start: list[CreateRequest]
    pools_to_delete: list[str]
    pools_to_open: list[PoolSpec]


class Reloader:
    """Applies the config file to a running agent, one reload at a time.

    ``run()`` (in the agent's task group) performs the reloads SIGHUP asks for
    (``request_nowait``); ``reload()`` is the route's, awaited by the caller.
    """

    def __init__(self, runtime: AgentRuntime) -> None:
        self._runtime = runtime
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()

    def request_nowait(self) -> None:
        """Ask ``run()`` for a reload (a signal handler's call: returns at once)."""
        self._wanted.set()

    async def run(self) -> None:
        """Reload whenever asked, until cancelled; a refused reload is logged, not raised."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                report = await self.reload()
            except ReloadRefused as exc:
                for problem in exc.problems:
                    log.error("reload refused, nothing changed: %s", problem)
            else:
                log.info("reloaded the config: %s", report.summary())

    async def reload(self) -> ReloadReport:
        """Read the config file again and apply it; the report says what changed.

        Raises:
            ReloadRefused: the file does not read or validate (nothing changed).
        """
        async with self._lock:
            config = await asyncio.to_thread(self._reread)
            plan = self._plan(config)
            # Shielded: a client that hangs up must not leave the agent half-reloaded.
            await asyncio.shield(self._apply(plan))
            return plan.report

    def _reread(self) -> AgentConfig:
        current = self._runtime.config
        try:
            return current.reread()
        except (ValueError, OSError) as exc:  # pydantic's and TOML's errors are ValueErrors
            from herder.tomlconfig import config_problems

            raise ReloadRefused(config_problems(exc, current.config_file, {})) from None

    def _plan(self, config: AgentConfig) -> _Plan:
        """Every decision of the reload, after every check.

        Raises:
            ReloadRefused: a declared process or pool is wrong (every problem listed).
        """
        from herder.agent.router.router import config_pools

        problems: list[str] = []
        requests: dict[str, CreateRequest] = {}
        pools: dict[str, PoolSpec] = {}
        try:
            requests = declared_requests(config)
        except ConfigError as exc:
            problems.extend(str(exc).splitlines())
        try:
            pools = config_pools(config)
        except ConfigError as exc:
            problems.append(str(exc))
        if problems:
            raise ReloadRefused(problems)
        report = ReloadReport(restart_needed=restart_needed(self._runtime.config, config))
        to_delete, to_start = self._plan_processes(requests, report)
        pools_to_delete, pools_to_open = self._plan_pools(pools, report)
        return _Plan(report, to_delete, to_start, pools_to_delete, pools_to_open)

    def _plan_processes(
        self, requests: dict[str, CreateRequest], report: ReloadReport
    ) -> tuple[list[str], list[CreateRequest]]:
        units = self._runtime.supervisor.units
        gone = [slug for slug, unit in units.items() if is_declared(unit.spec) and slug not in requests]
        report.stopped.extend(gone)
        to_start: list[CreateRequest] = []
        for slug, request in requests.items():
            unit = units.get(slug)
            if unit is None:
                report.started.append(slug)
            elif is_declared(unit.spec) and same_request(unit.spec, request):
                report.unchanged.append(slug)
                continue
            else:
                report.changed.append(slug)
            to_start.append(request)
        return [*gone, *report.changed], to_start

    def _plan_pools(
        self, specs: dict[str, PoolSpec], report: ReloadReport
    ) -> tuple[list[str], list[PoolSpec]]:
        router = self._runtime.router
        if router is None:
            return [], []
        running = router.pools
        gone = [name for name, pool in running.items() if pool.origin == "config" and name not in specs]
        changed: list[str] = []
        to_open: list[PoolSpec] = []
        for name, spec in specs.items():
            pool = running.get(name)
            if pool is None:
                report.started.append(POOL_PREFIX + name)
            elif pool.origin == "config" and pool.spec == spec:
                report.unchanged.append(POOL_PREFIX + name)
                continue
            else:
                report.changed.append(POOL_PREFIX + name)
                changed.append(name)
            to_open.append(spec)
        report.stopped.extend(POOL_PREFIX + name for name in gone)
        return [*gone, *changed], to_open

    async def _apply(self, plan: _Plan) -> None:
        """Stop what goes (at once, each with its grace), then start what comes, in the file's order."""
        supervisor = self._runtime.supervisor
        router = self._runtime.router
        await asyncio.gather(
            *(_delete_process(supervisor, slug) for slug in plan.to_delete),
            *(_delete_pool(router, name) for name in plan.pools_to_delete if router is not None),
        )
        if self._runtime.stopping:
            return  # the agent stops: what was to start would not outlive it
        supervisor.restore([new_spec(request) for request in plan.to_start])
        if router is not None:
            for spec in plan.pools_to_open:
                await router.open_declared(spec)


async def _delete_process(supervisor: Any, slug: str) -> None:
    with contextlib.suppress(NotFound):  # deleted over the API meanwhile: gone all the same
        await supervisor.delete(slug)


async def _delete_pool(router: Router, name: str) -> None:
    with contextlib.suppress(NotFound):
        await router.delete(name, POOL_DRAIN_S)


def restart_needed(running: AgentConfig, read: AgentConfig) -> list[str]:
    """The settings ``read`` changes that a reload does not apply (``supervision.grace_s``)."""
    before = running.model_dump(exclude=set(APPLIED_KEYS))
    after = read.model_dump(exclude=set(APPLIED_KEYS))
    keys: list[str] = []
    for key, value in after.items():
        old = before.get(key)
        if value == old:
            continue
        if isinstance(value, dict) and isinstance(old, dict):
            keys.extend(f"{key}.{sub}" for sub in value if value.get(sub) != old.get(sub))
        else:
            keys.append(key)
    return keys
