"""#12 §5: an archive over the entry limit is refused before anything is written.

An archive of 100,000 tiny files (840 KB as a .tar.gz) cost ~400 MB of disk and ~100 s
of I/O before it was refused: the count was checked as each member was written, so the
refusal came after the limit's worth of files. Now the members are counted (and their
sizes summed) from the zip's central directory, or from the tar's headers read ahead
without writing, and the archive is refused before its first file is written.

The writes are counted by the kernel (``syscw`` in ``/proc/self/io``: write system calls
of this process), so that a refusal that wrote and then removed its files still shows.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from herder.agent.apps.archive import unpack
from herder.agent.config import UnpackConfig
from herder.agent.errors import UnsafeArchive
from tests.conftest import AgentFactory
from tests.fixtures.apps.appkit import Member, app_members, tar_bytes, write, zip_bytes
from tests.helpers import wait_http

LIMIT = 500
MEMBERS = 4 * LIMIT


def _members() -> list[Member]:
    return [*app_members(), *(Member(f"d{i // 100}/f{i}", b"tiny\n") for i in range(MEMBERS))]


def _archive(kind: str) -> bytes:
    if kind == "zip":
        return zip_bytes(_members())
    return tar_bytes(_members(), compression=kind.removeprefix("tar").lstrip("."))


def _write_calls() -> int:
    with open("/proc/self/io") as fh:
        fields = dict(line.split(": ") for line in fh.read().splitlines())
    return int(fields["syscw"])


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_too_many_entries_are_refused_before_writing(tmp_path: Path, kind: str) -> None:
    archive = write(tmp_path / "in" / f"many.{kind}", _archive(kind))
    target = tmp_path / "out" / "app"
    writes = _write_calls()
    started = time.monotonic()
    with pytest.raises(UnsafeArchive, match=rf"more than {LIMIT} entries .*unpack\.max_files"):
        unpack(archive, target, UnpackConfig(max_files=LIMIT))
    elapsed = time.monotonic() - started
    written = _write_calls() - writes
    assert written < LIMIT // 10, f"{written} write calls before the refusal"
    assert not target.exists()
    assert elapsed < 1.0


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_too_many_bytes_are_refused_before_writing(tmp_path: Path, kind: str) -> None:
    # Sizes too: 2,000 files of 1 KiB against a limit of 500 KiB.
    members = [Member(f"d{i // 100}/f{i}", bytes(1024)) for i in range(MEMBERS)]
    data = zip_bytes(members) if kind == "zip" else tar_bytes(members, compression="gz")
    archive = write(tmp_path / "in" / f"big.{kind}", data)
    writes = _write_calls()
    with pytest.raises(UnsafeArchive, match=r"unpacks to more than 512000 bytes .*unpack\.max_bytes"):
        unpack(archive, tmp_path / "out" / "app", UnpackConfig(max_bytes=500 * 1024))
    written = _write_calls() - writes
    assert written < LIMIT // 10, f"{written} write calls before the refusal"


async def test_the_refusal_names_the_limit_on_the_process(make_agent: AgentFactory, tmp_path: Path) -> None:
    archive = write(tmp_path / "uploads" / "many.tar.gz", _archive("tar.gz"))
    async with (
        make_agent(unpack={"max_files": LIMIT}) as agent,
        httpx.AsyncClient(base_url=agent.url) as client,
    ):
        body = {"app": "many", "node": "web.0", "source_url": archive.as_uri(), "process_type": "web"}
        created = await client.post("/create-process", json=body)
        assert created.status_code == 201, created.text
        doc = await wait_http(client, created.json()["details"], lambda d: d["state"] == "failed")
        assert f"more than {LIMIT} entries" in doc["error"]
        assert "unpack.max_files" in doc["error"]
        assert not (agent.config.data_dir / "run" / "many.web.0" / "app").exists()
