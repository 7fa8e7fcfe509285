"""The agent↔manager link as types: one model per method's arguments and per answer.

The link is RPC over the wire protocol (docs/protocol.md §19). Arguments travel as a
call's positional ``args`` in the order of each model's fields (``Heartbeat`` is
``[worker_id, figures, running]``), which is what agents and managers older than these
models sent; ``as_args()`` builds them, and the receiving side validates them into the
model before its handler runs (``rpc.Method`` with ``params=``), answering a call that
does not fit with ``invalid_params`` naming the field.

Both sides validate what they receive: the manager every call an agent makes and the
agent's ``inventory`` answer, the agent ``assign``, ``stop`` and the manager's answers
(``read_answer``). Lists and strings are
bounded, so that a peer cannot make the other hold more than a frame's worth of one
thing; answers and the work item of ``assign`` ignore keys they do not know (a newer
manager may add some), the arguments of calls to the manager refuse them (an agent that
sends one is newer than its manager, or wrong).

Refusals come back as ``RemoteError``s carrying a ``RefusalCode`` (``refusal_of``);
``FINAL_REFUSALS`` are the ones that mean a report will never apply, so an agent drops
it instead of trying again.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

from herder.rpc import Method, RemoteError, RpcError

# A database id: positive, within SQLite's and PostgreSQL's 64-bit integers.
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
# Attempts count from 1; the manager gives up long before this (``max_attempts`` <= 100).
Attempt = Annotated[int, Field(ge=1, le=2**31 - 1)]
Tag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:=-]{0,63}$")]
Hostname = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\s/]+$")]
# The agent splits output into lines of at most 64 KiB (``agent.processes.logs``);
# decoded, a line has at most as many characters as it had bytes.
MAX_LINE_CHARS = 64 * 1024
# Lines in one ``output`` notification: the agent sends at most this many at once.
MAX_OUTPUT_LINES = 500
# Attempts one heartbeat may name, or one answer may stop: a worker runs at most 1024
# at once (``slots``); the rest is room for attempts still ending.
MAX_RUNNING = 4096
# An attempt's error, as the agent reports it (a supervisor's message, a lease note).
MAX_ERROR_CHARS = 16 * 1024
# Keys of each figures document (load, CPU, memory... a few dozen at most).
MAX_FIGURES = 64
# Revoked keys an answer may list; each id is a short token.
MAX_REVOKED = 100_000
# A work item's command line and environment, as a task type compiles them.
MAX_ARGV = 4096
MAX_ENV = 4096
MAX_TEXT_CHARS = 128 * 1024

Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
Attempts = Annotated[list[tuple[Id, Attempt]], Field(max_length=MAX_RUNNING)]


class RefusalCode(enum.StrEnum):
    """Why the manager refused a call on the link: stable codes, matched by the agent.

    The first four come from the manager's handlers as an application error's ``type``
    (``manager.errors``: ``FencedOut.code``, ``NotFound.code``; ``Refused`` below for
    ``wrong_worker`` and ``forbidden``); the others are the RPC layer's own codes
    (``wire.ErrorCode``), in the error's ``code``.
    """

    FENCED_OUT = "fenced"  # the attempt is no longer this worker's (requeued, canceled)
    NOT_FOUND = "not_found"  # no such work item, task or worker
    WRONG_WORKER = "wrong_worker"  # this link is not registered as that worker (register first)
    FORBIDDEN = "forbidden"  # the link's credentials may not link a worker (not an admin's)
    INVALID_PARAMS = "invalid_params"  # the arguments do not fit the method (the field is named)
    UNAUTHORIZED = "unauthorized"  # no or wrong credentials for the method
    OVERLOADED = "overloaded"  # too many calls at once on the link: try again later

    @property
    def final(self) -> bool:
        """Whether a report refused so will never apply (dropped, not tried again)."""
        return self in FINAL_REFUSALS


# A report refused with one of these is dropped: sending it again cannot succeed. The
# others (and failures without a code: the manager's database away for a moment) are
# tried again, and kept for the next link if the link ends meanwhile.
FINAL_REFUSALS = frozenset({RefusalCode.FENCED_OUT, RefusalCode.NOT_FOUND, RefusalCode.INVALID_PARAMS})


class Refused(Exception):
    """A refusal the contract defines, raised by the manager's side of the link.

    It crosses RPC with its ``code`` as the error's ``type`` (``rpc`` sends an
    exception's ``code``), which the agent reads back with ``refusal_of``.
    """

    def __init__(self, code: RefusalCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class BadAnswer(RpcError):
    """The other side's answer does not fit the contract (a broken or foreign peer)."""


def refusal_of(exc: RemoteError) -> RefusalCode | None:
    """The contract's code of a refused call, or None for a failure without one.

    An application error names its code in ``type`` (its class name when it had none:
    not a refusal); the RPC layer's refusals name it in ``code``.
    """
    code = exc.type if exc.code == "application_error" else exc.code
    try:
        return RefusalCode(code)
    except ValueError:
        return None


# -- the models -----------------------------------------------------------------------------


class Arguments(BaseModel):
    """A method's arguments: fields in the order they travel as positional ``args``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def as_args(self) -> list[Any]:
        """The call's positional arguments, as the wire carries them."""
        document = self.model_dump(mode="json")
        return [document[name] for name in type(self).model_fields]


class Answer(BaseModel):
    """A method's answer; keys it does not know are ignored (a newer peer's additions)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


A = TypeVar("A", bound=Answer)


def read_answer(model: type[A], value: Any) -> A:
    """The other side's answer, validated.

    Raises:
        BadAnswer: it does not fit ``model`` (named field and why).
    """
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(the answer)"
        raise BadAnswer(f"{model.__name__}: {where}: {first['msg']}") from None


class Registration(BaseModel):
    """Who the worker is: the document of ``register`` (as ``POST /workers``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hostname: Hostname
    system: Annotated[str, StringConstraints(max_length=255)] = ""
    ip_address: Annotated[str, StringConstraints(max_length=64)] | None = None
    mac_address: Annotated[str, StringConstraints(max_length=64)] | int | None = None
    port: int | None = Field(None, ge=0, le=65535)
    agent_url: Annotated[str, StringConstraints(max_length=1024)] | None = None
    slots: int = Field(1, ge=1, le=1024)
    tags: list[Tag] = Field(default_factory=list, max_length=64)


class Register(Arguments):
    """``register(info)``: link this connection as a worker (once per connection)."""

    info: Registration


class RegisterAnswer(Answer):
    """The worker's id, its heartbeat interval and the lease on its work.

    The agent stops work it could not renew for ``lease_s - lease_margin_s`` (its clock);
    the manager requeues it ``lease_margin_s`` after the lease ended. A manager older
    than leases sends neither (then the agent stops nothing on its own).
    """

    worker_id: Id
    heartbeat_interval_s: float = Field(gt=0)
    lease_s: float | None = Field(None, gt=0)
    lease_margin_s: float | None = Field(None, ge=0)


FigureMap = Annotated[dict[str, Any], Field(max_length=MAX_FIGURES)]


class Figures(BaseModel):
    """A worker's figures: what ``GET /workers/{id}`` shows (both parts optional)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    update_frequent: FigureMap | None = None
    update_less_frequent: FigureMap | None = None


class Heartbeat(Arguments):
    """``heartbeat(worker_id, figures, running)``: alive, with the attempts it runs."""

    worker_id: Id
    figures: Figures
    running: Attempts


class HeartbeatAnswer(Answer):
    """The attempts the worker must stop (no longer its own), and the revoked keys
    (only from a manager with keys: the agent's API refuses their tokens from then on)."""

    stop: Attempts = Field(default_factory=list)
    revoked: (
        Annotated[list[Annotated[str, StringConstraints(max_length=256)]], Field(max_length=MAX_REVOKED)]
        | None
    ) = None


class Report(Arguments):
    """A report on one attempt of one work item."""

    worker_id: Id
    item_id: Id
    attempt: Attempt


class Started(Report):
    """``started(worker_id, item_id, attempt)``: the attempt runs."""


OutputLine = tuple[Literal["stdout", "stderr"], Annotated[str, StringConstraints(max_length=MAX_LINE_CHARS)]]


class OutputLines(Report):
    """``output(worker_id, item_id, attempt, lines)`` (a notification): ``[[stream, text], ...]``."""

    lines: Annotated[list[OutputLine], Field(max_length=MAX_OUTPUT_LINES)]


class Finished(Report):
    """``finished(worker_id, item_id, attempt, exit_code, error, started_at)``: it ended.

    ``started_at`` (epoch seconds) says when, for work too short to be reported started.
    """

    exit_code: int = Field(ge=-(2**31), le=2**31 - 1)
    error: Annotated[str, StringConstraints(max_length=MAX_ERROR_CHARS)] | None = None
    started_at: float | None = Field(None, ge=0)


class WorkItem(BaseModel):
    """A work item as the manager pushes it (the document of ``GET /tasks/{id}``'s items).

    The agent runs ``argv`` in ``cwd`` with ``env``; the other fields say what it is.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, from_attributes=True)

    id: Id
    task_id: Id
    index: int = 0
    label: Text | None = None
    argv: Annotated[list[Text], Field(min_length=1, max_length=MAX_ARGV)]
    env: Annotated[dict[str, Text], Field(max_length=MAX_ENV)] | None = None
    cwd: Text | None = None
    frame_start: int | None = None
    frame_end: int | None = None
    frame_current: int | None = None
    percent: float | None = None
    status: Annotated[str, StringConstraints(max_length=64)] = "assigned"
    worker_id: Id | None = None
    attempt: Attempt
    exit_code: int | None = None
    error: Text | None = None
    started_at: float | None = None
    finished_at: float | None = None


class Assign(Arguments):
    """``assign(item)`` (manager → agent, a notification): run this attempt."""

    item: WorkItem


class Stop(Arguments):
    """``stop(item_id, attempt)`` (manager → agent, a notification): end this attempt."""

    item_id: Id
    attempt: Attempt


# -- the inventory (manager → agent, a call) ---------------------------------------------------

# How much of an agent one inventory holds: a worker view shows this many rows at most, and
# each entry's texts are cut, so that the whole answer stays well within a frame (a few MB
# at worst). The totals say how many there were.
MAX_INVENTORY_PROCESSES = 1000
MAX_INVENTORY_POOLS = 256
MAX_INVENTORY_SESSIONS = 1024
MAX_COMMAND_ARGS = 16  # of a process's command line, the first ones (enough to recognize it)
MAX_ARG_CHARS = 256
MAX_NAME_CHARS = 255
MAX_NOTE_CHARS = 1024  # an entry's error, or its url

Name = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]
Note = Annotated[str, StringConstraints(max_length=MAX_NOTE_CHARS)]
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
Port = Annotated[int, Field(ge=0, le=65535)]
Pid = Annotated[int, Field(ge=0, le=2**31 - 1)]


def _unix_seconds(value: object) -> object:
    """An agent older than issue 16 sent its times as ISO 8601 strings: read them as Unix
    seconds, so a manager upgraded first still shows its inventory. Anything else is left
    for the field's own check."""
    if isinstance(value, str) and len(value) <= 64:
        try:
            return datetime.datetime.fromisoformat(value).timestamp()
        except ValueError:
            return value
    return value


# A time, in Unix seconds (UTC) as every document of herder gives it.
UnixTime = Annotated[float, Field(ge=0), BeforeValidator(_unix_seconds)]


class InventoryQuery(Arguments):
    """``inventory()`` (manager → agent, a call): what the agent runs now. No arguments."""


class InventoryEntry(BaseModel):
    """One thing of an inventory; keys it does not know are ignored (a newer agent's)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class InventoryProcess(InventoryEntry):
    """A process, as the agent's listing has it (``GET /list-processes``), less its
    environment (secrets stay on the agent) and its links (the agent's own URLs)."""

    slug: Name
    app: Name | None = None
    node: Name | None = None
    process_type: Name | None = None
    command: (
        Annotated[
            list[Annotated[str, StringConstraints(max_length=MAX_ARG_CHARS)]],
            Field(max_length=MAX_COMMAND_ARGS),
        ]
        | None
    ) = None
    state: Annotated[str, StringConstraints(max_length=32)]
    pid: Pid | None = None
    port: Port | None = None
    restarts: Count = Field(0, description="Times the supervisor started it again.")
    exit_code: int | None = Field(None, ge=-(2**31), le=2**31 - 1)
    uptime_s: float | None = Field(None, ge=0, description="Seconds since it last started, while it runs.")
    cpu_percent: float | None = Field(
        None, ge=0, description="100 is one core busy, between the last two samples."
    )
    rss_bytes: Count | None = Field(None, description="Resident memory of its process.")
    started_at: UnixTime | None = Field(None, description="When its current run started (Unix seconds).")
    error: Note | None = None


class InventoryPool(InventoryEntry):
    """A pool (``GET /pools/{name}``), its instances counted and their requests in flight summed."""

    name: Name
    state: Annotated[str, StringConstraints(max_length=32)]
    url: Note | None = None
    instances: Count = Field(0, description="Instances running or starting.")
    in_flight: Count = Field(0, description="Requests being answered, over all instances.")
    waiting: Count = Field(0, description="Requests waiting for an instance.")
    cold_starts: Count = Field(0, description="Instances started because requests waited with none free.")
    error: Note | None = None


class InventorySession(InventoryEntry):
    """A session, as ``meta.list_sessions`` and the agent's ``WS /events`` carry it
    (less its root and extensions: the host's business)."""

    id: Name
    product: Name
    state: Annotated[str, StringConstraints(max_length=32)]
    attached: bool = Field(False, description="A client is attached to it now.")
    created_at: float | None = Field(None, ge=0)
    pid: Pid | None = None
    buffered: Count = Field(0, description="Events kept for its client, not yet sent.")


class Inventory(Answer):
    """What an agent runs now: its processes, pools and sessions (the first ones of each,
    up to the bounds above; ``*_total`` say how many there are), at ``collected_at``
    (epoch seconds, the agent's clock)."""

    collected_at: float = Field(ge=0, description="When the agent made it (epoch seconds, its clock).")
    processes: Annotated[list[InventoryProcess], Field(max_length=MAX_INVENTORY_PROCESSES)]
    processes_total: Count = Field(
        description="How many processes the agent has (more than listed past the bound)."
    )
    pools: Annotated[list[InventoryPool], Field(max_length=MAX_INVENTORY_POOLS)]
    pools_total: Count = Field(description="How many pools the agent has.")
    sessions: Annotated[list[InventorySession], Field(max_length=MAX_INVENTORY_SESSIONS)]
    sessions_total: Count = Field(description="How many sessions the agent has.")


def fit_inventory(
    processes: Sequence[Mapping[str, Any]],
    pools: Sequence[Mapping[str, Any]],
    sessions: Sequence[Mapping[str, Any]],
    collected_at: float,
) -> Inventory:
    """An inventory of the agent's own documents, cut to the contract's bounds.

    ``processes`` are status documents (``GET /process-status``), ``pools`` pool
    documents, ``sessions`` as ``meta.list_sessions``: the agent makes them with the
    functions its API uses, and this keeps the first of each, with texts and command
    lines cut, so that the answer fits whatever the agent runs.

    Raises:
        pydantic.ValidationError: a document does not fit even cut (a bug of the agent's).
    """
    fitted_processes = [
        InventoryProcess.model_validate(
            {
                **_cut_texts(doc, ("slug", "app", "node", "process_type"), MAX_NAME_CHARS),
                "command": _cut_command(doc.get("command")),
                "error": _cut(doc.get("error"), MAX_NOTE_CHARS),
            }
        )
        for doc in processes[:MAX_INVENTORY_PROCESSES]
    ]
    fitted_pools = [
        InventoryPool.model_validate(
            {
                **_cut_texts(doc, ("name",), MAX_NAME_CHARS),
                "instances": len(doc.get("instances") or ()),
                "in_flight": sum(int(i.get("in_flight") or 0) for i in doc.get("instances") or ()),
                "url": _cut(doc.get("url"), MAX_NOTE_CHARS),
                "error": _cut(doc.get("error"), MAX_NOTE_CHARS),
            }
        )
        for doc in pools[:MAX_INVENTORY_POOLS]
    ]
    fitted_sessions = [
        InventorySession.model_validate(_cut_texts(doc, ("id", "product"), MAX_NAME_CHARS))
        for doc in sessions[:MAX_INVENTORY_SESSIONS]
    ]
    return Inventory(
        collected_at=collected_at,
        processes=fitted_processes,
        processes_total=len(processes),
        pools=fitted_pools,
        pools_total=len(pools),
        sessions=fitted_sessions,
        sessions_total=len(sessions),
    )


def _cut(value: Any, most: int) -> Any:
    return value[:most] if isinstance(value, str) else value


def _cut_texts(doc: Mapping[str, Any], names: Sequence[str], most: int) -> dict[str, Any]:
    return {**doc, **{name: _cut(doc.get(name), most) for name in names if name in doc}}


def _cut_command(command: Any) -> Any:
    if not isinstance(command, list):
        return command
    return [_cut(arg, MAX_ARG_CHARS) for arg in command[:MAX_COMMAND_ARGS]]


# What each side serves: method → (arguments, answer; None: it answers nothing).
MANAGER_METHODS: dict[str, tuple[type[Arguments], type[Answer] | None]] = {
    "register": (Register, RegisterAnswer),
    "heartbeat": (Heartbeat, HeartbeatAnswer),
    "started": (Started, None),
    "output": (OutputLines, None),
    "finished": (Finished, None),
}
AGENT_METHODS: dict[str, tuple[type[Arguments], type[Answer] | None]] = {
    "assign": (Assign, None),
    "stop": (Stop, None),
    "inventory": (InventoryQuery, Inventory),
}


def manager_methods(handlers: Mapping[str, Callable[..., Any]]) -> list[Method]:
    """The manager's side of the link as RPC methods (each needs credentials).

    Each handler takes its method's arguments model (and a ``Peer`` parameter, if it
    declares one) and returns its answer model, or None.

    Raises:
        ValueError: ``handlers`` lacks a method of the contract, or has one it lacks.
    """
    return _methods(MANAGER_METHODS, handlers, auth=True)


def agent_handlers(handlers: Mapping[str, Callable[..., Any]]) -> dict[str, Method]:
    """The agent's side of the link (``assign``, ``stop``, ``inventory``), for ``rpc.connect(handlers=)``.

    Raises:
        ValueError: as ``manager_methods``.
    """
    return {m.name: m for m in _methods(AGENT_METHODS, handlers, auth=False)}


def _methods(
    table: Mapping[str, tuple[type[Arguments], type[Answer] | None]],
    handlers: Mapping[str, Callable[..., Any]],
    *,
    auth: bool,
) -> list[Method]:
    if handlers.keys() != table.keys():
        raise ValueError(f"the link's methods are {sorted(table)}, not {sorted(handlers)}")
    return [Method.of(handlers[name], name=name, auth=auth, params=table[name][0]) for name in table]
