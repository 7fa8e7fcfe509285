"""The agent's documents on the wire, as pydantic models: the one definition of each.

Names and shapes come from the smartmob-agent seed (Index, Listing, Create request,
Process status, Delete request); fields beyond the seed's are what supervisor users
need (``state``, ``pid``, ``restarts``, ``exit_code``, ``started_at``, ``error``...).
Where the seed's table (``status``) and its examples (``details``) name the same link
differently, the status document carries both.

Times are Unix seconds (floats, UTC), as on the manager and in sessions.
"""

from __future__ import annotations

import enum
import re
import urllib.parse
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from herder.agent.apps.fetch import ALLOWED_SCHEMES
from herder.agent.apps.procfile import PROCESS_TYPE_PATTERN
from herder.agent.health.models import (
    DependsOn,
    HealthCheck,
    HealthStatus,
    check_depends_on,
    check_health_and_port,
)
from herder.agent.limits import Cwd, Limits, LogsMode, Umask, UserName, check_host
from herder.agent.processes.states import State
from herder.apierrors import FieldError
from herder.openapi_docs import ErrorDocument as ErrorDocument  # the one error document, shared

APP_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
NODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SLUG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")  # ENV_NAME_PATTERN, below
MAX_ENV_ENTRIES = 256
MAX_ENV_VALUE_CHARS = 32 * 1024
MAX_COMMAND_CHARS = 16 * 1024


MAX_ARGV_ITEMS = 1024

# What the OpenAPI document says of the checks below, for clients (and schemathesis) to
# know what the server takes: ECMA-262 regexes, as JSON Schema has them.
# Python's str.isspace() characters: a command must have one character outside them.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NO_NUL_PATTERN = r"^[^\x00]*$"
NOT_BLANK_PATTERN = rf"^[^\x00]*[^\x00{_SPACE}][^\x00]*$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


def _validate_command(value: Any) -> str | list[str] | None:
    """A shell string or a non-empty argv of strings, without NUL bytes.

    Validated by hand rather than as a pydantic union, so that an error is reported on
    ``command`` itself and not on a union member's internal name.
    """
    if value is None:
        return None
    parts: list[str]
    if isinstance(value, str):
        parts = [value]
        if not value.strip():
            raise ValueError("the command is empty")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = [str(v) for v in value]
        if not parts or len(parts) > MAX_ARGV_ITEMS:
            raise ValueError(f"an argv needs 1 to {MAX_ARGV_ITEMS} items")
    else:
        raise ValueError("must be a string (run by /bin/sh -c) or a list of strings (an argv)")
    if any(len(p) > MAX_COMMAND_CHARS for p in parts):
        raise ValueError(f"longer than {MAX_COMMAND_CHARS} characters")
    if any("\0" in p for p in parts):
        raise ValueError("the command has a NUL byte")
    return parts[0] if isinstance(value, str) else parts


Command = Annotated[
    str | list[str] | None,
    PlainValidator(_validate_command),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": MAX_COMMAND_CHARS, "pattern": NOT_BLANK_PATTERN},
                {
                    "type": "array",
                    "items": {"type": "string", "maxLength": MAX_COMMAND_CHARS, "pattern": NO_NUL_PATTERN},
                    "minItems": 1,
                    "maxItems": MAX_ARGV_ITEMS,
                },
                {"type": "null"},
            ]
        }
    ),
]


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in word)


# What check_source_url takes: one of the fetcher's schemes, in any case, then a colon.
SOURCE_URL_PATTERN = "^(" + "|".join(_any_case(s) for s in ALLOWED_SCHEMES) + "):"
SourceUrl = Annotated[str, StringConstraints(max_length=4096)]


def check_source_url(url: str | None) -> str | None:
    """Only the schemes the fetcher serves; the rest is checked when fetching."""
    if url is None:
        return None
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise ValueError(f"URL scheme {scheme or '(none)'!r} is not allowed; use http, https or file")
    return url


# Environment variables as the document describes them: what check_env takes.
EnvVars = Annotated[
    dict[str, str],
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_ENV_ENTRIES,
            "propertyNames": {"pattern": ENV_NAME_PATTERN},
            "additionalProperties": {
                "type": "string",
                "maxLength": MAX_ENV_VALUE_CHARS,
                "pattern": NO_NUL_PATTERN,
            },
        }
    ),
]
# A command, or an app (source_url and process_type): the document says what
# check_one_way_to_run takes, as two shapes of which a request is exactly one.
ONE_WAY_TO_RUN: dict[str, Any] = {
    "oneOf": [
        {
            "title": "a command",
            "required": ["command"],
            "properties": {
                "command": {"not": {"type": "null"}},
                "source_url": {"type": "null"},
                "process_type": {"type": "null"},
            },
        },
        {
            "title": "an app",
            "required": ["source_url", "process_type"],
            "properties": {
                "command": {"type": "null"},
                "source_url": {"type": "string"},
                "process_type": {"type": "string"},
            },
        },
    ]
}


def check_env(env: dict[str, str]) -> dict[str, str]:
    """Variable names a shell accepts, values without NUL, both bounded."""
    if len(env) > MAX_ENV_ENTRIES:
        raise ValueError(f"at most {MAX_ENV_ENTRIES} variables")
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid variable name")
        if "\0" in value or len(value) > MAX_ENV_VALUE_CHARS:
            raise ValueError(f"value of {name!r} has a NUL byte or is too long")
    return env


def check_one_way_to_run(command: object, source_url: str | None, process_type: str | None) -> None:
    """A ``command``, or a ``source_url`` with a ``process_type``: exactly one way.

    Raises:
        FieldError: naming the field to fix.
    """
    if command is not None:
        if source_url is not None or process_type is not None:
            raise FieldError("command", "give either 'command' or 'source_url' and 'process_type', not both")
    elif source_url is None or process_type is None:
        missing = "source_url" if source_url is None else "process_type"
        raise FieldError(missing, f"field {missing!r} is required (or give 'command' instead)")


class RestartPolicy(enum.StrEnum):
    """When a process that ended is started again."""

    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


class CreateRequest(BaseModel):
    """What to run: an app from ``source_url`` + ``process_type``, or a ``command``."""

    # Built on first use (the first create), not at import: the agent starts sooner.
    model_config = ConfigDict(extra="forbid", defer_build=True, json_schema_extra=ONE_WAY_TO_RUN)

    app: Annotated[str, StringConstraints(pattern=APP_PATTERN)] = Field(
        description="Name of the application; need not be unique among processes."
    )
    node: Annotated[str, StringConstraints(pattern=NODE_PATTERN)] = Field(
        description="Name of the process, by convention '<process_type>.<number>'."
    )
    process_type: Annotated[str, StringConstraints(pattern=f"^{PROCESS_TYPE_PATTERN}$")] | None = Field(
        None, description="Key into the Procfile at the root of the source archive."
    )
    source_url: SourceUrl | None = Field(
        None,
        description="http(s):// or file:// URL of the source archive (or a directory).",
        json_schema_extra={"pattern": SOURCE_URL_PATTERN},
    )
    command: Command = Field(
        None,
        description="herder extension: run this instead of an app. A string runs through "
        "/bin/sh -c; a list is the argv.",
    )
    env: EnvVars = Field(default_factory=dict, description="Environment variables injected into the process.")
    restart: RestartPolicy = Field(
        RestartPolicy.ALWAYS, description="herder extension: always, on-failure or never."
    )
    rebuild: bool = Field(
        False,
        description="herder extension: make the app's build again if it failed before (a failed build is "
        "otherwise not tried again until the app changes).",
    )
    # Health and start order (docs/health.md): the rules live in herder.agent.health.
    port: bool = Field(
        True, description="herder extension: false for a process that listens on nothing (no $PORT)."
    )
    health: HealthCheck | None = Field(
        None, description="herder extension: check the running process; failed checks restart it."
    )
    depends_on: DependsOn = Field(
        default_factory=list,
        description="herder extension: processes (slugs, or nodes of the same app) that must be ready before "
        "this one starts; stopped after it.",
    )
    ready_after_s: float | None = Field(
        None,
        ge=0,
        le=3600,
        description="herder extension: without a health check, a run this long makes it ready for its "
        "dependants (default: the agent's stable_s).",
    )
    # Limits and identity (docs/limits.md): the rules live in herder.agent.limits.
    limits: Limits | None = Field(None, description="herder extension: rlimits and cgroup v2 limits.")
    user: UserName | None = Field(None, description="herder extension: run as this user (name or uid).")
    group: UserName | None = Field(None, description="herder extension: run with this group (name or gid).")
    umask: Umask | None = Field(None, description="herder extension: the process's umask, octal ('027').")
    cwd: Cwd | None = Field(
        None, description="herder extension: working directory, relative to the app's (no '..') or absolute."
    )
    logs: LogsMode = Field(
        LogsMode.FILES, description="herder extension: 'files' (rotating log files, default) or 'discard'."
    )

    @field_validator("depends_on")
    @classmethod
    def _check_depends_on(cls, depends_on: list[str]) -> list[str]:
        return check_depends_on(depends_on)

    @field_validator("source_url")
    @classmethod
    def _check_scheme(cls, url: str | None) -> str | None:
        return check_source_url(url)

    @field_validator("env")
    @classmethod
    def _check_env(cls, env: dict[str, str]) -> dict[str, str]:
        return check_env(env)

    @model_validator(mode="after")
    def _one_way_to_run(self) -> CreateRequest:
        check_one_way_to_run(self.command, self.source_url, self.process_type)
        check_health_and_port(self.health, self.port)
        return self

    @model_validator(mode="after")
    def _host_allows(self) -> CreateRequest:
        # A request, not a record read back (ProcessSpec): a user deleted since then
        # fails that process's start, not the loading of every record.
        if type(self) is CreateRequest:
            check_host(self)
        return self

    @property
    def slug(self) -> str:
        return f"{self.app}.{self.node}"


class ProcessSpec(CreateRequest):
    """A create request as recorded in the data dir, with what restoring it needs."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    created_at: float = Field(description="Unix time the process was created.")
    archive_sha256: str | None = None
    owner: str | None = Field(None, description="who created it (agents linked with a key)")
    # An operator's stop, kept so that an agent restart leaves the process stopped.
    stopped: bool = Field(False, description="stopped by an operator (stop-process) until started again")


class _Document(BaseModel):
    """An answer's shape, for the OpenAPI document only: the routes build answers as
    plain dicts (faster), so its validator is built when first needed, not at start."""

    model_config = ConfigDict(defer_build=True)


class Index(_Document):
    create: str = Field(description="POST Create request documents here.")
    list: str = Field(description="GET a Listing document.")
    info: str = Field(description="GET the host's Info document.")
    pools: str = Field(description="GET the pools (PoolListing); POST a PoolSpec here to create one.")
    rpc: str = Field(description="The wire protocol over WebSocket: sessions (docs/sessions.md), RPC.")
    reload: str = Field(
        description="POST here to apply the configuration file again (admins; docs/config.md)."
    )
    metrics: str = Field(description="GET Prometheus text (docs/metrics.md).")


class ProcessStatus(_Document):
    app: str
    node: str
    slug: str = Field(description="Unique identifier for the process: '<app>.<node>'.")
    attach: str = Field(description="WebSocket URL streaming the process's output.")
    details: str = Field(description="GET an updated Process status (the seed's examples).")
    status: str = Field(description="GET an updated Process status (the seed's table).")
    delete: str = Field(description="POST a Delete request ({}) here.")
    stop: str = Field(description="POST here to stop the process and keep it stopped (body: none or {}).")
    start: str = Field(description="POST here to start the process again once stopped (body: none or {}).")
    restart_process: str = Field(
        description="POST here to stop the process if it runs, then start it (body: none or {}). "
        "Not 'restart', which is the restart policy."
    )
    process_type: str | None
    source_url: str | None
    command: str | list[str] | None
    env: dict[str, str]
    restart: RestartPolicy
    state: State
    pid: int | None
    port: int | None = Field(description="The port given to the process as $PORT.")
    restarts: int = Field(description="How many times the process was started again.")
    exit_code: int | None = Field(description="Of the last run; negative: killed by that signal.")
    started_at: float | None = Field(description="Unix time (seconds) the current run started.")
    uptime_s: float | None = Field(description="Seconds the current run has lasted; null while nothing runs.")
    cpu_percent: float | None = Field(
        description="CPU use of the process (its pid, not its children): 100 is one core; sampled at most "
        "once a second; null while nothing runs."
    )
    rss_bytes: int | None = Field(
        description="Resident memory of the process (its pid, not its children); null while nothing runs."
    )
    created_at: float = Field(description="Unix time (seconds) the process was created.")
    error: str | None = Field(description="Why the process failed or is backing off.")
    build_log: str | None = Field(
        default=None, description="GET the app's build log (text) here; only for an app that was built."
    )
    health: HealthStatus | None = Field(
        default=None, description="The health check's last results; null without one."
    )
    depends_on: list[str] = Field(default_factory=list, description="The slugs this process starts after.")
    waiting_for: list[str] = Field(
        default_factory=list, description="While it waits to start: the dependencies not ready yet."
    )
    declared: bool = Field(
        default=False,
        description="Declared in the agent's configuration file: a reload or a restart brings it back "
        "after a delete (docs/config.md).",
    )


class Listing(_Document):
    processes: list[ProcessStatus]


class DeleteRequest(BaseModel):
    """Always empty for now; unknown fields are refused so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class Info(_Document):
    hostname: str
    system: str
    release: str
    architecture: str
    cpus: int
    load_average: list[float] = Field(description="1, 5 and 15 minutes.")
    cpu_percent: float
    memory_percent: float
    disk_percent: float = Field(description="Of the file system holding the data dir.")
    version: str
    uptime_s: float
    processes: int


def as_jsonable(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
