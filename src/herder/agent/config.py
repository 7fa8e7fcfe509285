"""The agent's configuration: defaults, the TOML file and command-line overrides.

One pydantic model is the single definition. ``herder agent --config FILE`` reads a TOML
file with the same keys (sections for the nested models); options given on the command
line win over the file. Every size and duration carries its unit in its name.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from herder.frontdoor import HttpLimits
from herder.net import is_loopback_host
from herder.tls import ServerTls, is_tls_url, parse_fingerprint

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8010
DEFAULT_DATA_DIR = Path(".herder")
# Instances of one Procfile process type: honcho has no bound, but a typo (web=200) should
# not fork a host to its knees; a pool is the tool for more.
MAX_CONCURRENCY = 64

# What a child inherits from the agent's own environment unless configured otherwise:
# enough to find programs and speak the user's locale, and nothing that could carry the
# agent's secrets.
DEFAULT_INHERITED_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FetchConfig(_Section):
    """Downloads of source archives (``source_url``)."""

    max_bytes: int = Field(512 * 1024 * 1024, gt=0, description="largest archive accepted")
    timeout_s: float = Field(120.0, gt=0, description="whole download, redirects included")
    max_redirects: int = Field(5, ge=0)
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="if not empty, only these host names or networks (CIDR) may be fetched from",
    )
    deny_hosts: list[str] = Field(
        default_factory=list,
        description="host names or networks (CIDR) refused, on top of the built-in denials",
    )
    allow_link_local: bool = Field(
        False, description="allow link-local and cloud-metadata addresses (refused by default)"
    )

    @field_validator("allow_hosts", "deny_hosts")
    @classmethod
    def _check_entries(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            if "/" in entry:
                ipaddress.ip_network(entry, strict=False)  # raises ValueError, named by pydantic
            elif not entry or any(c.isspace() for c in entry):
                raise ValueError(f"not a host name or network: {entry!r}")
        return [e.lower() for e in entries]


class UnpackConfig(_Section):
    """Limits on unpacking archives, so a hostile one cannot fill the disk or escape."""

    max_bytes: int = Field(2 * 1024 * 1024 * 1024, gt=0, description="total unpacked size")
    max_files: int = Field(100_000, gt=0)
    max_ratio: float = Field(200.0, gt=1, description="unpacked size / archive size")
    allow_links: bool = Field(False, description="allow symbolic links whose target stays inside the app")


class LimitsConfig(HttpLimits):
    """What one HTTP client may cost the agent: the front door's settings (``herder.frontdoor``)."""


class SupervisionConfig(_Section):
    """How processes are restarted and stopped."""

    grace_s: float = Field(10.0, ge=0, description="between SIGTERM and SIGKILL")
    stable_s: float = Field(
        1.0, ge=0, description="a run this long resets the backoff; a restart after it is immediate"
    )
    backoff_initial_s: float = Field(0.1, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    crash_window_s: float = Field(
        60.0,
        gt=0,
        description="failures less than this apart count together: each one grows the delay, "
        "however long its run; a run this long ends the count (and any crash loop)",
    )
    crash_loop_after: int = Field(
        5, ge=1, description="this many failures in a row within the window are reported as a crash loop"
    )
    ring_lines: int = Field(1000, gt=0, description="lines replayed to a new attach")
    log_max_bytes: int = Field(10 * 1024 * 1024, gt=0, description="per log file, before rotation")
    log_backups: int = Field(3, ge=0)
    track_interval_s: float = Field(
        2.0,
        gt=0,
        description="how often the process tree below every process is walked and recorded "
        "(~0.1 ms per process)",
    )
    subreaper: bool = Field(
        False,
        description="adopt orphaned descendants (prctl child subreaper); herder agent, which owns "
        "its process, sets it",
    )


class RouterConfig(_Section):
    """The proxy in front of pools: what one client or instance may cost."""

    header_timeout_s: float = Field(10.0, gt=0, description="to receive a request's head")
    keepalive_timeout_s: float = Field(75.0, gt=0, description="an idle client connection is kept")
    read_timeout_s: float = Field(
        60.0, gt=0, description="a client (sending a body) or an instance (answering) may be silent"
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="to open a connection to an instance")
    max_body_bytes: int = Field(1024 * 1024 * 1024, gt=0, description="of one request through the proxy")


class SessionsConfig(_Section):
    """Sessions: host processes serving a product for one client (the Inedo seed)."""

    idle_timeout_s: float = Field(
        1800.0, gt=0, description="a session no client is attached to (after a detach) ends after this"
    )
    reconnect_window_s: float = Field(
        1800.0, gt=0, description="after an unexpected disconnect, the session waits this long for a resume"
    )
    buffer_events: int = Field(
        10_000, gt=0, description="events kept for a client that is away; past it the oldest are dropped"
    )
    max_sessions: int = Field(256, gt=0, description="sessions open at once")
    open_timeout_s: float = Field(30.0, gt=0, description="for a host process to start and load its product")
    close_grace_s: float = Field(10.0, ge=0, description="for a host to close gracefully before SIGKILL")
    confine_paths: bool = Field(True, description="fs paths must stay inside the session's directory")
    spare_host: bool = Field(
        True,
        description="keep one host process started ahead for the product last opened, "
        "so that the next open of it need not wait for a Python start (each spare serves one session)",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="added to host processes' minimal environment (e.g. PYTHONPATH)"
    )


MANAGER_URL_SCHEMES = ("http", "https", "ws", "wss", "tcp", "unix")


class ManagerLinkConfig(_Section):
    """The agent as a worker of a manager (``--manager URL``, or several: ``URL1,URL2``).

    Several managers on one PostgreSQL share their work: the agent links to one of
    ``urls`` and moves to the next when that one is lost (``herder.agent.link.worker``).
    After validation ``urls`` always holds them all and ``url`` the first.
    """

    url: str | None = Field(None, description="the manager: http://host:port (its /rpc) or ws://.../rpc")
    urls: list[str] = Field(
        default_factory=list,
        description="several managers on one database (instead of url): the agent links to one, "
        "and moves to another when it is lost",
    )
    token: str | None = Field(None, description="the manager's bearer token, if it has one")
    key: str | None = Field(
        None,
        description="a key the manager issued (herder keys issue): buys the link's access tokens, "
        "renewed before they expire",
    )
    name: str | None = Field(None, description="the worker's hostname at the manager (default: this host's)")
    slots: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, le=1024, description="work run at once"
    )
    tags: list[str] = Field(
        default_factory=list, description="what this worker offers; tasks may require tags"
    )
    ca: Path | None = Field(
        None,
        description="PEM CA file the manager's certificate must chain to (https/wss; default: the system's)",
    )
    fingerprint: str | None = Field(
        None, description="instead of a CA: the SHA-256 fingerprint of the manager's certificate, sha256:HEX"
    )
    client_cert: Path | None = Field(
        None, description="PEM certificate the agent presents, for a manager that asks for one (mutual TLS)"
    )
    client_key: Path | None = Field(None, description="PEM private key of client_cert")

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        return None if value is None else parse_fingerprint(value)

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        cleaned = [url.strip() for url in value]
        for url in cleaned:
            if url.partition("://")[0].lower() not in MANAGER_URL_SCHEMES or not url.partition("://")[2]:
                raise ValueError(f"{url!r} is not a manager URL (http://host:port or ws://host:port/rpc)")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("a manager is named twice")
        return cleaned

    @model_validator(mode="after")
    def _one_list(self) -> ManagerLinkConfig:
        """``url`` and ``urls`` are two spellings of one list: one is given (or both, as
        validation leaves them: ``url`` the first of ``urls``)."""
        if self.url is not None and self.urls and self.url != self.urls[0]:
            raise ValueError("give the managers as url or as urls, not both")
        if self.url is None and not self.urls:
            raise ValueError("url (or urls) is needed: the manager to work for")
        if not self.urls:
            assert self.url is not None
            self.urls = [self.url]
        self.url = self.urls[0]
        self._check_tls()
        return self

    def _check_tls(self) -> None:
        """TLS settings only with TLS URLs: a CA or a pin given for a plain ``http://`` link
        would otherwise read as protection that is not there."""
        if self.ca is not None and self.fingerprint is not None:
            raise ValueError("give the manager's CA (ca) or its certificate's fingerprint, not both")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        tls_options = self.ca or self.fingerprint or self.client_cert
        plain = [url for url in self.urls if not is_tls_url(url)]
        if tls_options and plain:
            raise ValueError(f"TLS options are given but {plain[0]} is not an https:// or wss:// URL")


# What a build inherits from the agent's environment beyond a child's: how this host reaches
# package indexes (proxies, the CA bundle of a TLS-inspecting proxy, the installers' own
# settings). Without them uv and npm fail where pip, set up by the host's admin, works.
BUILD_INHERITED_ENV = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
)
BUILD_INHERITED_PREFIXES = ("PIP_", "UV_", "NPM_CONFIG_", "npm_config_")


class BuildsConfig(_Section):
    """Builds of apps that declare dependencies (``herder.agent.builds``)."""

    timeout_s: float = Field(900.0, gt=0, description="one build, every step of it")
    find_links: list[str] = Field(
        default_factory=list, description="directories or URLs of packages the installers look in too"
    )
    index_url: str | None = Field(None, description="the package index, instead of the installers' default")
    no_index: bool = Field(False, description="use no index at all: only find_links (air-gapped hosts)")
    python_installer: Literal["auto", "uv", "pip"] = Field(
        "auto", description="auto: uv if it is installed, else pip"
    )
    keep_unused_s: float = Field(
        7 * 24 * 3600.0,
        ge=0,
        description="a build no process has used this long is deleted (checked after each new build)",
    )


class AgentConfig(_Section):
    """Everything the agent needs to start."""

    host: str = DEFAULT_HOST
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    protocol_port: int | None = Field(
        None, ge=0, le=65535, description="also serve the wire protocol over TCP here (0: any free port)"
    )
    data_dir: Path = DEFAULT_DATA_DIR
    restore: bool = Field(True, description="bring back recorded processes at start")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="extra names accepted in the Host header (loopback names always are)",
    )
    auth_token: str | None = Field(None, description="shared secret required as 'Authorization: Bearer ...'")
    inherit_env: list[str] = Field(default_factory=lambda: list(DEFAULT_INHERITED_ENV))
    env: dict[str, str] = Field(default_factory=dict, description="base environment of children")
    fetch: FetchConfig = Field(default_factory=FetchConfig)
    unpack: UnpackConfig = Field(default_factory=UnpackConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    supervision: SupervisionConfig = Field(default_factory=SupervisionConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    sessions: SessionsConfig = Field(default_factory=SessionsConfig)
    builds: BuildsConfig = Field(default_factory=BuildsConfig)
    manager: ManagerLinkConfig | None = Field(None, description="run the manager's work (a worker)")
    tls: ServerTls | None = Field(
        None, description="serve HTTPS and WSS on the agent's port and its pools' own addresses"
    )
    pools: list[dict[str, Any]] = Field(
        default_factory=list,
        description="[[pools]] tables, each a pool as POST /pools takes it (validated at start)",
    )
    processes: list[dict[str, Any]] = Field(
        default_factory=list,
        description="[[processes]] tables, each a process as POST /create-process takes it, started "
        "at agent start and kept as the file says by herder reload (docs/config.md)",
    )
    procfile: Path | None = Field(
        None, description="run the app of this Procfile, each process type as declared processes"
    )
    concurrency: dict[str, int] = Field(
        default_factory=dict, description="instances of each of the procfile's process types (default 1)"
    )
    # Where this configuration came from, so that a reload reads the same file with the
    # same command-line options over it (load_config sets them).
    _file: Path | None = PrivateAttr(None)
    _overrides: dict[str, Any] = PrivateAttr(default_factory=dict)
    _loaded: bool = PrivateAttr(False)  # False: built in code, which is its own source

    @field_validator("concurrency")
    @classmethod
    def _check_concurrency(cls, counts: dict[str, int]) -> dict[str, int]:
        for name, count in counts.items():
            if not 0 <= count <= MAX_CONCURRENCY:
                raise ValueError(f"{name}: instances must be 0 to {MAX_CONCURRENCY} (got {count})")
        return counts

    @property
    def config_file(self) -> Path | None:
        """The TOML file this configuration was read from (None: defaults and options only)."""
        return self._file

    def reread(self) -> AgentConfig:
        """The configuration as its file and the same command-line options say now; a
        configuration built in code (not by ``load_config``) has no file: a copy of itself.

        Raises:
            as ``load_config``.
        """
        import copy

        if not self._loaded:
            return self.model_copy(deep=True)
        return load_config(self._file, copy.deepcopy(self._overrides))

    def base_env(self) -> dict[str, str]:
        """The environment every child starts from, before the request's own ``env``."""
        env = {k: os.environ[k] for k in self.inherit_env if k in os.environ}
        env.update(self.env)
        return env

    def build_env(self) -> dict[str, str]:
        """The environment a build's commands start from: a child's, plus how the host reaches indexes.

        Proxies, CA bundles and the installers' own settings (``PIP_*``, ``UV_*``,
        ``NPM_CONFIG_*``) come from the agent's environment; the agent's ``env`` still wins.
        """
        env = {
            k: v
            for k, v in os.environ.items()
            if k in BUILD_INHERITED_ENV or k.startswith(BUILD_INHERITED_PREFIXES)
        }
        env.update(self.base_env())
        return env

    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


def load_config(path: Path | None, overrides: dict[str, Any]) -> AgentConfig:
    """Read ``path`` (TOML) if given, apply ``overrides`` (None values are ignored).

    Raises:
        OSError: the file cannot be read.
        tomllib.TOMLDecodeError: the file is not TOML.
        pydantic.ValidationError: a key is unknown or a value is wrong (it names which).
    """
    import copy

    from herder.tomlconfig import read_with_overrides

    kept = copy.deepcopy(overrides)  # merging lays the options' tables into the file's
    config = AgentConfig.model_validate(read_with_overrides(path, overrides))
    config._file = path
    config._overrides = kept
    config._loaded = True
    return config
