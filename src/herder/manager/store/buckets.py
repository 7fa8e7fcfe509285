"""Lists bound to expanding parameters, padded to a few lengths: fewer distinct statements.

An expanding parameter (``IN (...)``) is rendered with one placeholder per value, so every
length of list makes a statement of its own text. PostgreSQL's driver (asyncpg, through
SQLAlchemy) prepares each distinct text once per connection, in a round trip of its own
(parse and plan on the server too), and keeps the last 100 per connection: a round's
list-bound statements, at every batch size from 1 to hundreds, made 445 prepares in a
``--quick`` run of benchmark 9 (1,000 tasks, then 500 submissions), one more round trip
each time. Padded to the next power of two by repeating the last value (``IN``
matches a set: the same rows), a statement has at most ten texts up to a batch of 512
(``groupcommit.MAX_BATCH``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def padded(values: Sequence[T]) -> list[T]:
    """``values`` with its last one repeated up to the next power of two in length."""
    n = len(values)
    if n <= 2:
        return list(values)
    size = 1 << (n - 1).bit_length()
    return [*values, *([values[-1]] * (size - n))]


__all__ = ["padded"]
