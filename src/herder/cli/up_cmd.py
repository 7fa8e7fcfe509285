"""``herder up``: a manager and a local agent working for it, in one process (``make up``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from herder.cli.logsetup import banner
from herder.cli.loop import run as run_main
from herder.cli.loop import settle_daemon

log = logging.getLogger("herder.up")


UP_AGENT = "herder-up-agent"  # the user named by the local agent's key
LOOPBACK_NETWORKS = ["127.0.0.0/8", "::1/128"]


def up(
    data_dir: Annotated[
        Path, typer.Option(help="Where both keep their data (the manager's SQLite file too).")
    ] = Path(".herder"),
    agent_port: Annotated[int, typer.Option(help="The agent's port.")] = 8010,
    manager_port: Annotated[int, typer.Option(help="The manager's port.")] = 8020,
    slots: Annotated[
        int | None, typer.Option(help="Pieces of work the agent runs at once. [default: CPUs]")
    ] = None,
    db: Annotated[
        str | None, typer.Option(help="The manager's database URL. [default: SQLite in DATA_DIR]")
    ] = None,
    tls_dir: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="Serve both over HTTPS and WSS with the certificates 'herder certs init --dir DIR' "
            "made (DIR/server.crt, DIR/server.key); the agent checks the manager with DIR/ca.crt.",
        ),
    ] = None,
) -> None:
    """Run a manager (SQLite in DATA_DIR) and an agent attached to it, on 127.0.0.1, until Ctrl-C.

    This is the whole system on one host: submit tasks to the manager
    (curl http://127.0.0.1:8020/tasks ...), and the agent runs them; the agent's own API
    (processes, pools, sessions) stays at http://127.0.0.1:8010. Both run on loopback;
    the manager runs open unless DATA_DIR holds its keys ('herder keys init'): then it
    issues the agent a key of its own, and clients of both need access tokens. The
    manager's /proxy/ reaches services on loopback only when an admin key registered them.
    """
    from herder.agent import Agent, AgentConfig, AgentError
    from herder.manager import Manager, ManagerConfig, ManagerError

    # One host: the proxy may reach services on loopback, but only those an admin key
    # registered (or anyone, without keys); a user's loopback URL stays refused.
    tls = None if tls_dir is None else {"cert": tls_dir / "server.crt", "key": tls_dir / "server.key"}
    manager_cfg = ManagerConfig.model_validate(
        {
            "port": manager_port,
            "data_dir": data_dir,
            "db": db,
            "proxy_admin_networks": LOOPBACK_NETWORKS,
            "tls": tls,
        }
    )

    def agent_config(manager_url: str, key: str | None) -> AgentConfig:
        link: dict[str, Any] = {"url": manager_url, "key": key}
        if tls_dir is not None:
            link["ca"] = tls_dir / "ca.crt"
        if slots is not None:
            link["slots"] = slots
        # This process is the agent's (the manager spawns nothing): it adopts the orphans
        # of what the agent runs, as herder agent does.
        return AgentConfig.model_validate(
            {
                "port": agent_port,
                "data_dir": data_dir,
                "manager": link,
                "supervision": {"subreaper": True},
                "tls": tls,
            }
        )

    async def agent_key(manager: Manager) -> str | None:
        """With keys on, the local agent gets a key of its own (recorded, revocable)."""
        if manager.authority is None or manager.runtime is None:
            return None
        async with manager.runtime.transaction() as session:
            await manager.authority.revoke(session, subject=UP_AGENT)  # the last run's
            issued = await manager.authority.issue_key(session, UP_AGENT, "admin")
        return issued.key

    async def main() -> None:
        async with Manager(manager_cfg) as manager:
            key = await agent_key(manager)
            async with Agent(agent_config(manager.url, key)) as agent:
                await serve(manager, agent)

    async def serve(manager: Manager, agent: Agent) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, stop.set)
        if manager.authority is None:
            log.warning(
                "no auth tokens: anyone on this host can use the manager and the agent (loopback only)"
            )
        else:
            # The agent links with a key of its own, and so takes only the manager's tokens.
            log.warning(
                "keys on: the manager and the agent need access tokens (herder keys token); "
                "both listen on loopback only"
            )
        curl = "curl" if tls_dir is None else f"curl --cacert {tls_dir / 'ca.crt'}"
        banner(
            f"herder up: manager on {manager.url}, agent on {agent.url} (working for the manager)\n"
            f"  try: {curl} {manager.url}/workers\n"
            f'       {curl} -X POST {manager.url}/tasks -d \'{{"type": "command", '
            f'"settings": {{"shell": "echo hello from herder"}}}}\'',
            log,
        )
        settle_daemon()
        await stop.wait()
        log.info("stopping: every process and task run here is stopped, then both exit")

    try:
        run_main(main())
    except (AgentError, ManagerError) as exc:
        typer.echo(f"herder up: {exc}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    app.command("up")(up)
