"""Restart delays and crash loops: how a process that keeps ending is paced and described.

The rule (``docs/agent.md``, "Crash loops"):

* every exit that calls for a restart is a failure. Failures count together until a run
  lasts ``crash_window_s``: each one doubles the delay from ``backoff_initial_s`` up to
  ``backoff_max_s``, however long its own run was. Counting runs and not a sliding span
  of wall time keeps a long delay from letting the count fall back to one.
* the one exception: the first failure after a run of at least ``stable_s`` restarts at
  once, so a long-lived process that crashes now and then is back without delay.
* ``crash_loop_after`` failures in a row are a crash loop, described for the status
  document and the pool (``"crash loop: exited 1 5 times in 20 s; last stderr: ..."``).

This is what Circus calls flapping and supervisord's ``startretries`` bounds; unlike
supervisord, herder keeps trying (with the delay at its maximum), because an app may be
waiting for something outside it to come back.
"""

from __future__ import annotations

import signal

from herder.agent.config import SupervisionConfig
from herder.agent.processes.logs import OutputLog, Stream

# A stderr line quoted in a status document is cut here: enough to read an error message,
# not enough to paste a traceback into every document.
MAX_QUOTED_CHARS = 300


def backoff_delay(config: SupervisionConfig, failures: int) -> float:
    """The delay before the next try after ``failures`` failures in a row (0 for none)."""
    if failures <= 0:
        return 0.0
    return float(min(config.backoff_initial_s * 2 ** (failures - 1), config.backoff_max_s))


def describe_exit(code: int) -> str:
    """``code 3`` or ``signal SIGKILL``: how an exit is named in notes and errors."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def last_output(output: OutputLog) -> str:
    """``"; last stderr: <line>"`` from the newest line the child wrote, or ``""``.

    The newest stderr line is what a crashing program usually says last; a program that
    writes nothing there is quoted from stdout instead (``last output``).
    """
    fallback = ""
    for stream, line in reversed(output.ring):
        if stream is Stream.HERDER or not line.strip():
            continue
        text = line.decode(errors="replace").strip()
        if len(text) > MAX_QUOTED_CHARS:
            text = text[:MAX_QUOTED_CHARS] + "..."
        if stream is Stream.STDERR:
            return f"; last stderr: {text}"
        if not fallback:
            fallback = f"; last output: {text}"
    return fallback


class CrashHistory:
    """The failures of one unit since its last run that outlived the window."""

    def __init__(self, config: SupervisionConfig) -> None:
        self._config = config
        self.failures = 0
        self._first_start = 0.0  # monotonic start of the first failed run counted
        self._codes: set[int] = set()
        self._last_code = 0

    def reset(self) -> None:
        """A run lasted the window: what came before no longer counts."""
        self.failures = 0
        self._codes.clear()

    def record(self, code: int, started: float, ended: float) -> float:
        """Count an exit with ``code`` of a run from ``started`` to ``ended`` (monotonic).

        Returns:
            The delay before the next start, in seconds.
        """
        uptime = ended - started
        if uptime >= self._config.crash_window_s:
            self.reset()
        if self.failures == 0:
            self._first_start = started
        self.failures += 1
        self._codes.add(code)
        self._last_code = code
        if self.failures == 1 and uptime >= self._config.stable_s:
            return 0.0
        return backoff_delay(self._config, self.failures)

    @property
    def in_loop(self) -> bool:
        return self.failures >= self._config.crash_loop_after

    def describe(self, now: float) -> str:
        """``crash loop: exited 1 5 times in 20 s`` (the caller adds the last line)."""
        span = now - self._first_start
        span_text = f"{span:.1f}" if span < 10 else f"{span:.0f}"
        code = self._last_code
        what = f"exited {code}" if code >= 0 else f"killed by {describe_exit(code)}"
        if len(self._codes) == 1:
            return f"crash loop: {what} {self.failures} times in {span_text} s"
        return f"crash loop: {self.failures} exits in {span_text} s, the last {what}"
