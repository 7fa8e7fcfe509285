"""Schedules (#18): tasks the manager submits by itself, on a cron expression or an interval.

| module | its one job |
|---|---|
| ``timing.py`` | when runs fall: cron expressions (``cronsim``) in an IANA zone, intervals |
| ``models.py`` | the request bodies and answer documents of ``/schedules`` |
| ``tables.py`` | the ``schedules`` and ``schedule_runs`` tables |
| ``store.py`` | reading and changing schedules; firing a run (claim and tasks in one transaction) |
| ``firing.py`` | ``Scheduler``, the manager's component that fires the due runs |
| ``routes.py`` | ``POST/GET /schedules``, ``GET/PATCH/DELETE /schedules/{id}`` |

docs/schedules.md says what a user sees.
"""

from __future__ import annotations

from herder.manager.schedules.firing import Scheduler

__all__ = ["Scheduler"]
