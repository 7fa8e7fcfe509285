"""``herder certs init`` and ``herder certs issue``: certificates for trying TLS (``herder.certs``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

certs = typer.Typer(
    name="certs",
    help="A small CA and certificates for a test fleet, to run the agent and the manager over TLS.\n\n"
    "'herder certs init --dir DIR' makes DIR/ca.crt, DIR/ca.key and a server certificate "
    "(DIR/server.crt, DIR/server.key) for this host's loopback names and any --host; "
    "'herder certs issue' makes more with the same CA (--client: for an agent, when the manager "
    "asks agents for a certificate). Then: herder manager --tls-cert DIR/server.crt "
    "--tls-key DIR/server.key, and herder agent --manager https://... --manager-ca DIR/ca.crt. "
    "Files holding a key are written 0600; no file is overwritten.",
    no_args_is_help=True,
)

Dir = Annotated[Path, typer.Option("--dir", help="Directory of the CA and its certificates.")]
Hosts = Annotated[
    list[str] | None,
    typer.Option(
        "--host",
        metavar="NAME",
        help="A name or address clients use to reach the server (repeatable); "
        "localhost, 127.0.0.1 and ::1 are always included in a server certificate.",
    ),
]
Days = Annotated[int, typer.Option("--days", min=1, max=3650, help="Days the certificate is valid.")]


def _fail(message: str) -> None:
    typer.echo(f"herder certs: {message}", err=True)
    raise typer.Exit(1)


@certs.command("init")
def init(directory: Dir, host: Hosts = None, days: Days = 825) -> None:
    """Make a CA (ca.crt, ca.key) and a server certificate signed by it (server.crt, server.key).

    Prints the files and the server certificate's SHA-256 fingerprint (what an agent's
    --manager-fingerprint takes instead of --manager-ca). Refuses a directory that holds
    a CA already.
    """
    from herder import certs
    from herder.tls import certificate_fingerprint

    try:
        ca, server = certs.init(directory, host or [], days=days)
    except certs.CertError as exc:
        _fail(str(exc))
        return
    typer.echo(f"CA:          {ca.cert}  (key {ca.key})")
    typer.echo(f"server:      {server.cert}  (key {server.key})")
    typer.echo(f"fingerprint: {certificate_fingerprint(server.cert)}")


@certs.command("issue")
def issue(
    directory: Dir,
    name: Annotated[str, typer.Option("--name", help="The certificate's name: files NAME.crt and NAME.key.")],
    host: Hosts = None,
    client: Annotated[
        bool,
        typer.Option(
            "--client",
            help="A client certificate (an agent's --tls-client-cert, for a manager run with "
            "--tls-client-ca DIR/ca.crt) instead of a server's.",
        ),
    ] = False,
    days: Days = 825,
) -> None:
    """Make another certificate with the CA in --dir: a server's (another host: --host its names)
    or, with --client, a client's."""
    from herder import certs
    from herder.tls import certificate_fingerprint

    try:
        issued = certs.issue(directory, name, host or [], client=client, days=days)
    except certs.CertError as exc:
        _fail(str(exc))
        return
    typer.echo(f"{'client' if client else 'server'}: {issued.cert}  (key {issued.key})")
    typer.echo(f"fingerprint: {certificate_fingerprint(issued.cert)}")


def register(app: typer.Typer) -> None:
    app.add_typer(certs)
