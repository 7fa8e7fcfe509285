"""The health checks of one run of a process: repeated, recorded, and the verdict.

A ``Monitor`` lives as long as one run (the supervisor starts it after the spawn and
cancels it when the run ends). It waits ``grace_s``, then checks every ``interval_s``
(from one check's start to the next: a slow check does not shift the rhythm, and two
checks of one process never overlap). Each result goes into the unit's ``HealthState``
(the status document's ``health``); ``run()`` returns once ``failures`` checks in a row
failed, and the supervisor then restarts the process.

Cost: one task per checked process, sleeping on the loop's timers between checks; an
http or tcp check is one loopback connection; command checks are bounded by a
semaphore shared by the agent (``MAX_COMMAND_CHECKS``), so a thousand checked processes
never fork a thousand checks at once.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from herder.agent.health import probes
from herder.agent.health.models import CheckType, HealthCheck
from herder.agent.limits import ChildSetup

# Command checks running at once, agent-wide: each is a fork and an exec; more would
# compete with the processes they check on a small host.
MAX_COMMAND_CHECKS = 4


class Health(enum.StrEnum):
    """The ``health.status`` of a running, checked process."""

    STARTING = "starting"  # no check has passed since it started
    PASSING = "passing"
    FAILING = "failing"  # the last check failed (fewer than ``failures`` in a row so far)


@dataclass(slots=True)
class HealthState:
    """What the status document shows of a checked process's health.

    ``status`` is None while nothing runs; ``last_check_at`` and ``last_error`` outlive
    a restart (they say why it was restarted), ``failures`` counts from each start.
    """

    status: Health | None = None
    failures: int = 0
    last_check_at: float | None = None
    last_error: str | None = None

    def started(self) -> None:
        self.status = Health.STARTING
        self.failures = 0

    def ended(self) -> None:
        self.status = None

    def document(self) -> dict[str, Any]:
        return {
            "status": None if self.status is None else self.status.value,
            "failures": self.failures,
            "last_check_at": self.last_check_at,
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class Target:
    """Where one run of the process is: what a check needs of it."""

    port: int | None
    env: Mapping[str, str]
    cwd: str
    shell: Callable[[str], list[str]]  # a string command's argv (as the process's own is run)
    setup: ChildSetup | None = None  # the process's user, umask and rlimits: a check's too


class Monitor:
    """The checks of one run; ``run()`` returns why the process is unhealthy."""

    def __init__(
        self,
        check: HealthCheck,
        state: HealthState,
        target: Target,
        *,
        command_slots: asyncio.Semaphore,
        on_change: Callable[[], None],
    ) -> None:
        self._check = check
        self._state = state
        self._target = target
        self._slots = command_slots
        self._on_change = on_change

    async def run(self) -> str:
        """Check until ``failures`` checks in a row fail; return the last one's error.

        Never returns while the process is healthy: the supervisor cancels it when the
        run ends. A bug in a probe raises (the supervisor shows it as an internal error).
        """
        check = self._check
        await asyncio.sleep(check.grace_s)
        while True:
            began = time.monotonic()
            error = await self.check_once()
            if self._record(error):
                return f"{error} ({self._state.failures} checks in a row)"
            await asyncio.sleep(max(0.0, began + check.interval_s - time.monotonic()))

    async def check_once(self) -> str | None:
        """One check now: None if it passed, else why not."""
        check, target = self._check, self._target
        if check.type is CheckType.COMMAND:
            return await self._run_command()
        assert target.port is not None, "refused at create: an http or tcp check needs a port"
        if check.type is CheckType.TCP:
            return await probes.check_tcp(target.port, check.timeout_s)
        return await probes.check_http(target.port, check.http_path, check.timeout_s)

    async def _run_command(self) -> str | None:
        command = self._check.command
        assert command is not None
        argv: Sequence[str] = self._target.shell(command) if isinstance(command, str) else command
        # The timeout is the command's own: time queued behind other checks is not its fault.
        async with self._slots:
            return await probes.check_command(
                argv,
                env=self._target.env,
                cwd=self._target.cwd,
                timeout_s=self._check.timeout_s,
                setup=self._target.setup,
            )

    def _record(self, error: str | None) -> bool:
        """Keep the result; True once it is the ``failures``-th failure in a row."""
        state = self._state
        before = state.status
        state.last_check_at = time.time()
        if error is None:
            state.status, state.failures = Health.PASSING, 0
        else:
            state.status, state.failures, state.last_error = Health.FAILING, state.failures + 1, error
        if state.status is not before:
            self._on_change()  # dependants wait for "passing"; the events stream shows it
        return state.failures >= self._check.failures
