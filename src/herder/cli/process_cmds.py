"""``herder run|ps|status|logs|rm``: talk to an agent's REST API from the shell."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

DEFAULT_AGENT_URL = "http://127.0.0.1:8010"

AgentUrl = Annotated[
    str,
    typer.Option("--agent", envvar="HERDER_AGENT_URL", help="The agent's URL."),
]
TokenFile = Annotated[
    Path | None,
    typer.Option("--token-file", envvar="HERDER_TOKEN_FILE", help="File with the agent's bearer token."),
]


def _headers(token_file: Path | None) -> dict[str, str]:
    if token_file is None:
        return {}
    return {"Authorization": f"Bearer {token_file.read_text().strip()}"}


def _request(method: str, url: str, token_file: Path | None, body: Any = None, *, text: bool = False) -> Any:
    """Call the API; the JSON answer (``None`` for 204), or its text with ``text=True``.

    An error is one line on stderr (``herder: 422: <message> (field: <field>)``), exit 1.
    """
    import httpx

    try:
        response = httpx.request(method, url, json=body, headers=_headers(token_file), timeout=60.0)
    except httpx.HTTPError as exc:
        typer.echo(f"herder: cannot reach {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        try:
            doc = response.json()
            message = (
                f"{doc.get('message')} (field: {doc.get('field')})"
                if doc.get("field")
                else doc.get("message")
            )
        except ValueError:
            message = response.text
        typer.echo(f"herder: {response.status_code}: {message}", err=True)
        raise typer.Exit(1)
    if text:
        return response.text
    return None if response.status_code == 204 else response.json()


def parse_env(items: list[str] | None) -> dict[str, str]:
    """``NAME=value`` options as a mapping."""
    env: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r} is not NAME=value", param_hint="--env")
        env[name] = value
    return env


def _print(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, sort_keys=True))


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


def ps(agent: AgentUrl = DEFAULT_AGENT_URL, token_file: TokenFile = None) -> None:
    """List processes: slug, state, pid, restarts."""
    index = _request("GET", agent + "/", token_file)
    listing = _request("GET", index["list"], token_file)
    typer.echo(f"{'SLUG':32} {'STATE':9} {'PID':>7} {'RESTARTS':>8}  ERROR")
    for p in listing["processes"]:
        pid = p["pid"] if p["pid"] is not None else "-"
        typer.echo(f"{p['slug']:32} {p['state']:9} {pid!s:>7} {p['restarts']:>8}  {p['error'] or ''}")


def status(
    slug: Annotated[str, typer.Argument(help="app.node")],
    agent: AgentUrl = DEFAULT_AGENT_URL,
    token_file: TokenFile = None,
) -> None:
    """Print one process's status document."""
    _print(_request("GET", f"{agent}/process-status/{slug}", token_file))


def rm(
    slug: Annotated[str, typer.Argument(help="app.node")],
    agent: AgentUrl = DEFAULT_AGENT_URL,
    token_file: TokenFile = None,
) -> None:
    """Delete a process: SIGTERM, grace period, SIGKILL; returns once it is gone."""
    _print(_request("POST", f"{agent}/delete-process/{slug}", token_file, {}))


def logs(
    slug: Annotated[str, typer.Argument(help="app.node")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming live lines.")] = False,
    build: Annotated[bool, typer.Option("--build", help="Print the app's build log instead.")] = False,
    agent: AgentUrl = DEFAULT_AGENT_URL,
    token_file: TokenFile = None,
) -> None:
    """Print the process's recent output (stdout to stdout, stderr to stderr); -f follows;
    --build prints its app's build log."""
    if build:
        typer.echo(_request("GET", f"{agent}/build-log/{slug}", token_file, text=True), nl=False)
        return
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from herder.net import ws_url

    url = ws_url(agent) + f"/attach-console/{slug}"
    try:
        with connect(url, additional_headers=_headers(token_file), open_timeout=10) as ws:
            while True:
                try:
                    frame = ws.recv(timeout=None if follow else 0.5)
                except TimeoutError:
                    break
                doc = json.loads(frame)
                if doc["stream"] == "stdout":
                    print(doc["line"], flush=True)
                elif doc["stream"] == "stderr":
                    print(doc["line"], file=sys.stderr, flush=True)
                else:  # the agent's own notes: restarts, stops
                    print(f"[herder] {doc['line']}", file=sys.stderr, flush=True)
    except ConnectionClosed:
        pass
    except OSError as exc:
        typer.echo(f"herder: cannot attach to {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        os._exit(130)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("ps")(ps)
    app.command("status")(status)
    app.command("logs")(logs)
    app.command("rm")(rm)
