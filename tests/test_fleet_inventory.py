"""The link's ``inventory`` (docs/protocol.md §19): the agent cuts its documents to the
contract, and the manager refuses an answer that does not fit it, naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from herder.fleet import (
    AGENT_METHODS,
    MAX_INVENTORY_PROCESSES,
    BadAnswer,
    Inventory,
    InventoryQuery,
    fit_inventory,
    read_answer,
)


def status(slug: str, **fields: Any) -> dict[str, Any]:
    """A process's status document, as the agent's ``status_document`` makes it (in part)."""
    return {
        "slug": slug,
        "app": "web",
        "node": "0",
        "state": "running",
        "restarts": 2,
        "pid": 42,
        "port": 5000,
        "uptime_s": 1.5,
        "cpu_percent": 3.0,
        "rss_bytes": 1 << 20,
        "command": ["python3", "-m", "http.server"],
        "env": {"TOKEN": "secret"},
        "details": "http://127.0.0.1:1/process-status/" + slug,
        **fields,
    }


def test_inventory_is_an_agents_method_with_no_arguments_and_a_checked_answer() -> None:
    assert AGENT_METHODS["inventory"] == (InventoryQuery, Inventory)
    assert InventoryQuery().as_args() == []


def test_the_agents_documents_are_cut_to_the_contract() -> None:
    processes = [status(f"web.{n}") for n in range(MAX_INVENTORY_PROCESSES + 5)]
    processes[0] = status("web.0", command=["x" * 1000] * 40, error="e" * 5000)
    pool = {
        "name": "site",
        "state": "ready",
        "url": "http://127.0.0.1:1/",
        "waiting": 0,
        "cold_starts": 3,
        "error": None,
        "spec": {"command": "serve"},
        "instances": [{"id": "site.1", "in_flight": 2}, {"id": "site.2", "in_flight": 1}],
    }
    session = {
        "id": "s1",
        "product": "testkit",
        "state": "open",
        "attached": True,
        "root": "/tmp/s1",
        "extensions": {},
    }
    inventory = fit_inventory(processes, [pool], [session], 10.0)
    assert len(inventory.processes) == MAX_INVENTORY_PROCESSES
    assert inventory.processes_total == MAX_INVENTORY_PROCESSES + 5
    first = inventory.processes[0]
    assert first.command is not None
    assert (len(first.command), len(first.command[0])) == (16, 256)
    assert first.error is not None
    assert len(first.error) == 1024
    document = inventory.model_dump(mode="json", exclude_none=True)
    assert "env" not in document["processes"][1]  # secrets stay on the agent
    assert "details" not in document["processes"][1]
    assert document["pools"] == [
        {
            "name": "site",
            "state": "ready",
            "url": "http://127.0.0.1:1/",
            "instances": 2,
            "in_flight": 3,
            "waiting": 0,
            "cold_starts": 3,
        }
    ]
    assert document["sessions"] == [
        {"id": "s1", "product": "testkit", "state": "open", "attached": True, "buffered": 0}
    ]
    # What the agent sends is what the manager reads back.
    assert read_answer(Inventory, document) == inventory


GOOD: dict[str, Any] = {
    "collected_at": 1.0,
    "processes": [{"slug": "web.0", "state": "running"}],
    "processes_total": 1,
    "pools": [],
    "pools_total": 0,
    "sessions": [],
    "sessions_total": 0,
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"processes": [{"slug": "web.0"}]}, "processes.0.state"),
        ({"processes": [{"slug": "s" * 256, "state": "running"}]}, "processes.0.slug"),
        ({"processes": [{"slug": "w", "state": "running", "port": 70000}]}, "processes.0.port"),
        ({"processes": [{"slug": "w", "state": "running", "command": ["a"] * 17}]}, "processes.0.command"),
        ({"processes": [{"slug": "w", "state": "running"}] * (MAX_INVENTORY_PROCESSES + 1)}, "processes"),
        ({"pools": [{"name": "p", "state": "ready", "in_flight": -1}]}, "pools.0.in_flight"),
        ({"sessions": [{"id": "s", "state": "open"}]}, "sessions.0.product"),
        ({"sessions_total": "many"}, "sessions_total"),
        ({"collected_at": -1}, "collected_at"),
    ],
)
def test_an_answer_that_does_not_fit_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(BadAnswer, match=rf"Inventory: {field}:"):
        read_answer(Inventory, {**GOOD, **change})


def test_keys_a_newer_agent_adds_are_ignored() -> None:
    newer = {**GOOD, "gpus": [1], "processes": [{"slug": "w", "state": "running", "gpu": 0}]}
    assert read_answer(Inventory, newer).processes[0].slug == "w"
