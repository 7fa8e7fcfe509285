"""The service registry's rows (#17): registrations and the managers that hold links.

Statements only (SQLAlchemy Core, synchronous, each on a connection inside a
transaction that the caller commits), the same on SQLite and PostgreSQL. What keeps
each manager's in-memory index current from them is ``herder.manager.registry_store``.

A row's ``expires_at`` is NULL while a link keeps it (``ttl_s`` 0, and every relayed
service): ``holder`` then names the manager whose link it is. A renewal is one guarded
``UPDATE`` (a row already expired is not brought back), expiry one ``DELETE ... WHERE
expires_at <= now RETURNING``: of several managers sweeping at once, the rows come back
to one only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, delete, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from herder.manager.store.tables import ManagerRecord, ServiceRegistration
from herder.registry import Registration, ServiceKey

REGISTRATIONS: Table = ServiceRegistration.__table__  # type: ignore[assignment]
MANAGERS: Table = ManagerRecord.__table__  # type: ignore[assignment]
CHANNEL = "herder_registry"  # the NOTIFY channel every manager LISTENs on
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; a change is split into
# payloads below this (ids only: rows are read by whoever needs them).
MAX_PAYLOAD_BYTES = 7000
# Ids per ``IN (...)``: well under SQLite's 32,766 variables, and a short statement.
MAX_IDS_PER_STATEMENT = 500

Held = tuple[Registration, str | None]
"""A registration and the manager whose link holds it (None: its TTL keeps it)."""


def values_of(reg: Registration, holder: str | None) -> dict[str, Any]:
    """The row of ``reg``; metadata made JSON-safe (what a msgpack link sent may not be)."""
    document = json.loads(json.dumps(reg.metadata, default=repr))
    return {
        "id": reg.id,
        "key": str(reg.key),
        "url": reg.url,
        "owner": reg.owner,
        "owner_role": reg.owner_role,
        "metadata": document,
        "metadata_bytes": reg.metadata_bytes,
        "registered_at": reg.registered_at,
        "expires_at": None if math.isinf(reg.expires_at) else reg.expires_at,
        "relay": reg.relay,
        "holder": holder,
    }


def registration_of(row: Row[Any]) -> Held:
    """The registration a row holds, and its holder."""
    m = row._mapping
    reg = Registration(
        key=ServiceKey.parse(m["key"]),
        url=m["url"],
        owner=m["owner"],
        owner_role=m["owner_role"],
        registered_at=m["registered_at"],
        expires_at=math.inf if m["expires_at"] is None else m["expires_at"],
        metadata=dict(m["metadata"] or {}),
        metadata_bytes=m["metadata_bytes"],
        relay=bool(m["relay"]),
    )
    return reg, m["holder"]


def put(conn: Connection, regs: Sequence[tuple[Registration, str | None]]) -> None:
    """Insert each ``(registration, holder)``, or replace the row with its id; one executemany.

    Of one id given twice, the last counts (the rows are written in order).
    """
    if not regs:
        return
    latest = {reg.id: values_of(reg, holder) for reg, holder in regs}
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(REGISTRATIONS)
    changed = {c.name: stmt.excluded[c.name] for c in REGISTRATIONS.c if c.name != "id"}
    conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=changed), list(latest.values()))


_RENEW_POSTGRESQL = text(
    "UPDATE service_registrations AS r SET expires_at = v.expires_at"
    " FROM unnest(CAST(:ids AS text[]), CAST(:expires AS float8[])) AS v(id, expires_at)"
    " WHERE r.id = v.id AND r.expires_at IS NOT NULL AND r.expires_at > :now RETURNING r.id"
)


def renew(conn: Connection, renewals: Sequence[tuple[str, float]], now: float) -> set[str]:
    """Move each ``(id, expires_at)``'s expiry; the ids renewed (the others: none alive).

    A row that expired (or that a link keeps now) is left alone. One statement whatever
    the number on PostgreSQL (``UPDATE ... FROM unnest(...) RETURNING``); on SQLite an
    ``UPDATE`` per row in one executemany, and only if it matched fewer rows than it was
    given, one ``SELECT`` of what those rows say now.
    """
    if not renewals:
        return set()
    latest: dict[str, float] = {}
    for id, expires_at in renewals:
        latest[id] = max(expires_at, latest.get(id, expires_at))
    if conn.dialect.name == "postgresql":  # one statement, the renewed ids returned
        params = {"ids": list(latest), "expires": list(latest.values()), "now": now}
        return set(conn.execute(_RENEW_POSTGRESQL, params).scalars())
    c = REGISTRATIONS.c
    result = conn.execute(
        update(REGISTRATIONS)
        .where(
            c.id == bindparam("b_id"),
            c.expires_at.is_not(None),
            c.expires_at > bindparam("b_now"),
        )
        .values(expires_at=bindparam("b_expires")),
        [{"b_id": id, "b_expires": e, "b_now": now} for id, e in latest.items()],
    )
    if result.rowcount == len(latest):  # each matched (the usual case): no need to look
        return set(latest)
    renewed: set[str] = set()
    for chunk in _chunks(list(latest)):
        for id, expires_at in conn.execute(select(c.id, c.expires_at).where(c.id.in_(chunk))):
            if expires_at is not None and expires_at > now:
                renewed.add(id)
    return renewed


def remove(
    conn: Connection, id: str, holder: str | None = None, registered_at: float | None = None
) -> Registration | None:
    """Delete the row ``id``; it. Conditions, for a link that closed:

    ``holder``: only if that manager's link keeps it; ``registered_at``: only if it is
    still the registration that link made, not one made again since (by another link).
    """
    c = REGISTRATIONS.c
    stmt = delete(REGISTRATIONS).where(c.id == id)
    if holder is not None:
        stmt = stmt.where(c.holder == holder, c.expires_at.is_(None))
    if registered_at is not None:
        stmt = stmt.where(c.registered_at == registered_at)
    row = conn.execute(stmt.returning(*REGISTRATIONS.c)).first()
    return None if row is None else registration_of(row)[0]


def expire(conn: Connection, now: float) -> list[Registration]:
    """Delete the rows whose TTL ran out by ``now``; them (to this caller only)."""
    c = REGISTRATIONS.c
    rows = conn.execute(delete(REGISTRATIONS).where(c.expires_at <= now).returning(*REGISTRATIONS.c))
    return [registration_of(row)[0] for row in rows]


def read(conn: Connection, ids: Iterable[str] | None = None) -> list[Held]:
    """The rows of ``ids`` (those that exist), or every row (``None``)."""
    if ids is None:
        return [registration_of(row) for row in conn.execute(select(REGISTRATIONS))]
    found: list[Held] = []
    for chunk in _chunks(list(ids)):
        found.extend(
            registration_of(row)
            for row in conn.execute(select(REGISTRATIONS).where(REGISTRATIONS.c.id.in_(chunk)))
        )
    return found


def has_manager(conn: Connection, manager_id: str) -> bool:
    """Whether ``manager_id`` has a record (none: the others took it for dead)."""
    return conn.scalar(select(MANAGERS.c.id).where(MANAGERS.c.id == manager_id)) is not None


def held_by(conn: Connection, manager_id: str) -> set[str]:
    """The ids of the rows ``manager_id``'s links keep."""
    c = REGISTRATIONS.c
    return set(conn.scalars(select(c.id).where(c.holder == manager_id, c.expires_at.is_(None))))


# -- managers ---------------------------------------------------------------------------


def join(conn: Connection, manager_id: str, hostname: str, pid: int, now: float) -> None:
    """Record a manager that starts (its first beat)."""
    conn.execute(
        MANAGERS.insert().values(id=manager_id, hostname=hostname, pid=pid, started_at=now, beat_at=now)
    )


def beat(conn: Connection, manager_id: str, now: float) -> bool:
    """Note that ``manager_id`` lives; False if its row is gone (the others found it dead)."""
    result = conn.execute(update(MANAGERS).where(MANAGERS.c.id == manager_id).values(beat_at=now))
    return bool(result.rowcount)


def managers(conn: Connection) -> list[tuple[str, str, int, float]]:
    """Every recorded manager: ``(id, hostname, pid, beat_at)``."""
    m = MANAGERS.c
    return [tuple(row) for row in conn.execute(select(m.id, m.hostname, m.pid, m.beat_at))]


def drop_managers(conn: Connection, manager_ids: Sequence[str]) -> list[Registration]:
    """Forget dead managers and delete the registrations their links kept; those."""
    if not manager_ids:
        return []
    c = REGISTRATIONS.c
    rows = conn.execute(
        delete(REGISTRATIONS)
        .where(c.holder.in_(list(manager_ids)), c.expires_at.is_(None))
        .returning(*REGISTRATIONS.c)
    )
    dropped = [registration_of(row)[0] for row in rows]
    conn.execute(delete(MANAGERS).where(MANAGERS.c.id.in_(list(manager_ids))))
    return dropped


def drop_orphans(conn: Connection, manager_id: str) -> list[Registration]:
    """Delete link-held rows whose holder is neither ``manager_id`` nor a recorded manager."""
    c = REGISTRATIONS.c
    rows = conn.execute(
        delete(REGISTRATIONS)
        .where(
            c.expires_at.is_(None),
            c.holder.is_not(None),
            c.holder != manager_id,
            c.holder.not_in(select(MANAGERS.c.id)),
        )
        .returning(*REGISTRATIONS.c)
    )
    return [registration_of(row)[0] for row in rows]


# -- notifications ----------------------------------------------------------------------


def notify(
    conn: Connection,
    origin: str,
    changed: Iterable[str] = (),
    renewed: Iterable[tuple[str, float]] = (),
    dead: Sequence[str] = (),
) -> None:
    """Tell the other managers (PostgreSQL; nothing on SQLite) what changed, at commit.

    ``changed``: ids whose row to read again (added, replaced or deleted); ``renewed``:
    ``(id, expires_at)`` pairs, applied as they are; ``dead``: the managers whose links'
    rows these deletions are (one of them may be alive after all, and write them back).
    Split into payloads under ``MAX_PAYLOAD_BYTES``; a payload is ``{"m": origin, "c":
    [ids], "r": [[id, exp]], "x": [manager ids]}``.
    """
    if conn.dialect.name != "postgresql":
        return
    for payload in payloads(origin, list(changed), list(renewed), list(dead)):
        conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload})


def payloads(
    origin: str, changed: list[str], renewed: list[tuple[str, float]], dead: list[str] | None = None
) -> list[str]:
    """The NOTIFY payloads of a change, each below ``MAX_PAYLOAD_BYTES`` (UTF-8)."""
    out: list[str] = []
    items: list[tuple[str, Any]] = [("c", id) for id in changed] + [("r", [id, e]) for id, e in renewed]
    base: dict[str, Any] = {"m": origin, "x": dead} if dead else {"m": origin}
    current: dict[str, Any] = {**base, "c": [], "r": []}
    size = len(json.dumps(current).encode())
    for kind, item in items:
        cost = len(json.dumps(item).encode()) + 2
        if size + cost > MAX_PAYLOAD_BYTES and (current["c"] or current["r"]):
            out.append(json.dumps(current, separators=(",", ":")))
            current = {**base, "c": [], "r": []}
            size = len(json.dumps(current).encode())
        current[kind].append(item)
        size += cost
    if current["c"] or current["r"]:
        out.append(json.dumps(current, separators=(",", ":")))
    return out


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), MAX_IDS_PER_STATEMENT):
        yield ids[start : start + MAX_IDS_PER_STATEMENT]
