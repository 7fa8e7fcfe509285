"""What one HTTP client may cost a herder server: the front door's settings.

The agent (``[limits]`` in its config file), the manager (``ManagerConfig.limits``) and
RPC services (``Service(limits=...)``) read the same fields, so an operator learns them
once. Each bound has one answer, given before authentication, so a client without
credentials cannot make the server hold more than these bounds allow:

========================  ==========================================  =========================
field                     bounds                                      answer
========================  ==========================================  =========================
``header_timeout_s``      time to send a request's head               connection closed
``max_header_bytes``      size of a request's head (line + headers)   431, connection closed
``max_body_bytes``        size of a request's body (per route)        413 (before reading it)
``body_timeout_s``        time to send a request's body               408
``max_json_depth``        nesting of a JSON body                      400, ``field: body``
``max_connections``       open connections, the arriving one included 503
========================  ==========================================  =========================

``auth_log_lines`` and ``auth_log_interval_s`` bound the log lines failed
authentications cost (``herder.frontdoor.authlog``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

# Request line plus headers; real clients send a few hundred bytes, a browser with
# cookies a few KB.
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
# JSON documents herder reads are a few levels deep; 64 leaves room and stays far
# below Python's recursion limit (json.loads recurses once per level).
DEFAULT_MAX_JSON_DEPTH = 64


class HttpLimits(BaseModel):
    """What one HTTP client may cost: sizes and deadlines, all checked before auth."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(1024 * 1024, gt=0, description="a request's body, unless its route says more")
    header_timeout_s: float = Field(10.0, gt=0, description="to receive a request's headers")
    body_timeout_s: float = Field(30.0, gt=0, description="to receive a request's body")
    max_connections: int = Field(
        1024, gt=1, description="open connections, the arriving one included; past it, answer 503"
    )
    max_header_bytes: int = Field(
        DEFAULT_MAX_HEADER_BYTES, ge=1024, description="a request's line and headers; past it, answer 431"
    )
    max_json_depth: int = Field(
        DEFAULT_MAX_JSON_DEPTH, ge=2, le=512, description="nesting of a JSON body; deeper, answer 400"
    )
    auth_log_lines: int = Field(
        10, ge=1, description="failed authentications logged per client address and interval"
    )
    auth_log_interval_s: float = Field(
        60.0, gt=0, description="past auth_log_lines, failures are counted and summed up once"
    )


@dataclass(frozen=True, slots=True)
class RouteLimit:
    """A bigger (or smaller) body bound for the paths under ``prefix`` (e.g. a proxy).

    ``body_timeout_s`` None keeps the door's own deadline.
    """

    prefix: str
    max_body_bytes: int
    body_timeout_s: float | None = None
