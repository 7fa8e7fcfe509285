"""The agent as a worker of a manager: one RPC link, heartbeats, work run and reported.

With ``--manager URL`` the agent keeps a connection to the manager's ``/rpc`` (the wire
protocol of #3). It registers itself (the seed: "should be automatic"), heartbeats
with its figures and the attempts it runs (the answer names those it must stop: a
worker that comes back after the manager gave its work away stops it), runs what the
manager pushes (``assign``) as supervised units, and reports each attempt: started,
output lines, finished with its exit code. The manager may also ask what the agent runs
(``inventory``: its processes, pools and sessions, for the dashboard's worker view).

When the manager is away, the agent reconnects with backoff; with several managers on
one database (``[manager] urls``) it moves to the next one at once (``rotation``: the
first is picked at random, each URL backs off on its own). The link counts as lost when
it closes (a manager killed, restarted) or when a heartbeat's answer is overdue (a
manager cut off or stalled: ``heartbeat_timeout_s``). Work already running keeps
running, and its reports wait (``started`` and ``finished``; output lines meanwhile are
not kept) to be sent once the link is back. What goes both ways is the contract of
``herder.fleet`` (docs/protocol.md §19): the agent validates what the manager pushes and
answers, and matches the codes of refusals, never class names. A report refused with a
final code (the attempt was given to another worker meanwhile) is dropped. Reports are
valid on any manager of the database: the worker's row (and id) is its hostname's, and
a report is checked against the attempt's row, not against the manager that assigned it.

Leases (docs/manager.md, "At most one attempt"): the manager hands a piece of work out
again once its lease ran out. So that the attempt here is over by then, the agent
stops, by its own monotonic clock, every attempt whose lease it could not renew (no
heartbeat naming it acknowledged) for ``lease_s - lease_margin_s``, and kills what is
left of it at ``lease_s``; the manager waits ``lease_margin_s`` more. A lease is renewed
by whichever manager acknowledges the heartbeat, so a move to another manager keeps the
work running if it is linked again in time, and stops it if not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from herder.agent.link.addresses import Addresses
from herder.agent.link.inventory import InventorySource, take_inventory
from herder.agent.link.rotation import Rotation
from herder.agent.link.tls import LinkTls, explain
from herder.agent.models import ProcessSpec, RestartPolicy
from herder.agent.processes import procs
from herder.agent.processes.logs import Stream
from herder.agent.processes.states import State
from herder.agent.processes.supervisor import Supervisor, Unit, pick_port
from herder.clock import SYSTEM_CLOCK, Clock, wait_within
from herder.fleet import (
    MANAGER_METHODS,
    MAX_ERROR_CHARS,
    MAX_OUTPUT_LINES,
    Assign,
    Figures,
    Heartbeat,
    HeartbeatAnswer,
    Inventory,
    InventoryQuery,
    Register,
    RegisterAnswer,
    Registration,
    Stop,
    agent_handlers,
    read_answer,
    refusal_of,
)
from herder.net import rpc_url
from herder.rpc import (
    ConnectionLost,
    HandshakeRefused,
    InvalidParams,
    ManagerClient,
    Peer,
    RemoteError,
    RpcError,
    connect,
    validate_params,
)

if TYPE_CHECKING:
    import ssl

    from herder.agent.config import AgentConfig
    from herder.agent.link.trust import Trust
    from herder.agent.sysinfo import SysInfo

log = logging.getLogger(__name__)

# A heartbeat's answer is overdue (the manager is cut off or stalled: the link is lost)
# after one interval, but never less than this: a manager's write round may be slow.
HEARTBEAT_ANSWER_MIN_S = 3.0
# The longest a step of linking may take (a token bought, the registration answered): a
# manager that accepts connections and answers nothing (stalled) is left after this.
LINK_STEP_TIMEOUT_S = 10.0
OUTPUT_BATCH_LINES = MAX_OUTPUT_LINES  # the most one ``output`` notification may carry
WAIT_EXIT_S = 10 * 365 * 86400.0  # a piece of work may run as long as it needs
MAX_PENDING_REPORTS = 10_000
REPORT_RETRIES = 5
STARTED_REPORT_AFTER_S = 0.1  # shorter work is only reported finished (see _watch)
REPORT_RETRY_S = 0.2
LEASE_CHECK_S = 0.5  # the longest the lease watch sleeps (shorter with short leases)


@dataclass
class Run:
    """One attempt of one work item, running here."""

    item_id: int
    attempt: int
    unit: Unit
    watcher: asyncio.Task[None] | None = None
    stopped: bool = False
    # Monotonic time the manager's lease on this attempt last started from, at the
    # latest: the sending of the last acknowledged heartbeat that named it (or, before
    # one, of the last acknowledged one before the work came).
    lease_base: float = 0.0
    lease_lost: bool = False


class WorkerLink:
    """The agent's end of its link to a manager."""

    def __init__(
        self,
        config: AgentConfig,
        supervisor: Supervisor,
        sysinfo: SysInfo,
        agent_url: Callable[[], str],
        *,
        trust: Trust | None = None,
        clock: Clock = SYSTEM_CLOCK,
        inventory: InventorySource | None = None,
    ) -> None:
        self._trust = trust
        # What ``inventory`` answers: the agent's processes, pools and sessions (the
        # server gives its router and sessions); without it, the supervisor's processes.
        self._inventory = inventory or (
            lambda: take_inventory(self._supervisor, None, None, self._agent_url())
        )
        self._clock = clock  # leases, heartbeats and backoff are read and waited on it
        assert config.manager is not None
        self._link = config.manager
        self.tls = LinkTls(config.manager)  # how the manager's certificate is checked (https)
        self._managers = Rotation(config.manager.urls)
        self._addresses = Addresses()  # which address of a manager's name to try next
        self._address: str | None = None  # the one the link tries or holds now
        self._supervisor = supervisor
        self._sysinfo = sysinfo
        self._agent_url = agent_url
        self.runs: dict[tuple[int, int], Run] = {}
        self._pending: list[tuple[str, list[Any]]] = []
        self.peer: Peer | None = None
        self.worker_id: int | None = None
        self.connected = asyncio.Event()
        # (lease, margin) the manager gave at registration; None: it gives none (older).
        self.lease: tuple[float, float] | None = None
        self._renewed_at = clock.monotonic()  # when the last acknowledged heartbeat was sent
        # Bumped when a link ends: work a manager pushes on a link the agent gave up (its
        # bytes held by a partition, delivered after the move) is not this link's to run.
        self._link_serial = 0
        # The owner of every task the link starts (watchers, their output pumps, the lease
        # watch): set while ``run`` runs, and cancelled and awaited when it ends.
        self._tasks: asyncio.TaskGroup | None = None

    # -- the link ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Stay linked for as long as the agent runs (reconnecting with backoff), until cancelled.

        It owns one task group: the lease watch and each attempt's watcher (with its output
        pump) run in it, so cancelling ``run`` cancels and awaits them all. Attempts left
        running are the supervisor's to stop.
        """
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                tasks.create_task(self._watch_leases(), name="lease-watch")
                await self._stay_linked()
        finally:
            self._tasks = None

    @property
    def manager_url(self) -> str:
        """The manager the link is on (or tries next)."""
        return self._managers.current

    async def _stay_linked(self) -> None:
        while True:
            wait = self._managers.wait_s(self._clock.monotonic())
            if wait > 0:
                await self._clock.sleep(wait)
            url = self._managers.current
            started = self._clock.monotonic()
            self._address = None
            try:
                await self._linked(url)
                self._managers.ended_cleanly()
                continue  # it ended to renew its token: reconnect at once
            except (ConnectionLost, HandshakeRefused, RpcError, OSError, TimeoutError) as exc:
                now = self._clock.monotonic()
                self._addresses.failed(url, self._address, now)
                following = self._managers.failed(now, now - started)
                wait = self._managers.wait_s(now)
                log.warning(
                    "link to the manager %s: %s; trying %s in %.1f s",
                    url,
                    explain(exc, url),
                    following,
                    wait,
                )
            finally:
                self.peer = None
                self.connected.clear()
                self._link_serial += 1

    async def _access_token(self, url: str, tls: ssl.SSLContext | None = None) -> tuple[str | None, float]:
        """The token the link presents, and when to renew it (never, for a shared secret).

        With a key (``--key-file``), a fresh access token is bought from the manager at
        every connection; the link is reconnected at 80% of the token's life, so that it
        never runs on a token that expired (or on a key that was revoked meanwhile).
        """
        if self._link.key is None:
            return self._link.token, float("inf")
        # One try, bounded: a manager that accepts and does not answer must not hold the
        # link longer than a heartbeat would; the rotation's backoff does the retrying.
        manager = ManagerClient(
            url, key=self._link.key, timeout_s=LINK_STEP_TIMEOUT_S, attempts=1, address=self._address, tls=tls
        )
        bought = await manager.buy_token()
        if self._trust is not None:  # the manager's public key, for the tokens of this agent's API
            self._trust.set_jwks(await manager.jwks())
        return bought.token, bought.renew_at

    async def _linked(self, manager_url: str) -> None:
        serial = self._link_serial

        def assign(call: Assign) -> None:
            if serial != self._link_serial:  # a lost link: its manager's lease runs out, as it requeues
                log.warning(
                    "work item %d (attempt %d) came on a link given up: not started",
                    call.item.id,
                    call.item.attempt,
                )
                return
            self._assign(call)

        handlers = agent_handlers(
            {"assign": assign, "stop": self._stop_notified, "inventory": self._inventory_asked}
        )
        self._address = await self._addresses.pick(manager_url)
        tls = await self.tls.context(manager_url, self._address)
        token, renew_at = await self._access_token(manager_url, tls)
        url = rpc_url(manager_url)
        async with contextlib.AsyncExitStack() as link:
            peer = await link.enter_async_context(
                connect(
                    url, token=token, codecs=("msgpack",), handlers=handlers, address=self._address, tls=tls
                )
            )
            try:
                await self._serve(peer, manager_url, renew_at)
            except TimeoutError:
                # An answer is overdue: the manager is stalled or cut off, and the close
                # handshake would wait for it as long again (the WebSocket's close timeout,
                # then the socket is aborted). The link's task group finishes that; the
                # agent moves on now.
                await self._close_aside(link.pop_all(), manager_url)
                raise

    async def _serve(self, peer: Peer, manager_url: str, renew_at: float) -> None:
        """Register on a new link, send what waited, and heartbeat until it ends.

        Returns to renew the access token; raises when the link is lost.
        """
        registration = await self._registration()
        sent = self._clock.monotonic()
        args = Register(info=registration).as_args()
        answer = read_answer(RegisterAnswer, await peer.call("register", *args, timeout=LINK_STEP_TIMEOUT_S))
        self.worker_id = answer.worker_id
        interval = answer.heartbeat_interval_s
        if answer.lease_s is not None:
            self.lease = (answer.lease_s, answer.lease_margin_s or 0.0)
        # Work pushed from now on was claimed after this: its lease started later.
        self._renewed_at = sent
        self.peer = peer
        self.connected.set()
        log.info("linked to the manager %s as worker %d", manager_url, self.worker_id)
        await self._flush_pending(peer)
        while not peer.closed:
            await self._heartbeat(peer, interval)
            if time.time() >= renew_at:
                log.info("renewing the link's access token")
                return  # reconnects at once, with a fresh token
            await wait_within(peer.wait_closed(), interval, self._clock)
        raise ConnectionLost(peer.close_reason or "the manager closed the link")

    async def _close_aside(self, link: contextlib.AsyncExitStack, manager_url: str) -> None:
        """Close a lost link without waiting for it, in the link's task group."""

        async def close() -> None:
            try:
                await link.aclose()
            except Exception as exc:  # a dead link's close may fail: nothing is left to do
                log.debug("closing the lost link to %s: %s", manager_url, exc)

        if self._tasks is None:  # not run by ``run``: nothing owns a task, close here and now
            await close()
        else:
            self._tasks.create_task(close(), name=f"close:{manager_url}")

    async def _registration(self) -> Registration:
        figures = await self._sysinfo.collect(0)
        return Registration(
            hostname=self._link.name or figures["hostname"],
            system=f"{figures['system']} {figures['release']}",
            mac_address=f"{uuid.getnode():012x}",
            agent_url=self._agent_url(),
            port=int(self._agent_url().rsplit(":", 1)[1]),
            slots=self._link.slots,
            tags=list(self._link.tags),
        )

    async def _heartbeat(self, peer: Peer, interval: float) -> None:
        info = await self._sysinfo.collect(len(self.runs))
        load = info["load_average"]
        figures = Figures(
            update_frequent={
                "load_average": {"1min": load[0], "5min": load[1], "15min": load[2]},
                "worker_cpu_percent": info["cpu_percent"],
            },
            update_less_frequent={
                "worker_architecture": info["architecture"],
                "worker_disk_percent": info["disk_percent"],
                "worker_mem_percent": info["memory_percent"],
                "worker_num_cpus": info["cpus"],
            },
        )
        running = [(item, attempt) for (item, attempt), run in self.runs.items() if not run.stopped]
        assert self.worker_id is not None  # registered before the first heartbeat
        beat = Heartbeat(worker_id=self.worker_id, figures=figures, running=running)
        sent = self._clock.monotonic()
        raw = await peer.call("heartbeat", *beat.as_args(), timeout=heartbeat_timeout_s(interval))
        answer = read_answer(HeartbeatAnswer, raw)
        stops = set(answer.stop)
        for item, attempt in running:  # renewed: their leases start again from ``sent`` at the latest
            run = self.runs.get((item, attempt))
            if run is not None and (item, attempt) not in stops:
                run.lease_base = max(run.lease_base, sent)
        self._renewed_at = max(self._renewed_at, sent)
        if self._trust is not None and answer.revoked is not None:
            self._trust.set_revoked(answer.revoked)
        for item_id, attempt in answer.stop:
            log.info("the manager gave work item %d away (attempt %d): stopping it here", item_id, attempt)
            self._stop(item_id, attempt)

    # -- reports ----------------------------------------------------------------------------

    async def _report(self, method: str, args: list[Any]) -> None:
        """Send a report (``started``, ``finished``) now, or keep it for when the link is back.

        ``args`` are the method's arguments after the worker's id (the id of the link
        the report goes out on). A refusal whose code is final (``fleet.FINAL_REFUSALS``:
        the attempt is no longer this worker's) drops it; any other failure (the
        manager's database away for a moment) is tried again, then kept.
        """
        delay = REPORT_RETRY_S
        for _ in range(REPORT_RETRIES):
            peer = self.peer
            if peer is None or peer.closed:
                break
            try:
                await self._send_report(peer, method, args)
                return
            except RemoteError as exc:
                refusal = refusal_of(exc)
                if refusal is not None and refusal.final:
                    log.info("the manager refused %s %s [%s]: %s", method, args[:2], refusal, exc.message)
                    return
                why = refusal or exc.type or exc.code
                log.warning(
                    "the manager failed %s %s [%s]: %s; trying again", method, args[:2], why, exc.message
                )
            except InvalidParams as exc:  # built here: a bug of this agent, which no retry mends
                log.error("a %s report %s does not fit the contract, dropped: %s", method, args[:2], exc)
                return
            except (ConnectionLost, RpcError, TimeoutError):
                break
            await asyncio.sleep(delay)
            delay *= 2
        if len(self._pending) < MAX_PENDING_REPORTS:
            self._pending.append((method, args))

    async def _send_report(self, peer: Peer, method: str, args: list[Any]) -> None:
        """Send one report, checked against the contract first.

        Raises:
            InvalidParams: the report does not fit its model (not sent).
            RemoteError, ConnectionLost, RpcError, TimeoutError: as ``Peer.call``.
        """
        model = MANAGER_METHODS[method][0]
        # The only text of a report is an attempt's error: cut to what the contract allows.
        fitted = [a[:MAX_ERROR_CHARS] if isinstance(a, str) else a for a in args]
        report = validate_params(model, [self.worker_id, *fitted], {})
        await peer.call(method, *report.as_args(), timeout=30)

    async def _flush_pending(self, peer: Peer) -> None:
        """Send the reports that waited, oldest first; those the link could not carry wait on.

        If this link is lost too (the manager it moved to went away in turn), the report
        being sent and those after it are kept for the next link, before the ones made
        meanwhile: none is lost.
        """
        pending, self._pending = self._pending, []
        for index, (method, args) in enumerate(pending):
            try:
                await self._send_report(peer, method, args)
            except RemoteError as exc:  # before RpcError, its base: a refusal is an answer
                why = refusal_of(exc) or exc.type or exc.code
                log.info("the manager refused a late %s %s [%s]: %s", method, args[:2], why, exc.message)
            except InvalidParams as exc:  # an RpcError too
                log.error("a %s report %s does not fit the contract, dropped: %s", method, args[:2], exc)
            except (ConnectionLost, RpcError, TimeoutError):
                self._pending = pending[index:] + self._pending
                raise

    def pending_reports(self) -> int:
        """Reports kept for when the link is back."""
        return len(self._pending)

    # -- running work -----------------------------------------------------------------------

    def _assign(self, call: Assign) -> None:
        """The manager pushed a work item: run it (once per attempt)."""
        item = call.item
        key = (item.id, item.attempt)
        if key in self.runs:
            return
        if self._lease_ends(self._renewed_at, margin=True) <= self._clock.monotonic():
            # This agent was not heard for longer than the lease allows (it was stopped,
            # or swapped out, with the work waiting in its socket): the manager may have
            # given the work to another worker already. Not started; its lease runs out.
            log.warning("work item %d (attempt %d) came after its lease could end: not started", *key)
            return
        argv = list(item.argv)
        if item.cwd:
            argv = ["/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "herder-work", item.cwd, *argv]
        spec = ProcessSpec.model_construct(
            app="task",
            node=f"{key[0]}-{key[1]}",
            process_type=None,
            source_url=None,
            command=argv,
            env=dict(item.env or {}),
            restart=RestartPolicy.NEVER,
            created_at=time.time(),
            archive_sha256=None,
        )
        slug = f"@task.{key[0]}.{key[1]}"
        unit = self._supervisor.start_detached(spec, slug=slug, port=pick_port(), leased=True)
        run = Run(item_id=key[0], attempt=key[1], unit=unit, lease_base=self._renewed_at)
        self.runs[key] = run
        assert self._tasks is not None, "work is pushed only while the link runs"
        run.watcher = self._tasks.create_task(self._watch(run), name=f"work:{key}")

    def _stop_notified(self, call: Stop) -> None:
        """The manager asks to stop an attempt (its task was canceled or deleted)."""
        self._stop(call.item_id, call.attempt)

    def _inventory_asked(self, _call: InventoryQuery) -> Inventory:
        """The manager asks what runs here (its dashboard's worker view): read-only."""
        return self._inventory()

    def _stop(self, item_id: int, attempt: int) -> None:
        run = self.runs.get((int(item_id), int(attempt)))
        if run is not None and not run.stopped:
            run.stopped = True
            run.unit.request_stop()

    async def _watch(self, run: Run) -> None:
        """Follow an attempt to its end and report it.

        Work that ends within ``STARTED_REPORT_AFTER_S`` is reported once, finished
        (with the time it started): a ``started`` report for it would only cost the
        manager a round trip and a write for a status no one could see. Work that runs
        longer is reported started at that point.

        A failure here is this attempt's alone: it is logged, and the link goes on.
        """
        try:
            await self._follow(run)
        except Exception:
            log.exception("following work item %d (attempt %d) failed", run.item_id, run.attempt)
        finally:
            self.runs.pop((run.item_id, run.attempt), None)

    async def _follow(self, run: Run) -> None:
        unit = run.unit
        await unit.wait_for(lambda u: u.state is not State.STARTING, WAIT_EXIT_S)
        began = time.time()
        sub = unit.output.subscribe(replay=True)
        async with asyncio.TaskGroup() as pumping:  # the pump ends when its subscription does
            pumping.create_task(self._pump_output(run, sub), name=f"output:{run.item_id}.{run.attempt}")
            try:
                if unit.pid is not None or unit.state is State.RUNNING:
                    try:
                        await unit.wait_for(_ended, STARTED_REPORT_AFTER_S)
                    except TimeoutError:
                        await self._report("started", [run.item_id, run.attempt])
                await unit.wait_for(_ended, WAIT_EXIT_S)
            finally:
                unit.output.unsubscribe(sub)
        code = unit.exit_code if unit.exit_code is not None else 127
        error = unit.error if unit.state is State.FAILED else None
        if run.lease_lost:
            code = code or 1
            error = "stopped: its lease could not be renewed (no heartbeat acknowledged)"
        await unit.stop()
        await self._report("finished", [run.item_id, run.attempt, code, error, began])

    # -- leases -----------------------------------------------------------------------------

    def _lease_ends(self, base: float, *, margin: bool) -> float:
        """When a lease renewed at ``base`` ends (by this agent's clock, less the margin)."""
        if self.lease is None:
            return float("inf")
        lease, lease_margin = self.lease
        return base + lease - (lease_margin if margin else 0.0)

    async def _watch_leases(self) -> None:
        """Stop the attempts whose leases could not be renewed, before the manager may give them away.

        At ``lease - margin`` since the last renewal the attempt is stopped (SIGTERM, then
        the agent's grace); whatever of it still runs at ``lease`` is killed (SIGKILL to its
        group): the manager requeues it no earlier than ``lease + margin``.
        """
        while True:
            step = LEASE_CHECK_S if self.lease is None else min(LEASE_CHECK_S, max(0.01, self.lease[1] / 4))
            await self._clock.sleep(step)
            now = self._clock.monotonic()
            for run in list(self.runs.values()):
                if _ended(run.unit) or self._lease_ends(run.lease_base, margin=True) > now:
                    continue  # over already (its report may wait for the link), or renewed
                if not run.lease_lost:
                    log.warning(
                        "work item %d (attempt %d): its lease could not be renewed (no heartbeat "
                        "acknowledged for %.1f s): stopping it before the manager gives it away",
                        run.item_id,
                        run.attempt,
                        now - run.lease_base,
                    )
                    run.lease_lost = True
                    self._stop(run.item_id, run.attempt)
                pid = run.unit.pid
                if pid is not None and self._lease_ends(run.lease_base, margin=False) <= now:
                    procs.signal_group(pid, signal.SIGKILL)

    async def _pump_output(self, run: Run, sub: Any) -> None:
        """Lines of the attempt's output to the manager, in batches (dropped while unlinked)."""
        while (batch := await sub.get_batch()) is not None:
            lines, _dropped = batch
            payload = [
                [str(stream), line.decode("utf-8", "replace")]
                for stream, line in lines
                if stream is not Stream.HERDER
            ]
            peer = self.peer
            for start in range(0, len(payload), OUTPUT_BATCH_LINES):
                if peer is None or peer.closed:
                    break
                with contextlib.suppress(ConnectionLost, RpcError):
                    await peer.notify(
                        "output",
                        self.worker_id,
                        run.item_id,
                        run.attempt,
                        payload[start : start + OUTPUT_BATCH_LINES],
                    )


def heartbeat_timeout_s(interval: float) -> float:
    """When a heartbeat's answer is overdue and the link counts as lost (then the next manager).

    A link cut without a close is thus noticed at most ``interval + heartbeat_timeout_s``
    after its last acknowledged heartbeat: 10 s with the default 5 s interval, before
    leases stop the work (three intervals).
    """
    return max(interval, HEARTBEAT_ANSWER_MIN_S)


def _ended(unit: Unit) -> bool:
    return unit.state in (State.EXITED, State.FAILED) or unit.done
