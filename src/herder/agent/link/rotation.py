"""Which manager the link tries next, and when: one backoff per manager URL.

An agent may name several managers that share one PostgreSQL (``[manager] urls``). It
links to one of them; when that link is lost it moves on to the next in the list at
once, unless that one failed recently too, in which case it waits out that URL's own
backoff. Each URL backs off on its own (doubling from ``BACKOFF_INITIAL_S`` up to
``BACKOFF_MAX_S``): a dead manager is not hammered, and a live one is never made to
wait for a dead one's backoff.

The first URL tried is picked at random, and the rest follow in the list's order: many
agents with one list spread over the managers instead of all piling onto the first one
(which would leave the others idle until it dies). With one URL this is the link's
backoff as it always was.

No I/O and no clock of its own: the caller passes monotonic times in and sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 10.0


class Rotation:
    """The manager URLs in turn, each with its backoff."""

    def __init__(self, urls: Sequence[str], *, start: int | None = None) -> None:
        """``start``: the index tried first; None picks one at random (spreads agents)."""
        if not urls:
            raise ValueError("no manager URL")
        self.urls = list(urls)
        self._at = random.randrange(len(self.urls)) if start is None else start % len(self.urls)
        self._delay = dict.fromkeys(self.urls, BACKOFF_INITIAL_S)
        self._not_before = dict.fromkeys(self.urls, 0.0)

    @property
    def current(self) -> str:
        """The URL to link to now (once ``wait_s`` has passed)."""
        return self.urls[self._at]

    def wait_s(self, now: float) -> float:
        """How long to wait before trying ``current`` (its backoff after its last failure)."""
        return max(0.0, self._not_before[self.current] - now)

    def ended_cleanly(self) -> None:
        """The link to ``current`` ended on purpose (a token to renew): at it again, at once."""
        self._delay[self.current] = BACKOFF_INITIAL_S
        self._not_before[self.current] = 0.0

    def failed(self, now: float, up_for: float) -> str:
        """The link to ``current`` failed or was lost after ``up_for`` seconds; the next URL.

        A link that was up for longer than the longest backoff starts its URL's backoff
        again from the shortest: it was a manager that worked.
        """
        url = self.current
        if up_for > BACKOFF_MAX_S:
            self._delay[url] = BACKOFF_INITIAL_S
        self._not_before[url] = now + self._delay[url]
        self._delay[url] = min(self._delay[url] * 2, BACKOFF_MAX_S)
        self._at = (self._at + 1) % len(self.urls)
        return self.current


__all__ = ["BACKOFF_INITIAL_S", "BACKOFF_MAX_S", "Rotation"]
