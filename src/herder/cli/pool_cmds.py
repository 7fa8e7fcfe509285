"""``herder pools ...``: create, list, scale, drain, resume, delete and deploy pools from the shell.

Each sub-command is one call to the agent's pools API (``docs/pools.md``). An action
prints one line about the pool (``pool web: active, 1/2 ready, http://127.0.0.1:8080``),
``show`` and ``--json`` the pool's whole JSON document, ``ls`` a table. ``deploy``,
``promote`` and ``revert`` follow the deploy on stderr, then print one line about it.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from herder.cli.agent_ops import DEFAULT_AGENT_URL
from herder.cli.output import print_json as _print
from herder.cli.process_cmds import FOLLOW_TIMEOUT_S, PREPARING, AgentUrl, TokenFile, parse_env
from herder.cli.rest import request as _request

pools = typer.Typer(
    name="pools",
    help="Pools of instances behind the agent's port: started on demand, replaced when they "
    "crash, reached on their own listen address or by Host '<pool>.localhost'.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

Name = Annotated[str, typer.Argument(help="The pool's name (a lower-case DNS label).")]
Json = Annotated[bool, typer.Option("--json", help="Print the pool's whole JSON document instead.")]
Timeout = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for requests in flight before stopping.")
]


def pool_line(doc: dict[str, Any], verb: str = "") -> str:
    """One line about a pool: ``pool web created: active, 1/2 ready, http://127.0.0.1:8080``."""
    instances = doc.get("instances") or []
    ready = sum(1 for i in instances if i.get("state") == "ready")
    reach = doc.get("url") or (f"Host: {doc['host']}" if doc.get("host") else "-")
    name = f"{doc['name']} {verb}" if verb else doc["name"]
    return f"pool {name}: {doc['state']}, {ready}/{len(instances)} ready, {reach}"


def _answer(doc: dict[str, Any], as_json: bool, verb: str = "") -> None:
    if as_json:
        _print(doc)
    else:
        typer.echo(pool_line(doc, verb))


@pools.command("create")
def create(
    name: Name,
    command: Annotated[
        list[str] | None,
        typer.Argument(help="What each instance runs (after --); '{port}' becomes its port, also $PORT."),
    ] = None,
    source: Annotated[str | None, typer.Option(help="Source archive URL, instead of a command.")] = None,
    process_type: Annotated[str | None, typer.Option("--type", help="Procfile process type.")] = None,
    listen: Annotated[
        str | None, typer.Option(help="host:port where the pool takes all traffic (port 0: any).")
    ] = None,
    min_instances: Annotated[int, typer.Option("--min", help="Instances kept running when idle.")] = 0,
    max_instances: Annotated[int, typer.Option("--max", help="Never more instances than this.")] = 1,
    concurrency: Annotated[
        int, typer.Option(help="Requests in flight per instance before another starts; 0: no limit.")
    ] = 80,
    idle_timeout: Annotated[float, typer.Option(help="Seconds idle before a surplus instance stops.")] = 300,
    start_timeout: Annotated[float, typer.Option(help="Seconds a request waits for an instance.")] = 30,
    ready_path: Annotated[
        str | None, typer.Option("--ready-path", help="GET this path until 2xx (default: port open).")
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="NAME=value (repeatable).")] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Return at once, not after the instances' build.")
    ] = False,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Build the app again if its last build failed.")
    ] = False,
    as_json: Json = False,
    agent: AgentUrl = DEFAULT_AGENT_URL,
    token_file: TokenFile = None,
) -> None:
    """Create a pool: 'herder pools create web --listen 127.0.0.1:8080 -- python3 -m http.server
    {port} --bind 127.0.0.1'. Prints a line about it (--json: its document); then, while its first instances
    fetch and build the app, the build's lines and the instances' states on stderr, until
    they are past it (exit 1 if one failed)."""
    body: dict[str, Any] = {
        "name": name,
        "env": parse_env(env),
        "min_instances": min_instances,
        "max_instances": max_instances,
        "concurrency": concurrency,
        "idle_timeout": idle_timeout,
        "start_timeout": start_timeout,
        "listen": listen,
        "ready": {"path": ready_path} if ready_path else None,
        "rebuild": rebuild,
    }
    if command:
        body["command"] = command
    else:
        body["source_url"] = source
        body["process_type"] = process_type
    index = _request("GET", agent + "/", token_file)
    doc = _request("POST", index["pools"], token_file, body)
    _answer(doc, as_json, "created")
    if not no_wait:
        _follow_build(doc, token_file)


def _follow_build(doc: dict[str, Any], token_file: Any, timeout_s: float = FOLLOW_TIMEOUT_S) -> None:
    """Poll the pool every half second (bounded) while an instance is fetched or built,
    printing each new state and the build log's new lines to stderr; exit 1 if an
    instance failed."""
    import time

    deadline = time.monotonic() + timeout_s
    shown = ""
    build_log = BuildLogTail()
    while True:
        build_log.print_new(doc, token_file)
        states = sorted({i["process_state"] for i in doc["instances"]})
        failed = [i for i in doc["instances"] if i["process_state"] == "failed"]
        if failed:
            typer.echo(f"herder: pool {doc['name']}: an instance failed: {failed[0]['error']}", err=True)
            raise typer.Exit(1)
        if not set(states) & set(PREPARING):
            if shown:
                typer.echo(f"[herder] pool {doc['name']}: {', '.join(states)}", err=True)
            return
        if time.monotonic() >= deadline:
            typer.echo(
                f"herder: pool {doc['name']} still {', '.join(states)} after {timeout_s:g} s", err=True
            )
            raise typer.Exit(1)
        line = f"[herder] pool {doc['name']}: {', '.join(states)}..."
        if line != shown:
            typer.echo(line, err=True)
            shown = line
        time.sleep(0.5)
        doc = _request("GET", doc["details"], token_file)


class BuildLogTail:
    """The lines of a pool's build log not printed yet (the log only grows during a build)."""

    def __init__(self) -> None:
        self._printed = 0  # characters of the log already printed, up to a whole line

    def print_new(self, doc: dict[str, Any], token_file: Any) -> None:
        if "build_log" not in doc:
            return
        text: str = _request("GET", doc["build_log"], token_file, text=True)
        end = text.rfind("\n") + 1  # a line being written is printed once it is whole
        for line in text[self._printed : end].splitlines():
            typer.echo(f"[herder] {line}", err=True)
        self._printed = max(self._printed, end)


@pools.command("ls")
def ls(
    as_json: Annotated[bool, typer.Option("--json", help="Print the agent's listing instead.")] = False,
    agent: AgentUrl = DEFAULT_AGENT_URL,
    token_file: TokenFile = None,
) -> None:
    """List pools: name, state, instances ready/running, where to reach them."""
    listing = _request("GET", f"{agent}/pools", token_file)
    if as_json:
        _print(listing)
        return
    typer.echo(f"{'NAME':20} {'STATE':9} {'READY':>5} {'RUNNING':>7} {'WAITING':>7}  REACH")
    for pool in listing["pools"]:
        ready = sum(1 for i in pool["instances"] if i["state"] == "ready")
        reach = pool["url"] or f"Host: {pool['host']}"
        typer.echo(
            f"{pool['name']:20} {pool['state']:9} {ready:>5} {len(pool['instances']):>7} "
            f"{pool['waiting']:>7}  {reach}"
        )


@pools.command("show")
def show(name: Name, agent: AgentUrl = DEFAULT_AGENT_URL, token_file: TokenFile = None) -> None:
    """Print a pool's document: its spec, state and instances (port, pid, state, in flight)."""
    _print(_request("GET", f"{agent}/pools/{name}", token_file))


@pools.command("scale")
def scale(
    name: Name,
    min_instances: Annotated[int | None, typer.Option("--min", help="New minimum.")] = None,
    max_instances: Annotated[int | None, typer.Option("--max", help="New maximum.")] = None,
    as_json: Json = False,
    agent: AgentUrl = DEFAULT_AGENT_URL,
    token_file: TokenFile = None,
) -> None:
    """Set new bounds: instances start up to --min now; above --max they are retired gracefully.
    Prints a line about the pool (--json: its document)."""
    body = {
        k: v
        for k, v in {"min_instances": min_instances, "max_instances": max_instances}.items()
        if v is not None
    }
    if not body:
        raise typer.BadParameter("give --min, --max or both")
    _answer(_request("POST", f"{agent}/pools/{name}/scale", token_file, body), as_json, "scaled")


@pools.command("drain")
def drain(
    name: Name,
    timeout: Timeout = 30.0,
    as_json: Json = False,
    agent: AgentUrl = DEFAULT_AGENT_URL,
    token_file: TokenFile = None,
) -> None:
    """Stop taking requests (503), let those in flight finish, stop every instance.
    Prints a line about the pool (--json: its document)."""
    _answer(_request("POST", f"{agent}/pools/{name}/drain", token_file, {"timeout": timeout}), as_json)


@pools.command("resume")
def resume(
    name: Name, as_json: Json = False, agent: AgentUrl = DEFAULT_AGENT_URL, token_file: TokenFile = None
) -> None:
    """Take requests again after a drain. Prints a line about the pool (--json: its document)."""
    _answer(_request("POST", f"{agent}/pools/{name}/resume", token_file, {}), as_json)


@pools.command("rm")
def rm(
    name: Name,
    timeout: Timeout = 30.0,
    as_json: Json = False,
    agent: AgentUrl = DEFAULT_AGENT_URL,
    token_file: TokenFile = None,
) -> None:
    """Delete a pool: drain it, stop its instances, forget it. Prints one line (--json: the
    pool's last document)."""
    _answer(
        _request("POST", f"{agent}/pools/{name}/delete", token_file, {"timeout": timeout}), as_json, "deleted"
    )


def deploy_line(doc: dict[str, Any]) -> str:
    """One line about a pool's deploy: under way (its progress) or the last one (how it ended)."""
    current = doc.get("deployment") or next(iter(doc.get("deployments") or []), None)
    if current is None:
        return f"pool {doc['name']}: version {doc.get('version', 1)}, no deploy"
    line = (
        f"pool {doc['name']}: deploy {current['id']} of version {current['version']} "
        f"(from {current['from_version']}): {current['state']}, {current['healthy']}/{current['target']} "
        f"healthy, {current['replaced']} replaced"
    )
    return f"{line}: {current['reason']}" if current.get("reason") else line


def _follow_deploy(
    doc: dict[str, Any], token_file: Any, timeout_s: float = FOLLOW_TIMEOUT_S
) -> dict[str, Any]:
    """Poll the pool every half second (bounded) while its deploy is under way, printing
    each change of its progress on stderr; return the pool's last document. A canary
    deploy is followed until its canaries are healthy (then promote it, or revert it)."""
    import time

    deadline = time.monotonic() + timeout_s
    shown = ""
    while True:
        current = doc.get("deployment")
        line = deploy_line(doc)
        if line != shown:
            typer.echo(f"[herder] {line}", err=True)
            shown = line
        if current is None or current["state"] == "canary":
            return doc
        if time.monotonic() >= deadline:
            typer.echo(
                f"herder: pool {doc['name']}: deploy still {current['state']} after {timeout_s:g} s", err=True
            )
            raise typer.Exit(1)
        time.sleep(0.5)
        doc = _request("GET", doc["details"], token_file)


def _deploy_answer(
    doc: dict[str, Any], as_json: bool, *, follow: bool, token_file: Any, failure: int = 1
) -> None:
    """Follow the deploy (unless not asked to), then answer one line (``--json``: the
    document); exit ``failure`` if it was rolled back or cancelled."""
    if follow:
        doc = _follow_deploy(doc, token_file)
    if as_json:
        _print(doc)
    else:
        typer.echo(deploy_line(doc))
    last = doc.get("deployment") or next(iter(doc.get("deployments") or []), None)
    if follow and last is not None and last["state"] in ("failed", "cancelled"):
        raise typer.Exit(failure)


@pools.command("deploy")
def deploy(
    name: Name,
    command: Annotated[
        list[str] | None,
        typer.Argument(help="The new version's command (after --); '{port}' becomes its port, also $PORT."),
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source-url", "--source", help="The new version's app (archive URL).")
    ] = None,
    process_type: Annotated[str | None, typer.Option("--type", help="Procfile process type.")] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="NAME=value (repeatable): the new env, whole.")
    ] = None,
    max_parallel: Annotated[int, typer.Option(help="New instances started at once.")] = 1,
    canary: Annotated[int, typer.Option(help="New instances beside the old ones until promoted.")] = 0,
    healthy_deadline: Annotated[float, typer.Option(help="Seconds a new instance has to be healthy.")] = 60,
    min_healthy_time: Annotated[float, typer.Option(help="Seconds it must stay ready to be healthy.")] = 1,
    drain_timeout: Annotated[
        float, typer.Option(help="Seconds an old instance gets to finish its requests and WebSockets.")
    ] = 30,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Build the app again if its last build failed.")
    ] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return at once, not when it ends.")] = False,
    as_json: Json = False,
    agent: AgentUrl = DEFAULT_AGENT_URL,
    token_file: TokenFile = None,
) -> None:
    """Roll out a new version of a pool: 'herder pools deploy web -- python3 app.py {port}', or
    --source-url URL --type web, or neither (the same program again: a rolling restart). New
    instances start --max-parallel at a time and old ones are drained once they are
    healthy; a version not healthy within --healthy-deadline is rolled back. Follows the
    deploy on stderr until it ends, then prints one line about it (--json: the pool's
    document); exit 1 if it was rolled back. With --canary, until the canaries are healthy
    ('herder pools promote NAME' goes on)."""
    body: dict[str, Any] = {
        "max_parallel": max_parallel,
        "canary": canary,
        "healthy_deadline": healthy_deadline,
        "min_healthy_time": min_healthy_time,
        "drain_timeout": drain_timeout,
        "rebuild": rebuild,
    }
    if command:
        body["command"] = command
    elif source is not None or process_type is not None:
        body["source_url"] = source
        body["process_type"] = process_type
    if env is not None:
        body["env"] = parse_env(env)
    doc = _request("POST", f"{agent}/pools/{name}/deploy", token_file, body)
    _deploy_answer(doc, as_json, follow=not no_wait, token_file=token_file)


@pools.command("promote")
def promote(
    name: Name, as_json: Json = False, agent: AgentUrl = DEFAULT_AGENT_URL, token_file: TokenFile = None
) -> None:
    """Promote the canaries of a pool's deploy: it goes on to replace the old instances.
    Follows it on stderr until it ends, then prints one line (--json: the document), as
    deploy does."""
    doc = _request("POST", f"{agent}/pools/{name}/promote", token_file, {})
    _deploy_answer(doc, as_json, follow=True, token_file=token_file)


@pools.command("revert")
def revert(
    name: Name, as_json: Json = False, agent: AgentUrl = DEFAULT_AGENT_URL, token_file: TokenFile = None
) -> None:
    """Abandon a pool's deploy under way (a canary waiting for its promote, say): back to
    the old version. Follows the roll-back on stderr until it ends, then prints one line
    (--json: the document)."""
    doc = _request("POST", f"{agent}/pools/{name}/revert", token_file, {})
    _deploy_answer(doc, as_json, follow=True, token_file=token_file, failure=0)  # rolled back: as asked


def register(app: typer.Typer) -> None:
    app.add_typer(pools)
