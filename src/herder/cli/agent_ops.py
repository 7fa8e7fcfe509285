"""What ``herder ps|status|logs|rm|restart|stop|start`` do, without typer.

These run from two front ends, the quick path (``herder.cli.quick``, no typer at all)
and the typer commands (``herder.cli.process_cmds``, for ``--help`` and anything the
quick path leaves to it), so they take plain values, print through ``output`` and fail
through ``rest.fail`` (one line on stderr, ``SystemExit``).
"""

from __future__ import annotations

import json
import os
import sys

from herder.cli import output
from herder.cli.rest import fail, headers_for, request

# Names for the type checker only: importing typing and pathlib took ~12 ms of a quick command.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

DEFAULT_AGENT_URL = "http://127.0.0.1:8010"
# Without -f, the recent lines have come once the pong has and then nothing for this long.
LOGS_QUIET_S = 0.03
# ... or, from a server that never answers the ping, once nothing came for this long.
LOGS_FALLBACK_S = 0.5
# The actions the agent answers at POST /<verb>-process/{slug}, and what each says after.
ACTIONS = {"restart": "restarted", "stop": "stopped", "start": "started", "delete": "deleted"}


def base(agent: str) -> str:
    return agent.rstrip("/")


def ps(agent: str, token_file: Path | None, as_json: bool = False) -> None:
    """The listing as a table: SLUG, STATE, PID, UPTIME, PORT, CPU, RSS, RESTARTS, ERROR.

    Figures the agent does not give (an older agent, a process not running) show as ``-``.
    """
    listing = request("GET", f"{base(agent)}/list-processes", token_file)
    if as_json:
        output.print_json(listing)
        return
    rows = [
        [
            p["slug"],
            p["state"],
            p.get("pid"),
            output.duration(p.get("uptime_s")),
            p.get("port"),
            output.percent(p.get("cpu_percent")),
            output.size(p.get("rss_bytes")),
            p.get("restarts"),
            p.get("error"),
        ]
        for p in listing["processes"]
    ]
    headers = ["SLUG", "STATE", "PID", "UPTIME", "PORT", "CPU", "RSS", "RESTARTS", "ERROR"]
    output.table(headers, rows)


def status(agent: str, token_file: Path | None, slug: str) -> None:
    """Print one process's status document."""
    output.print_json(request("GET", f"{base(agent)}/process-status/{slug}", token_file))


def action(agent: str, token_file: Path | None, verb: str, slug: str, as_json: bool = False) -> None:
    """``POST /<verb>-process/{slug}``; one line (``a.web.0: stopped (state stopped, pid -)``)
    or, with ``as_json``, the status document the agent answers."""
    doc = request("POST", f"{base(agent)}/{verb}-process/{slug}", token_file, {})
    if as_json:
        output.print_json(doc)
        return
    pid = doc.get("pid") if isinstance(doc, dict) else None
    state = doc.get("state") if isinstance(doc, dict) else None
    print(f"{slug}: {ACTIONS[verb]} (state {state or '-'}, pid {pid if pid is not None else '-'})")


def logs(
    agent: str,
    token_file: Path | None,
    slug: str,
    *,
    follow: bool = False,
    lines: int | None = None,
    build: bool = False,
) -> None:
    """Print the process's recent output (stdout to stdout, stderr to stderr, the agent's
    notes as ``[herder] ...`` on stderr): all the agent keeps, or the last ``lines``;
    with ``follow``, live lines after them until the process is deleted or Ctrl-C.

    Raises:
        SystemExit: 1 with one line on stderr for an unknown slug or an agent out of reach.
    """
    if build:
        sys.stdout.write(request("GET", f"{base(agent)}/build-log/{slug}", token_file, text=True))
        return
    if lines is not None and lines < 0:
        fail(f"-n must be 0 or more, not {lines}", 2)
    from herder.cli.wsread import OP_PING, Closed, ReplayEnd, WsReader
    from herder.net import ws_url

    url = ws_url(base(agent)) + f"/attach-console/{slug}"
    ws = WsReader(url, headers_for(token_file))
    try:
        try:
            ws.send(OP_PING, b"replay-end")  # its pong marks the end of the recent lines
            end = ReplayEnd(LOGS_QUIET_S, LOGS_FALLBACK_S)
            recent: list[dict[str, Any]] = []
            while (item := ws.next_item(end.deadline)) is not None:
                if isinstance(item, str):
                    recent.append(json.loads(item))
                end.saw(item)
            shown = recent if lines is None else recent[len(recent) - lines :] if lines else []
            for line in shown:
                _show(line)
            while follow and (item := ws.next_item(None)) is not None:
                if isinstance(item, str):
                    _show(json.loads(item))
        except Closed:
            pass
        except OSError as exc:
            fail(f"lost the connection to {url}: {exc}")
        finally:
            ws.close()
    except KeyboardInterrupt:
        sys.stdout.flush()
        os._exit(130)


def _show(doc: dict[str, Any]) -> None:
    if doc["stream"] == "stdout":
        print(doc["line"], flush=True)
    elif doc["stream"] == "stderr":
        print(doc["line"], file=sys.stderr, flush=True)
    else:  # the agent's own notes: restarts, stops
        print(f"[herder] {doc['line']}", file=sys.stderr, flush=True)


__all__ = ["ACTIONS", "DEFAULT_AGENT_URL", "action", "logs", "ps", "status"]
