"""The manager's end of its agents' RPC links: registration, heartbeats, work pushed, reports.

Each agent started with ``--manager URL`` keeps one connection to ``/rpc`` here (the
wire protocol of #3). Over it:

* agent → manager: ``register`` (once per connection), ``heartbeat`` (every interval,
  with its figures and the attempts it runs; the answer lists those it must stop),
  ``started``, ``output`` (lines, batched), ``finished`` (exit code);
* manager → agent: ``assign`` (a work item to run) and ``stop`` (an attempt to end),
  as notifications.

Assignments are pushed by a dispatcher that claims work *in the database* for the
workers linked to this manager (so two managers on one database never hand one item
twice) whenever something may have changed: a submission, a report, a worker linking,
and once a second for what other managers or the lease keeper changed.

Output lines run through the task's parser here, which moves ``frame_current``; they
are kept, bounded, in memory per work item for ``GET /tasks/{id}/log``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from herder import __version__
from herder.manager.authority import TokenVerifier
from herder.manager.store import queries
from herder.manager.store.batch import Beat, Finished, Report
from herder.manager.store.status import TERMINAL
from herder.rpc.auth import Principal, SharedSecretVerifier
from herder.rpc.errors import ConnectionLost
from herder.rpc.handlers import Method
from herder.rpc.peer import Peer
from herder.rpc.service import Service

if TYPE_CHECKING:
    from herder.manager.server import ManagerRuntime

log = logging.getLogger(__name__)

DISPATCH_TICK_S = 1.0
KEPT_LINES = 2000


class Links:
    """The agents linked to this manager, and the dispatcher that feeds them."""

    def __init__(self, runtime: ManagerRuntime) -> None:
        self.runtime = runtime
        self.peers: dict[int, Peer] = {}
        self._wake = asyncio.Event()
        self._parsers: dict[tuple[int, int], Any] = {}
        self.output: dict[int, collections.deque[tuple[int, str, str]]] = {}
        # Live readers of a task's output (WS /tasks/{id}/log), by task id.
        self.readers: dict[int, set[asyncio.Queue[tuple[int, int, str, str] | None]]] = {}
        self._item_task: dict[int, int] = {}
        token = runtime.config.auth_token
        verifier: Any = None
        if runtime.authority is not None:
            verifier = TokenVerifier(runtime.authority)
        elif token:
            verifier = SharedSecretVerifier(token)
        self.service = Service(
            "herder-manager",
            __version__,
            verifier=verifier,
            anonymous=None if verifier is not None else Principal("anonymous", "admin"),
        )
        methods: dict[str, Callable[..., Any]] = {
            "register": self.register,
            "heartbeat": self.heartbeat,
            "started": self.started,
            "output": self.output_lines,
            "finished": self.finished,
        }
        for name, func in methods.items():
            self.service.registry.add(Method.of(func, name=name))
        from herder.manager.services import Services

        self.services = Services(
            runtime.authority is not None,
            runtime.targets,
            runtime.config.service_quota,
            runtime.config.service_quota_overrides,
        )
        for method in self.services.methods():
            self.service.registry.add(method)
        runtime.writes.dispatch_to = lambda: list(self.peers)
        runtime.writes.on_claimed = self.push

    def wake(self) -> None:
        """Something changed that may let work be handed out."""
        self._wake.set()

    # -- methods agents call --------------------------------------------------------------

    async def register(self, info: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """An agent links itself: registered (or updated) as a worker by its hostname."""
        if self.runtime.authority is not None and getattr(peer.principal, "role", None) != "admin":
            raise PermissionError("only an admin's key may link a worker (herder keys issue --role admin)")
        from herder.manager.models import WorkerRegistration

        fields = WorkerRegistration.model_validate(info).model_dump(exclude_unset=True)
        transport = getattr(peer.transport, "_writer", None)
        address = transport.get_extra_info("peername") if transport is not None else None
        if "ip_address" not in fields and isinstance(address, tuple):
            fields["ip_address"] = str(address[0])
        if fields.get("mac_address") is not None:
            fields["mac_address"] = str(fields["mac_address"])
        async with self.runtime.transaction() as db:
            worker, _ = await queries.register_worker(db, fields)
            worker.activity = "available"
            worker_id = worker.id
        previous = self.peers.get(worker_id)
        if previous is not None and previous is not peer:
            await previous.close("the worker linked again on another connection")
        self.peers[worker_id] = peer
        peer.on_close.append(lambda p: self._unlinked(worker_id, p))
        self.wake()
        log.info("worker %d (%s) linked", worker_id, fields["hostname"])
        cfg = self.runtime.config
        # The lease: the agent stops work it could not renew for ``lease_s - lease_margin_s``
        # (its clock); this manager requeues it ``lease_margin_s`` after the lease ended.
        return {
            "worker_id": worker_id,
            "heartbeat_interval_s": cfg.heartbeat_interval_s,
            "lease_s": cfg.lease_s,
            "lease_margin_s": cfg.lease_margin,
        }

    def _unlinked(self, worker_id: int, peer: Peer) -> None:
        if self.peers.get(worker_id) is peer:
            del self.peers[worker_id]
            log.info("worker %d unlinked (%s)", worker_id, peer.close_reason or "closed")

    async def heartbeat(
        self, worker_id: int, figures: dict[str, Any], running: list[list[int]], peer: Peer
    ) -> dict[str, Any]:
        """Alive: figures noted, leases extended; answers the attempts it must stop."""
        self._own(worker_id, peer)
        reported = tuple((int(item), int(attempt)) for item, attempt in running)
        stop = await self.runtime.writes.heartbeat(Beat(worker_id, figures, reported))
        if self.runtime.authority is None:
            return {"stop": stop}
        # The revoked keys: the agent refuses their tokens on its own API from now on.
        return {"stop": stop, "revoked": self.runtime.authority.revoked_ids()}

    def _own(self, worker_id: int, peer: Peer) -> None:
        """A link speaks for the worker it registered, and for no other.

        Raises:
            PermissionError: another worker's id (or none registered on this link yet).
        """
        if self.peers.get(worker_id) is not peer:
            raise PermissionError(f"this link is not registered as worker {worker_id}: call register first")

    async def started(self, worker_id: int, item_id: int, attempt: int, peer: Peer) -> None:
        self._own(worker_id, peer)
        parser_name = await self.runtime.writes.started(Report(item_id, worker_id, attempt))
        from herder.manager.tasktypes import load_parser

        self._parsers[(item_id, attempt)] = load_parser(parser_name)

    async def output_lines(
        self, worker_id: int, item_id: int, attempt: int, lines: list[list[str]], peer: Peer
    ) -> None:
        """Lines of an attempt's output: ``[[stream, text], ...]``; kept and parsed."""
        self._own(worker_id, peer)
        kept = self.output.setdefault(item_id, collections.deque(maxlen=KEPT_LINES))
        parser = self._parsers.get((item_id, attempt)) or await self._load_parser(item_id, attempt)
        task_id = self._item_task.get(item_id)
        readers = self.readers.get(task_id, ()) if task_id is not None else ()
        for stream, text in lines:
            for queue in readers:
                if queue.qsize() < KEPT_LINES:  # a reader that cannot keep up loses lines, not memory
                    queue.put_nowait((item_id, attempt, stream, text))
        frame: int | None = None
        percent: float | None = None
        for stream, text in lines:
            kept.append((attempt, stream, text))
            if parser is not None:
                progress = parser.parse(text)
                if progress is not None:
                    frame = progress.frame if progress.frame is not None else frame
                    percent = progress.percent if progress.percent is not None else percent
        if frame is not None or percent is not None:
            report = Report(item_id, worker_id, attempt)
            await self.runtime.writes.progress(report, frame, percent)

    async def _load_parser(self, item_id: int, attempt: int) -> Any:
        """The parser of an attempt whose output came before (or without) its start report."""
        async with self.runtime.transaction() as db:
            name = await queries.parser_of_item(db, item_id)
        if name is None:
            return None
        from herder.manager.tasktypes import load_parser

        parser = self._parsers[(item_id, attempt)] = load_parser(name)
        return parser

    async def finished(
        self,
        worker_id: int,
        item_id: int,
        attempt: int,
        exit_code: int,
        error: str | None = None,
        started_at: float | None = None,
        *,
        peer: Peer,
    ) -> None:
        """An attempt ended (``started_at``: when, for work too short to be reported started)."""
        self._own(worker_id, peer)
        self._parsers.pop((item_id, attempt), None)
        report = Finished(item_id, worker_id, attempt, exit_code, error, started_at)
        task_id, status = await self.runtime.writes.finished(report)  # its round refills the slot
        if status in TERMINAL:
            self.end_readers(task_id)

    def end_readers(self, task_id: int) -> None:
        """The task has ended: its live readers have read everything."""
        for queue in self.readers.get(task_id, ()):
            queue.put_nowait(None)

    def subscribe(self, task_id: int) -> asyncio.Queue[tuple[int, int, str, str] | None]:
        queue: asyncio.Queue[tuple[int, int, str, str] | None] = asyncio.Queue()
        self.readers.setdefault(task_id, set()).add(queue)
        return queue

    def unsubscribe(self, task_id: int, queue: asyncio.Queue[tuple[int, int, str, str] | None]) -> None:
        readers = self.readers.get(task_id)
        if readers is not None:
            readers.discard(queue)
            if not readers:
                del self.readers[task_id]

    # -- pushing work ------------------------------------------------------------------------

    async def dispatch_forever(self) -> None:
        """Hand out work to linked workers whenever something may have changed."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), DISPATCH_TICK_S)
            self._wake.clear()
            try:
                await self._dispatch()
            except Exception:  # the database is away for a moment: the next tick retries
                log.exception("dispatching work failed")

    async def _dispatch(self) -> None:
        """Claim work for every free slot of the linked workers at once, and push it.

        Rounds of writes that submit or finish work claim for free slots themselves
        (``Writes``); this pass covers the rest: a worker that just linked, work that
        another manager or the lease keeper put back in the queue.
        """
        while self.peers:
            claimed = await self.runtime.writes.claim(list(self.peers))
            if not claimed:
                return
            await self.push(claimed)

    async def push(self, claimed: list[Any]) -> None:
        """Send each claimed item to its worker (one whose link is gone gets it back by lease)."""
        from herder.manager.api import item_document

        for row in claimed:
            self._item_task[row.id] = row.task_id
            peer = self.peers.get(row.worker_id)
            if peer is None or peer.closed:
                continue  # its lease will run out and the item will be queued again
            with contextlib.suppress(ConnectionLost):
                await peer.notify("assign", item_document(row))

    async def stop(self, running: list[tuple[int, int, int]]) -> None:
        """Tell workers to stop attempts that were canceled (best effort: heartbeats too)."""
        for worker_id, item_id, attempt in running:
            peer = self.peers.get(worker_id)
            if peer is not None:
                with contextlib.suppress(ConnectionLost):
                    await peer.notify("stop", item_id, attempt)
