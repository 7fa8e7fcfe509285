"""The rules of ``herder.agent.health.order``, on graphs: names, visibility, cycles, stop order."""

from __future__ import annotations

import pytest

from herder.agent.health.order import DependencyError, find_cycle, resolve, stop_first

KNOWN = {"shop.db": [], "shop.web": ["shop.db"], "blog.db": []}


def test_a_slug_or_a_node_of_the_same_app() -> None:
    assert resolve("shop.worker", "shop", ["db", "shop.web", "blog.db"], KNOWN) == [
        "shop.db",
        "shop.web",
        "blog.db",
    ]


def test_an_exact_slug_wins_over_a_node_of_the_same_app() -> None:
    known = {"blog.db": [], "shop.blog.db": []}
    assert resolve("shop.x", "shop", ["blog.db"], known) == ["blog.db"]


def test_what_the_creator_may_not_see_is_as_unknown_as_what_is_missing() -> None:
    mine = {"shop.db", "shop.web"}.__contains__
    with pytest.raises(DependencyError) as raised:
        resolve("shop.worker", "shop", ["blog.db"], KNOWN, mine)
    assert (
        str(raised.value)
        == "no process 'blog.db' to depend on (neither a slug here nor a node of app 'shop')"
    )
    assert raised.value.field == "depends_on"
    assert raised.value.status == 422
    assert resolve("shop.worker", "shop", ["db"], KNOWN, mine) == ["shop.db"]


def test_cycles_through_existing_processes() -> None:
    known = {"a.x": ["a.y"], "a.y": ["a.z"], "a.z": []}
    # a.z deleted and made again, depending on a.x: a.z -> a.x -> a.y -> a.z.
    del known["a.z"]
    with pytest.raises(DependencyError, match=r"a\.z -> a\.x -> a\.y -> a\.z"):
        resolve("a.z", "a", ["x"], known)
    assert find_cycle("a.q", {"a.q": ["a.q"]}) == ["a.q", "a.q"]
    assert find_cycle("a.q", {"a.q": ["a.x"], "a.x": []}) is None


def test_a_long_chain_needs_no_recursion() -> None:
    chain = {f"c.{i}": [f"c.{i + 1}"] for i in range(5000)}
    chain["c.5000"] = ["c.0"]
    cycle = find_cycle("c.0", chain)
    assert cycle is not None
    assert len(cycle) == 5002


def test_stop_first_is_dependants_and_breaks_a_recorded_cycle() -> None:
    graph = {"db": [], "web": ["db"], "worker": ["web", "db"], "x": ["y"], "y": ["x"], "z": ["x"]}
    first = stop_first(graph)
    assert first["db"] == ["web", "worker"]
    assert first["web"] == ["worker"]
    assert first["worker"] == []
    assert first["x"] == ["z"]  # z is outside the cycle: still first
    assert first["y"] == []  # x is on it: the order between x and y is dropped, not waited on
