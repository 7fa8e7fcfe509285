"""What ``herder tasks ls|submit`` and ``herder workers ls`` do, without typer.

Shared by the quick path (``herder.cli.quick``) and the typer commands
(``herder.cli.task_cmds``); plain values in, output through ``output``, failures through
``rest.fail``.
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

from herder.cli import output
from herder.cli.rest import request

# Names for the type checker only: importing typing and pathlib took ~12 ms of a quick command.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

DEFAULT_MANAGER_URL = "http://127.0.0.1:8020"
TASK_STATUSES = ("queued", "paused", "assigned", "rendering", "completed", "failed", "canceled")


class SettingsError(ValueError):
    """A ``--settings`` or ``--setting`` that does not parse; ``option`` names which."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def base(manager: str) -> str:
    return manager.rstrip("/")


def parse_settings(settings_json: str | None, items: list[str] | None) -> dict[str, Any]:
    """``--settings JSON`` (an object), then each ``--setting key=value`` on top of it.

    A value is read as JSON when it is JSON (``frame_start=1`` is the number 1,
    ``argv=["ls","-l"]`` a list), as the text itself otherwise (``shell=make all``).

    Raises:
        SettingsError: ``--settings`` is not a JSON object, or an item is not key=value.
    """
    settings: dict[str, Any] = {}
    if settings_json is not None:
        try:
            parsed = json.loads(settings_json, parse_constant=_not_json)
        except ValueError as exc:
            raise SettingsError("--settings", f"not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise SettingsError("--settings", "must be a JSON object")
        settings.update(parsed)
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SettingsError("--setting", f"{item!r} is not key=value")
        try:
            settings[key] = json.loads(text, parse_constant=_not_json)
        except ValueError:
            settings[key] = text
    return settings


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def frames(doc: dict[str, Any]) -> str:
    """``current/start-end`` (``-/1-250`` before the first frame), ``-`` without frames."""
    start, end = doc.get("frame_start"), doc.get("frame_end")
    if start is None or end is None:
        return "-"
    current = doc.get("frame_current")
    return f"{'-' if current is None else current}/{start}-{end}"


def task_line(doc: dict[str, Any]) -> str:
    return f"task {doc['id']}: {doc['status']}, priority {doc['priority']}"


def worker_names(manager: str, token_file: Path | None) -> dict[int, str]:
    listing = request("GET", f"{base(manager)}/workers", token_file)
    return {w["id"]: hostname for hostname, w in listing.items()}


def submit_body(
    task_type: str,
    settings: dict[str, Any],
    *,
    priority: int = 0,
    tags: list[str] | None = None,
    parser: str | None = None,
    task_id: int | None = None,
    max_attempts: int | None = None,
) -> dict[str, Any]:
    """The ``POST /tasks`` body: what was given, and nothing that was not."""
    body: dict[str, Any] = {"type": task_type, "settings": settings, "priority": priority, "tags": tags or []}
    optional = {"parser": parser, "task_id": task_id, "max_attempts": max_attempts}
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def submit(manager: str, token_file: Path | None, body: dict[str, Any], as_json: bool) -> None:
    """Submit; prints 'task ID: STATUS, priority N' (the task's document with ``as_json``)."""
    doc = request("POST", f"{base(manager)}/tasks", token_file, body)
    if as_json:
        output.print_json(doc)
    else:
        print(task_line(doc))


def ls_tasks(manager: str, token_file: Path | None, status: str | None, as_json: bool) -> None:
    """The table of tasks, newest first (the manager's document with ``as_json``)."""
    url = f"{base(manager)}/tasks" + (f"?status={quote(status)}" if status is not None else "")
    listing = request("GET", url, token_file)
    if as_json:
        output.print_json(listing)
        return
    names = worker_names(manager, token_file) if any(t["worker_id"] for t in listing["tasks"]) else {}
    now = time.time()
    rows = [
        [
            t["id"],
            t["status"],
            t["priority"],
            t["type"],
            frames(t),
            names.get(t["worker_id"], t["worker_id"]),
            output.age(t["created_at"], now),
        ]
        for t in listing["tasks"]
    ]
    output.table(["ID", "STATUS", "PRIORITY", "TYPE", "FRAMES", "WORKER", "AGE"], rows)


def ls_workers(manager: str, token_file: Path | None, as_json: bool) -> None:
    """The table of workers, by id (the manager's document, keyed by hostname, with ``as_json``)."""
    listing = request("GET", f"{base(manager)}/workers", token_file)
    if as_json:
        output.print_json(listing)
        return
    rows = [
        [
            w["id"],
            hostname,
            w["connection"],
            w["status"],
            w["activity"],
            w["current_task"],
            w["slots"],
            ",".join(w["tags"]),
        ]
        for hostname, w in sorted(listing.items(), key=lambda kv: kv[1]["id"])
    ]
    output.table(
        ["ID", "HOSTNAME", "CONNECTION", "STATUS", "ACTIVITY", "CURRENT TASK", "SLOTS", "TAGS"], rows
    )


__all__ = [
    "DEFAULT_MANAGER_URL",
    "TASK_STATUSES",
    "SettingsError",
    "frames",
    "ls_tasks",
    "ls_workers",
    "parse_settings",
    "submit",
    "submit_body",
    "task_line",
    "worker_names",
]
