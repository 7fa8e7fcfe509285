"""``herder tasks ...`` and ``herder workers ...``: the manager's queue from the shell.

Each sub-command is one or two calls to the Manager API (``herder manager``): readable
tables by default, the manager's own JSON documents with ``--json`` for scripts. Errors
are one line on stderr, ``herder: 422: <message> (field: <field>)``, and exit status 1.
"""

from __future__ import annotations

import enum
import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from herder.cli import manager_ops
from herder.cli.manager_ops import DEFAULT_MANAGER_URL, SettingsError
from herder.cli.output import age as _age
from herder.cli.output import print_json as _print
from herder.cli.output import table as _table
from herder.cli.rest import request as _request

TERMINAL = ("completed", "failed", "canceled")
FOLLOW_POLL_S = 0.5

ManagerUrl = Annotated[
    str,
    typer.Option("--manager", envvar="HERDER_MANAGER_URL", help="The manager's URL."),
]
ManagerToken = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        envvar="HERDER_MANAGER_TOKEN_FILE",
        exists=True,
        dir_okay=False,
        help="File with the manager's bearer token (its --auth-token-file).",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print the manager's JSON document instead.")]
TaskId = Annotated[int, typer.Argument(metavar="ID", help="The task's id (from 'herder tasks ls').")]
WorkerId = Annotated[int, typer.Argument(metavar="ID", help="The worker's id (from 'herder workers ls').")]


class TaskStatus(enum.StrEnum):
    queued = "queued"
    paused = "paused"
    assigned = "assigned"
    rendering = "rendering"
    completed = "completed"
    failed = "failed"
    canceled = "canceled"


tasks = typer.Typer(
    name="tasks",
    help="Tasks on a manager ('herder manager'): submit them, follow them, change or stop them.\n\n"
    "Example: 'herder tasks submit command -- make -j8', then 'herder tasks logs -f ID'.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
workers = typer.Typer(
    name="workers",
    help="Workers known to a manager (agents started with --manager, or any client of the "
    "Manager API): list them, look at one, take one out of service and back.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


# -- helpers ---------------------------------------------------------------------------------


def _base(manager: str) -> str:
    return manager.rstrip("/")


def parse_settings(settings_json: str | None, items: list[str] | None) -> dict[str, Any]:
    """``manager_ops.parse_settings``, its errors as typer's (the option named, exit 2)."""
    try:
        return manager_ops.parse_settings(settings_json, items)
    except SettingsError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.option) from None


_frames = manager_ops.frames
_task_line = manager_ops.task_line
_worker_names = manager_ops.worker_names


def _patch_task(manager: str, token_file: Path | None, task_id: int, body: dict[str, Any]) -> None:
    manager = _base(manager)
    _request("PATCH", f"{manager}/tasks/{task_id}", token_file, body)
    typer.echo(_task_line(_request("GET", f"{manager}/tasks/{task_id}", token_file)))


# -- tasks -----------------------------------------------------------------------------------


# A task's options, shared with ``herder schedules add`` (whose runs submit such a task).
TaskType = Annotated[
    str,
    typer.Argument(
        metavar="TYPE", help="The task type: command, frames, or one a plugin installs on the manager."
    ),
]
TaskArgv = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[-- ARGV...]",
        help='For a command task: the program and its arguments (settings {"argv": [...]}).',
    ),
]
SettingsJson = Annotated[str | None, typer.Option("--settings", help="The settings as one JSON object.")]
Setting = Annotated[
    list[str] | None,
    typer.Option(
        "--setting",
        "-s",
        help="key=value (repeatable, over --settings); the value is JSON when it parses "
        "(frame_start=1 is a number), text otherwise.",
    ),
]
Parser = Annotated[
    str | None,
    typer.Option(help="How output becomes progress: frames, percent or none (the manager's default)."),
]
Priority = Annotated[int, typer.Option(help="Higher runs first.")]
Tags = Annotated[
    list[str] | None, typer.Option("--tag", "-t", help="A worker must offer every tag (repeatable).")
]
MaxAttempts = Annotated[
    int | None, typer.Option("--max-attempts", help="Runs of a piece of work before the task fails.")
]


def task_body(
    task_type: str,
    argv: list[str] | None,
    settings_json: str | None,
    setting: list[str] | None,
    **fields: Any,
) -> dict[str, Any]:
    """The ``POST /tasks`` body from a task's options (``fields``: priority, tags, parser,
    task_id, max_attempts); a program after ``--`` is a command task's argv."""
    settings = parse_settings(settings_json, setting)
    if argv:
        if task_type != "command":
            raise typer.BadParameter(
                f"a program after -- is for command tasks, not {task_type}; give its settings "
                "with --settings or --setting",
                param_hint="ARGV",
            )
        settings["argv"] = argv
    return manager_ops.submit_body(task_type, settings, **fields)


@tasks.command("submit")
def submit(
    task_type: TaskType,
    argv: TaskArgv = None,
    settings_json: SettingsJson = None,
    setting: Setting = None,
    parser: Parser = None,
    priority: Priority = 0,
    tag: Tags = None,
    task_id: Annotated[
        int | None, typer.Option("--task-id", help="Your own id for the task, kept with it.")
    ] = None,
    max_attempts: MaxAttempts = None,
    as_json: Json = False,
    manager: ManagerUrl = DEFAULT_MANAGER_URL,
    token_file: ManagerToken = None,
) -> None:
    """Submit a task; prints 'task ID: STATUS, priority N' (the task's document with --json).

    \b
    Examples:
      herder tasks submit command -- make -j8
      herder tasks submit command --setting shell='make && make test' --tag linux
      herder tasks submit frames --parser frames -s frame_start=1 -s frame_end=250 \\
          -s chunk_size=10 -s command='blender -b scene.blend -f {frame}'
      herder tasks submit frames --settings '{"command": "render {start} {end}",
          "frame_start": 1, "frame_end": 100, "chunk_size": 25}' --priority 10
    """
    body = task_body(
        task_type,
        argv,
        settings_json,
        setting,
        priority=priority,
        tags=tag,
        parser=parser,
        task_id=task_id,
        max_attempts=max_attempts,
    )
    manager_ops.submit(manager, token_file, body, as_json)


@tasks.command("ls")
def ls_tasks(
    status: Annotated[TaskStatus | None, typer.Option(help="Only tasks with this status.")] = None,
    as_json: Json = False,
    manager: ManagerUrl = DEFAULT_MANAGER_URL,
    token_file: ManagerToken = None,
) -> None:
    """List tasks, newest first: ID, STATUS, PRIORITY, TYPE, FRAMES (current/start-end),
    WORKER (the one running it last), AGE.

    \b
    Examples:
      herder tasks ls
      herder tasks ls --status failed --json
    """
    manager_ops.ls_tasks(manager, token_file, status.value if status is not None else None, as_json)


@tasks.command("show")
def show_task(
    task_id: TaskId,
    as_json: Json = False,
    manager: ManagerUrl = DEFAULT_MANAGER_URL,
    token_file: ManagerToken = None,
) -> None:
    """Show a task and its work items (#, LABEL, STATUS, WORKER, ATTEMPT, EXIT).

    \b
    Example:
      herder tasks show 12
    """
    manager = _base(manager)
    doc = _request("GET", f"{manager}/tasks/{task_id}", token_file)
    if as_json:
        _print(doc)
        return
    items = doc.get("work_items") or []
    has_worker = doc["worker_id"] is not None or any(i["worker_id"] is not None for i in items)
    names = _worker_names(manager, token_file) if has_worker else {}
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc["created_at"]))
    fields: list[tuple[str, Any]] = [
        ("id", doc["id"]),
        ("type", doc["type"]),
        ("status", doc["status"]),
        ("priority", doc["priority"]),
        ("parser", doc["parser"]),
        ("frames", _frames(doc)),
        ("tags", ", ".join(doc["tags"]) or "-"),
        ("worker", names.get(doc["worker_id"], doc["worker_id"]) or "-"),
        ("created", f"{created} ({_age(doc['created_at'])} ago)"),
        ("settings", json.dumps(doc["settings"], sort_keys=True)),
    ]
    if doc.get("task_id") is not None:
        fields.insert(1, ("task_id", doc["task_id"]))
    if doc.get("error"):
        fields.append(("error", doc["error"]))
    for name, value in fields:
        typer.echo(f"{name + ':':10} {value}")
    typer.echo("")
    rows = [
        [
            i["index"],
            i["label"],
            i["status"],
            names.get(i["worker_id"], i["worker_id"]),
            i["attempt"],
            i["exit_code"],
        ]
        for i in items
    ]
    _table(["#", "LABEL", "STATUS", "WORKER", "ATTEMPT", "EXIT"], rows)


@tasks.command("cancel")
def cancel(
    task_id: TaskId, manager: ManagerUrl = DEFAULT_MANAGER_URL, token_file: ManagerToken = None
) -> None:
    """Cancel a task: its queued work never runs, running work is stopped. It stays listed
    (as canceled) until 'herder tasks rm'."""
    _patch_task(manager, token_file, task_id, {"status": "canceled"})


@tasks.command("pause")
def pause(
    task_id: TaskId, manager: ManagerUrl = DEFAULT_MANAGER_URL, token_file: ManagerToken = None
) -> None:
    """Hold a task: its queued work is not handed out (running work finishes)."""
    _patch_task(manager, token_file, task_id, {"status": "paused"})


@tasks.command("resume")
def resume(
    task_id: TaskId, manager: ManagerUrl = DEFAULT_MANAGER_URL, token_file: ManagerToken = None
) -> None:
    """Queue a paused task's work again."""
    _patch_task(manager, token_file, task_id, {"status": "queued"})


@tasks.command("priority")
def priority(
    task_id: TaskId,
    value: Annotated[int, typer.Argument(metavar="N", help="The new priority; higher runs first.")],
    manager: ManagerUrl = DEFAULT_MANAGER_URL,
    token_file: ManagerToken = None,
) -> None:
    """Change a task's priority (its work not yet handed out moves in the queue).

    \b
    Examples:
      herder tasks priority 12 100
      herder tasks priority 12 -- -5      (a negative number after --)
    """
    _patch_task(manager, token_file, task_id, {"priority": value})


@tasks.command("rm")
def rm(task_id: TaskId, manager: ManagerUrl = DEFAULT_MANAGER_URL, token_file: ManagerToken = None) -> None:
    """Delete a task: running work is stopped, the task and its work items are forgotten."""
    typer.echo(_task_line(_request("DELETE", f"{_base(manager)}/tasks/{task_id}", token_file)))


# -- logs ------------------------------------------------------------------------------------

_PREFIX = re.compile(r"^(\[.*? #\d+\]) ")


class LogTail:
    """What of a task's log (``GET /tasks/{id}/log``) was not printed yet.

    The manager answers the last lines of each piece of work (``[label #attempt] text``),
    piece after piece, so new lines of one piece appear in the middle of the text, and
    the oldest lines of a long one drop off its front. Lines are grouped by piece and
    attempt (a run of one prefix); each group's new lines are those after the longest
    overlap with what it showed before.
    """

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], list[str]] = {}

    def new_lines(self, text: str) -> list[str]:
        fresh: list[str] = []
        for key, lines in self._groups(text):
            old = self.seen.get(key, [])
            fresh.extend(_after_overlap(old, lines))
            self.seen[key] = lines
        return fresh

    @staticmethod
    def _groups(text: str) -> list[tuple[tuple[str, int], list[str]]]:
        groups: list[tuple[tuple[str, int], list[str]]] = []
        occurrences: dict[str, int] = {}
        previous: str | None = None
        for line in text.splitlines():
            match = _PREFIX.match(line)
            prefix = match.group(1) if match else ""
            if prefix != previous or not groups:
                occurrences[prefix] = occurrences.get(prefix, 0) + 1
                groups.append(((prefix, occurrences[prefix]), []))
                previous = prefix
            groups[-1][1].append(line)
        return groups


def _after_overlap(old: list[str], new: list[str]) -> list[str]:
    """The lines of ``new`` past the longest tail of ``old`` it starts with."""
    for shift in range(len(old)):
        overlap = len(old) - shift
        if new[:overlap] == old[shift:]:
            return new[overlap:]
    return new


def _progress(doc: dict[str, Any]) -> tuple[int, int, str]:
    """(done, total, unit): frames from frame_current in the task's range, else work items."""
    start, end, current = doc.get("frame_start"), doc.get("frame_end"), doc.get("frame_current")
    if start is not None and end is not None:
        total = end - start + 1
        done = 0 if current is None else min(max(current - start + 1, 0), total)
        return done, total, "frames"
    items = doc.get("work_items") or []
    return sum(1 for i in items if i["status"] == "completed"), len(items), "items"


class _PlainProgress:
    """Progress for a log or a pipe: a line on stderr whenever it changes."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        self.last: tuple[str, int, int] | None = None

    def update(self, doc: dict[str, Any]) -> None:
        done, total, unit = _progress(doc)
        state = (doc["status"], done, total)
        if state != self.last:
            self.last = state
            typer.echo(f"[herder] task {self.task_id}: {doc['status']}, {done}/{total} {unit}", err=True)


class _RichProgress:
    """Progress for a terminal: a bar on stderr (``rich.progress``) under the log lines."""

    def __init__(self, task_id: int, bar: Any) -> None:
        self.task_id = task_id
        self.bar = bar
        self.handle = bar.add_task(f"task {task_id}", total=None, unit="")

    def update(self, doc: dict[str, Any]) -> None:
        done, total, unit = _progress(doc)
        description = f"task {self.task_id} {doc['status']}"
        self.bar.update(
            self.handle, completed=done, total=total or None, description=description, unit=unit, refresh=True
        )


@contextmanager
def _progress_display(task_id: int) -> Iterator[_PlainProgress | _RichProgress]:
    if not sys.stderr.isatty():
        yield _PlainProgress(task_id)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # Log lines go to stdout; when that is the terminal too, rich prints them above the bar.
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        redirect_stdout=sys.stdout.isatty(),
        redirect_stderr=False,
    ) as bar:
        yield _RichProgress(task_id, bar)


@tasks.command("logs")
def logs(
    task_id: TaskId,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Print new lines until the task completes, fails or is canceled."
        ),
    ] = False,
    manager: ManagerUrl = DEFAULT_MANAGER_URL,
    token_file: ManagerToken = None,
) -> None:
    """Print a task's output: the last lines of each piece of work, as '[LABEL #ATTEMPT] line'.

    With -f, new lines are printed as they come (the manager is asked every half second)
    until the task is completed, failed or canceled, with its progress on stderr (a bar
    on a terminal, a line per change otherwise); the exit status is then 0 if the task
    completed, 1 if not. Ctrl-C stops following (the task goes on).

    \b
    Examples:
      herder tasks logs 12
      herder tasks logs -f 12 > render.log
    """
    manager = _base(manager)
    log_url = f"{manager}/tasks/{task_id}/log"
    if not follow:
        sys.stdout.write(_request("GET", log_url, token_file, text=True))
        return
    tail = LogTail()
    try:
        with _progress_display(task_id) as progress:
            while True:
                doc = _request("GET", f"{manager}/tasks/{task_id}", token_file)
                progress.update(doc)
                # Read after the status: once that is final, this text holds every line.
                for line in tail.new_lines(_request("GET", log_url, token_file, text=True)):
                    print(line, flush=True)
                if doc["status"] in TERMINAL:
                    break
                time.sleep(FOLLOW_POLL_S)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if doc["status"] != "completed":
        reason = f": {doc['error']}" if doc.get("error") else ""
        typer.echo(f"herder: task {task_id} {doc['status']}{reason}", err=True)
        raise typer.Exit(1)


# -- workers ---------------------------------------------------------------------------------


def _worker_summary(manager: str, token_file: Path | None, worker_id: int) -> dict[str, Any]:
    """``GET /workers/{id}`` (the seed's fields) with its entry of ``GET /workers``."""
    detail: dict[str, Any] = _request("GET", f"{manager}/workers/{worker_id}", token_file)
    listing = _request("GET", f"{manager}/workers", token_file)
    summary: dict[str, Any] = next((w for w in listing.values() if w["id"] == worker_id), {})
    return {**summary, **detail}


@workers.command("ls")
def ls_workers(
    as_json: Json = False, manager: ManagerUrl = DEFAULT_MANAGER_URL, token_file: ManagerToken = None
) -> None:
    """List workers: ID, HOSTNAME, CONNECTION (online/offline), STATUS (enabled/disabled),
    ACTIVITY, CURRENT TASK, SLOTS, TAGS. --json prints the manager's document (keyed by
    hostname).

    \b
    Example:
      herder workers ls
    """
    manager_ops.ls_workers(manager, token_file, as_json)


@workers.command("show")
def show_worker(
    worker_id: WorkerId,
    as_json: Json = False,
    manager: ManagerUrl = DEFAULT_MANAGER_URL,
    token_file: ManagerToken = None,
) -> None:
    """Show a worker: where it is, its state and the figures it last reported.

    \b
    Example:
      herder workers show 3
    """
    doc = _worker_summary(_base(manager), token_file, worker_id)
    if as_json:
        _print(doc)
        return
    for key in sorted(doc):
        value = doc[key]
        if isinstance(value, dict):
            typer.echo(f"{key}:")
            for name in sorted(value):
                typer.echo(f"  {name}: {json.dumps(value[name])}")
        elif isinstance(value, list):
            typer.echo(f"{key}: {', '.join(map(str, value)) or '-'}")
        else:
            typer.echo(f"{key}: {'-' if value is None or value == '' else value}")


def _set_worker_status(manager: str, token_file: Path | None, worker_id: int, status: str) -> None:
    manager = _base(manager)
    _request("PATCH", f"{manager}/workers/{worker_id}", token_file, {"status": status})
    doc = _worker_summary(manager, token_file, worker_id)
    typer.echo(f"worker {worker_id} ({doc['hostname']}): {doc.get('status', status)}")


@workers.command("disable")
def disable(
    worker_id: WorkerId, manager: ManagerUrl = DEFAULT_MANAGER_URL, token_file: ManagerToken = None
) -> None:
    """Take a worker out of service: it is handed no new work (what it runs now finishes)."""
    _set_worker_status(manager, token_file, worker_id, "disabled")


@workers.command("enable")
def enable(
    worker_id: WorkerId, manager: ManagerUrl = DEFAULT_MANAGER_URL, token_file: ManagerToken = None
) -> None:
    """Put a disabled worker back in service."""
    _set_worker_status(manager, token_file, worker_id, "enabled")


def register(app: typer.Typer) -> None:
    app.add_typer(tasks)
    app.add_typer(workers)
