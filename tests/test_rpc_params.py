"""Methods whose arguments are a pydantic model, and application errors that carry a code.

A real ``Service`` on loopback TCP and a real client: a call's positional arguments fill
the model's fields in order; arguments that do not validate are ``invalid_params`` naming
the field, before the handler runs; what the handler raises stays ``application_error``,
with the exception's ``code`` as ``type`` when it has one (STYLE.md pattern 5).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from herder.rpc import Method, Peer, RemoteError, Service, connect

WAIT_S = 10.0


class Move(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit: Annotated[int, Field(ge=1)]
    path: Annotated[list[tuple[int, int]], Field(max_length=3)]
    note: str | None = None


class Moved(BaseModel):
    unit: int
    steps: int
    warning: str | None = None


class Stuck(Exception):
    """An application error with a stable code, as the manager's errors have."""

    code = "stuck"
    field = "path"


class Numbered(Exception):
    """A ``code`` that is not a snake_case string is not an application code."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = 401


class Seen:
    def __init__(self) -> None:
        self.moves: list[Move] = []
        self.notified = asyncio.Queue[Move]()


def build(seen: Seen) -> Service:
    svc = Service("board", "1.0.0")

    @svc.method(auth=False, params=Move)
    async def move(call: Move) -> Moved:
        """Move a unit along a path."""
        seen.moves.append(call)
        if call.note == "stuck":
            raise Stuck("the unit cannot move there")
        if call.note == "numbered":
            raise Numbered("a code that is a number")
        if call.note == "inner":
            Move.model_validate({"unit": 0, "path": []})  # a ValidationError inside the handler
        if call.note == "type":
            raise TypeError("a type error inside the handler")
        return Moved(unit=call.unit, steps=len(call.path))

    @svc.method(auth=False, params=Move)
    def moved(call: Move) -> None:
        seen.notified.put_nowait(call)

    @svc.method(auth=False, params=Move, name="move_back")
    async def move_back(call: Move, caller: Peer) -> Any:
        """Ask the caller to move the unit (a client-side method with a model)."""
        if call.note == "bounce":  # an argument the caller's model does not know
            return await caller.call("move", call.unit, call.path, colour="red")
        return await caller.call("move", call.unit, call.path)

    return svc


@contextlib.asynccontextmanager
async def serving(seen: Seen) -> AsyncIterator[str]:
    """The board service on a loopback TCP port; its URL."""
    server = await asyncio.start_server(build(seen).serve_stream, "127.0.0.1", 0)
    try:
        yield f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def board() -> AsyncIterator[tuple[Peer, Seen]]:
    seen = Seen()
    async with serving(seen) as url, connect(url) as peer:
        yield peer, seen


async def test_positional_and_keyword_arguments_fill_the_model(board: tuple[Peer, Seen]) -> None:
    peer, seen = board
    assert await peer.call("move", 3, [[1, 2], [2, 2]]) == {"unit": 3, "steps": 2}  # None left out
    assert await peer.call("move", 4, path=[], note="hi") == {"unit": 4, "steps": 0}
    assert seen.moves[0] == Move(unit=3, path=[(1, 2), (2, 2)])
    assert seen.moves[1].note == "hi"


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ([0, []], {}, "unit"),  # out of range
        (["three", []], {}, "unit"),  # wrong type
        ([3, [[1, 2, 3]]], {}, "path.0"),  # a tuple too long
        ([3, [[1, 1]] * 4], {}, "path"),  # a list over its bound
        ([3], {}, "path"),  # missing
        ([3, []], {"colour": "red"}, "colour"),  # unknown
        ([3, []], {"unit": 4}, "unit"),  # given twice
    ],
)
async def test_arguments_that_do_not_validate_are_invalid_params_naming_the_field(
    board: tuple[Peer, Seen], args: list[Any], kwargs: dict[str, Any], field: str
) -> None:
    peer, seen = board
    with pytest.raises(RemoteError) as refused:
        await peer.call("move", *args, **kwargs)
    assert refused.value.code == "invalid_params"
    assert refused.value.data == {"field": field}
    assert refused.value.message.startswith("move(unit: int, path: list[tuple[int, int]], note: str | None)")
    assert field in refused.value.message
    assert seen.moves == []  # the handler never ran


async def test_too_many_arguments_are_invalid_params(board: tuple[Peer, Seen]) -> None:
    peer, _ = board
    with pytest.raises(RemoteError) as refused:
        await peer.call("move", 3, [], None, "extra")
    assert (refused.value.code, refused.value.data) == ("invalid_params", None)
    assert "at most 3 arguments" in refused.value.message


async def test_what_the_handler_raises_stays_an_application_error(board: tuple[Peer, Seen]) -> None:
    peer, _ = board
    with pytest.raises(RemoteError) as failed:
        await peer.call("move", 3, [], "inner")
    assert (failed.value.code, failed.value.type) == ("application_error", "ValidationError")
    with pytest.raises(RemoteError) as failed:
        await peer.call("move", 3, [], "type")
    assert (failed.value.code, failed.value.type) == ("application_error", "TypeError")


async def test_an_exceptions_code_goes_out_as_its_type(board: tuple[Peer, Seen]) -> None:
    peer, _ = board
    with pytest.raises(RemoteError) as failed:
        await peer.call("move", 3, [], "stuck")
    assert (failed.value.code, failed.value.type) == ("application_error", "stuck")
    assert failed.value.message == "the unit cannot move there"
    assert failed.value.data == {"field": "path"}
    with pytest.raises(RemoteError) as failed:
        await peer.call("move", 3, [], "numbered")
    assert (failed.value.code, failed.value.type) == ("application_error", "Numbered")
    assert failed.value.data is None


async def test_a_notification_that_does_not_validate_is_dropped(board: tuple[Peer, Seen]) -> None:
    peer, seen = board
    await peer.notify("moved", 0, [])
    await peer.notify("moved", 5, [[1, 1]])
    arrived = await asyncio.wait_for(seen.notified.get(), WAIT_S)
    assert arrived == Move(unit=5, path=[(1, 1)])  # the first one never reached the handler
    assert seen.notified.empty()
    assert await peer.call("ping", target="meta") == "pong"


async def test_meta_methods_describe_the_models_fields(board: tuple[Peer, Seen]) -> None:
    peer, _ = board
    methods = {m["name"]: m for m in await peer.call("methods", target="meta")}
    assert methods["move"] == {
        "name": "move",
        "params": "(unit: int, path: list[tuple[int, int]], note: str | None)",
        "auth": False,
        "doc": "Move a unit along a path.",
    }


async def test_a_clients_own_method_can_declare_a_model() -> None:
    mine: list[Move] = []

    def move(call: Move) -> Moved:
        mine.append(call)
        return Moved(unit=call.unit, steps=len(call.path), warning="slow")

    handlers = {"move": Method.of(move, params=Move)}
    async with serving(Seen()) as url, connect(url, handlers=handlers) as peer:
        answer = await peer.call("move_back", 7, [[0, 1]])
        assert answer == {"unit": 7, "steps": 1, "warning": "slow"}
        with pytest.raises(RemoteError) as refused:
            await peer.call("move_back", 7, [[0, 1]] * 3 + [[9, 9]])
        assert refused.value.code == "invalid_params"  # the service's own check, first
        with pytest.raises(RemoteError) as refused:  # the client refused the service's call
            await peer.call("move_back", 7, [[0, 1]], "bounce")
        assert (refused.value.code, refused.value.data) == ("invalid_params", {"field": "colour"})
    assert mine == [Move(unit=7, path=[(0, 1)])]
