"""The manager's configuration: one pydantic model, defaults that are part of the product.

Durations carry their unit in their name. The database is SQLite in the data dir unless
``db`` names another (``postgresql://user@host/db``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from herder.frontdoor import HttpLimits
from herder.net import is_loopback_host
from herder.tls import ServerTls

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8020


class ManagerLimits(HttpLimits):
    """What one HTTP client may cost the manager (``herder.frontdoor``), before auth."""

    max_connections: int = Field(
        4096, gt=1, description="open connections (each worker holds one); past it, answer 503"
    )
    proxy_max_body_bytes: int = Field(
        1024 * 1024 * 1024, gt=0, description="a request's body through /proxy/ (streamed, not held)"
    )
    proxy_body_timeout_s: float = Field(600.0, gt=0, description="to receive a body through /proxy/")


class ServiceQuota(BaseModel):
    """What one user's live registrations may hold in the registry (with keys on).

    The registry is memory: without a bound, one user registered 19,976 services of 15 KB
    in 4.4 s (+325 MB, held for their TTL). Admins are exempt.
    """

    model_config = ConfigDict(extra="forbid")

    max_services: int = Field(1000, ge=0, description="live registrations per user")
    max_metadata_bytes: int = Field(
        4 * 1024 * 1024, ge=0, description="metadata (as JSON) of all a user's live registrations"
    )
    max_ttl_s: float = Field(3600.0, gt=0, le=3600.0, description="the longest TTL a registration may ask")


class ManagerConfig(BaseModel):
    """Everything the manager needs to start."""

    model_config = ConfigDict(extra="forbid")

    host: str = DEFAULT_HOST
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    data_dir: Path = Path(".herder")
    db: str | None = Field(None, description="database URL; default: SQLite at <data dir>/manager.db")
    auth_token: str | None = Field(None, description="shared secret required as a bearer token")
    allowed_hosts: list[str] = Field(default_factory=list)
    heartbeat_interval_s: float = Field(5.0, gt=0, description="how often workers report")
    missed_heartbeats: int = Field(3, ge=1, description="a worker this many heartbeats late is offline")
    max_attempts: int = Field(3, ge=1, description="runs of one piece of work before its task fails")
    log_max_bytes: int = Field(1024 * 1024, gt=0, description="output kept per piece of work")
    token_ttl_s: int = Field(3600, ge=1, le=86400, description="life of an access token bought with a key")
    accept_new_database: bool = Field(
        False,
        description="start although the database does not know the data dir's signing key (it was "
        "emptied, replaced, or is another manager's): every key it does not record is refused",
    )
    service_quota: ServiceQuota = Field(
        default_factory=ServiceQuota, description="each user's share of the service registry"
    )
    service_quota_overrides: dict[str, ServiceQuota] = Field(
        default_factory=dict, description="a quota of its own for a user, by name (instead of service_quota)"
    )
    limits: ManagerLimits = Field(default_factory=ManagerLimits, description="what one HTTP client may cost")
    lease_margin_s: float | None = Field(
        None,
        gt=0,
        description="slack on each side of a lease: an agent stops work it could not renew once offline "
        "(lease minus this), the manager requeues it at lease plus this; default: one heartbeat interval",
    )
    max_user_priority: int = Field(
        100, ge=-1_000_000, le=1_000_000, description="the highest priority a user (not an admin) may give"
    )
    tls: ServerTls | None = Field(
        None,
        description="serve HTTPS and WSS (cert, key); client_ca: every client, agents included, "
        "must present a certificate that CA signed (mutual TLS)",
    )
    proxy_allow_networks: list[str] = Field(
        default_factory=list,
        description="networks (CIDR) the proxy may reach for anyone's registration, though "
        "loopback or link-local (refused by default); never the manager's own address",
    )
    proxy_admin_networks: list[str] = Field(
        default_factory=list,
        description="networks (CIDR) the proxy may reach for services an admin key registered "
        "(or anyone, without keys); herder up allows loopback so",
    )

    @field_validator("proxy_allow_networks", "proxy_admin_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not a network (CIDR, e.g. 10.0.0.0/8)") from None
        return value

    @property
    def offline_after_s(self) -> float:
        return self.heartbeat_interval_s * self.missed_heartbeats

    @property
    def lease_margin(self) -> float:
        return self.lease_margin_s if self.lease_margin_s is not None else self.heartbeat_interval_s

    @property
    def lease_s(self) -> float:
        """A piece of work's lease: renewed by each heartbeat that names it.

        The agent stops work it could not renew at ``lease_s - lease_margin`` (when the
        manager would call it offline); the manager requeues it at ``lease_s +
        lease_margin`` (docs/manager.md, "At most one attempt").
        """
        return self.offline_after_s + self.lease_margin

    def database_url(self) -> str:
        return self.db or f"sqlite:///{(self.data_dir / 'manager.db').resolve()}"

    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)
