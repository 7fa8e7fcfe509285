"""Supervision: run each process, restart it by its policy, stop it politely.

A ``Unit`` is one supervised process: the spec it was created from, its state (see
``states.py``), its output (``logs.OutputLog``) and the task that runs it. The
``Supervisor`` owns every unit's task in one ``TaskGroup``.

A unit's life, in ``Unit._run``:

1. prepare: fetch and unpack the app, read the Procfile (``fetching``), build it if it
   declares dependencies (``building``), or take the command as given. Transient
   download failures are retried with backoff; others, and failed builds, are final
   (``failed``).
2. run: spawn in a new session (``running``), read its output, await its exit through a
   pidfd. When it ends, whatever it left in its group or elsewhere (found by its
   environment marker) is killed, like systemd's control-group kill mode, so a
   restart never fights its predecessor's leftovers for a port.
3. restart: by policy (``always``, ``on-failure``, ``never``). Failures back off
   exponentially from ``backoff_initial_s`` to ``backoff_max_s`` until a run outlives
   ``crash_window_s``; the first after a run of ``stable_s`` restarts at once; enough of
   them in a row are a crash loop, shown in ``error`` (``crashes.py``).
   A health check (``herder.agent.health``) that fails ``failures`` times in a row stops
   the run (SIGTERM, grace, SIGKILL) and counts as a failure: the same restart, backoff
   and crash loop as an exit. Before each start, the unit waits until the processes it
   ``depends_on`` are ready (``waiting_for``).
4. stop (delete or shutdown): SIGTERM to the group, ``grace_s``, SIGKILL to the group,
   then a sweep for descendants that left it. ``Unit.stop()`` returns when nothing of
   the process runs any more. The shutdown stops dependants before what they depend on.
5. an operator's stop (``Unit.halt()``) stops it the same way, but the unit lives on in
   ``stopped`` until ``Unit.resume()`` goes back to 1 (an operator's start). A start
   is not a crash: the backoff and the crash loop are forgotten, ``restarts`` unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from herder.agent.apps.launch import Apps, Launch, shell_command
from herder.agent.config import AgentConfig, SupervisionConfig
from herder.agent.errors import AppError, BuildError, Conflict, FetchError, NotFound
from herder.agent.health import order
from herder.agent.health.monitor import MAX_COMMAND_CHECKS, HealthState, Monitor, Target
from herder.agent.limits import LogsMode, child_setup
from herder.agent.models import ProcessSpec, RestartPolicy
from herder.agent.processes import procs
from herder.agent.processes.crashes import CrashHistory, backoff_delay, describe_exit, last_output
from herder.agent.processes.logs import OutputLog
from herder.agent.processes.reader import OutputReader
from herder.agent.processes.states import Event, State, apply, is_alive
from herder.agent.processes.store import GroupCommit, RecordStore
from herder.agent.processes.usage import NONE as NO_USAGE
from herder.agent.processes.usage import Sampler, Usage

log = logging.getLogger(__name__)

T = TypeVar("T")
# After a build's failure: how to have it made again (it is not, until the app changes).
REBUILD_HINT = (
    " (not built again until the app changes, or a create asks for it with rebuild: true:"
    " herder run --rebuild)"
)


def pick_port() -> int:
    """A TCP port free on this host right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class UnitContext:
    """What every unit needs from the agent."""

    agent_id: str
    apps: Apps
    config: SupervisionConfig
    base_env: dict[str, str]
    log_dir: Path
    on_spec_change: Callable[[Unit], None]
    lookup: Callable[[str], Unit | None]  # a listed process by slug: its dependencies
    command_checks: asyncio.Semaphore  # command health checks running at once, agent-wide


class Unit:
    """One supervised process."""

    def __init__(
        self,
        spec: ProcessSpec,
        ctx: UnitContext,
        *,
        slug: str | None = None,
        port: int | None = None,
        leased: bool = False,
    ) -> None:
        self.spec = spec
        self._ctx = ctx
        # Run for a manager: the keeper stops it if the agent hangs past its lease.
        self.leased = leased
        # A pool's instance has a name of its own (``@pool.n``, which no process slug can
        # be) and a port its pool chose and substituted into its command.
        self._slug = slug or spec.slug
        self._preset_port = port
        # Called after every state change: a pool's controller follows its instance.
        self.watchers: list[Callable[[], None]] = []
        self.state = State.STARTING if spec.command is not None else State.FETCHING
        if spec.stopped:
            self.state = State.STOPPED  # an operator stopped it before the agent restarted
        self.pid: int | None = None
        self.port: int | None = None
        self.restarts = 0
        self.exit_code: int | None = None
        self.started_at: float | None = None  # Unix seconds, as every time the agent sends
        self.error: str | None = None
        # Set while the process keeps failing (see crashes.py); kept in ``error`` while it
        # runs between two failures, and cleared once a run outlives the window.
        self.crash_loop: str | None = None
        self.build_log: Path | None = None  # the app's build log, once it was built
        self._crashes = CrashHistory(ctx.config)
        self._window_timer: asyncio.TimerHandle | None = None
        cfg = ctx.config
        self.output = OutputLog(
            ctx.log_dir,
            self._slug,
            ring_lines=cfg.ring_lines,
            file_max_bytes=cfg.log_max_bytes,
            file_backups=cfg.log_backups,
            files=spec.logs is not LogsMode.DISCARD,
        )
        self._stop_requested = asyncio.Event()  # a stop of either kind: the run ends
        self._final = False  # the stop is a delete's or the shutdown's: the unit ends
        self._start_requested = asyncio.Event()  # an operator's start, while stopped
        self._halted = asyncio.Event()  # set while stopped by an operator
        if self.state is State.STOPPED:
            self._halted.set()
        # Stop, start and restart one at a time (a second restart waits for the first).
        self.operator_lock = asyncio.Lock()
        self._done = asyncio.Event()
        self._usage = Sampler()
        # The status document's links, for the last base URL they were made for (the
        # listing is the API's hot path, and a client asks with the same Host each time).
        self.links: tuple[str, dict[str, str]] | None = None
        self._reader: OutputReader | None = None
        self._child: procs.Child | None = None
        self._exit_wait: asyncio.Future[int] | None = None
        self._started_mono = 0.0
        self._changed = asyncio.Event()
        self._waiters = 0
        # Health and start order (herder.agent.health): the check's last results, the
        # dependencies it waits for, and whether this run is ready for its dependants.
        self.health: HealthState | None = HealthState() if spec.health is not None else None
        self.waiting_for: list[str] = []
        self._ran_long_enough = False
        self._ready_timer: asyncio.TimerHandle | None = None

    @property
    def slug(self) -> str:
        return self._slug

    @property
    def unit_marker(self) -> str:
        return f"{self._ctx.agent_id}:{self.slug}"

    def _event(self, event: Event) -> None:
        new = apply(self.state, event)
        log.debug("%s: %s --%s--> %s", self.slug, self.state, event, new)
        self.state = new
        self._changed_now()

    def _changed_now(self) -> None:
        self._notify()
        for watcher in self.watchers:
            watcher()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for(self, predicate: Callable[[Unit], bool], timeout_s: float) -> None:
        """Wait until ``predicate(self)`` holds; checked on every state change and output read.

        Raises:
            TimeoutError: it did not hold within ``timeout_s``.
        """
        self._waiters += 1
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate(self):
                    await self._changed.wait()
        finally:
            self._waiters -= 1

    async def wait_changed(self) -> None:
        """Return at the next change of state (or of health, or of readiness)."""
        await self._changed.wait()

    @property
    def ready(self) -> bool:
        """Ready for its dependants: running and passing its check (or, without one,
        running for ``ready_after_s``), or exited 0 for good (a one-shot job done)."""
        if self.state is State.EXITED:
            return self.exit_code == 0 and not self._final
        if self.state is not State.RUNNING:
            return False
        if self.health is not None:
            return self.health.status == "passing"
        return self._ran_long_enough

    # -- public -------------------------------------------------------------------

    async def run(self) -> None:
        """Run the unit until ``stop()``; never raises (a bug is logged and shown).

        An operator's stop (``halt()``) ends a run but not the unit: it waits in
        ``stopped`` for ``resume()`` (or the final ``stop()``).
        """
        try:
            while True:
                if self.state is State.STOPPED and not await self._wait_start():
                    break
                launch = await self._until_stopped(self._prepare())
                if launch is not None:
                    await self._supervise(launch)
                await self._stop_requested.wait()
                if self._final:
                    break
                self._now_halted()
        except Exception as exc:  # a bug must not take the other units down
            log.exception("%s: supervisor error", self.slug)
            self.error = f"internal error: {exc!r}"
        finally:
            self._kill_leftover_child()
            if self.state is not State.STOPPING:
                with contextlib.suppress(Exception):
                    self._event(Event.STOP)
            self._close_pipes()
            self.output.close()
            if self.state is State.STOPPING:
                self._event(Event.STOPPED)
            self._done.set()

    def _kill_leftover_child(self) -> None:
        """Cancelled or crashed mid-run: the child must not outlive its supervisor."""
        self._cancel_window_timer()
        self._not_ready()
        child, self._child = self._child, None
        if child is None:
            return
        if self._exit_wait is not None:
            self._exit_wait.cancel()
        procs.signal_group(child.pid, signal.SIGKILL)
        procs.sweep(procs.UNIT_MARKER, self.unit_marker)
        if child.popen.returncode is None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, 0)
            child.popen.returncode = -signal.SIGKILL
        if child.pidfd >= 0:
            asyncio.get_running_loop().remove_reader(child.pidfd)
            os.close(child.pidfd)
            child.pidfd = -1

    def request_stop(self) -> None:
        """Begin the final stop (delete, shutdown): the unit ends once nothing of it runs."""
        self._final = True
        self._stop_requested.set()

    async def stop(self) -> None:
        """Stop the process (SIGTERM, grace, SIGKILL) and return once nothing of it runs."""
        self.request_stop()
        await self._done.wait()

    async def halt(self) -> None:
        """An operator's stop: stop the process as ``stop()`` does, but keep the unit, in
        ``stopped``, until ``resume()``. Returns once nothing of it runs (or the unit
        ended: a delete came meanwhile). Stopped already: returns at once.
        """
        if not self._halted.is_set() and not self.done:
            self._stop_requested.set()
        halted = asyncio.ensure_future(self._halted.wait())
        done = asyncio.ensure_future(self._done.wait())
        try:
            await asyncio.wait({halted, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            halted.cancel()
            done.cancel()

    def resume(self) -> bool:
        """An operator's start of a stopped unit: it goes to ``starting`` (``fetching`` for
        an app) now, and ``run()`` starts it. Not a crash: the backoff and the crash loop
        are forgotten. False (nothing done) unless the unit is ``stopped``.
        """
        if self.state is not State.STOPPED or self._final:
            return False
        self._crashes.reset()
        self.crash_loop = None
        self.error = None
        self._halted.clear()
        self._start_requested.set()
        self.output.note("started by an operator")
        self._event(Event.START if self.spec.command is not None else Event.START_APP)
        return True

    async def _wait_start(self) -> bool:
        """While stopped: True once ``resume()`` moved it on, False on the final stop.

        A start request left over from before (a resume before ``run()`` first looked)
        does not count: only the state says whether it was started.
        """
        while True:
            start = asyncio.ensure_future(self._start_requested.wait())
            stop = asyncio.ensure_future(self._stop_requested.wait())
            try:
                await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                start.cancel()
                stop.cancel()
            if self._final:
                return False
            self._start_requested.clear()
            if self.state is not State.STOPPED:
                return True
            # A stop of a stopped unit (not final): nothing to do; wait on.
            self._stop_requested = asyncio.Event()

    def _now_halted(self) -> None:
        """The run ended for an operator's stop: the unit waits in ``stopped``.

        Whatever it was doing (running: already ``stopping``; preparing, backing off,
        exited, failed), it goes through ``stopping`` to ``stopped``.
        """
        if self.state is not State.STOPPING:
            self._event(Event.STOP)
        self._stop_requested = asyncio.Event()
        self._halted.set()
        self.output.note("stopped by an operator")
        self._event(Event.HALTED)

    def figures(self) -> tuple[float | None, Usage]:
        """Seconds the current run has lasted, and its main process's CPU and memory
        (sampled at most once a second: ``usage.py``); None and ``usage.NONE`` while no
        process runs. On the hot path of the listing: one clock read.
        """
        pid = self.pid
        if pid is None:
            return None, NO_USAGE
        now = time.monotonic()
        return round(now - self._started_mono, 3), self._usage.sample(pid, self._started_mono, now)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait_done(self) -> None:
        """Return once the unit has ended (nothing of it runs)."""
        await self._done.wait()

    # -- preparing --------------------------------------------------------------------

    async def _until_stopped(self, aw: Awaitable[T]) -> T | None:
        """Await ``aw`` unless a stop comes first (then cancel it and return None)."""
        work = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            finished = work.done()
            if not finished:
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        if not finished:
            return None
        return work.result()

    async def _wait_stop(self, delay_s: float) -> bool:
        """Sleep ``delay_s`` unless a stop comes first; True if it did."""
        if delay_s <= 0:
            return self._stop_requested.is_set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stop_requested.wait()
        return self._stop_requested.is_set()

    async def _prepare(self) -> Launch | None:
        spec = self.spec
        if spec.command is not None:
            argv = shell_command(spec.command) if isinstance(spec.command, str) else spec.command
            # Made on the loop: a hop to a thread before the spawn let the create's answer go
            # out before the port was picked (its `port` was null).
            return Launch(argv=list(argv), cwd=self._ctx.apps.workdir(self.slug))
        assert spec.source_url is not None
        assert spec.process_type is not None
        failures = 0
        while True:
            try:
                launch = await self._ctx.apps.prepare(
                    slug=self.slug,
                    source_url=spec.source_url,
                    process_type=spec.process_type,
                    prefer_sha256=spec.archive_sha256,
                    on_building=self._on_building,
                    listener=self.output.note,
                    rebuild=spec.rebuild,
                )
            except FetchError as exc:
                if not exc.transient:
                    self._fail(str(exc))
                    return None
                failures += 1
                delay = self._backoff_delay(failures)
                self.error = f"{exc} (retrying in {delay:.1f} s)"
                self.output.note(self.error)
                self._event(Event.FETCH_RETRY)
                if await self._wait_stop(delay):
                    return None
                self._event(Event.REFETCH)
                continue
            except BuildError as exc:
                self.build_log = exc.log or self.build_log
                self._fail(f"{exc}{REBUILD_HINT}")
                return None
            except AppError as exc:
                self._fail(str(exc))
                return None
            self.error = None
            self.build_log = launch.build_log
            self._event(Event.BUILT if self.state is State.BUILDING else Event.FETCHED)
            if launch.archive_sha256 != spec.archive_sha256:
                self.spec = spec.model_copy(update={"archive_sha256": launch.archive_sha256})
                self._ctx.on_spec_change(self)
            return launch

    def _on_building(self, log_file: Path) -> None:
        self.build_log = log_file
        self.output.note("building the app (its dependencies)")
        self._event(Event.BUILD)

    def _fail(self, message: str) -> None:
        self.error = message
        self.output.note(f"failed: {message}")
        log.warning("%s: %s", self.slug, message)
        self._event(Event.FAILED)

    def _backoff_delay(self, failures: int) -> float:
        return backoff_delay(self._ctx.config, failures)

    # -- running ------------------------------------------------------------------------

    def _child_env(self, launch: Launch) -> dict[str, str]:
        env = dict(self._ctx.base_env)
        # Below the request's env: the app's .env and its build (venv first on PATH).
        env.update(launch.env)
        if launch.path:
            env["PATH"] = os.pathsep.join([*launch.path, env.get("PATH", os.defpath)])
        env.update(self.spec.env)
        if self.port is not None:
            env["PORT"] = str(self.port)
        env.update(
            HERDER_APP=self.spec.app,
            HERDER_NODE=self.spec.node,
            HERDER_SLUG=self.slug,
        )
        # The markers come last so that nothing a user sets can hide a process from
        # the sweeps that guarantee no orphan survives.
        env[procs.AGENT_MARKER] = self._ctx.agent_id
        env[procs.UNIT_MARKER] = self.unit_marker
        env.pop(procs.LEASED_MARKER, None)  # only the agent says what is leased
        if self.leased:
            env[procs.LEASED_MARKER] = self._ctx.agent_id
        return env

    async def _supervise(self, launch: Launch) -> None:
        self.port = self._preset_port or (pick_port() if self.spec.port else None)
        while True:
            if await self._until_stopped(self._wait_dependencies()) is None:
                return  # stopped while waiting
            env = self._child_env(launch)
            try:
                setup = child_setup(self.spec, launch.cwd, self.slug)  # limits, user, cwd
                setup.hold = self.leased  # leased work runs once the ledger has it
                env = setup.env(env, self.spec.env)
                child = procs.spawn(launch.argv, env=env, cwd=setup.cwd, setup=setup)
            except OSError as exc:
                self._fail(f"cannot start {launch.argv[0]!r}: {exc.strerror or exc}")
                return
            self._on_spawned(child)
            exit_wait = self._exit_wait = asyncio.ensure_future(procs.wait_exit(child))
            target = Target(port=self.port, env=env, cwd=setup.cwd, shell=shell_command, setup=setup)
            outcome = await self._until_stopped(self._run_checked(child, exit_wait, target))
            if outcome is None:  # stop requested while it runs
                await self._terminate(child, exit_wait)
                return
            code, unhealthy = outcome
            ended = time.monotonic()
            await self._after_exit(child, code)  # drained: the last line it wrote is known
            # Unhealthy is a failure, whatever the exit code of the stop it took.
            if not self._should_restart(1 if unhealthy else code):
                self._event(Event.FINISHED)
                return
            delay = self._crashes.record(code, self._started_mono, ended)
            self.error = self._describe_failure(code, delay, unhealthy)
            self._event(Event.CRASHED)
            self.output.note(self.error)
            if await self._wait_stop(delay):
                return
            self.restarts += 1
            self._event(Event.RETRY)

    async def _wait_dependencies(self) -> bool:
        """Return once every process it depends on is ready (``order.py``'s rule).

        ``waiting_for`` lists those not ready meanwhile. A dependency deleted (or never
        restored) holds nothing back. Bounded by the caller: a stop cancels it.
        """
        if not self.spec.depends_on:
            return True
        try:
            while True:
                pending = [
                    u for u in map(self._ctx.lookup, self.spec.depends_on) if u and not u.done and not u.ready
                ]
                waiting = [u.slug for u in pending]
                if waiting != self.waiting_for:
                    self.waiting_for = waiting
                    if waiting:
                        self.output.note("waiting for " + ", ".join(waiting))
                    self._changed_now()
                if not pending:
                    return True
                await _first_change(pending)
        finally:
            self.waiting_for = []

    async def _run_checked(
        self, child: procs.Child, exit_wait: asyncio.Future[int], target: Target
    ) -> tuple[int, str | None]:
        """Await the exit; or, should the health check fail first, stop the process.

        Returns:
            The exit code, and why it was found unhealthy (None: it ended by itself).
        """
        check = self.spec.health
        if check is None or self.health is None:
            return await asyncio.shield(exit_wait), None
        monitor = asyncio.ensure_future(
            Monitor(
                check,
                self.health,
                target,
                command_slots=self._ctx.command_checks,
                on_change=self._changed_now,
            ).run()
        )
        either: set[asyncio.Future[Any]] = {exit_wait, monitor}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not monitor.done():
                monitor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await monitor
        if exit_wait.done():
            return exit_wait.result(), None
        reason = monitor.result()
        log.warning("%s: unhealthy: %s; stopping pid %d", self.slug, reason, child.pid)
        self.output.note(f"unhealthy: {reason}; stopping it")
        return await self._kill(child, exit_wait), reason

    def _describe_failure(self, code: int, delay: float, unhealthy: str | None = None) -> str:
        """Why the process is waiting, for ``error``: one exit, or a crash loop (then set)."""
        restart = f"restarting in {delay:.1f} s"
        if not self._crashes.in_loop:
            self.crash_loop = None
            if unhealthy is not None:
                return f"unhealthy: {unhealthy}; {restart}"
            return f"exited with {self._describe(code)}; {restart}"
        head, tail = self._crashes.describe(time.monotonic()), last_output(self.output)
        if unhealthy is not None:
            tail = f"; last check: {unhealthy}"
        if self.crash_loop is None:
            log.warning("%s: %s%s", self.slug, head, tail)
        self.crash_loop = head + tail
        return f"{head}, {restart}{tail}"

    def _on_spawned(self, child: procs.Child) -> None:
        self._child = child
        self.pid = child.pid
        self.error = self.crash_loop  # still looping until this run proves otherwise
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        if child.first_usage is not None:  # read at the spawn: the first document's figures
            self._usage.seed(child.pid, self._started_mono, *child.first_usage)
        self._window_timer = asyncio.get_running_loop().call_later(
            self._ctx.config.crash_window_s, self._outlived_window
        )
        if self.health is not None:
            self.health.started()
        else:
            ready_after_s = self.spec.ready_after_s
            if ready_after_s is None:
                ready_after_s = self._ctx.config.stable_s
            self._ready_timer = asyncio.get_running_loop().call_later(
                ready_after_s, self._ran_for_ready_after
            )
        self._event(Event.SPAWNED)
        self._reader = OutputReader(self.output, self._on_data)
        self._reader.attach(child.stdout_fd, child.stderr_fd)

    def _ran_for_ready_after(self) -> None:
        """Running for ``ready_after_s`` without a check: ready for its dependants."""
        self._ready_timer = None
        self._ran_long_enough = True
        self._notify()  # wakes its dependants; nothing in its document changed

    def _not_ready(self) -> None:
        """The run is over: neither ready nor checked any more."""
        self._ran_long_enough = False
        if self._ready_timer is not None:
            self._ready_timer.cancel()
            self._ready_timer = None
        if self.health is not None:
            self.health.ended()

    def _on_data(self) -> None:
        if self._waiters:
            self._notify()

    def _outlived_window(self) -> None:
        """The current run has lasted the crash window: earlier failures no longer count."""
        self._window_timer = None
        self._crashes.reset()
        if self.crash_loop is None:
            return
        log.info("%s: running for %g s, the crash loop is over", self.slug, self._ctx.config.crash_window_s)
        if self.error == self.crash_loop:
            self.error = None
        self.crash_loop = None
        self._changed_now()

    def _cancel_window_timer(self) -> None:
        if self._window_timer is not None:
            self._window_timer.cancel()
            self._window_timer = None

    def _close_pipes(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def _after_exit(self, child: procs.Child, code: int) -> None:
        """The main process ended: kill what it left, keep what it wrote, close pipes."""
        self.exit_code = code
        self.pid = None
        self._child = None
        self._cancel_window_timer()
        self._not_ready()
        procs.signal_group(child.pid, signal.SIGKILL)
        try:
            await procs.sweep_async(procs.UNIT_MARKER, self.unit_marker, since=child)
        except asyncio.CancelledError:  # cancelled in a pause: finish the sweep first
            procs.sweep(procs.UNIT_MARKER, self.unit_marker, since=child)
            raise
        if self._reader is not None:
            self._reader.drain_and_close()
            self._reader = None

    def _should_restart(self, code: int) -> bool:
        policy = self.spec.restart
        if policy is RestartPolicy.ALWAYS:
            return True
        if policy is RestartPolicy.ON_FAILURE:
            return code != 0
        return False

    @staticmethod
    def _describe(code: int) -> str:
        return describe_exit(code)

    async def _terminate(self, child: procs.Child, exit_wait: asyncio.Future[int]) -> None:
        """A stop's end of a run: ``stopping``, then ``_kill``, then the sweep."""
        self._event(Event.STOP)
        code = await self._kill(child, exit_wait)
        await self._after_exit(child, code)
        self.output.note(f"stopped ({self._describe(code)})")

    async def _kill(self, child: procs.Child, exit_wait: asyncio.Future[int]) -> int:
        """SIGTERM to the group, wait out the grace period, SIGKILL; the exit code."""
        grace = self._ctx.config.grace_s
        # What it started is recorded while still attached below it: a descendant that
        # left its group and cleared its environment is found by the tree alone.
        procs.record(self.unit_marker)
        procs.signal_group(child.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                return await asyncio.shield(exit_wait)
        except TimeoutError:
            log.warning(
                "%s: pid %d still running %.1f s after SIGTERM; sending SIGKILL",
                self.slug,
                child.pid,
                grace,
            )
            procs.signal_group(child.pid, signal.SIGKILL)
            return await exit_wait


async def _first_change(units: list[Unit]) -> None:
    """Return once any of ``units`` changes (state, health or readiness)."""
    changes = [asyncio.ensure_future(u.wait_changed()) for u in units]
    try:
        await asyncio.wait(changes, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for change in changes:
            change.cancel()


# What an operator's start takes: a process that does not run and is not being stopped.
STARTABLE = (State.STOPPED, State.EXITED, State.FAILED)


class Supervisor:
    """All units of one agent, and the task group that runs them."""

    def __init__(self, config: AgentConfig, apps: Apps, store: RecordStore, agent_id: str) -> None:
        self.units: dict[str, Unit] = {}
        self._ctx = UnitContext(
            agent_id=agent_id,
            apps=apps,
            config=config.supervision,
            base_env=config.base_env(),
            log_dir=config.data_dir / "logs",
            on_spec_change=self._save,
            lookup=self.units.get,
            command_checks=asyncio.Semaphore(MAX_COMMAND_CHECKS),
        )
        self._apps = apps
        self._store = store
        self._records = GroupCommit(store)
        self._ctx.log_dir.mkdir(parents=True, exist_ok=True)
        # Called with a listed unit when it is created, changes state and is deleted (the
        # agent's WS /events): the unit is in ``units`` until it is deleted.
        self.watchers: list[Callable[[Unit], None]] = []
        # Units owned by someone else (a pool's instances): run here, listed there.
        self.detached: set[Unit] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._ready = asyncio.Event()
        self._shutdown = asyncio.Event()

    async def run(self) -> None:
        """Own every unit's task until ``shutdown()``; then stop them all (records kept)."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._ready.set()
            await self._shutdown.wait()
            await self._stop_all()
        self._tg = None
        await self._records.wait_idle()  # a record being written is finished, not dropped

    async def _stop_all(self) -> None:
        """Stop every unit, each listed process once those depending on it are stopped."""
        listed = dict(self.units)
        first = order.stop_first({slug: unit.spec.depends_on for slug, unit in listed.items()})

        async def stop_after(unit: Unit, dependants: list[Unit]) -> None:
            for dependant in dependants:
                await dependant.wait_done()
            await unit.stop()

        await asyncio.gather(
            *(stop_after(unit, [listed[d] for d in first[slug]]) for slug, unit in listed.items()),
            *(unit.stop() for unit in self.detached),
        )

    @property
    def agent_id(self) -> str:
        return self._ctx.agent_id

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def shutdown(self) -> None:
        self._shutdown.set()

    def _start(self, spec: ProcessSpec) -> Unit:
        assert self._tg is not None, "Supervisor.run() is not running"
        unit = Unit(spec, self._ctx)
        self.units[spec.slug] = unit
        unit.watchers.append(lambda: self._changed(unit))
        self._tg.create_task(unit.run(), name=f"unit:{spec.slug}")
        self._changed(unit)
        return unit

    def _changed(self, unit: Unit) -> None:
        for watcher in self.watchers:
            watcher(unit)

    def start_detached(self, spec: ProcessSpec, *, slug: str, port: int, leased: bool = False) -> Unit:
        """Run a unit that is neither recorded nor listed among the processes.

        Pools use this for their instances: the pool records itself and lists them; the
        manager's work (``leased``) too. The unit is forgotten here once it is done.
        """
        assert self._tg is not None, "Supervisor.run() is not running"
        unit = Unit(spec, self._ctx, slug=slug, port=port, leased=leased)
        self.detached.add(unit)

        async def run_then_forget() -> None:
            try:
                await unit.run()
            finally:
                self.detached.discard(unit)
                if not self._apps.remove_if_empty(slug):
                    await asyncio.to_thread(self._apps.remove, slug)

        self._tg.create_task(run_then_forget(), name=f"unit:{slug}")
        return unit

    async def create(self, spec: ProcessSpec, *, viewer: str | None = None) -> Unit:
        """Start a new process and record it durably; return once it is recorded.

        The unit is registered before the record is written (in a thread: an fsync
        costs more than a spawn), so a concurrent create of the same slug conflicts.
        If the record cannot be written the process is stopped again.

        Raises:
            Conflict: a process with this slug exists.
            order.DependencyError: ``depends_on`` names no process here (that ``viewer``,
                when not None, may see: it owns) or closes a cycle.
            OSError: the record could not be written (disk full...).
        """
        if spec.slug in self.units:
            raise Conflict(f"a process with slug {spec.slug!r} exists already")
        if spec.depends_on:
            known = {slug: unit.spec.depends_on for slug, unit in self.units.items()}
            units = self.units

            def visible(slug: str) -> bool:
                return viewer is None or units[slug].spec.owner == viewer

            resolved = order.resolve(spec.slug, spec.app, spec.depends_on, known, visible)
            spec = spec.model_copy(update={"depends_on": resolved})
        unit = self._start(spec)
        try:
            await self._records.save(unit.slug, self._current_spec(unit))
        except OSError:
            await self.delete(spec.slug)
            raise
        return unit

    def restore(self, specs: list[ProcessSpec]) -> None:
        """Start recorded processes again (after an agent restart)."""
        for spec in specs:
            if spec.slug not in self.units:
                self._start(spec)

    def get(self, slug: str) -> Unit:
        try:
            return self.units[slug]
        except KeyError:
            raise NotFound(f"no process with slug {slug!r}") from None

    async def delete(self, slug: str) -> Unit:
        """Stop the process, forget it, and return its last status.

        Raises:
            NotFound: no such slug.
        """
        unit = self.get(slug)
        await unit.stop()
        if self.units.get(slug) is unit:
            del self.units[slug]
            self._changed(unit)
            await asyncio.to_thread(self._forget, slug)
        return unit

    async def stop(self, slug: str) -> Unit:
        """An operator's stop: stop the process, keep it listed in ``stopped``, and record
        that, so that it stays stopped across an agent restart. Returns once nothing of it
        runs. The record is written first: once asked, a stop survives a crash.

        Raises:
            NotFound: no such slug.
            Conflict: it is stopped already.
            OSError: the record could not be written (the process was not touched).
        """
        unit = self.get(slug)
        async with unit.operator_lock:
            if unit.state is State.STOPPED:
                raise Conflict(f"process {slug!r} is stopped already (start it with start-process)")
            await self._record_stopped(unit, True)
            await unit.halt()
        return unit

    async def start(self, slug: str) -> Unit:
        """An operator's start of a process that does not run: ``stopped``, ``exited`` or
        ``failed`` (supervisorctl's rule). Returns once it is on its way (``starting``, or
        ``fetching`` for an app), with its record saying it runs.

        Raises:
            NotFound: no such slug.
            Conflict: it runs, or is on its way, or is being stopped.
            OSError: the record could not be written (it was not started).
        """
        unit = self.get(slug)
        async with unit.operator_lock:
            if unit.state is State.STOPPING:
                raise Conflict(f"process {slug!r} is being deleted (or the agent is stopping)")
            if unit.state not in STARTABLE:
                raise Conflict(
                    f"process {slug!r} is {unit.state.value}, not stopped: it is started already "
                    "(restart-process starts it again)"
                )
            await self._start_again(unit)
        return unit

    async def restart(self, slug: str) -> Unit:
        """An operator's restart, whatever the state: stop (as ``stop``, not recorded), then
        start. Not a crash: no backoff, ``restarts`` unchanged.

        Raises:
            NotFound: no such slug.
            OSError: the record could not be written (a stopped process stays stopped).
        """
        unit = self.get(slug)
        async with unit.operator_lock:
            await unit.halt()
            await self._start_again(unit)
        return unit

    async def _start_again(self, unit: Unit) -> None:
        """Start ``unit`` (not running) once its record says it runs."""
        if unit.state is not State.STOPPED:
            await unit.halt()  # exited or failed: through stopped, as the table has it
        if unit.done:
            return  # deleted meanwhile
        await self._record_stopped(unit, False)
        unit.resume()

    async def _record_stopped(self, unit: Unit, stopped: bool) -> None:
        """Record whether an operator stopped ``unit`` (the record is rewritten only if it changes)."""
        if unit.spec.stopped is stopped:
            return
        before, unit.spec = unit.spec, unit.spec.model_copy(update={"stopped": stopped})
        try:
            await self._records.save(unit.slug, self._current_spec(unit))
        except OSError:
            unit.spec = before
            raise

    def _current_spec(self, unit: Unit) -> Callable[[], ProcessSpec | None]:
        """``unit``'s spec as it is when written, or None once it has been deleted."""
        return lambda: unit.spec if self.units.get(unit.slug) is unit else None

    def _save(self, unit: Unit) -> None:
        """Record ``unit``'s current spec now (rare: after its archive is first fetched)."""
        self._store.save(self._current_spec(unit))

    def _forget(self, slug: str) -> None:
        self._store.remove(slug)
        self._apps.remove(slug)

    def running_count(self) -> int:
        return sum(1 for u in self.units.values() if is_alive(u.state))
