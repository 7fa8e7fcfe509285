"""``herder call URL METHOD [ARGS...]``: call a method of an RPC service from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def _parse(arg: str) -> Any:
    """JSON when it parses (4, true, "x", [1,2], {"a":1}), else the string as given."""
    try:
        return json.loads(arg)
    except ValueError:
        return arg


def call(
    url: Annotated[
        str,
        typer.Argument(
            help="ws://host:port/rpc, tcp://host:port, unix:///path, or a service's name in a "
            "manager's registry (/alice/prod/math: a live instance is found first)"
        ),
    ],
    method: Annotated[str | None, typer.Argument(help="Method to call (omit with --methods).")] = None,
    args: Annotated[
        list[str] | None, typer.Argument(help="Positional arguments, each parsed as JSON when it parses.")
    ] = None,
    methods: Annotated[bool, typer.Option("--methods", help="List the methods the service offers.")] = False,
    target: Annotated[
        str | None, typer.Option(help="Target other than the service itself (e.g. meta).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 30.0,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", envvar="HERDER_RPC_TOKEN_FILE", help="File with a bearer token."),
    ] = None,
    manager: Annotated[
        str,
        typer.Option(
            envvar="HERDER_MANAGER_URL", help="With a service's name: the manager whose registry finds it."
        ),
    ] = "http://127.0.0.1:8020",
    manager_token_file: Annotated[
        Path | None,
        typer.Option(
            envvar="HERDER_MANAGER_TOKEN_FILE",
            exists=True,
            dir_okay=False,
            help="File with a token for the manager.",
        ),
    ] = None,
) -> None:
    """Call METHOD on the service at URL (or found by name) and print the result as JSON.

    Examples: herder call ws://127.0.0.1:3636/rpc square 4
              herder call /alice/prod/math square 4 --manager http://127.0.0.1:8020
    """
    from herder.cli.rest import tls_for
    from herder.rpc import HandshakeRefused, RpcError, connect_sync

    if not methods and method is None:
        raise typer.BadParameter("give a METHOD, or --methods", param_hint="METHOD")
    token = token_file.read_text().strip() if token_file is not None else None
    if url.startswith("/"):
        url, token = _resolve(url, manager, manager_token_file, token)
    try:
        with connect_sync(url, token=token, tls=tls_for(url)) as client:
            if methods:
                for entry in client.call("methods", target="meta", timeout=timeout):
                    lock = "" if entry["auth"] else "  (no auth)"
                    doc = f"  - {entry['doc']}" if entry["doc"] else ""
                    typer.echo(f"{entry['name']}{entry['params']}{lock}{doc}")
                return
            assert method is not None
            result = client.call(method, *[_parse(a) for a in args or []], target=target, timeout=timeout)
    except HandshakeRefused as exc:
        typer.echo(f"herder call: refused: {exc}", err=True)
        raise typer.Exit(1) from None
    except (RpcError, ValueError) as exc:
        typer.echo(f"herder call: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result, indent=2, default=repr))


def _resolve(
    name: str, manager: str, token_file: Path | None, service_token: str | None
) -> tuple[str, str | None]:
    """Where to call a live instance of ``name`` in the manager's registry (the first
    listed), and with which token: a relayed instance (a browser tab) is called through
    the manager, with the manager's token; any other at its URL, with ``service_token``."""
    import asyncio

    from herder.cli.rest import tls_for
    from herder.rpc import RpcError, endpoint_of, find

    token = token_file.read_text().strip() if token_file is not None else None
    try:
        found = asyncio.run(find(name, manager=manager, token=token, tls=tls_for(manager)))
    except (RpcError, OSError) as exc:
        typer.echo(f"herder call: cannot ask the manager at {manager}: {exc}", err=True)
        raise typer.Exit(1) from None
    if not found:
        typer.echo(f"herder call: no live service under {name} at {manager}", err=True)
        raise typer.Exit(1)
    return endpoint_of(found[0], manager, token, service_token)


def register(app: typer.Typer) -> None:
    app.command("call")(call)
