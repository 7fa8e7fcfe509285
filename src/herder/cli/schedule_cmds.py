"""``herder schedules ...``: tasks a manager submits by itself, on a cron expression or an interval.

Each sub-command is one or two calls to the manager's ``/schedules`` routes: readable
tables by default, the manager's JSON documents with ``--json``. Errors are one line on
stderr, ``herder: 422: <message> (field: <field>)``, and exit status 1, as for
``herder tasks``.
"""

from __future__ import annotations

import enum
import json
import time
from typing import Annotated, Any

import typer

from herder.cli.keys_cmd import parse_duration
from herder.cli.manager_ops import DEFAULT_MANAGER_URL
from herder.cli.output import age, duration
from herder.cli.output import print_json as _print
from herder.cli.output import table as _table
from herder.cli.rest import request as _request
from herder.cli.task_cmds import (
    Json,
    ManagerToken,
    ManagerUrl,
    MaxAttempts,
    Parser,
    Priority,
    Setting,
    SettingsJson,
    Tags,
    TaskArgv,
    TaskType,
    task_body,
)

ScheduleId = Annotated[
    int, typer.Argument(metavar="ID", help="The schedule's id (from 'herder schedules ls').")
]


class Overlap(enum.StrEnum):
    skip = "skip"
    queue = "queue"
    allow = "allow"


class CatchUp(enum.StrEnum):
    none = "none"
    one = "one"
    all = "all"


schedules = typer.Typer(
    name="schedules",
    help="Schedules on a manager ('herder manager'): a task submitted by the manager itself on a "
    "cron expression or every so often. Add, list, pause, resume and remove them.\n\n"
    'Example: \'herder schedules add --cron "0 2 * * *" --timezone Europe/Paris command -- '
    "backup.sh', then 'herder schedules ls'.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _base(manager: str) -> str:
    return manager.rstrip("/")


def _when(doc: dict[str, Any]) -> str:
    """'cron 0 2 * * * (Europe/Paris)' or 'every 5m'."""
    if doc["cron"] is not None:
        return f"cron {doc['cron']} ({doc['timezone']})"
    interval = doc["interval_s"]
    return f"every {duration(interval)}" if interval % 60 == 0 or interval < 60 else f"every {interval:g}s"


def _next(doc: dict[str, Any], now: float) -> str:
    if not doc["enabled"]:
        return "paused"
    if doc["next_run_at"] is None:
        return "never"
    return f"in {duration(doc['next_run_at'] - now)}" if doc["next_run_at"] >= now + 1 else "due"


def _last(doc: dict[str, Any], now: float) -> str:
    if doc["last_run_at"] is None:
        return "-"
    return f"{age(doc['last_run_at'], now)} ago, task {doc['last_task_id']}"


def _line(doc: dict[str, Any]) -> str:
    """'schedule ID (NAME): WHEN, next in 5m' for the commands that change one."""
    name = f" ({doc['name']})" if doc["name"] else ""
    upcoming = _next(doc, time.time())
    upcoming = upcoming if upcoming in ("paused", "never") else f"next {upcoming}"
    return f"schedule {doc['id']}{name}: {_when(doc)}, {upcoming}"


def _local(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(stamp))


@schedules.command("add")
def add(
    task_type: TaskType,
    argv: TaskArgv = None,
    cron: Annotated[
        str | None,
        typer.Option(
            help="When: a cron expression, 5 fields (minute hour day month weekday) or 6 with "
            "seconds first, e.g. '0 2 * * *' (02:00 daily) or '*/10 * * * * *' (every 10 s)."
        ),
    ] = None,
    every: Annotated[
        str | None,
        typer.Option(help="When, instead of --cron: every so long, 1s at least (30s, 5m, 2h, 1d)."),
    ] = None,
    timezone: Annotated[
        str, typer.Option(help="The IANA time zone the cron expression is read in (Europe/Paris).")
    ] = "UTC",
    overlap: Annotated[
        Overlap,
        typer.Option(
            help="While the last run's task is still active: skip (submit nothing), queue (one run "
            "waits for it), allow (submit anyway)."
        ),
    ] = Overlap.skip,
    catch_up: Annotated[
        CatchUp,
        typer.Option(
            "--catch-up",
            help="Runs missed while no manager ran: none, one (one for them all), all (each, 100 at most).",
        ),
    ] = CatchUp.none,
    name: Annotated[str, typer.Option(help="A label of your own.")] = "",
    paused: Annotated[
        bool, typer.Option("--paused", help="Add it paused ('herder schedules resume').")
    ] = False,
    settings_json: SettingsJson = None,
    setting: Setting = None,
    parser: Parser = None,
    priority: Priority = 0,
    tag: Tags = None,
    max_attempts: MaxAttempts = None,
    as_json: Json = False,
    manager: ManagerUrl = DEFAULT_MANAGER_URL,
    token_file: ManagerToken = None,
) -> None:
    """Add a schedule; prints 'schedule ID: WHEN, next in ...' (its document with --json).

    The task is given as to 'herder tasks submit' and checked the same way at once.

    \b
    Examples:
      herder schedules add --every 5m command -- ./sync.sh
      herder schedules add --cron '0 2 * * *' --timezone Europe/Paris --name backup \\
          command --setting shell='pg_dump farm > /backups/farm.sql'
      herder schedules add --cron '*/30 * * * * *' --overlap allow command -- date
    """
    if (cron is None) == (every is None):
        raise typer.BadParameter(
            "give --cron EXPRESSION or --every DURATION (one of them)", param_hint="--cron"
        )
    task = task_body(
        task_type,
        argv,
        settings_json,
        setting,
        priority=priority,
        tags=tag,
        parser=parser,
        max_attempts=max_attempts,
    )
    body: dict[str, Any] = {
        "name": name,
        "timezone": timezone,
        "overlap": overlap.value,
        "catch_up": catch_up.value,
        "enabled": not paused,
        "task": task,
    }
    if cron is not None:
        body["cron"] = cron
    else:
        assert every is not None
        body["interval_s"] = parse_duration(every)
    doc = _request("POST", f"{_base(manager)}/schedules", token_file, body)
    if as_json:
        _print(doc)
    else:
        typer.echo(_line(doc))


@schedules.command("ls")
def ls(
    as_json: Json = False, manager: ManagerUrl = DEFAULT_MANAGER_URL, token_file: ManagerToken = None
) -> None:
    """List schedules (a user's key: its own): ID, NAME, WHEN, OVERLAP, NEXT, LAST (run, task), RUNS, SKIPPED.

    \b
    Example:
      herder schedules ls
    """
    listing = _request("GET", f"{_base(manager)}/schedules", token_file)
    if as_json:
        _print(listing)
        return
    now = time.time()
    rows = [
        [s["id"], s["name"], _when(s), s["overlap"], _next(s, now), _last(s, now), s["runs"], s["skipped"]]
        for s in listing["schedules"]
    ]
    _table(["ID", "NAME", "WHEN", "OVERLAP", "NEXT", "LAST", "RUNS", "SKIPPED"], rows)


@schedules.command("show")
def show(
    schedule_id: ScheduleId,
    as_json: Json = False,
    manager: ManagerUrl = DEFAULT_MANAGER_URL,
    token_file: ManagerToken = None,
) -> None:
    """Show a schedule, its task and its last runs (RUN AT, TASK).

    \b
    Example:
      herder schedules show 3
    """
    doc = _request("GET", f"{_base(manager)}/schedules/{schedule_id}", token_file)
    if as_json:
        _print(doc)
        return

    fields: list[tuple[str, Any]] = [
        ("id", doc["id"]),
        ("name", doc["name"] or "-"),
        ("owner", doc["owner"] or "-"),
        ("when", _when(doc)),
        ("state", "enabled" if doc["enabled"] else "paused"),
        ("overlap", doc["overlap"]),
        ("catch_up", doc["catch_up"]),
        ("next", _local(doc["next_run_at"]) if doc["enabled"] else "paused"),
        ("waiting", _local(doc["pending_at"]) if doc["pending_at"] is not None else "-"),
        ("runs", f"{doc['runs']} submitted, {doc['skipped']} skipped"),
        ("task", json.dumps(doc["task"], sort_keys=True)),
    ]
    if doc["last_error"]:
        fields.append(("error", doc["last_error"]))
    for label, value in fields:
        typer.echo(f"{label + ':':10} {value}")
    typer.echo("")
    _table(["RUN AT", "TASK"], [[_local(r["run_at"]), r["task_id"]] for r in doc["recent_runs"]])


def _patch(manager: str, token_file: Any, schedule_id: int, body: dict[str, Any]) -> None:
    doc = _request("PATCH", f"{_base(manager)}/schedules/{schedule_id}", token_file, body)
    typer.echo(_line(doc))


@schedules.command("pause")
def pause(
    schedule_id: ScheduleId, manager: ManagerUrl = DEFAULT_MANAGER_URL, token_file: ManagerToken = None
) -> None:
    """Pause a schedule: no run fires until it is resumed (tasks already submitted go on)."""
    _patch(manager, token_file, schedule_id, {"enabled": False})


@schedules.command("resume")
def resume(
    schedule_id: ScheduleId, manager: ManagerUrl = DEFAULT_MANAGER_URL, token_file: ManagerToken = None
) -> None:
    """Resume a paused schedule from its next run (the runs missed while paused are not made up)."""
    _patch(manager, token_file, schedule_id, {"enabled": True})


@schedules.command("rm")
def rm(
    schedule_id: ScheduleId, manager: ManagerUrl = DEFAULT_MANAGER_URL, token_file: ManagerToken = None
) -> None:
    """Remove a schedule (the tasks it submitted stay, as any task)."""
    doc = _request("DELETE", f"{_base(manager)}/schedules/{schedule_id}", token_file)
    typer.echo(f"schedule {doc['id']} removed")


def register(app: typer.Typer) -> None:
    app.add_typer(schedules)
