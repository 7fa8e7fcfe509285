"""A pool's definition and the documents the pools API answers with.

``PoolSpec`` is the one definition of a pool: the API's create request, the record in
``<data dir>/pools/<name>.json``, and an entry of ``[[pools]]`` in the config file all
validate against it, so a pool means the same wherever it was declared.

Durations are seconds, under the names the issue gave them (``idle_timeout``,
``start_timeout``); sizes are counts.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from herder.agent.apps.procfile import PROCESS_TYPE_PATTERN
from herder.agent.models import (
    ONE_WAY_TO_RUN,
    SOURCE_URL_PATTERN,
    Command,
    EnvVars,
    SourceUrl,
    check_env,
    check_one_way_to_run,
    check_source_url,
)
from herder.apierrors import FieldError
from herder.net import is_loopback_host
from herder.openapi_docs import at_least_one_of

# A DNS label that starts with a letter: a pool is reached as ``<name>.<anything>``,
# and a name that could be the first label of an IP address would be ambiguous.
POOL_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
PORT_PLACEHOLDER = "{port}"
MAX_INSTANCES_LIMIT = 256
ProcessType = Annotated[str, StringConstraints(pattern=f"^{PROCESS_TYPE_PATTERN}$")]


class ReadyCheck(BaseModel):
    """An HTTP readiness check: ``GET path`` must answer 2xx."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    path: Annotated[str, StringConstraints(pattern=r"^/[\x21-\x7e]*$", max_length=2048)] = Field(
        description="Path to GET on the instance's port; 2xx means ready."
    )


# What split_listen takes: a host (an IPv6 one in brackets), a colon and a port up to
# 65535 (whether it can be bound is the kernel's to say: a 409 or a 422 naming listen).
_PORT = "0*([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
LISTEN_PATTERN = f"^.+:{_PORT}$"


class PoolSpec(BaseModel):
    """What a pool runs and how it scales. ``POST /pools`` takes exactly this."""

    model_config = ConfigDict(extra="forbid", defer_build=True, json_schema_extra=ONE_WAY_TO_RUN)

    name: Annotated[str, StringConstraints(pattern=POOL_NAME_PATTERN)] = Field(
        description="Lower-case DNS label; requests whose Host is '<name>.<anything>' go to this pool."
    )
    command: Command = Field(
        None,
        description="What each instance runs: a string (through /bin/sh -c) or an argv list. "
        "'{port}' is replaced by the instance's port, also given as $PORT.",
    )
    source_url: SourceUrl | None = Field(
        None,
        description="An app, as for processes: http(s):// or file:// archive or directory.",
        json_schema_extra={"pattern": SOURCE_URL_PATTERN},
    )
    process_type: ProcessType | None = Field(None, description="Key into the app's Procfile.")
    env: EnvVars = Field(default_factory=dict, description="Added to each instance's environment.")
    rebuild: bool = Field(
        False,
        description="Make the app's build again if it failed before, for the first instance started "
        "after the pool is created or restored (a failed build is otherwise not tried again).",
    )
    min_instances: int = Field(
        0, ge=0, le=MAX_INSTANCES_LIMIT, description="Kept running even when idle; at most max_instances."
    )
    max_instances: int = Field(1, ge=1, le=MAX_INSTANCES_LIMIT, description="Never more than this many.")
    concurrency: int = Field(
        80,
        ge=0,
        le=100_000,
        description="Requests in flight per instance before another instance is started (or the "
        "request waits); 0: no limit.",
    )
    idle_timeout: float = Field(
        300.0, gt=0, le=7 * 86400, description="Seconds idle after which an instance above the minimum stops."
    )
    start_timeout: float = Field(
        30.0, gt=0, le=3600, description="Seconds a request waits for a ready instance before a 503."
    )
    ready: ReadyCheck | None = Field(
        None, description="HTTP readiness check; null: ready once the port accepts connections."
    )
    listen: str | None = Field(
        None,
        description="'host:port' where this pool takes all traffic (port 0: the kernel picks); "
        "null: reached only through the agent's port by Host.",
        json_schema_extra={"pattern": LISTEN_PATTERN},
    )

    @field_validator("source_url")
    @classmethod
    def _check_scheme(cls, url: str | None) -> str | None:
        return check_source_url(url)

    @field_validator("env")
    @classmethod
    def _check_env(cls, env: dict[str, str]) -> dict[str, str]:
        return check_env(env)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, listen: str | None) -> str | None:
        if listen is None:
            return None
        split_listen(listen)  # raises ValueError naming the problem
        return listen

    @model_validator(mode="after")
    def _consistent(self) -> PoolSpec:
        check_one_way_to_run(self.command, self.source_url, self.process_type)
        if self.min_instances > self.max_instances:
            raise FieldError("min_instances", "min_instances may not exceed max_instances")
        return self


def split_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` → (host, port); IPv6 hosts in brackets.

    Raises:
        ValueError: not ``host:port`` or the port is out of range.
    """
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"listen must be 'host:port', not {listen!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    return host.strip("[]"), port


def listen_is_loopback(listen: str) -> bool:
    return is_loopback_host(split_listen(listen)[0])


class ScaleRequest(BaseModel):
    """New bounds for a pool; at least one of them."""

    # The document says what ``_something`` checks: one bound that is not null.
    model_config = ConfigDict(
        extra="forbid",
        defer_build=True,
        json_schema_extra=at_least_one_of(min_instances="integer", max_instances="integer"),
    )

    min_instances: int | None = Field(None, ge=0, le=MAX_INSTANCES_LIMIT)
    max_instances: int | None = Field(None, ge=1, le=MAX_INSTANCES_LIMIT)

    @model_validator(mode="after")
    def _something(self) -> ScaleRequest:
        if self.min_instances is None and self.max_instances is None:
            raise FieldError("min_instances", "give min_instances, max_instances or both")
        return self


class DrainRequest(BaseModel):
    """How long a drain (or a delete) waits for requests in flight before stopping."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    timeout: float = Field(30.0, ge=0, le=3600, description="Seconds to wait for requests in flight.")


class InstanceStatus(BaseModel):
    model_config = ConfigDict(defer_build=True)

    id: str = Field(description="'<pool>.<n>'.")
    port: int
    pid: int | None
    state: str = Field(description="starting, ready, unready (crashed or failing its check), stopping.")
    version: int = Field(1, description="The pool's version it runs: the pool's own, or a deploy's.")
    process_state: str = Field(description="The supervised process's own state (running, backoff, ...).")
    in_flight: int = Field(description="Requests (and WebSockets) being served now.")
    requests: int = Field(description="Requests served since it started.")
    restarts: int
    started_at: float | None = Field(description="Unix time (seconds) its current run started.")
    error: str | None


# A deploy's new program: the pool's again (a rolling restart), a command, or an app.
_DEPLOY_RUNS: dict[str, Any] = {
    "oneOf": [
        {
            "title": "the pool's program again",
            "properties": {
                "command": {"type": "null"},
                "source_url": {"type": "null"},
                "process_type": {"type": "null"},
            },
        },
        *ONE_WAY_TO_RUN["oneOf"],
    ]
}


class DeployRequest(BaseModel):
    """A new version of a pool's program, and how to roll it out (``POST /pools/{name}/deploy``).

    Only what an instance runs may change (``command``, or ``source_url`` and
    ``process_type``; ``env``); the pool's name, address, bounds and readiness check stay,
    so a deploy can do nothing to a pool that deleting and creating it could not.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True, json_schema_extra=_DEPLOY_RUNS)

    command: Command = Field(
        None, description="The new command; none of the three: the pool's program again."
    )
    source_url: Annotated[SourceUrl, AfterValidator(check_source_url)] | None = Field(
        None,
        description="The new app (with process_type).",
        json_schema_extra={"pattern": SOURCE_URL_PATTERN},
    )
    process_type: ProcessType | None = Field(None, description="Key into the new app's Procfile.")
    env: Annotated[EnvVars, AfterValidator(check_env)] | None = Field(
        None, description="The new version's env (replaces the pool's); null: the pool's."
    )
    rebuild: bool = Field(False, description="Make the new app's build again if it failed before.")
    max_parallel: int = Field(
        1, ge=1, le=MAX_INSTANCES_LIMIT, description="New instances started (and old ones replaced) at once."
    )
    canary: int = Field(
        0,
        ge=0,
        le=MAX_INSTANCES_LIMIT,
        description="Start this many new instances beside the old ones, and wait for a promote; at most "
        "max_instances. 0: roll out at once.",
    )
    healthy_deadline: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds a new instance has (once its app is fetched and built) to be healthy; past "
        "it, the deploy is rolled back.",
    )
    min_healthy_time: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="Seconds a new instance must stay ready, without exiting, to be healthy; below "
        "healthy_deadline.",
    )
    drain_timeout: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Seconds an old instance is given to finish its requests (and its WebSockets to "
        "close) before it is stopped.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DeployRequest:
        if (self.command, self.source_url, self.process_type) != (None, None, None):
            check_one_way_to_run(self.command, self.source_url, self.process_type)
        if self.min_healthy_time >= self.healthy_deadline:
            raise FieldError("min_healthy_time", "min_healthy_time must be below healthy_deadline")
        return self

    def runs(self) -> dict[str, Any]:
        """The fields of a pool spec this deploy changes."""
        update: dict[str, Any] = {}
        if self.command is not None:
            update = {"command": self.command, "source_url": None, "process_type": None}
        elif self.source_url is not None:
            update = {"command": None, "source_url": self.source_url, "process_type": self.process_type}
        if self.env is not None:
            update["env"] = dict(self.env)
        return update


class DeploymentStatus(BaseModel):
    """A deploy of a pool: what it rolls out, how far it got, how it ended."""

    model_config = ConfigDict(defer_build=True)

    id: int = Field(description="1, 2, ... for each deploy of the pool since the agent started.")
    version: int = Field(description="The version it rolls out.")
    from_version: int = Field(description="The version it replaces (and goes back to if it fails).")
    state: str = Field(
        description="running; canary (its canaries are healthy and wait for a promote); rolling_back; "
        "succeeded; failed (rolled back: reason says why); cancelled (the pool was drained)."
    )
    reason: str | None = Field(description="Why it failed or was cancelled.")
    runs: dict[str, Any] = Field(
        description="What the new version runs: command or source_url/process_type, env."
    )
    max_parallel: int
    canary: int
    healthy_deadline: float
    min_healthy_time: float
    drain_timeout: float
    target: int = Field(
        description="New instances it ends with: as many as the old ones it found, at least 1."
    )
    started: int = Field(description="New instances started.")
    healthy: int = Field(description="New instances found healthy.")
    replaced: int = Field(description="Old instances taken out of service.")
    started_at: float = Field(description="Unix time (seconds).")
    finished_at: float | None = Field(description="Unix time (seconds) it ended, or null.")


class PoolStatus(BaseModel):
    """A pool's document: its spec, its state and its instances, with links."""

    model_config = ConfigDict(defer_build=True)

    name: str
    spec: dict[str, Any] = Field(description="The pool's definition, as created.")
    origin: str = Field(description="'api' (recorded in the data dir) or 'config' (from the config file).")
    state: str = Field(description="active, draining or drained.")
    url: str | None = Field(description="Where the pool listens on its own, when it has a listen address.")
    host: str = Field(description="Host header that routes to this pool on the agent's port.")
    waiting: int = Field(description="Requests waiting for an instance.")
    cold_starts: int = Field(
        description="Instances started because requests waited with none free (not the minimum kept "
        "ready, nor replacements), since the pool was created or the agent started."
    )
    error: str | None = Field(
        description="The last failure: an instance that could not run or is in a crash loop, a port taken."
    )
    instances: list[InstanceStatus]
    details: str
    scale: str
    drain: str
    resume: str
    delete: str
    build_log: str | None = Field(
        default=None,
        description="GET the app's build log (text) here; only for a pool of an app that is built.",
    )
    version: int = Field(1, description="The version of its spec the pool runs; each deploy makes the next.")
    deployment: DeploymentStatus | None = Field(
        None, description="The deploy under way (or awaiting promotion), or null."
    )
    deployments: list[DeploymentStatus] = Field(
        default_factory=list, description="The last deploys that ended, newest first (at most 10)."
    )
    deploy: str | None = Field(None, description="POST a deploy here (a DeployRequest).")
    promote: str | None = Field(
        None, description="POST here to promote the canaries of the deploy under way."
    )
    revert: str | None = Field(None, description="POST here to abandon the deploy under way and roll back.")


class PoolListing(BaseModel):
    model_config = ConfigDict(defer_build=True)

    pools: list[PoolStatus]
