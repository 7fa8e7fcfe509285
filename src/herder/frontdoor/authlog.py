"""Failed authentications, logged (who, from where, why) without letting a client flood the log.

Each failure is one line on the ``herder.auth`` logger::

    authentication failed: who=alice (claimed) from=10.0.0.7 why=expired (token expired 3 s ago)

An address gets ``lines_per_interval`` lines per ``interval_s``; past that its failures
are counted, not logged, and one summary line says how many there were when the
interval ends. The table of addresses is bounded too: past
``max_addresses`` the oldest entries go, so a client cycling through addresses costs
memory no more than it costs log lines.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

log = logging.getLogger("herder.auth")

_SHOWN = 64  # characters of anything a client chose, in a log line


def _clean(text: str, limit: int = _SHOWN) -> str:
    """A client's text, safe for one log line: printable ASCII, bounded."""
    kept = "".join(c if " " <= c < "\x7f" else "?" for c in text[:limit])
    return kept + ("..." if len(text) > limit else "")


def claimed_subject(credential: str) -> str | None:
    """Who a token (or key) says it is, without trusting it: its ``sub``, else its ``jti``.

    A refused token's claims are not verified; the line marks them "(claimed)".
    """
    parts = credential.split(".")
    if len(parts) != 3 or len(parts[1]) > 4096:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(payload, dict):
        return None
    for claim in ("sub", "jti"):
        value = payload.get(claim)
        if isinstance(value, str) and value:
            return value
    return None


class _Window:
    __slots__ = ("logged", "started", "suppressed")

    def __init__(self, started: float) -> None:
        self.started = started
        self.logged = 0
        self.suppressed = 0


class FailureLog:
    """Rate-limited lines about failed authentications, per client address."""

    def __init__(
        self,
        *,
        lines_per_interval: int = 10,
        interval_s: float = 60.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self.lines_per_interval = lines_per_interval
        self.interval_s = interval_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._log = logger
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def failed(self, *, who: str | None, address: str | None, why: str, detail: str = "") -> None:
        """Note one failure: logged, or counted when ``address`` is over its budget."""
        where = address or "unknown"
        now = self._clock()
        window = self._windows.get(where)
        if window is None or now - window.started >= self.interval_s:
            if window is not None:
                self._sum_up(where, window)
            window = _Window(now)
            self._windows[where] = window
            self._windows.move_to_end(where)
            while len(self._windows) > self.max_addresses:
                self._windows.popitem(last=False)
        if window.logged >= self.lines_per_interval:
            window.suppressed += 1
            if window.suppressed == 1:
                self._sum_up_later(where, window)
            return
        window.logged += 1
        self._log.warning(
            "authentication failed: who=%s from=%s why=%s%s%s",
            _clean(who) if who else "-",
            where,
            _clean(why),
            f" ({_clean(detail, 200)})" if detail else "",
            (
                f"; further failures from {where} are counted, not logged, for {self.interval_s:g} s"
                if window.logged == self.lines_per_interval
                else ""
            ),
        )

    def _sum_up_later(self, where: str, window: _Window) -> None:
        """The summary line when the interval ends (or, outside an event loop, at the
        address's next failure after it)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(0.0, window.started + self.interval_s - self._clock())
        loop.call_later(delay, self._sum_up, where, window)

    def _sum_up(self, where: str, window: _Window) -> None:
        if window.suppressed:
            self._log.warning(
                "authentication failed %d more times from=%s in %g s (not logged one by one)",
                window.suppressed,
                where,
                self.interval_s,
            )
            window.suppressed = 0
