"""The lifecycle of a supervised process, as one table.

Rules (the docs diagram in ``docs/architecture.md`` is generated from ``TRANSITIONS``):

* ``fetching``: the app's source is being downloaded and unpacked. Commands given
  directly skip this state.
* ``building``: the app declares dependencies and its build is being made (or another
  process's build of the same app is awaited). A failed build is final (``failed``).
* ``starting``: the source is ready; the agent is spawning the command.
* ``running``: the process is alive (it has a pid).
* ``backoff``: the process ended (or a transient fetch failed) and will be tried again
  after a delay that grows with quick failures and resets after a stable run.
* ``stopping``: a delete, an operator's stop or the agent's shutdown is stopping it
  (SIGTERM, grace, SIGKILL).
* ``exited``: it ended and its restart policy says not to start it again, or it was
  stopped. Terminal until deleted.
* ``failed``: it cannot run (no Procfile, unknown process type, unsafe archive, a failed
  build, a command that cannot be spawned). Terminal until deleted; ``error`` says why.
* ``stopped``: an operator stopped it (``POST /stop-process``). Nothing of it runs and
  nothing starts it again, not even an agent restart (the record says so), until an
  operator starts it (``POST /start-process`` or ``/restart-process``).

Any state may go to ``stopping``; ``stopping`` ends in ``exited`` (deleted, or the agent
stops) or in ``stopped`` (an operator's stop). ``stopped`` is left only by a start.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class State(enum.StrEnum):
    """Where a supervised process is in its lifecycle (the ``state`` field on the wire)."""

    FETCHING = "fetching"
    BUILDING = "building"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    EXITED = "exited"
    FAILED = "failed"
    STOPPED = "stopped"


class Event(enum.StrEnum):
    """What happened to a supervised process."""

    FETCHED = "fetched"  # source ready, command known
    FETCH_RETRY = "fetch_retry"  # a transient fetch failure: try again later
    BUILD = "build"  # the app declares dependencies: build it (or wait for its build)
    BUILT = "built"  # the build is ready, command known
    SPAWNED = "spawned"  # the process has a pid
    CRASHED = "crashed"  # it ended and will be started again
    FINISHED = "finished"  # it ended and its policy says to leave it
    RETRY = "retry"  # the backoff delay is over: start (or fetch) again
    REFETCH = "refetch"  # the backoff delay is over and the source must be fetched again
    FAILED = "failed"  # it cannot run
    STOP = "stop"  # delete, shutdown or an operator's stop asked it to stop
    STOPPED = "stopped"  # nothing of it runs any more
    HALTED = "halted"  # an operator's stop is over: nothing of it runs, and it stays so
    START = "start"  # an operator started a stopped command again
    START_APP = "start_app"  # an operator started a stopped app again: its source first


class TransitionError(Exception):
    """An event arrived in a state where it makes no sense: a bug in the supervisor."""

    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"event {event.value!r} is not allowed in state {state.value!r}")
        self.state = state
        self.event = event


_ALIVE = (State.FETCHING, State.BUILDING, State.STARTING, State.RUNNING, State.BACKOFF)

TRANSITIONS: Mapping[State, Mapping[Event, State]] = {
    State.FETCHING: {
        Event.FETCHED: State.STARTING,
        Event.FETCH_RETRY: State.BACKOFF,
        Event.BUILD: State.BUILDING,
        Event.FAILED: State.FAILED,
        Event.STOP: State.STOPPING,
    },
    State.BUILDING: {
        Event.BUILT: State.STARTING,
        Event.FAILED: State.FAILED,
        Event.STOP: State.STOPPING,
    },
    State.STARTING: {
        Event.SPAWNED: State.RUNNING,
        Event.FAILED: State.FAILED,
        Event.STOP: State.STOPPING,
    },
    State.RUNNING: {
        Event.CRASHED: State.BACKOFF,
        Event.FINISHED: State.EXITED,
        Event.STOP: State.STOPPING,
    },
    State.BACKOFF: {
        Event.RETRY: State.STARTING,
        Event.REFETCH: State.FETCHING,
        Event.STOP: State.STOPPING,
    },
    State.STOPPING: {
        Event.STOPPED: State.EXITED,
        Event.HALTED: State.STOPPED,
    },
    State.EXITED: {
        Event.STOP: State.STOPPING,
    },
    State.FAILED: {
        Event.STOP: State.STOPPING,
    },
    State.STOPPED: {
        Event.START: State.STARTING,
        Event.START_APP: State.FETCHING,
        Event.STOP: State.STOPPING,
    },
}


def apply(state: State, event: Event) -> State:
    """Return the state that ``event`` leads to from ``state``.

    Raises:
        TransitionError: the table has no such edge; the caller has a bug.
    """
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise TransitionError(state, event) from None


def is_alive(state: State) -> bool:
    """True while the supervisor still works on the process (it may run, or soon will)."""
    return state in _ALIVE
