"""``herder agent``: run the per-host agent in the foreground."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from herder.cli.agent_ops import DEFAULT_AGENT_URL
from herder.cli.logsetup import banner
from herder.cli.loop import run as run_main
from herder.cli.loop import settle_daemon

log = logging.getLogger("herder.agent")


def _read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    token = path.read_text().strip()
    if not token:
        raise typer.BadParameter(f"{path} is empty", param_hint="--auth-token-file")
    return token


def _check_secret_file(path: Path | None, host: str, *, loopback: bool) -> None:
    """Refuse, off loopback, a secret file others can read (on loopback, warn)."""
    from herder.auth import open_secret_file

    exposed = open_secret_file(path) if path is not None else None
    if exposed is None:
        return
    if not loopback:
        typer.echo(f"herder agent: refusing to listen on {host}: {exposed}", err=True)
        raise typer.Exit(2)
    log.warning("%s (anyone on this host can read it)", exposed)


def _print_version(value: bool) -> None:
    if value:
        from herder import __version__

        typer.echo(f"herder {__version__}")
        raise typer.Exit()


# ``herder agent --version`` as ``herder --version``: the seed asks it of the program (#16).
VersionOption = Annotated[
    bool,
    typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
]


# --tls-cert and --tls-key, the same on herder agent and herder manager.
TlsCertOption = Annotated[
    Path | None,
    typer.Option(
        exists=True,
        dir_okay=False,
        help="Serve HTTPS and WSS with this PEM certificate (on the agent, its pools' own "
        "addresses too); with --tls-key. 'herder certs init' makes one to try (docs/tls.md).",
    ),
]
TlsKeyOption = Annotated[
    Path | None, typer.Option(exists=True, dir_okay=False, help="The PEM private key of --tls-cert.")
]


def agent(
    host: Annotated[str | None, typer.Option(help="Address to listen on. [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on. [default: 8010]")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where records, logs, unpacked apps and the cache live. [default: ./.herder]"),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="TOML file with any agent setting (see docs/operations.md).",
        ),
    ] = None,
    restore: Annotated[
        bool | None,
        typer.Option(
            "--restore/--no-restore",
            help="Start the processes recorded by the last run. [default: restore]",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(help="Extra name accepted in the Host header (repeatable); loopback names always are."),
    ] = None,
    auth_token_file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="File holding a shared secret clients must send as a bearer token. Required off loopback.",
        ),
    ] = None,
    grace: Annotated[
        float | None,
        typer.Option(help="Seconds between SIGTERM and SIGKILL when stopping a process. [default: 10]"),
    ] = None,
    protocol_port: Annotated[
        int | None,
        typer.Option(help="Also serve the wire protocol (sessions, RPC) over TCP on this port (0: any)."),
    ] = None,
    manager: Annotated[
        str | None,
        typer.Option(
            help="Work for this manager (http://host:8020): register, heartbeat, run its tasks. "
            "Several managers on one database: URL1,URL2 (linked to one, moved to the next if it is lost)."
        ),
    ] = None,
    manager_token_file: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="File with the manager's bearer token."),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="With --manager: file with a key the manager issued ('herder keys issue'); "
            "the agent buys its access tokens with it and renews them.",
        ),
    ] = None,
    slots: Annotated[
        int | None, typer.Option(help="With --manager: pieces of work run at once. [default: CPUs]")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="With --manager: this worker's name there (two agents on one host need one each). "
            "[default: hostname]"
        ),
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="With --manager: a tag this worker offers (repeatable).")
    ] = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    manager_ca: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="With an https:// --manager: the PEM CA its certificate must chain to "
            "(default: the system's CAs).",
        ),
    ] = None,
    manager_fingerprint: Annotated[
        str | None,
        typer.Option(
            metavar="sha256:HEX",
            help="With an https:// --manager, instead of --manager-ca: trust exactly the certificate "
            "with this SHA-256 fingerprint ('herder certs init' prints it).",
        ),
    ] = None,
    tls_client_cert: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="With an https:// --manager: the PEM certificate to present to it, for a manager "
            "run with --tls-client-ca ('herder certs issue --client'); with --tls-client-key.",
        ),
    ] = None,
    tls_client_key: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="The PEM private key of --tls-client-cert."),
    ] = None,
    procfile: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Run this Procfile's app as honcho and foreman do: each process type, $PORT each, "
            "the directory's .env read; Ctrl-C stops them all (docs/config.md).",
        ),
    ] = None,
    concurrency: Annotated[
        str | None,
        typer.Option(help="With --procfile: instances per process type, as web=2,worker=1 (default 1 each)."),
    ] = None,
    version: VersionOption = False,
) -> None:
    """Run the agent in the foreground until SIGINT or SIGTERM; SIGHUP applies the config again.

    It serves the REST API (GET / lists the actions), supervises the processes it is
    asked to run or its config file declares, and restarts them until they are deleted.
    On SIGINT/SIGTERM it stops every process gracefully and exits 0; if it is killed, no
    process it started survives. Processes it was running are started again at its next
    start. SIGHUP (or 'herder reload') starts, stops and changes declared processes and
    pools as the config file says now, and touches nothing else.
    """
    from herder.agent import Agent, AgentError, load_config

    overrides: dict[str, Any] = {
        "host": host,
        "port": port,
        "data_dir": data_dir,
        "restore": restore,
        "allowed_hosts": allowed_host or None,
        "auth_token": _read_secret(auth_token_file),
        "protocol_port": protocol_port,
    }
    if manager is not None:
        link: dict[str, Any] = {
            "url": None,  # the file's url gives way to the option's list
            "urls": [part.strip() for part in manager.split(",")],
            "token": _read_secret(manager_token_file),
            "key": _read_secret(key_file),
            "tags": tag or [],
        }
        if slots is not None:
            link["slots"] = slots
        if name is not None:
            link["name"] = name
        overrides["manager"] = link
    tls_overrides(overrides, tls_cert, tls_key)
    link_tls = {
        "ca": manager_ca,
        "fingerprint": manager_fingerprint,
        "client_cert": tls_client_cert,
        "client_key": tls_client_key,
    }
    if any(value is not None for value in link_tls.values()):
        overrides.setdefault("manager", {}).update({k: v for k, v in link_tls.items() if v is not None})
    # This process is the agent's alone: it adopts the orphans of what it runs.
    overrides["supervision"] = {"subreaper": True}
    if grace is not None:
        overrides["supervision"]["grace_s"] = grace
    if procfile is not None:
        overrides["procfile"] = procfile.resolve()
    if concurrency is not None:
        overrides["concurrency"] = _parse_concurrency(concurrency)
    try:
        cfg = load_config(config, overrides)
    except (ValueError, OSError) as exc:  # pydantic's ValidationError and TOML's errors are ValueErrors
        from herder.tomlconfig import config_problems

        for problem in config_problems(exc, config, overrides):
            typer.echo(f"herder agent: {problem}", err=True)
        raise typer.Exit(2) from None
    _check_secret_file(auth_token_file, cfg.host, loopback=cfg.is_loopback())
    _check_declared(cfg)
    try:
        _run(Agent(cfg))
    except AgentError as exc:
        typer.echo(f"herder agent: {exc}", err=True)
        raise typer.Exit(2) from None


def tls_overrides(overrides: dict[str, Any], cert: Path | None, key: Path | None) -> None:
    """``--tls-cert``/``--tls-key`` as the config's ``tls`` table: both, or neither."""
    if (cert is None) != (key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together", param_hint="--tls-cert/--tls-key")
    if cert is not None:
        overrides["tls"] = {"cert": cert.resolve(), "key": key.resolve() if key is not None else None}


def _run(agent: Any) -> None:
    async def main() -> None:
        async with agent:
            loop = asyncio.get_running_loop()

            def on_signal(signum: int) -> None:
                log.info("received %s: stopping every process, then exiting", signal.Signals(signum).name)
                agent.request_stop()

            def on_hangup() -> None:
                log.info("received SIGHUP: applying the config file again")
                agent.request_reload()

            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, on_signal, signum)
            # SIGHUP is supervisord's and Circus's "read your config again" (#16).
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
            url = agent.url
            log.info("agent listening on %s (data in %s)", url, agent.config.data_dir)
            _say_who_may_use(agent.config)
            banner(f"herder agent listening on {url}\n  try: curl {url}/", log)
            if agent.protocol_url is not None:
                log.info("wire protocol over TCP on %s", agent.protocol_url)
            settle_daemon()
            if agent.config.procfile is None:
                await agent.wait_stopped()
            else:
                await _echo_until_stopped(agent)
        log.info("agent stopped")

    run_main(main())


async def _echo_until_stopped(agent: Any) -> None:
    """With --procfile: the processes' output on stdout, as honcho shows it, until the agent stops."""
    import sys

    from herder.agent import ProcessEcho

    async with asyncio.TaskGroup() as tg:
        echo = tg.create_task(ProcessEcho(agent.supervisor, sys.stdout).run(), name="echo")
        try:
            await agent.wait_stopped()
        finally:
            echo.cancel()


def _parse_concurrency(text: str) -> dict[str, int]:
    from herder.agent import parse_concurrency

    try:
        return parse_concurrency(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--concurrency") from None


def _check_declared(cfg: Any) -> None:
    """Every problem of the declared processes, one line each, before anything starts (exit 2)."""
    from herder.agent import declared_problems

    problems = declared_problems(cfg)
    for problem in problems:
        typer.echo(f"herder agent: {problem}", err=True)
    if problems:
        raise typer.Exit(2)


def _say_who_may_use(cfg: Any) -> None:
    """The start-up line about credentials, true to what the agent's door checks.

    An agent linked with a key takes its manager's access tokens (and its own shared
    secret, if it has one); saying it "runs open" then (#16) sent people to debug 401s.
    """
    linked_with_key = cfg.manager is not None and cfg.manager.key is not None
    if linked_with_key:
        log.warning(
            "keys on: requests need an access token of the manager %s (herder keys token)%s",
            cfg.manager.url,
            ", or this agent's shared secret" if cfg.auth_token else "",
        )
    elif cfg.auth_token is None:
        log.warning("no auth token: anyone on this host can use the agent (loopback only)")
    else:
        log.info("requests need the shared secret of --auth-token-file as a bearer token")


def host(
    product: Annotated[str | None, typer.Argument(help="The product to serve (the agent names it).")] = None,
) -> None:
    """Serve one session's product for the agent that started this process.

    Only the agent runs this: it hands the process a channel and a one-time secret.
    Run by hand, it says so and exits with status 2. To use a product, open a session
    through the agent (herder.client.Agent(url).session(product)).
    """
    from herder.agent import serve_session_host as main

    raise typer.Exit(main([product] if product else []))


def reload(
    as_json: Annotated[bool, typer.Option("--json", help="Print the agent's whole answer instead.")] = False,
    agent: Annotated[
        str, typer.Option("--agent", envvar="HERDER_AGENT_URL", help="The agent's URL.")
    ] = DEFAULT_AGENT_URL,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", envvar="HERDER_TOKEN_FILE", help="File with the agent's bearer token."),
    ] = None,
) -> None:
    """Apply the agent's config file again (as SIGHUP does): start, stop and change the declared
    processes and pools, touch nothing else. Prints what it started, stopped, changed and left
    unchanged; a file that does not validate changes nothing (exit 1, the reasons on stderr)."""
    from herder.cli.reload_ops import reload as run_reload

    run_reload(agent, token_file, as_json)


def register(app: typer.Typer) -> None:
    app.command("agent")(agent)
    app.command("host")(host)
    app.command("reload")(reload)
