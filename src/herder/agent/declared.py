"""Processes the config file declares: ``[[processes]]`` and ``procfile`` (supervisord's
``[program:x]``, honcho's Procfile).

A declared process is a create request written in the file instead of sent over the
API: each ``[[processes]]`` table takes exactly the fields of ``CreateRequest``
(whatever that model has, a declared process has), and ``procfile`` adds one process
per process type and instance (``<app>.<type>.<n>``, the app being the Procfile's
directory, run in place as any ``file://`` directory app is).

The file is their record. They are not written to ``<data dir>/processes/`` (except
when an operator stops one: the stop is kept, as for any process), they are started
at every agent start, and ``herder reload`` makes what runs match the file again:
a declared process deleted over the API is gone until the next reload or restart.
Their status document says ``"declared": true``.

Validation names the file, the table and the field: ``agent.toml: processes[2].command:
...``; every problem is listed, and nothing starts while one is left.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError

from herder.agent.apps.procfile import MAX_PROCFILE_BYTES, parse_procfile
from herder.agent.config import AgentConfig
from herder.agent.errors import ConfigError, ProcfileError
from herder.agent.health import order
from herder.agent.models import APP_PATTERN, CreateRequest, ProcessSpec
from herder.apierrors import FieldError

if TYPE_CHECKING:
    from herder.agent.processes.store import RecordStore
    from herder.agent.processes.supervisor import Supervisor

log = logging.getLogger(__name__)

# The longest rendering of a wrong value shown back (a whole table would flood the line).
_MAX_VALUE_CHARS = 60
# Heroku's release phase: the agent runs it once per build (herder.agent.builds), so it is
# no process type to keep running, unless --concurrency names it.
RELEASE_TYPE = "release"
# What a Procfile's directory name becomes to make an app name (APP_PATTERN's alphabet).
_NOT_APP_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


class DeclaredSpec(ProcessSpec):
    """A declared process's spec: a ``ProcessSpec`` that says where it came from.

    The class is the mark (``is_declared``): the supervisor copies specs with
    ``model_copy``, which keeps it. A record written for one (an operator's stop) carries
    ``"declared": true``, which is how a start tells a declared process's record from an
    API process's.
    """

    declared: bool = Field(True, description="declared in the agent's config file")
    procfile_command: str | None = Field(
        None, description="its Procfile line's command when declared (a reload compares it)"
    )


class ProcfileRequest(CreateRequest):
    """A create request made from a Procfile line: the line's command rides along, so that a
    reload sees a changed command (the request itself names only the process type)."""

    procfile_command: str


def is_declared(spec: ProcessSpec) -> bool:
    """True for a process the config file declares (its status document says so)."""
    return isinstance(spec, DeclaredSpec)


def same_request(spec: ProcessSpec, request: CreateRequest) -> bool:
    """True when ``spec`` runs what ``request`` asks: every field of a create request equal,
    and for a running declared process, the Procfile line it started from."""
    fields = set(CreateRequest.model_fields)
    if spec.model_dump(include=fields) != request.model_dump(include=fields):
        return False
    if isinstance(spec, DeclaredSpec):
        return spec.procfile_command == getattr(request, "procfile_command", None)
    return True


def new_spec(request: CreateRequest, *, stopped: bool = False) -> DeclaredSpec:
    """The spec a declared ``request`` runs with (``stopped``: an operator's stop, kept)."""
    return DeclaredSpec(**request.model_dump(), created_at=time.time(), stopped=stopped)


# -- reading the file ------------------------------------------------------------------------


def declared_problems(config: AgentConfig) -> list[str]:
    """Every problem of the declared processes, one line each (empty: none)."""
    try:
        declared_requests(config)
    except ConfigError as exc:
        return str(exc).splitlines()
    return []


def declared_requests(config: AgentConfig) -> dict[str, CreateRequest]:
    """The processes ``config`` declares, by slug, in the file's order (the Procfile's last).

    Raises:
        ConfigError: one line per problem, each naming the file, the table and the field.
    """
    where = str(config.config_file) if config.config_file is not None else "the config"
    problems: list[str] = []
    requests: dict[str, CreateRequest] = {}
    tables: dict[str, str] = {}  # slug -> where it is declared, for the messages
    for index, table in enumerate(config.processes):
        prefix = f"{where}: processes[{index}]"
        try:
            request = CreateRequest.model_validate(table)
        except ValidationError as exc:
            problems.extend(f"{prefix}.{_field(e)}: {_message(e)}" for e in _all_errors(table, exc))
            continue
        if request.slug in requests:
            problems.append(f"{prefix}: process {request.slug!r} is declared twice (app and node)")
            continue
        requests[request.slug] = request
        tables[request.slug] = prefix
    procfile = procfile_path(config)
    if procfile is not None:
        try:
            for request in procfile_requests(procfile, config.concurrency):
                if request.slug in requests:
                    problems.append(f"{procfile}: process {request.slug!r} is declared twice")
                requests[request.slug] = request
        except ProcfileError as exc:
            problems.append(f"{procfile}: {exc}")
    problems.extend(_resolve_dependencies(requests, tables))
    if problems:
        raise ConfigError("\n".join(problems))
    return requests


def _resolve_dependencies(requests: dict[str, CreateRequest], tables: dict[str, str]) -> list[str]:
    """Resolve each declared ``depends_on`` to slugs in place, as a create does; the problems.

    A declared process depends on declared processes only (a slug, or a node of its
    app): they start together, and what the API created may be gone by the next start.
    """
    problems: list[str] = []
    declared: dict[str, list[str]] = {slug: [] for slug in requests}
    for slug, request in list(requests.items()):
        if request.depends_on:
            try:
                resolved = order.resolve(slug, request.app, request.depends_on, declared)
            except order.DependencyError as exc:
                problems.append(f"{tables[slug]}.depends_on: {exc} (declared processes only)")
                continue
            requests[slug] = request.model_copy(update={"depends_on": resolved})
    graph = {slug: request.depends_on for slug, request in requests.items()}
    for slug in requests:
        cycle = order.find_cycle(slug, graph)
        if cycle is not None:
            problems.append(f"{tables[slug]}.depends_on: closes a cycle: {' -> '.join(cycle)}")
            break  # one cycle is reported once, not by each process on it
    return problems


def procfile_path(config: AgentConfig) -> Path | None:
    """``config``'s Procfile; a relative path in a config file is relative to the file's directory."""
    path = config.procfile
    if path is not None and not path.is_absolute() and config.config_file is not None:
        return config.config_file.parent / path
    return path


def _all_errors(table: dict[str, Any], exc: ValidationError) -> list[Any]:
    """Every error of ``table``: pydantic skips the checks across fields (a command or an
    app) when a key is unknown, so the table is checked again without the unknown keys."""
    errors = exc.errors()
    unknown = {e["loc"][0] for e in errors if e["type"] == "extra_forbidden" and e["loc"]}
    if unknown and len(unknown) == len(errors):
        try:
            CreateRequest.model_validate({k: v for k, v in table.items() if k not in unknown})
        except ValidationError as more:
            errors.extend(more.errors())
    return errors


def _field(error: Any) -> str:
    """The field an error blames: its location, or the one a cross-field check names."""
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return cause.field
    return ".".join(str(part) for part in error["loc"]) or "(table)"


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field (a create request's fields only: docs/config.md)"
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    value = error.get("input")
    if "input" in error and not isinstance(value, dict | list):
        shown = repr(value)
        if len(shown) > _MAX_VALUE_CHARS:
            shown = shown[: _MAX_VALUE_CHARS - 3] + "..."
        message += f" (got {shown})"
    return message


# -- a local Procfile (herder agent --procfile) ----------------------------------------------


def procfile_requests(procfile: Path, concurrency: dict[str, int]) -> list[ProcfileRequest]:
    """One create request per process type of ``procfile`` and instance, as honcho runs them.

    The app is the Procfile's directory (``file://``, run in place, its ``.env`` read
    as for any app); its name is the directory's name. Each type runs
    ``concurrency.get(type, 1)`` instances, nodes ``<type>.1`` to ``<type>.<n>``;
    ``release`` (the release phase, run by the build) none unless ``concurrency`` says.

    Raises:
        ProcfileError: the Procfile cannot be read or parsed; ``concurrency`` names a
            type the Procfile does not define.
    """
    path = procfile.resolve()
    try:
        if path.stat().st_size > MAX_PROCFILE_BYTES:
            raise ProcfileError(f"larger than {MAX_PROCFILE_BYTES} bytes: not a Procfile")
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ProcfileError(f"cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ProcfileError(f"not UTF-8 text: {exc.reason}") from None
    types = parse_procfile(text)
    unknown = sorted(set(concurrency) - set(types))
    if unknown:
        known = ", ".join(sorted(types)) or "none"
        raise ProcfileError(f"--concurrency names {', '.join(unknown)}, which it does not define ({known})")
    app = app_name_of(path.parent)
    source_url = path.parent.as_uri()
    return [
        ProcfileRequest(
            app=app, node=f"{ptype}.{n}", source_url=source_url, process_type=ptype, procfile_command=command
        )
        for ptype, command in types.items()
        for n in range(1, concurrency.get(ptype, 0 if ptype == RELEASE_TYPE else 1) + 1)
    ]


def app_name_of(directory: Path) -> str:
    """An app name made of ``directory``'s name (characters an app name cannot have become ``-``)."""
    name = _NOT_APP_CHARS.sub("-", directory.name).strip("-_")[:64] or "app"
    return name if re.match(APP_PATTERN, name) else f"app-{name}"[:64]


def parse_concurrency(text: str) -> dict[str, int]:
    """``web=2,worker=1`` as ``{"web": 2, "worker": 1}`` (honcho's and foreman's syntax).

    Raises:
        ValueError: an item is not ``type=count`` with a whole count.
    """
    counts: dict[str, int] = {}
    for item in text.split(","):
        name, sep, count = item.strip().partition("=")
        if not sep or not name.strip() or not count.strip().isdigit():
            raise ValueError(f"{item.strip()!r} is not TYPE=COUNT (as in web=2,worker=1)")
        counts[name.strip()] = int(count)
    return counts


# -- at agent start --------------------------------------------------------------------------


def split_records(
    records: list[ProcessSpec], declared: dict[str, CreateRequest], records_dir: Path
) -> tuple[list[ProcessSpec], dict[str, bool], list[str]]:
    """Which records to restore, which declared processes an operator had stopped, and
    which records are stale.

    The file wins over a record of the same slug (as it does for pools); a record of a
    process the file declared once and declares no more is stale (the reload that
    would have deleted it did not happen): neither is restored, and both are stale.

    Returns:
        (the API processes' records to restore, {declared slug: stopped by an operator},
        the slugs of stale records, for the caller to remove).
    """
    restore: list[ProcessSpec] = []
    stopped: dict[str, bool] = {}
    stale: list[str] = []
    for spec in records:
        if spec.slug in declared:
            if _recorded_as_declared(records_dir, spec.slug):
                stopped[spec.slug] = spec.stopped and same_request(spec, declared[spec.slug])
            else:
                log.warning("process %s: the config file declares it too; the file's is run", spec.slug)
                stale.append(spec.slug)
        elif _recorded_as_declared(records_dir, spec.slug):
            log.info("process %s: no longer declared in the config file; not started", spec.slug)
            stale.append(spec.slug)
        else:
            restore.append(spec)
    return restore, stopped, stale


def _recorded_as_declared(records_dir: Path, slug: str) -> bool:
    """True when the record of ``slug`` was written for a declared process."""
    try:
        data = json.loads((records_dir / f"{slug}.json").read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("declared") is True


def start_declared(supervisor: Supervisor, store: RecordStore, config: AgentConfig) -> None:
    """At agent start: the recorded processes (if ``restore``), then the declared ones.

    ``config``'s declared processes must have been validated (``declared_requests``
    raises otherwise). Stale records (``split_records``) are removed.
    """
    declared = declared_requests(config)
    records = store.load_all() if config.restore else []
    restore, stopped, stale = split_records(records, declared, config.data_dir / "processes")
    for slug in stale:
        store.remove(slug)
    supervisor.restore(restore)
    if restore:
        log.info("restored %d recorded processes", len(restore))
    supervisor.restore(
        [new_spec(request, stopped=stopped.get(slug, False)) for slug, request in declared.items()]
    )
    if declared:
        log.info("started %d processes declared in the config", len(declared))
