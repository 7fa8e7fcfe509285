"""``herder services ls [QUERY]``: what a manager's registry holds under a prefix of the key."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

services = typer.Typer(
    name="services",
    help="The service registry of a manager ('herder manager'): services register under "
    "/username/environment/name/version/region/hostname/id and are found by a prefix of it.",
    no_args_is_help=True,
)


@services.command("ls")
def list_services(
    query: Annotated[
        str,
        typer.Argument(
            help="A prefix of the key, general to specific: /alice, /alice/prod/math, .../>=1.2,<2"
        ),
    ] = "/*",
    manager: Annotated[str, typer.Option(envvar="HERDER_MANAGER_URL", help="The manager's URL.")] = (
        "http://127.0.0.1:8020"
    ),
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            envvar="HERDER_MANAGER_TOKEN_FILE",
            exists=True,
            dir_okay=False,
            help="File with an access token for the manager.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The manager's JSON document.")] = False,
) -> None:
    """The live services under QUERY (every user's with the default /*)."""
    import httpx

    headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"} if token_file else {}
    try:
        answer = httpx.get(f"{manager.rstrip('/')}/services", params={"query": query}, headers=headers)
    except httpx.HTTPError as exc:
        typer.echo(f"herder services: cannot reach the manager at {manager}: {exc}", err=True)
        raise typer.Exit(1) from None
    if answer.status_code != 200:
        document = (
            answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
        )
        typer.echo(f"herder services: {answer.status_code}: {document.get('message', answer.text)}", err=True)
        raise typer.Exit(1)
    found = answer.json()["services"]
    if as_json:
        typer.echo(json.dumps(answer.json(), indent=2))
        return
    typer.echo(f"{'KEY':<60} {'URL':<32} {'OWNER':<12} EXPIRES")
    for entry in found:
        expires = (
            "with its link"
            if entry["expires_at"] is None
            else f"in {entry['expires_at'] - time.time():.0f} s"
        )
        typer.echo(f"{entry['key']:<60} {entry['url']:<32} {entry['owner']:<12} {expires}")


def register(app: typer.Typer) -> None:
    app.add_typer(services)
