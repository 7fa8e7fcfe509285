"""The RPC service agents link to: registration, heartbeats, and reports on the work they run.

Each agent started with ``--manager URL`` keeps one connection to ``/rpc`` here (the
wire protocol of #3). Over it:

* agent → manager: ``register`` (once per connection), ``heartbeat`` (every interval,
  with its figures and the attempts it runs; the answer lists those it must stop),
  ``started``, ``output`` (lines, batched), ``finished`` (exit code);
* manager → agent: ``assign`` (a work item to run) and ``stop`` (an attempt to end),
  as notifications, sent by the dispatcher (``dispatch.py``).

The arguments and answers are the models of ``herder.fleet`` (docs/protocol.md §19):
the RPC layer validates each call into its model before a method here runs, and answers
one that does not fit with ``invalid_params``. Refusals carry the contract's codes
(``fleet.RefusalCode``): ``fenced`` and ``not_found`` from the writer, ``wrong_worker``
and ``forbidden`` from here; ``register`` under a name another live agent holds is a
``conflict`` (``LinkedWorkers.check_name``).

``AgentsService`` holds these methods; ``LinkedWorkers`` knows which link speaks for
which worker. Reports are written by the manager's writer in rounds (``writes.py``);
output lines go to ``output.Output``. The registry's methods (``services.py``) are
served on the same ``/rpc``: the runtime adds both to one ``rpc.Service``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from herder import fleet
from herder.fleet import RefusalCode, Refused
from herder.manager.errors import Conflict
from herder.manager.output import Progress
from herder.manager.store import queries
from herder.manager.store.heartbeats import Beat
from herder.manager.store.logs import FinalLog
from herder.manager.store.reports import Done, Finished, Report
from herder.manager.store.status import TERMINAL
from herder.rpc import Method, Peer

log = logging.getLogger(__name__)


class Reports(Protocol):
    """Where reports are written (``writes.Writes``)."""

    async def heartbeat(self, beat: Beat) -> list[list[int]]: ...

    async def started(self, report: Report) -> str: ...

    async def progress(self, report: Report, frame: int | None, percent: float | None) -> int: ...

    async def finished(self, report: Finished) -> Done: ...


class Transactions(Protocol):
    """A database session inside a transaction (``ManagerRuntime.transaction``)."""

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...


class Revocations(Protocol):
    """The revoked keys' ids, when the manager has keys (``authority.Authority``)."""

    def revoked_ids(self) -> list[str]: ...


class Wake(Protocol):
    """Told that work may be handed out (``dispatch.Dispatcher``)."""

    def wake(self) -> None: ...


class OutputSink(Protocol):
    """Where attempts' output goes (``output.Output``)."""

    def started(self, item_id: int, attempt: int, parser_name: str) -> None: ...

    async def add(self, item_id: int, attempt: int, lines: Iterable[Sequence[str]]) -> Progress | None: ...

    def attempt_ended(self, item_id: int, attempt: int) -> None: ...

    def final_log(self, item_id: int) -> FinalLog | None: ...

    def item_ended(self, item_id: int) -> None: ...

    def task_ended(self, task_id: int) -> None: ...

    async def move_ended(self, task_id: int) -> None: ...


@dataclass(frozen=True)
class LinkTerms:
    """What a worker is told at registration: how often to heartbeat, and its lease."""

    heartbeat_interval_s: float
    lease_s: float
    lease_margin_s: float


class LinkedWorkers:
    """The links of the workers connected to this manager, by worker id.

    ``silent_after_s`` (the manager's: two heartbeat intervals, 3 s at least): a link that
    brought no heartbeat for this long is given no more work (``live_ids``) until it does.
    Its agent may have moved to another manager of the same database while this link
    stays open, silent (cut off, its close never arriving): work pushed into it was lost
    until its lease ran out, and pushed into it again each time the item came back (the
    chaos suite's item bounced so for a minute).
    """

    def __init__(self, silent_after_s: float = math.inf) -> None:
        self.silent_after_s = silent_after_s
        self._heard: dict[int, float] = {}  # worker id -> when its link last brought a beat
        self._peers: dict[int, Peer] = {}
        # Who linked each worker: its name, and the agent's URL it gave (None: a pull
        # worker or an older agent), to tell an agent's relink from another agent.
        self._linked_as: dict[int, tuple[str, str | None]] = {}

    def ids(self) -> list[int]:
        return list(self._peers)

    def live_ids(self) -> list[int]:
        """The linked workers whose link was heard from lately: those to give work to."""
        since = time.monotonic() - self.silent_after_s
        return [w for w in self._peers if self._heard.get(w, math.inf) >= since]

    def heard(self, worker_id: int) -> None:
        """The worker's link brought a heartbeat."""
        self._heard[worker_id] = time.monotonic()

    def get(self, worker_id: int) -> Peer | None:
        return self._peers.get(worker_id)

    def check_name(self, hostname: str, agent_url: str | None, peer: Peer) -> None:
        """Refuse a link under a name another live agent holds.

        Workers are known by name (``--name``, the hostname by default): two agents on
        one host without ``--name`` would each take the other's link in turn, every few
        seconds, both saying only that their WebSocket closed (#16). The agent that
        linked first keeps the name; the same agent linking again (same URL: restarted,
        or its old connection half dead) still replaces its old link.

        Raises:
            manager.errors.Conflict: a live link from another agent URL holds the name.
        """
        for worker_id, (name, url) in self._linked_as.items():
            previous = self._peers.get(worker_id)
            if name != hostname or previous is None or previous is peer:
                continue
            if url is not None and agent_url is not None and url != agent_url:
                log.warning(
                    "refused a link as worker %r from the agent at %s: the agent at %s holds that name",
                    hostname,
                    agent_url,
                    url,
                )
                raise Conflict(
                    f"worker {hostname!r} is linked already from the agent at {url}; this agent "
                    f"({agent_url}) needs a name of its own: herder agent --name NAME",
                    "hostname",
                )

    async def link(
        self, worker_id: int, peer: Peer, hostname: str = "", agent_url: str | None = None
    ) -> None:
        """``peer`` speaks for the worker from now on (a previous link of it is closed)."""
        previous = self._peers.get(worker_id)
        if previous is not None and previous is not peer:
            await previous.close("the worker linked again on another connection")
        self._peers[worker_id] = peer
        self._heard[worker_id] = time.monotonic()
        self._linked_as[worker_id] = (hostname, agent_url)
        peer.on_close.append(lambda p: self._unlinked(worker_id, p))

    def _unlinked(self, worker_id: int, peer: Peer) -> None:
        if self._peers.get(worker_id) is peer:
            del self._peers[worker_id]
            self._heard.pop(worker_id, None)
            self._linked_as.pop(worker_id, None)
            log.info("worker %d unlinked (%s)", worker_id, peer.close_reason or "closed")

    def own(self, worker_id: int, peer: Peer) -> None:
        """A link speaks for the worker it registered, and for no other.

        Raises:
            fleet.Refused: ``wrong_worker``, another worker's id (or none registered on
                this link yet).
        """
        if self._peers.get(worker_id) is not peer:
            raise Refused(
                RefusalCode.WRONG_WORKER,
                f"this link is not registered as worker {worker_id}: call register first",
            )

    async def close_all(self, reason: str) -> None:
        for peer in list(self._peers.values()):
            await peer.close(reason)


class AgentsService:
    """The methods agents call on ``/rpc``."""

    def __init__(
        self,
        reports: Reports,
        db: Transactions,
        output: OutputSink,
        dispatcher: Wake,
        terms: LinkTerms,
        *,
        linked: LinkedWorkers | None = None,
        revocations: Revocations | None = None,
    ) -> None:
        self._reports = reports
        self._db = db
        self._output = output
        self._dispatcher = dispatcher
        self._terms = terms
        self.linked = linked or LinkedWorkers()
        # With keys, only an admin's key links a worker, and heartbeats carry revocations.
        self._revocations = revocations

    def methods(self) -> list[Method]:
        """The contract's methods (``fleet.MANAGER_METHODS``), each validating its arguments."""
        return fleet.manager_methods(
            {
                "register": self.register,
                "heartbeat": self.heartbeat,
                "started": self.started,
                "output": self.output_lines,
                "finished": self.finished,
            }
        )

    async def register(self, call: fleet.Register, peer: Peer) -> fleet.RegisterAnswer:
        """An agent links itself: registered (or updated) as a worker by its hostname.

        Raises:
            fleet.Refused: ``forbidden``, with keys, for a key that is not an admin's.
        """
        if self._revocations is not None and getattr(peer.principal, "role", None) != "admin":
            raise Refused(
                RefusalCode.FORBIDDEN,
                "only an admin's key may link a worker (herder keys issue --role admin)",
            )
        fields = call.info.model_dump(exclude_unset=True)
        if fields.get("mac_address") is not None:
            fields["mac_address"] = str(fields["mac_address"])
        self.linked.check_name(fields["hostname"], fields.get("agent_url"), peer)
        async with self._db.transaction() as db:
            worker, _ = await queries.register_worker(db, fields)
            worker.activity = "available"
            worker_id = worker.id
        await self.linked.link(worker_id, peer, fields["hostname"], fields.get("agent_url"))
        self._dispatcher.wake()
        log.info("worker %d (%s) linked", worker_id, fields["hostname"])
        terms = self._terms
        # The lease: the agent stops work it could not renew for ``lease_s - lease_margin_s``
        # (its clock); this manager requeues it ``lease_margin_s`` after the lease ended.
        return fleet.RegisterAnswer(
            worker_id=worker_id,
            heartbeat_interval_s=terms.heartbeat_interval_s,
            lease_s=terms.lease_s,
            lease_margin_s=terms.lease_margin_s,
        )

    async def heartbeat(self, call: fleet.Heartbeat, peer: Peer) -> fleet.HeartbeatAnswer:
        """Alive: figures noted, leases extended; answers the attempts it must stop.

        Raises:
            fleet.Refused: ``wrong_worker`` (``LinkedWorkers.own``).
        """
        self.linked.own(call.worker_id, peer)
        self.linked.heard(call.worker_id)
        figures = call.figures.model_dump(exclude_unset=True)
        stop = await self._reports.heartbeat(Beat(call.worker_id, figures, tuple(call.running)))
        if self._revocations is None:
            return fleet.HeartbeatAnswer(stop=[(item, attempt) for item, attempt in stop])
        # The revoked keys: the agent refuses their tokens on its own API from now on.
        revoked = self._revocations.revoked_ids()
        return fleet.HeartbeatAnswer(stop=[(item, attempt) for item, attempt in stop], revoked=revoked)

    async def started(self, call: fleet.Started, peer: Peer) -> None:
        """The attempt runs.

        Raises:
            fleet.Refused: ``wrong_worker``.
            FencedOut: ``fenced``, the attempt is no longer the worker's (or no such item).
        """
        self.linked.own(call.worker_id, peer)
        parser_name = await self._reports.started(Report(call.item_id, call.worker_id, call.attempt))
        self._output.started(call.item_id, call.attempt, parser_name)

    async def output_lines(self, call: fleet.OutputLines, peer: Peer) -> None:
        """Lines of an attempt's output: ``[[stream, text], ...]``; kept and parsed.

        Raises:
            fleet.Refused, FencedOut: as ``started`` (to a notification: not answered).
        """
        self.linked.own(call.worker_id, peer)
        progress = await self._output.add(call.item_id, call.attempt, call.lines)
        if progress is not None:
            report = Report(call.item_id, call.worker_id, call.attempt)
            await self._reports.progress(report, progress.frame, progress.percent)

    async def finished(self, call: fleet.Finished, peer: Peer) -> None:
        """An attempt ended (``started_at``: when, for work too short to be reported started).

        The item's kept output goes with the report: its round stores it if the report
        ends the item, and it then leaves the memory (``output`` module).

        Raises:
            fleet.Refused, FencedOut: as ``started``.
        """
        self.linked.own(call.worker_id, peer)
        self._output.attempt_ended(call.item_id, call.attempt)
        report = Finished(
            call.item_id,
            call.worker_id,
            call.attempt,
            call.exit_code,
            call.error,
            call.started_at,
            log=self._output.final_log(call.item_id),
        )
        done = await self._reports.finished(report)  # its round refills the slot
        if done.item_ended:
            self._output.item_ended(call.item_id)
        if done.status in TERMINAL:
            self._output.task_ended(done.task_id)
            try:
                await self._output.move_ended(done.task_id)
            except Exception:  # the report is written; the lines stay live (bounded), readable
                log.exception("storing the output of task %d's ended work failed", done.task_id)


__all__ = ["AgentsService", "LinkTerms", "LinkedWorkers"]
