"""What a create request may say about health and start order: the one definition.

``HealthCheck`` is the ``health`` field of a create request; ``DependsOn`` its
``depends_on``. Both are validated here, where the rule lives, and refused with a 422
naming the field. Nothing here imports ``herder.agent.models`` (which imports this).

Guarding against a hostile user: an HTTP check only ever goes to ``127.0.0.1`` and the
process's own port, so the user gives a *path*, never a URL; the path is a restricted
character set (no space, CR, LF, ``#`` or non-ASCII), so it cannot split the request line
or add a header.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from herder.apierrors import FieldError

# An origin-form request target (RFC 9112 3.2.1) from RFC 3986's unreserved, sub-delims,
# ':', '@', '%', '/' and '?': nothing that can end the request line or start a header.
HTTP_PATH_PATTERN = r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,1023}$"
MAX_CHECK_COMMAND_CHARS = 4096  # a check is a probe, not a script: keep it short
MAX_CHECK_ARGV_ITEMS = 64
# depends_on: more than this many is a design smell, and each is a wait on every start.
MAX_DEPENDENCIES = 32
# A slug ('app.node') or a node name of the same app: both are letters, digits, _ . -
DEPENDENCY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,128}$"

# Defaults: a check every 10 s, 2 s to answer, 3 misses in a row restart (~30 s of a
# dead app, as Nomad's and Docker's defaults give), and 2 s after start before the first.
DEFAULT_INTERVAL_S = 10.0
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_FAILURES = 3
DEFAULT_GRACE_S = 2.0
# A check costs the agent ~0.2 ms of CPU (http, tcp; a command ~1 ms): ten a second per
# process is the most a user may ask, so that checks cannot starve the agent's loop.
MIN_INTERVAL_S = 0.1


class CheckType(enum.StrEnum):
    """How a process's health is checked."""

    HTTP = "http"  # GET http://127.0.0.1:$PORT<path> answers 2xx or 3xx
    TCP = "tcp"  # 127.0.0.1:$PORT accepts a connection
    COMMAND = "command"  # the command exits 0


def _validate_check_command(value: Any) -> str | list[str] | None:
    """A shell string or an argv of strings: short, not blank, without NUL."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [value]
        if not value.strip():
            raise ValueError("the command is empty")
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        parts = list(value)
        if len(parts) > MAX_CHECK_ARGV_ITEMS:
            raise ValueError(f"an argv of at most {MAX_CHECK_ARGV_ITEMS} items")
    else:
        raise ValueError("must be a string (run by /bin/sh -c) or a non-empty list of strings (an argv)")
    if any(len(p) > MAX_CHECK_COMMAND_CHARS or "\0" in p for p in parts):
        raise ValueError(f"longer than {MAX_CHECK_COMMAND_CHARS} characters, or has a NUL byte")
    return value if isinstance(value, str) else parts


CheckCommand = Annotated[
    str | list[str] | None,
    PlainValidator(_validate_check_command),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": MAX_CHECK_COMMAND_CHARS, "pattern": r"^[^\x00]*\S[^\x00]*$"},
                {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "maxLength": MAX_CHECK_COMMAND_CHARS,
                        "pattern": r"^[^\x00]*$",
                    },
                    "minItems": 1,
                    "maxItems": MAX_CHECK_ARGV_ITEMS,
                },
                {"type": "null"},
            ]
        }
    ),
]


# What ``HealthCheck._fields_of_its_type`` takes, for the OpenAPI document: a path only
# for http, a command for command and only there.
_NULL = {"type": "null"}
FIELDS_OF_ITS_TYPE: dict[str, Any] = {
    "oneOf": [
        {"title": "http", "properties": {"type": {"const": "http"}, "command": _NULL}},
        {"title": "tcp", "properties": {"type": {"const": "tcp"}, "path": _NULL, "command": _NULL}},
        {
            "title": "command",
            "required": ["command"],
            "properties": {"type": {"const": "command"}, "path": _NULL, "command": {"not": _NULL}},
        },
    ]
}


class HealthCheck(BaseModel):
    """How the agent checks that a running process is well, and when it restarts it."""

    model_config = ConfigDict(extra="forbid", defer_build=True, json_schema_extra=FIELDS_OF_ITS_TYPE)

    type: CheckType = Field(description="http (GET on the process's port), tcp (connect to it) or command.")
    path: Annotated[str, StringConstraints(pattern=HTTP_PATH_PATTERN)] | None = Field(
        None,
        description="http only: the path asked of http://127.0.0.1:$PORT (default '/'); 2xx and 3xx pass.",
    )
    command: CheckCommand = Field(
        None,
        description="command only: run in the process's directory and environment; exit 0 passes.",
    )
    interval_s: float = Field(
        DEFAULT_INTERVAL_S, ge=MIN_INTERVAL_S, le=86400, description="from one check's start to the next"
    )
    timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0, le=300, description="a check taking longer fails")
    failures: int = Field(
        DEFAULT_FAILURES, ge=1, le=1000, description="failed checks in a row that restart the process"
    )
    grace_s: float = Field(
        DEFAULT_GRACE_S, ge=0, le=86400, description="after each start, before the first check"
    )

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> HealthCheck:
        if self.type is CheckType.COMMAND:
            if self.command is None:
                raise FieldError("health.command", "a command check needs 'command'")
        elif self.command is not None:
            raise FieldError("health.command", f"'command' is for a command check, not {self.type.value}")
        if self.path is not None and self.type is not CheckType.HTTP:
            raise FieldError("health.path", f"'path' is for an http check, not {self.type.value}")
        return self

    @property
    def needs_port(self) -> bool:
        return self.type is not CheckType.COMMAND

    @property
    def http_path(self) -> str:
        return self.path or "/"


DependsOn = Annotated[
    list[Annotated[str, StringConstraints(pattern=DEPENDENCY_PATTERN)]],
    Field(max_length=MAX_DEPENDENCIES, json_schema_extra={"uniqueItems": True}),
]


def check_health_and_port(health: HealthCheck | None, port: bool) -> None:
    """An http or tcp check needs the process's port.

    Raises:
        FieldError: naming ``health.type``.
    """
    if health is not None and health.needs_port and not port:
        raise FieldError(
            "health.type",
            f"the {health.type.value} check goes to the process's port, and this process has port: false "
            "(use a command check, or give it a port)",
        )


def check_depends_on(depends_on: list[str]) -> list[str]:
    """No name twice (the order of the rest is kept)."""
    if len(set(depends_on)) != len(depends_on):
        raise ValueError("a process is named twice")
    return depends_on


class HealthStatus(BaseModel):
    """The status document's ``health``: null for a process without a check."""

    model_config = ConfigDict(defer_build=True)

    status: str | None = Field(
        description="starting (before the first check passed), passing, failing; null while nothing runs."
    )
    failures: int = Field(
        description="Failed checks in a row (the process is restarted when it reaches the limit)."
    )
    last_check_at: float | None = Field(description="Unix time (seconds) of the last check.")
    last_error: str | None = Field(description="Why the last failed check failed.")
