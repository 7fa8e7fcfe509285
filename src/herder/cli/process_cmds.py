"""``herder run|ps|status|logs|rm|restart|stop|start``: talk to an agent's REST API from the shell.

The work of all but ``run`` is in ``agent_ops`` (shared with the quick path).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from herder.cli import agent_ops
from herder.cli.agent_ops import DEFAULT_AGENT_URL
from herder.cli.output import print_json as _print
from herder.cli.rest import headers_for as _headers
from herder.cli.rest import request as _request

AgentUrl = Annotated[
    str,
    typer.Option("--agent", envvar="HERDER_AGENT_URL", help="The agent's URL."),
]
TokenFile = Annotated[
    Path | None,
    typer.Option("--token-file", envvar="HERDER_TOKEN_FILE", help="File with the agent's bearer token."),
]
Json = Annotated[bool, typer.Option("--json", help="Print the agent's whole JSON document instead.")]
Slug = Annotated[str, typer.Argument(help="app.node")]


def parse_env(items: list[str] | None) -> dict[str, str]:
    """``NAME=value`` options as a mapping."""
    env: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r} is not NAME=value", param_hint="--env")
        env[name] = value
    return env


def run(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="Application name.")],
    node: Annotated[str, typer.Argument(help="Process name, e.g. web.0.")],
    command: Annotated[
        list[str] | None,
        typer.Argument(help="Command to run (after --). Omit it when giving --source."),
    ] = None,
    source: Annotated[str | None, typer.Option(help="Source archive URL (http, https or file).")] = None,
    process_type: Annotated[str | None, typer.Option("--type", help="Procfile process type.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="NAME=value (repeatable).")] = None,
    restart: Annotated[str, typer.Option(help="always, on-failure or never.")] = "always",
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Return at once, not after the app's fetch and build.")
    ] = False,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Build the app again if its last build failed.")
    ] = False,
    agent: AgentUrl = DEFAULT_AGENT_URL,
    token_file: TokenFile = None,
) -> None:
    """Create a process: 'herder run myapp web.0 -- python -m http.server' or an app
    with '--source URL --type web'. Prints its status document; for an app, then shows
    its fetch and build on stderr until it runs (exit 1 if it fails)."""
    body: dict[str, Any] = {"app": app_name, "node": node, "restart": restart, "env": parse_env(env)}
    if rebuild:
        body["rebuild"] = True
    if command:
        body["command"] = command
    else:
        body["source_url"] = source
        body["process_type"] = process_type
    index = _request("GET", agent + "/", token_file)
    doc = _request("POST", index["create"], token_file, body)
    _print(doc)
    if not no_wait:
        follow_build(doc, token_file)


PREPARING = ("fetching", "building")
FOLLOW_TIMEOUT_S = 20 * 60.0  # past the default build timeout (15 min)


def follow_build(doc: dict[str, Any], token_file: Path | None, timeout_s: float = FOLLOW_TIMEOUT_S) -> None:
    """While the process is fetched or built, print the agent's lines (the build's) to
    stderr; return once it is past that, exit 1 if it failed.

    The status is polled every half second (bounded by ``timeout_s``); the lines come
    from the attach WebSocket, whose ``herder`` lines carry the build's output.
    """
    import time

    if doc["state"] not in PREPARING:
        return
    deadline = time.monotonic() + timeout_s
    ws = _attach_quietly(doc["attach"], token_file)
    try:
        while doc["state"] in PREPARING and time.monotonic() < deadline:
            _print_agent_lines(ws, until=time.monotonic() + 0.5)
            doc = _request("GET", doc["status"], token_file)
        if ws is not None:
            _print_agent_lines(ws, until=time.monotonic() + 0.2)  # the lines of the last moment
    finally:
        if ws is not None:
            ws.close()
    if doc["state"] == "failed":
        typer.echo(f"herder: {doc['slug']} failed: {doc['error']}", err=True)
        raise typer.Exit(1)
    if doc["state"] in PREPARING:
        typer.echo(f"herder: {doc['slug']} is still {doc['state']} after {timeout_s:g} s", err=True)
        raise typer.Exit(1)
    typer.echo(f"[herder] {doc['slug']} is {doc['state']}", err=True)


def _attach_quietly(url: str, token_file: Path | None) -> Any:
    """The attach WebSocket (the process's lines so far first: the build's first ones), or
    None: progress is then the states alone."""
    from websockets.sync.client import connect

    try:
        return connect(url, additional_headers=_headers(token_file), open_timeout=10)
    except Exception:  # progress is a courtesy: the status polls go on without it
        typer.echo("[herder] building...", err=True)
        return None


def _print_agent_lines(ws: Any, until: float) -> None:
    """Print the agent's own lines (the build's among them) received before ``until``."""
    import time

    from websockets.exceptions import ConnectionClosed

    if ws is None:
        time.sleep(max(0.0, until - time.monotonic()))
        return
    while (left := until - time.monotonic()) > 0:
        try:
            frame = ws.recv(timeout=left)
        except TimeoutError:
            return
        except ConnectionClosed:
            time.sleep(left)  # the process was deleted: the next status poll says so
            return
        line = json.loads(frame)
        if line["stream"] == "herder":
            print(f"[herder] {line['line']}", file=sys.stderr, flush=True)


def ps(as_json: Json = False, agent: AgentUrl = DEFAULT_AGENT_URL, token_file: TokenFile = None) -> None:
    """List processes: SLUG, STATE, PID, UPTIME, PORT, CPU, RSS, RESTARTS, ERROR
    ('-' where the agent gives no figure). --json prints the agent's listing."""
    agent_ops.ps(agent, token_file, as_json)


def status(slug: Slug, agent: AgentUrl = DEFAULT_AGENT_URL, token_file: TokenFile = None) -> None:
    """Print one process's status document."""
    agent_ops.status(agent, token_file, slug)


def rm(
    slug: Slug, as_json: Json = False, agent: AgentUrl = DEFAULT_AGENT_URL, token_file: TokenFile = None
) -> None:
    """Delete a process: SIGTERM, grace period, SIGKILL; returns once it is gone.
    Prints one line (--json: the process's last status document)."""
    agent_ops.action(agent, token_file, "delete", slug, as_json)


def restart(
    slug: Slug, as_json: Json = False, agent: AgentUrl = DEFAULT_AGENT_URL, token_file: TokenFile = None
) -> None:
    """Restart a process: stop it if it runs (SIGTERM, grace, SIGKILL), then start it, at
    once (no backoff). Prints one line (--json: its status document)."""
    agent_ops.action(agent, token_file, "restart", slug, as_json)


def stop(
    slug: Slug, as_json: Json = False, agent: AgentUrl = DEFAULT_AGENT_URL, token_file: TokenFile = None
) -> None:
    """Stop a process (SIGTERM, grace, SIGKILL) and keep it stopped, across agent restarts
    too, until 'herder start'. Prints one line (--json: its status document)."""
    agent_ops.action(agent, token_file, "stop", slug, as_json)


def start(
    slug: Slug, as_json: Json = False, agent: AgentUrl = DEFAULT_AGENT_URL, token_file: TokenFile = None
) -> None:
    """Start a process that does not run (stopped, exited or failed).
    Prints one line (--json: its status document)."""
    agent_ops.action(agent, token_file, "start", slug, as_json)


def logs(
    slug: Slug,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming live lines.")] = False,
    lines: Annotated[
        int | None,
        typer.Option("--lines", "-n", help="Only the last N of the recent lines (then live ones with -f)."),
    ] = None,
    build: Annotated[bool, typer.Option("--build", help="Print the app's build log instead.")] = False,
    agent: AgentUrl = DEFAULT_AGENT_URL,
    token_file: TokenFile = None,
) -> None:
    """Print the process's recent output (stdout to stdout, stderr to stderr): all the
    agent keeps, or the last N with -n; -f follows; --build prints its app's build log.

    \b
    Examples:
      herder logs myapp.web.0 -n 20
      herder logs -f myapp.web.0"""
    if lines is not None and lines < 0:
        raise typer.BadParameter("must be 0 or more", param_hint="'--lines' / '-n'")
    agent_ops.logs(agent, token_file, slug, follow=follow, lines=lines, build=build)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("ps")(ps)
    app.command("status")(status)
    app.command("logs")(logs)
    app.command("rm")(rm)
    app.command("restart")(restart)
    app.command("stop")(stop)
    app.command("start")(start)
