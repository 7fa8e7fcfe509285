"""The manager's lifecycle tables (``herder.manager.states``), checked as tables."""

from __future__ import annotations

import itertools
import json
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from herder.manager import states
from herder.manager.errors import ManagerError, TransitionError
from herder.manager.models import TaskUpdate
from herder.manager.states import (
    ACTIVE,
    ITEM_TRANSITIONS,
    TASK_TRANSITIONS,
    TERMINAL,
    ItemEvent,
    ItemStatus,
    TaskEvent,
    TaskStatus,
    apply,
    derive_status,
    diagram,
    may_move,
    sources,
    target,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "manager.md"
TABLES: list[Any] = [ITEM_TRANSITIONS, TASK_TRANSITIONS]


def reachable(table: Mapping[Any, Mapping[Any, Any]], start: Any) -> set[Any]:
    seen, todo = {start}, [start]
    while todo:
        for to in table[todo.pop()].values():
            if to not in seen:
                seen.add(to)
                todo.append(to)
    return seen


@pytest.mark.parametrize("table", TABLES, ids=["item", "task"])
def test_every_status_has_a_row_and_is_reachable_from_queued(table: Any) -> None:
    statuses = type(next(iter(table)))
    assert list(table) == list(statuses)
    assert reachable(table, statuses("queued")) == set(statuses)


@pytest.mark.parametrize("table", TABLES, ids=["item", "task"])
def test_terminal_statuses_have_no_exits_and_every_other_status_can_end(table: Any) -> None:
    ends = {status for status, edges in table.items() if not edges}
    assert {str(s) for s in ends} == {"completed", "failed", "canceled"} == {str(s) for s in TERMINAL}
    for status in table:
        assert reachable(table, status) & ends, status


def test_active_items_are_those_a_worker_holds() -> None:
    assert ACTIVE == (ItemStatus.ASSIGNED, ItemStatus.RUNNING)
    for status in ACTIVE:  # whatever a worker reports, an active item can take it
        assert set(ITEM_TRANSITIONS[status]) >= {ItemEvent.START, ItemEvent.SUCCEED, ItemEvent.FAIL}


def test_apply_follows_the_table() -> None:
    assert apply(ItemStatus.QUEUED, ItemEvent.CLAIM) is ItemStatus.ASSIGNED
    assert apply(ItemStatus.RUNNING, ItemEvent.REQUEUE) is ItemStatus.QUEUED
    assert apply(TaskStatus.PAUSED, TaskEvent.WORK_RUNNING) is TaskStatus.RENDERING
    for table in TABLES:
        for status, edges in table.items():
            for event, to in edges.items():
                assert apply(status, event) is to
                assert may_move(status, event)


def test_apply_refuses_an_illegal_move_naming_the_status_and_the_event() -> None:
    with pytest.raises(TransitionError, match="event 'claim' is not allowed in status 'running'") as caught:
        apply(ItemStatus.RUNNING, ItemEvent.CLAIM)
    assert (caught.value.status, caught.value.event) == (ItemStatus.RUNNING, ItemEvent.CLAIM)
    assert isinstance(caught.value, ManagerError)
    assert caught.value.code == "illegal_transition"
    with pytest.raises(TransitionError, match="event 'cancel' is not allowed in status 'completed'"):
        apply(TaskStatus.COMPLETED, TaskEvent.CANCEL)
    assert not may_move(ItemStatus.CANCELED, ItemEvent.START)
    assert not may_move("no-such-status", ItemEvent.START)


def test_an_item_event_leads_to_one_status_from_wherever_it_happens() -> None:
    for event in ItemEvent:
        assert sources(event), event
        assert {ITEM_TRANSITIONS[s][event] for s in sources(event)} == {target(event)}
    assert sources(ItemEvent.CLAIM) == (ItemStatus.QUEUED,)
    assert sources(ItemEvent.START) == ACTIVE
    assert set(sources(ItemEvent.CANCEL)) == set(ItemStatus) - set(TERMINAL)


def test_statuses_are_their_wire_strings() -> None:
    assert json.dumps({"status": TaskStatus.RENDERING}) == '{"status": "rendering"}'
    assert ItemStatus.QUEUED == "queued"
    assert {str(s) for s in TaskStatus} >= {str(s) for s in ItemStatus} - {"running"}
    # PATCH /tasks/{id} takes statuses by name: each of them is one
    status_field = TaskUpdate.model_fields["status"].annotation
    (literal, _none) = typing.get_args(status_field)
    assert set(typing.get_args(literal)) <= {s.value for s in TaskStatus}


def _counts() -> list[dict[str, int]]:
    """Every mix of zero or one item in each status (and a few of two)."""
    mixes = [
        {str(status): n for status, n in zip(ItemStatus, ns, strict=True) if n}
        for ns in itertools.product((0, 1), repeat=len(ItemStatus))
    ]
    return [*mixes, {"completed": 2}, {"running": 2, "queued": 1}]


def test_every_change_the_derivation_makes_is_in_the_task_table() -> None:
    """From any status that is not final, whatever its items now say, the derived status is
    the same or one the table allows; a final status derives to itself."""
    moves: set[tuple[TaskStatus, TaskStatus]] = set()
    for counts, paused in itertools.product(_counts(), (False, True)):
        for before in TaskStatus:
            canceled = before == TaskStatus.CANCELED
            after = derive_status(counts, paused=paused, canceled=canceled)
            if before in TERMINAL:
                if before == TaskStatus.FAILED and counts.get("failed") and not canceled:
                    assert after == before
                continue
            if after != before:
                assert after in TASK_TRANSITIONS[before].values(), (before, counts, paused, after)
                moves.add((before, after))
    # and a user's cancel is the one way into canceled
    assert all(after != TaskStatus.CANCELED for _, after in moves)


def test_derive_status_rules_in_order() -> None:
    assert derive_status({}, paused=False, canceled=False) == TaskStatus.QUEUED
    assert derive_status({"failed": 1, "completed": 3}, paused=True, canceled=False) == TaskStatus.FAILED
    assert derive_status({"completed": 2}, paused=True, canceled=False) == TaskStatus.COMPLETED
    assert derive_status({"running": 1}, paused=True, canceled=False) == TaskStatus.PAUSED
    assert derive_status({"running": 1, "assigned": 1}, paused=False, canceled=False) == TaskStatus.RENDERING
    assert derive_status({"assigned": 1, "queued": 1}, paused=False, canceled=False) == TaskStatus.ASSIGNED
    assert derive_status({"failed": 1}, paused=False, canceled=True) == TaskStatus.CANCELED


def test_the_statements_that_move_items_are_built_from_the_table() -> None:
    """The compare-and-set statements of ``store.batch`` say what the table says."""
    from herder.manager.store import batch

    for event in ItemEvent:
        condition = str(batch.allows(event).compile(compile_kwargs={"literal_binds": True}))
        assert set(re.findall(r"'(\w+)'", condition)) == {str(s) for s in sources(event)}, event
    # the two statements that move tasks without deriving them: a claim, a start
    assert {apply(s, TaskEvent.WORK_ASSIGNED) for s in batch._ASSIGNED_FROM} == {TaskStatus.ASSIGNED}
    assert {apply(s, TaskEvent.WORK_RUNNING) for s in batch._RENDERING_FROM} == {TaskStatus.RENDERING}


@pytest.mark.parametrize(("table", "title"), [(ITEM_TRANSITIONS, "work item"), (TASK_TRANSITIONS, "task")])
def test_docs_show_the_diagram_rendered_from_the_table(table: Any, title: str) -> None:
    rendered = diagram(table)
    assert rendered.startswith("```mermaid\nstateDiagram-v2\n    [*] --> queued\n")
    for status, edges in table.items():
        for event, to in edges.items():
            assert f"    {status} --> {to}: {event}\n" in rendered
    assert rendered in DOCS.read_text(), (
        f"docs/manager.md must show the {title} lifecycle as herder.manager.states.diagram renders it:\n"
        f"{rendered}"
    )


def test_the_module_exports_what_it_documents() -> None:
    assert set(states.__all__) <= set(dir(states))
