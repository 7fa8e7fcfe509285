"""Group commit: requests that arrive while a batch is being written share the next one.

One transaction (and, on SQLite, one fsync-free WAL commit; on PostgreSQL, one round
trip per statement) then serves a hundred heartbeats or reports instead of one. No
timer decides when to write: a batch starts as soon as the previous one ended, so a
lone request waits for nothing, and under load batches grow by themselves to what
arrived during one write (bounded by ``max_batch``).

Each request gets its own answer, or its own exception (a fenced report fails alone;
the others of its batch are committed). A batch that fails as a whole because the
database was briefly unavailable, or because PostgreSQL chose it as a deadlock victim,
is retried a few times before its requests see the error.

The mechanics (who writes, how a batch's answers reach each request, cancellation) are
``herder.groupcommit``'s, shared with the agent's process records; what is the
database's own lives here: which failures pass, and how often they are tried again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from herder.groupcommit import ATTEMPTS, MAX_BATCH, GroupCommit

T = TypeVar("T")
R = TypeVar("R")

RETRIES = ATTEMPTS
RETRY_DELAY_S = 0.05
# PostgreSQL: serialization failure and deadlock detected: the transaction may simply run again.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def retryable(exc: BaseException) -> bool:
    """Whether a failed transaction may be run again unchanged."""
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError):
        state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return state in RETRYABLE_SQLSTATES
    return False


class Batcher(GroupCommit[T, R]):
    """Requests of one kind, written in batches by ``flush`` (one transaction each).

    ``flush`` gets the batch's requests and returns, in the same order, each one's
    answer or an exception instance to raise to that request alone. A batch that fails
    as a whole for a passing reason (``retryable``) is written again, ``RETRIES`` times
    in all.
    """

    def __init__(
        self,
        name: str,
        flush: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_batch: int = MAX_BATCH,
        writers: int = 1,
    ) -> None:
        super().__init__(
            name,
            flush,
            max_batch=max_batch,
            writers=writers,
            retryable=retryable,
            attempts=RETRIES,
            retry_delay_s=RETRY_DELAY_S,
        )
