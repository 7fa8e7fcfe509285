"""``herder services ls [QUERY]``: what a manager's registry holds under a prefix of the key."""

from __future__ import annotations

import time
from typing import Annotated
from urllib.parse import urlencode

import typer

from herder.cli.manager_ops import DEFAULT_MANAGER_URL
from herder.cli.output import print_json as _print
from herder.cli.rest import request as _request
from herder.cli.task_cmds import Json, ManagerToken, ManagerUrl

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
    manager: ManagerUrl = DEFAULT_MANAGER_URL,
    token_file: ManagerToken = None,
    as_json: Json = False,
) -> None:
    """The live services under QUERY (every user's with the default /*)."""
    document = _request("GET", f"{manager.rstrip('/')}/services?{urlencode({'query': query})}", token_file)
    if as_json:
        _print(document)
        return
    typer.echo(f"{'KEY':<60} {'URL':<32} {'OWNER':<12} EXPIRES")
    for entry in document["services"]:
        expires = (
            "with its link"
            if entry["expires_at"] is None
            else f"in {entry['expires_at'] - time.time():.0f} s"
        )
        typer.echo(f"{entry['key']:<60} {entry['url']:<32} {entry['owner']:<12} {expires}")


def register(app: typer.Typer) -> None:
    app.add_typer(services)
