"""The manager's exception tree (``herder.manager.errors``): one base, stable codes."""

from __future__ import annotations

import json
import pickle
import re

import pytest

from herder.auth import TokenError
from herder.manager import errors
from herder.manager.api import answer_of
from herder.manager.errors import (
    Conflict,
    FencedOut,
    InvalidTask,
    ManagerError,
    NotFound,
    NotIssued,
    TargetRefused,
    TaskTypeError,
)


def every_error() -> list[type[ManagerError]]:
    found, todo = [], [ManagerError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_error_is_exported_and_has_a_snake_case_code_and_a_status() -> None:
    classes = [cls for cls in every_error() if cls.__module__ == errors.__name__]
    assert {cls.__name__ for cls in classes} == set(errors.__all__)
    for cls in classes:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", cls.code), cls
        assert 400 <= cls.http_status < 600, cls
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} is missing from the hierarchy"
    codes = [cls.code for cls in classes if cls is not TaskTypeError]  # the plugins' name for InvalidTask
    assert len(codes) == len(set(codes))


def test_the_old_homes_still_export_the_old_names() -> None:
    from herder.manager.authority import NotIssued as old_not_issued
    from herder.manager.authority import UnknownDatabase
    from herder.manager.server import ManagerError as old_manager_error
    from herder.manager.store.batch import FencedOut as old_fenced_out
    from herder.manager.store.db import DatabaseError
    from herder.manager.store.queries import NotFound as old_not_found
    from herder.manager.targets import TargetRefused as old_target_refused
    from herder.manager.tasktypes import TaskTypeError as old_task_type_error

    assert old_manager_error is ManagerError
    assert (old_not_found, old_fenced_out, old_target_refused) == (NotFound, FencedOut, TargetRefused)
    assert (old_not_issued, old_task_type_error) == (NotIssued, TaskTypeError)
    assert issubclass(DatabaseError, ManagerError)
    assert issubclass(UnknownDatabase, ManagerError)


def test_the_builtin_bases_callers_catch_are_kept() -> None:
    assert issubclass(NotFound, LookupError)
    assert issubclass(InvalidTask, ValueError)
    assert issubclass(TargetRefused, ValueError)
    assert issubclass(NotIssued, TokenError)
    assert NotIssued.reason == NotIssued.code
    assert issubclass(FencedOut, Conflict)


@pytest.mark.parametrize(
    ("error", "document", "status"),
    [
        (
            NotFound("no task with id 7"),
            {"error": "not_found", "message": "no task with id 7", "field": "id"},
            404,
        ),
        (
            FencedOut("attempt 1 of work item 3 is no longer held by worker 2"),
            {
                "error": "fenced",
                "message": "attempt 1 of work item 3 is no longer held by worker 2",
                "field": "attempt",
            },
            409,
        ),
        (
            Conflict("task 1 is completed: it cannot change"),
            {"error": "conflict", "message": "task 1 is completed: it cannot change", "field": "status"},
            409,
        ),
        (
            TaskTypeError("settings.cwd", "must not be empty"),
            {"error": "invalid", "message": "settings.cwd: must not be empty", "field": "settings.cwd"},
            422,
        ),
    ],
)
def test_the_http_answer_is_the_one_error_document(
    error: ManagerError, document: dict[str, str], status: int
) -> None:
    answer = answer_of(error)
    assert answer.status_code == status
    assert json.loads(bytes(answer.body)) == document


def test_an_invalid_task_survives_pickling_with_its_field() -> None:
    copy = pickle.loads(
        pickle.dumps(TaskTypeError("settings.frame_end", "must be >= frame_start (10), got 5"))
    )
    assert isinstance(copy, TaskTypeError)
    assert (copy.field, copy.message) == ("settings.frame_end", "must be >= frame_start (10), got 5")
