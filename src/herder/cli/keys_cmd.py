"""``herder keys ...``: the manager's signing key, the keys it issues, and access tokens.

``init``, ``issue``, ``revoke`` and ``ls`` work on the manager's data dir and database
directly (the same ``--data-dir`` and ``--db`` as ``herder manager``), so an operator
can issue the first admin key before anything runs, and revoke one while the manager
runs (it notices within a second). ``token`` asks a running manager for an access token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

T = TypeVar("T")

DataDir = Annotated[
    Path, typer.Option("--data-dir", help="The manager's data dir (its keys and default database).")
]
Db = Annotated[
    str | None,
    typer.Option("--db", help="The manager's database URL. [default: SQLite in the data dir]"),
]

keys = typer.Typer(
    name="keys",
    help="Auth for a manager: its signing key, keys for users, agents and services, and tokens.\n\n"
    "Auth is on once the manager's data dir holds a signing key ('herder keys init'). A key "
    "('herder keys issue') names a user and a role; it buys short-lived access tokens "
    "('herder keys token'), which every request then carries as 'Authorization: Bearer <token>'.",
    no_args_is_help=True,
)

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in ``90``, ``90s``, ``30m``, ``12h`` or ``365d``.

    Raises:
        typer.BadParameter: anything else, or zero.
    """
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise typer.BadParameter(f"{text!r} is not a duration: a whole number with s, m, h or d (30d)")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def _fail(message: str) -> None:
    typer.echo(f"herder keys: {message}", err=True)
    raise typer.Exit(1)


def _with_database(data_dir: Path, db: str | None, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(session)`` in one transaction on the manager's (migrated) database."""
    from herder.manager import DatabaseError, ManagerConfig, in_transaction

    config = ManagerConfig(data_dir=data_dir, db=db)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # 0700 whatever the umask
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration otherwise
    try:
        return asyncio.run(in_transaction(config.database_url(), work))
    except DatabaseError as exc:
        _fail(str(exc))
        raise AssertionError("unreachable") from exc


def _authority(data_dir: Path) -> Any:
    from herder.auth import AuthKeyError
    from herder.manager import Authority

    try:
        authority = Authority.load(data_dir)
    except AuthKeyError as exc:
        _fail(str(exc))
    if authority is None:
        _fail(f"{data_dir} holds no signing key: run 'herder keys init --data-dir {data_dir}' first")
    return authority


@keys.command("init")
def init(
    data_dir: DataDir = Path(".herder"),
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing key (every key and token it signed dies).")
    ] = False,
) -> None:
    """Create the manager's signing key pair (Ed25519) in its data dir: auth is on from then.

    The private key is <data dir>/keys/signing.pem (mode 0600); the public one is served by the
    manager at /auth/jwks.json, for agents and services to verify tokens offline.
    """
    from herder.auth import KeysExistError, init_keys

    try:
        key = init_keys(data_dir, force=force)
    except KeysExistError as exc:
        _fail(f"{exc} (--force replaces it, and every key it signed stops working)")
    typer.echo(f"signing key {key.kid} created in {data_dir / 'keys'}; auth is on for this manager", err=True)


@keys.command("issue")
def issue(
    user: Annotated[str, typer.Option("--user", help="Whom the key names: a person, an agent, a service.")],
    role: Annotated[
        str, typer.Option("--role", help="admin (sees and touches everything) or user.")
    ] = "user",
    ttl: Annotated[str, typer.Option("--ttl", help="How long the key lasts: 365d, 12h, 30m.")] = "365d",
    out: Annotated[
        Path | None, typer.Option("--out", dir_okay=False, help="Write the key to this file (mode 0600).")
    ] = None,
    data_dir: DataDir = Path(".herder"),
    db: Db = None,
) -> None:
    """Issue a key (a signed token of kind "key") and record it, so that it can be revoked.

    The key is printed on stdout (or written to --out); the manager does not keep it.
    """
    from herder.manager import ROLES

    if role not in ROLES:
        raise typer.BadParameter(f"{role!r}: the role is admin or user", param_hint="--role")
    if not user.strip() or len(user) > 255 or any(c.isspace() or c == "/" for c in user):
        raise typer.BadParameter(
            f"{user!r}: a user is 1 to 255 characters, no spaces or '/'", param_hint="--user"
        )
    from herder.manager import UnknownDatabase

    ttl_s = parse_duration(ttl)
    authority = _authority(data_dir)

    async def work(session: Any) -> Any:
        # A key issued into a database that is not the manager's own would not be honoured.
        await authority.check_database(session, data_dir)
        return await authority.issue_key(session, user, role, ttl_s)

    try:
        issued = _with_database(data_dir, db, work)
    except UnknownDatabase as exc:
        _fail(str(exc))
    if out is not None:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
        with os.fdopen(fd, "w") as fh:
            fh.write(issued.key + "\n")
    else:
        typer.echo(issued.key)
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(issued.expires_at))
    typer.echo(f"key {issued.id} for {user} ({role}) until {until}", err=True)


@keys.command("revoke")
def revoke(
    key_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="The key's id (from 'herder keys ls').")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="Revoke every key of this user.")] = None,
    data_dir: DataDir = Path(".herder"),
    db: Db = None,
) -> None:
    """Revoke a key, or every key of a user: their tokens stop working within a second."""
    from herder.manager import Authority

    if (key_id is None) == (user is None):
        raise typer.BadParameter("give a key's ID or --user NAME (one of them)")

    async def work(session: Any) -> int:
        count = await Authority.revoke(session, key_id=key_id, subject=user)
        await session.flush()
        await Authority.note_revocations(session, data_dir)
        return count

    revoked = _with_database(data_dir, db, work)
    if revoked == 0:
        _fail(
            f"no key to revoke: {'key ' + key_id if key_id else 'user ' + str(user)} has none not revoked yet"
        )
    typer.echo(f"revoked {revoked} key{'s' if revoked != 1 else ''}", err=True)


@keys.command("ls")
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document, for scripts.")] = False,
    data_dir: DataDir = Path(".herder"),
    db: Db = None,
) -> None:
    """The keys issued: id, user, role, until when, revoked or not (never the keys themselves)."""
    from herder.manager import Authority

    async def rows(session: Any) -> list[dict[str, Any]]:
        return [
            {
                "id": k.id,
                "user": k.subject,
                "role": k.role,
                "issued_at": k.issued_at,
                "expires_at": k.expires_at,
                "revoked_at": k.revoked_at,
            }
            for k in await Authority.list_keys(session)
        ]

    found = _with_database(data_dir, db, rows)
    if as_json:
        typer.echo(json.dumps({"keys": found}, indent=2))
        return
    typer.echo(f"{'ID':<24} {'USER':<20} {'ROLE':<6} {'UNTIL':<17} STATE")
    for k in found:
        until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(k["expires_at"]))
        state = "revoked" if k["revoked_at"] else ("expired" if k["expires_at"] < time.time() else "valid")
        typer.echo(f"{k['id']:<24} {k['user']:<20} {k['role']:<6} {until:<17} {state}")


@keys.command("token")
def token(
    key_file: Annotated[
        Path, typer.Option("--key-file", exists=True, dir_okay=False, help="File holding your key.")
    ],
    manager: Annotated[
        str, typer.Option("--manager", envvar="HERDER_MANAGER_URL", help="The manager's URL.")
    ] = "http://127.0.0.1:8020",
) -> None:
    """Print an access token (one hour) bought with your key from a running manager."""
    from herder.cli.rest import tls_for
    from herder.rpc import ConnectionLost, ManagerClient, TokenRefused

    key = key_file.read_text().strip()
    try:
        bought = ManagerClient(manager, key=key, tls=tls_for(manager)).buy_token_sync()
    except ConnectionLost as exc:
        _fail(str(exc))
    except TokenRefused as exc:
        _fail(f"{exc.status}: {exc.detail}")
    sys.stdout.write(bought.token + "\n")


def register(app: typer.Typer) -> None:
    app.add_typer(keys)
