"""The process lifecycle table: every state reachable, errors named, stop always possible."""

from __future__ import annotations

import pytest

from herder.agent.processes.states import TRANSITIONS, Event, State, TransitionError, apply, is_alive


def test_every_state_is_reachable_from_the_start() -> None:
    seen = {State.FETCHING, State.STARTING}
    frontier = list(seen)
    while frontier:
        state = frontier.pop()
        for target in TRANSITIONS[state].values():
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(State)


def test_stop_is_possible_from_every_state_but_stopping() -> None:
    for state in State:
        if state is State.STOPPING:
            assert apply(state, Event.STOPPED) is State.EXITED
        else:
            assert apply(state, Event.STOP) is State.STOPPING


def test_a_bad_event_names_state_and_event() -> None:
    with pytest.raises(TransitionError, match="'spawned' is not allowed in state 'exited'"):
        apply(State.EXITED, Event.SPAWNED)


def test_alive_states() -> None:
    assert {s for s in State if is_alive(s)} == {
        State.FETCHING,
        State.BUILDING,
        State.STARTING,
        State.RUNNING,
        State.BACKOFF,
    }
