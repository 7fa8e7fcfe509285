"""``herder manager``: run the manager (workers, tasks) in the foreground."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from herder.cli.agent_cmd import TlsCertOption, TlsKeyOption, VersionOption, tls_overrides
from herder.cli.logsetup import banner
from herder.cli.loop import run as run_main
from herder.cli.loop import settle_daemon

log = logging.getLogger("herder.manager")


def manager(
    host: Annotated[str | None, typer.Option(help="Address to listen on. [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on. [default: 8020]")] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="TOML file with any manager setting (limits, service_quota, lease_margin_s, ...; "
            "see docs/operations.md); options given here override it.",
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            help="Database URL: sqlite:///path or postgresql://user@host/db. "
            "[default: SQLite in the data dir]"
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the signing keys and the default SQLite database live. [default: .herder]"),
    ] = None,
    auth_token_file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="File with a shared secret clients must send. Required off loopback.",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="Extra name clients use in the Host header (repeatable); loopback names always work."
        ),
    ] = None,
    proxy_allow_network: Annotated[
        list[str] | None,
        typer.Option(
            metavar="CIDR",
            help="A network /proxy/ may reach for anyone's service though it is loopback or "
            "link-local (refused by default); repeatable. The manager's own address never.",
        ),
    ] = None,
    proxy_admin_network: Annotated[
        list[str] | None,
        typer.Option(
            metavar="CIDR",
            help="A network /proxy/ may reach for services an admin key registered; repeatable "
            "(e.g. 127.0.0.0/8 on a single host).",
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float | None,
        typer.Option(
            help="Seconds between workers' heartbeats; three missed: offline, work requeued. [default: 5]"
        ),
    ] = None,
    max_user_priority: Annotated[
        int | None,
        typer.Option(help="The highest priority a user's key may give a task (admins: any). [default: 100]"),
    ] = None,
    accept_new_database: Annotated[
        bool | None,
        typer.Option(
            "--accept-new-database",
            help="Start although the database does not know the data dir's signing key (it was emptied, "
            "replaced, or is another manager's): only the keys it records are honoured.",
        ),
    ] = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="With --tls-cert: every client must present a certificate this PEM CA signed "
            "(mutual TLS): an agent without one cannot link (agents: --tls-client-cert).",
        ),
    ] = None,
    version: VersionOption = False,
) -> None:
    """Run the manager in the foreground until SIGINT or SIGTERM.

    It serves the Manager API (workers, tasks), migrates its database at start, and puts
    the work of workers that stopped heartbeating back in the queue. Everything it knows
    is in the database: killed and started again, it carries on where it was.
    """
    from herder.auth import open_secret_file
    from herder.manager import Manager, ManagerConfig, ManagerError
    from herder.tomlconfig import config_problems, read_with_overrides

    token = auth_token_file.read_text().strip() if auth_token_file is not None else None
    overrides: dict[str, Any] = {
        "host": host,
        "port": port,
        "db": db,
        "data_dir": data_dir,
        "auth_token": token or None,
        "heartbeat_interval_s": heartbeat_interval,
        "max_user_priority": max_user_priority,
        "allowed_hosts": allowed_host or None,
        "proxy_allow_networks": proxy_allow_network or None,
        "proxy_admin_networks": proxy_admin_network or None,
        "accept_new_database": accept_new_database,
    }
    tls_overrides(overrides, tls_cert, tls_key)
    if tls_client_ca is not None:
        overrides.setdefault("tls", {})["client_ca"] = tls_client_ca.resolve()
    try:
        cfg = ManagerConfig.model_validate(read_with_overrides(config, overrides))
    except (ValueError, OSError) as exc:  # a setting out of its range, a network that is not one, bad TOML
        for problem in config_problems(exc, config, overrides):
            typer.echo(f"herder manager: {problem}", err=True)
        raise typer.Exit(2) from None
    exposed = open_secret_file(auth_token_file) if auth_token_file is not None else None
    if exposed is not None and not cfg.is_loopback():
        typer.echo(f"herder manager: refusing to listen on {cfg.host}: {exposed}", err=True)
        raise typer.Exit(2)
    if exposed is not None:
        log.warning("%s (anyone on this host can read it)", exposed)

    async def main() -> None:
        async with Manager(cfg) as running:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(signum, running.request_stop)
            log.info("manager listening on %s (database %s)", running.url, cfg.database_url().split("@")[-1])
            if running.authority is None and not cfg.auth_token:
                log.warning(
                    "running open: anyone on this host can use the manager (loopback only); "
                    "'herder keys init --data-dir %s' turns keys and tokens on",
                    cfg.data_dir,
                )
            banner(f"herder manager listening on {running.url}\n  try: curl {running.url}/", log)
            settle_daemon()
            await running.wait_stopped()

    try:
        run_main(main())
    except ManagerError as exc:
        typer.echo(f"herder manager: {exc}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    app.command("manager")(manager)
