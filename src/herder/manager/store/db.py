"""Engines and migrations: SQLite by default, PostgreSQL by URL, the same code on both.

URLs are what users write (``sqlite:///path``, ``postgresql://user@host/db``); the
async drivers (aiosqlite, asyncpg) are chosen here. Migrations (Alembic) run at every
start, on the manager's own connection, before anything else touches the database.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, event, exc, make_url, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from herder.manager.errors import DatabaseError as DatabaseError  # re-exported: its old home

MIGRATIONS = Path(__file__).with_name("migrations")
# PostgreSQL's advisory lock taken around the migrations (any fixed 64-bit number, the
# same in every manager): b"herdmigr" read as a signed integer.
MIGRATION_LOCK = int.from_bytes(b"herdmigr", "big", signed=True)

# PostgreSQL ends a session of the manager's that leaves a transaction idle this long, and
# its row locks with it. Without it, a manager cut off mid-transaction (a partition, a
# SIGSTOP: the server sees an open connection) kept its locks until the server noticed,
# hours later if ever, and every other manager on the database waited on them (the chaos
# suite: all three stalled while one was cut off). The manager's own transactions pause
# between statements only for the event loop, but a loaded host stalls a loop for seconds
# (3.4 s seen in a test run at load 13, whose requests then failed): the bound is two
# heartbeat intervals, as long as an agent waits before it leaves a silent manager, and
# never under IDLE_IN_TRANSACTION_MIN_S (10 s with the default 5 s interval).
IDLE_IN_TRANSACTION_MIN_S = 3.0


def idle_in_transaction_s(heartbeat_interval_s: float) -> float:
    """How long PostgreSQL lets a manager's transaction sit idle before it ends the session."""
    return max(IDLE_IN_TRANSACTION_MIN_S, 2 * heartbeat_interval_s)


T = TypeVar("T")


def async_url(url: str) -> str:
    """The SQLAlchemy async URL for what a user wrote.

    Raises:
        DatabaseError: a scheme other than sqlite or postgresql.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise DatabaseError(f"{url!r} is not a database URL (sqlite:///path or postgresql://...)")
    base = scheme.split("+", 1)[0].lower()
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    raise DatabaseError(f"database scheme {scheme!r} is not supported; use sqlite or postgresql")


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (``None``: not SQLite, or in memory)."""
    full = async_url(url)
    if not full.startswith("sqlite"):
        return None
    database = make_url(full).database
    return Path(database) if database and database != ":memory:" else None


def create_private_file(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does, which would give it the umask's mode.

    SQLite creates its ``-wal`` and ``-shm`` files with the database file's mode, so
    they are 0600 too. An existing file is left as it is.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as error:
        raise DatabaseError(f"cannot create the database {path}: {error.strerror}") from None
    os.close(fd)


def create_engine(url: str, *, idle_in_transaction: float = IDLE_IN_TRANSACTION_MIN_S) -> AsyncEngine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys on.

    A SQLite file that does not exist yet is created 0600 first (``create_private_file``).
    PostgreSQL ends a session left idle in a transaction for ``idle_in_transaction``
    seconds (``idle_in_transaction_s``).
    """
    full = async_url(url)
    path = sqlite_path(url)
    if path is not None:
        create_private_file(path)
    if full.startswith("sqlite"):
        # One connection: SQLite has one writer at a time anyway, and connections that
        # race for its lock sleep and retry (milliseconds each) where a queue would not.
        engine = create_async_engine(
            full, connect_args={"timeout": 30}, pool_size=1, max_overflow=0, pool_timeout=60
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    settings = {"idle_in_transaction_session_timeout": str(int(idle_in_transaction * 1000))}
    return create_async_engine(
        full, pool_size=10, max_overflow=10, pool_pre_ping=True, connect_args={"server_settings": settings}
    )


def create_round_engine(url: str) -> Engine | None:
    """For SQLite, a synchronous engine for the rounds of writes (``manager.writes``).

    A round's statements then run one after the other in the database's thread,
    rather than each handed over to aiosqlite's thread and back through an event loop
    busy with requests (a round took 13 ms p50 that way under load). One connection,
    used from one thread. None for PostgreSQL, whose driver lives on the event loop.
    """
    full = async_url(url)
    if not full.startswith("sqlite"):
        return None
    engine = create_sync_engine(
        full.replace("sqlite+aiosqlite", "sqlite", 1),
        connect_args={"timeout": 30, "check_same_thread": False},
        pool_size=1,
        max_overflow=0,
        pool_timeout=60,
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision.

    Raises:
        DatabaseError: the database cannot be reached or a migration failed.
    """
    import logging

    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one line per plugin

    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))

    def upgrade(connection: Any) -> None:
        if connection.dialect.name == "postgresql":
            # Managers started at the same moment on a fresh database would each create
            # the same types and tables (#17): one migrates, the others wait for its
            # commit, then find the schema at head. Released with the transaction.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    try:
        async with engine.begin() as connection:
            await connection.run_sync(upgrade)
    except (OSError, ConnectionError) as error:
        raise DatabaseError(f"cannot reach the database: {error}") from error
    except exc.DBAPIError as error:  # a damaged or foreign file, a server refusing us
        raise DatabaseError(_unusable(engine, error)) from error


def _unusable(engine: AsyncEngine, error: exc.DBAPIError) -> str:
    """One line naming the database and what its driver said (not SQLAlchemy's essay)."""
    reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else type(error).__name__
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return (
            f"cannot open the database {url.database}: {reason} (is it truncated or not a herder "
            "database? restore it from a backup, or move it away to start empty)"
        )
    shown = url.render_as_string(hide_password=True).replace("+asyncpg://", "://", 1)
    return f"cannot use the database {shown}: {reason}"


def sessions(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def in_transaction(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(session)`` in one transaction on the (migrated) database at ``url``.

    For tools that act on a manager's database while no manager runs (``herder keys``):
    the engine is opened, the schema brought up to date, and the engine closed again.

    Raises:
        DatabaseError: the database cannot be reached, is not herder's, or a migration failed.
    """
    engine = create_engine(url)
    try:
        await migrate(engine)
        async with sessions(engine)() as session, session.begin():
            return await work(session)
    finally:
        await engine.dispose()
