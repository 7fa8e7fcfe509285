"""Process records: atomic files, group commit, and what a restart reads back."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from herder.agent.models import ProcessSpec
from herder.agent.processes.store import GroupCommit, RecordStore


def spec(node: str, created_at: float | None = None) -> ProcessSpec:
    return ProcessSpec(app="s", node=node, command=["true"], created_at=created_at or time.time())


def test_save_load_remove(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    first, second = spec("a.0", 1.0), spec("b.0", 2.0)
    store.save(lambda: second, lambda: first, lambda: None)
    assert [s.slug for s in store.load_all()] == ["s.a.0", "s.b.0"]  # oldest first
    store.remove("s.a.0")
    assert [s.slug for s in store.load_all()] == ["s.b.0"]
    assert not list(tmp_path.glob("*.tmp"))


def test_unreadable_record_is_moved_aside(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.save(lambda: spec("ok.0"))
    (tmp_path / "s.bad.0.json").write_text("{not json")
    assert [s.slug for s in store.load_all()] == ["s.ok.0"]
    assert (tmp_path / "s.bad.0.bad").exists()


async def test_group_commit_batches_concurrent_saves(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    batches: list[int] = []
    original = store.save

    def counting_save(*current):  # type: ignore[no-untyped-def]
        batches.append(len(current))
        original(*current)

    store.save = counting_save  # type: ignore[method-assign]
    commit = GroupCommit(store)
    specs = [spec(f"n.{i}") for i in range(50)]
    await asyncio.gather(*(commit.save(s.slug, lambda s=s: s) for s in specs))
    assert sum(batches) == 50
    assert len(batches) < 50  # the first write's wait gathered the others
    assert len(store.load_all()) == 50


async def test_group_commit_reports_a_failed_write(tmp_path: Path) -> None:
    records = tmp_path / "records"
    store = RecordStore(records)
    commit = GroupCommit(store)
    records.rmdir()
    records.write_text("a file where the records directory was")  # every write now fails
    with pytest.raises(NotADirectoryError):
        await commit.save("x", lambda: spec("x.0"))
    # The failure is reported, not remembered: a later save into a good directory works.
    records.unlink()
    records.mkdir()
    await commit.save("y", lambda: spec("y.0"))
    assert [s.slug for s in store.load_all()] == ["s.y.0"]


async def test_group_commit_writes_later_saves_when_the_writer_is_cancelled(tmp_path: Path) -> None:
    """A save that arrived while a cancelled caller was writing is written all the same."""
    store = RecordStore(tmp_path)
    entered, gate = threading.Event(), threading.Event()
    original = store.save

    def held_save(*current):  # type: ignore[no-untyped-def]
        entered.set()
        gate.wait(30)
        original(*current)

    store.save = held_save  # type: ignore[method-assign]
    commit = GroupCommit(store)
    writer = asyncio.ensure_future(commit.save("a", lambda: spec("a.0")))
    await asyncio.to_thread(entered.wait, 30)
    later = asyncio.ensure_future(commit.save("b", lambda: spec("b.0")))
    await asyncio.sleep(0)  # ``later`` is queued behind the write in flight
    writer.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await writer
    await asyncio.wait_for(later, 10)
    assert sorted(s.slug for s in store.load_all()) == ["s.a.0", "s.b.0"]


def test_a_batch_is_written_at_once_and_its_failure_reported(tmp_path: Path) -> None:
    """A batch's records are written from several threads: all of them land, and a
    failure is raised to the caller (once every write of the batch has ended)."""
    records = tmp_path / "records"
    store = RecordStore(records)
    specs = [spec(f"n.{i}", float(i + 1)) for i in range(12)]
    store.save(*(lambda s=s: s for s in specs))
    assert [s.slug for s in store.load_all()] == [s.slug for s in specs]
    assert not list(records.glob(".*.tmp"))
    for path in records.iterdir():
        path.unlink()
    records.rmdir()
    records.write_text("a file where the records directory was")
    with pytest.raises(NotADirectoryError):
        store.save(*(lambda s=s: s for s in specs[:3]))
