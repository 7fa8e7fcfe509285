"""Unpacking archives: the formats that work, and the hostile ones that must not.

Every hostile archive is refused with an ``UnsafeArchive`` that names the problem, and
leaves nothing on disk: neither the half-unpacked target nor anything outside it. The
last tests send hostile archives through the agent's API and check that the process
fails, the agent keeps serving, and another process keeps running untouched.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import httpx
import pytest

from herder.agent import Agent
from herder.agent.apps.archive import MAX_TAR_READ_BYTES, unpack
from herder.agent.config import UnpackConfig
from herder.agent.errors import UnsafeArchive
from tests.fixtures.apps.appkit import (
    Member,
    app_members,
    tar_bytes,
    tree,
    write,
    zip_bomb,
    zip_bytes,
)
from tests.helpers import pid_alive, wait_http, wait_unit

DEFAULT = UnpackConfig()
LINKS = UnpackConfig(allow_links=True)


def build(kind: str, members: list[Member]) -> bytes:
    """``kind``: tar, tar.gz, tar.bz2, tar.xz or zip."""
    if kind == "zip":
        return zip_bytes(members)
    return tar_bytes(members, compression=kind.removeprefix("tar").lstrip("."))


def refuse(tmp_path: Path, data: bytes, match: str, config: UnpackConfig = DEFAULT) -> str:
    """Unpack ``data``; assert it is refused matching ``match`` and leaves nothing."""
    archive = write(tmp_path / "in" / "archive", data)
    target = tmp_path / "out" / "app"
    with pytest.raises(UnsafeArchive, match=match) as info:
        unpack(archive, target, config)
    assert not target.exists(), f"left behind: {tree(target)}"
    return str(info.value)


# -- formats that work ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "filename"),
    [
        ("tar", "app.tar"),
        ("tar.gz", "app.tar.gz"),
        ("tar.gz", "app.tgz"),
        ("tar.bz2", "app.tar.bz2"),
        ("tar.xz", "app.tar.xz"),
        ("zip", "app.zip"),
    ],
)
def test_unpacks_and_keeps_the_executable_bit(tmp_path: Path, kind: str, filename: str) -> None:
    members = [
        Member("Procfile", b"web: bin/hello\n"),
        Member("bin", kind="dir", mode=0o755),
        Member("bin/hello", b"#!/bin/sh\necho hi\n", mode=0o755),
        Member("lib/deep/data.txt", b"x" * 10_000),
    ]
    archive = write(tmp_path / filename, build(kind, members))
    target = tmp_path / "app"
    unpack(archive, target, DEFAULT)
    assert tree(target) == ["Procfile", "bin", "bin/hello", "lib", "lib/deep", "lib/deep/data.txt"]
    assert (target / "Procfile").read_bytes() == b"web: bin/hello\n"
    assert (target / "lib/deep/data.txt").read_bytes() == b"x" * 10_000
    assert os.access(target / "bin/hello", os.X_OK)
    assert not os.access(target / "Procfile", os.X_OK)


def test_uncompressed_zip(tmp_path: Path) -> None:
    archive = write(tmp_path / "a.zip", zip_bytes(app_members(), deflate=False))
    unpack(archive, tmp_path / "app", DEFAULT)
    assert tree(tmp_path / "app") == ["Procfile", "bin", "bin/hello"]


@pytest.mark.parametrize(
    ("kind", "filename"),
    [("tar.gz", "app.zip"), ("zip", "app.tar.gz"), ("tar", "download"), ("zip", "release.bin")],
)
def test_format_is_known_by_content_not_name(tmp_path: Path, kind: str, filename: str) -> None:
    archive = write(tmp_path / filename, build(kind, app_members()))
    unpack(archive, tmp_path / "app", DEFAULT)
    assert (tmp_path / "app" / "Procfile").is_file()


def test_tar_whose_last_member_is_a_zip_is_a_tar(tmp_path: Path) -> None:
    # A Java app ships jars: an uncompressed tar ending with one also *ends* like a zip.
    jar = zip_bytes([Member("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\n")])
    archive = write(tmp_path / "app.tar", tar_bytes([*app_members(), Member("lib/app.jar", jar)]))
    unpack(archive, tmp_path / "app", DEFAULT)
    assert (tmp_path / "app" / "lib" / "app.jar").read_bytes() == jar
    assert not (tmp_path / "app" / "META-INF").exists()


def test_zip_members_with_permission_bits_only_are_files(tmp_path: Path) -> None:
    # zipfile.writestr(name, data) stores 0o600 without a file type, as do other tools.
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Procfile", "web: x\n")
    unpack(archive, tmp_path / "app", DEFAULT)
    assert (tmp_path / "app" / "Procfile").read_text() == "web: x\n"


def test_dot_slash_names_and_root_entry(tmp_path: Path) -> None:
    data = tar_bytes([Member("./", kind="dir", mode=0o755), Member("./Procfile", b"web: x\n")])
    archive = write(tmp_path / "a.tar", data)
    unpack(archive, tmp_path / "app", DEFAULT)
    assert tree(tmp_path / "app") == ["Procfile"]


def test_links_inside_the_app_are_allowed_when_configured(tmp_path: Path) -> None:
    members = [
        Member("releases/v1/Procfile", b"web: x\n"),
        Member("current", kind="symlink", link="releases/v1"),
        Member("releases/v1/bin/up", kind="symlink", link="../../v1/Procfile"),
        Member("dangling-but-inside", kind="symlink", link="not/yet/there"),
    ]
    for kind in ("tar", "zip"):
        target = tmp_path / kind
        unpack(write(tmp_path / f"a.{kind}", build(kind, members)), target, LINKS)
        assert (target / "current").is_symlink()
        assert os.readlink(target / "current") == "releases/v1"
        assert (target / "current" / "Procfile").read_text() == "web: x\n"


# -- hostile archives ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_absolute_path_is_refused(tmp_path: Path, kind: str) -> None:
    escaped = tmp_path / "escaped"
    data = build(kind, [Member("Procfile", b"web: x\n"), Member(str(escaped), b"pwned")])
    message = refuse(tmp_path, data, "absolute path")
    assert str(escaped) in message
    assert not escaped.exists()


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
@pytest.mark.parametrize("name", ["../escaped", "sub/../../escaped", "./../escaped", "a/./../../../escaped"])
def test_dot_dot_traversal_is_refused(tmp_path: Path, kind: str, name: str) -> None:
    data = build(kind, [Member("Procfile", b"web: x\n"), Member(name, b"pwned")])
    refuse(tmp_path, data, "escapes the app directory")
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path / "out" / "escaped").exists()


def test_backslash_name_is_refused(tmp_path: Path) -> None:
    refuse(tmp_path, zip_bytes([Member("..\\..\\escaped", b"pwned")]), "backslash")


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_symlink_is_refused_by_default(tmp_path: Path, kind: str) -> None:
    data = build(kind, [Member("Procfile", b"web: x\n"), Member("cfg", kind="symlink", link="Procfile")])
    message = refuse(tmp_path, data, r"symbolic link 'cfg'")
    assert "unpack.allow_links" in message


@pytest.mark.parametrize("kind", ["tar", "zip"])
@pytest.mark.parametrize("link", ["../outside", "/etc", "a/../../outside", "deep/../../.."])
def test_escaping_symlink_is_refused_even_when_links_are_allowed(
    tmp_path: Path, kind: str, link: str
) -> None:
    data = build(kind, [Member("Procfile", b"web: x\n"), Member("l", kind="symlink", link=link)])
    refuse(tmp_path, data, "leaves the app", LINKS)


@pytest.mark.parametrize("order", ["chain-first", "link-first"])
def test_chain_of_inside_looking_links_that_leads_out_is_refused(tmp_path: Path, order: str) -> None:
    # Each link alone stays inside; together, x -> sub/.. with sub -> . is the parent.
    up = Member("x", kind="symlink", link="sub/..")
    here = Member("sub", kind="symlink", link=".")
    members = [here, up] if order == "chain-first" else [up, here]
    refuse(tmp_path, tar_bytes([Member("Procfile", b"web: x\n"), *members]), "leads out of the app", LINKS)


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_member_written_through_a_symlinked_parent_is_refused(tmp_path: Path, kind: str) -> None:
    members = [
        Member("real", kind="dir", mode=0o755),
        Member("d", kind="symlink", link="real"),
        Member("d/Procfile", b"web: x\n"),
    ]
    refuse(tmp_path, build(kind, members), r"'d/Procfile' would be written through a link", LINKS)


def test_file_over_an_existing_link_is_refused(tmp_path: Path) -> None:
    # The second "l" must not be written through the first (a link to the Procfile).
    members = [
        Member("Procfile", b"web: x\n"),
        Member("l", kind="symlink", link="Procfile"),
        Member("l", b"overwrite through the link"),
    ]
    refuse(tmp_path, tar_bytes(members), "File exists", LINKS)


def test_hard_link_is_refused(tmp_path: Path) -> None:
    members = [Member("Procfile", b"web: x\n"), Member("passwd", kind="hardlink", link="/etc/passwd")]
    refuse(tmp_path, tar_bytes(members), r"hard link 'passwd'")


def test_hard_link_inside_is_refused_too(tmp_path: Path) -> None:
    members = [Member("Procfile", b"web: x\n"), Member("again", kind="hardlink", link="Procfile")]
    refuse(tmp_path, tar_bytes(members), "hard link", LINKS)


@pytest.mark.parametrize("special", ["chr", "blk", "fifo"])
def test_device_and_fifo_members_are_refused_in_tar(tmp_path: Path, special: str) -> None:
    members = [Member("Procfile", b"web: x\n"), Member("dev/thing", kind=special, mode=0o666)]
    refuse(tmp_path, tar_bytes(members), r"'dev/thing' is a device, FIFO or other special file")


@pytest.mark.parametrize("special", ["chr", "fifo"])
def test_device_and_fifo_members_are_refused_in_zip(tmp_path: Path, special: str) -> None:
    members = [Member("Procfile", b"web: x\n"), Member("dev/thing", kind=special, mode=0o666)]
    refuse(tmp_path, zip_bytes(members), r"'dev/thing' is a special file")


def test_zip_bomb_stops_at_the_ratio_limit(tmp_path: Path) -> None:
    data = zip_bomb(size=24 * 1024 * 1024)
    assert len(data) < 100_000
    message = refuse(tmp_path, data, "expands more than 200 times")
    assert "compression bomb" in message


def test_tar_gz_bomb_stops_at_the_ratio_limit(tmp_path: Path) -> None:
    data = tar_bytes([Member("Procfile", b"web: x\n"), Member("zeros", bytes(24 * 1024 * 1024))], "gz")
    refuse(tmp_path, data, r"expands more than 50 times \(at 'zeros'\)", UnpackConfig(max_ratio=50))


def test_too_many_files(tmp_path: Path) -> None:
    members = [Member(f"f{i}", b"x") for i in range(10)]
    for kind in ("tar", "zip"):
        refuse(tmp_path, build(kind, members), r"more than 5 entries \(at 'f5'\)", UnpackConfig(max_files=5))


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_total_size_over_the_limit(tmp_path: Path, kind: str) -> None:
    members = [Member("a", b"a" * 600), Member("b", b"b" * 600)]
    refuse(
        tmp_path,
        build(kind, members),
        r"unpacks to more than 1000 bytes \(at 'b'\)",
        UnpackConfig(max_bytes=1000),
    )


def test_size_limit_counts_bytes_not_headers(tmp_path: Path) -> None:
    # One member larger than the limit on its own: stopped while it is being written.
    refuse(
        tmp_path,
        tar_bytes([Member("big", bytes(5000))]),
        "more than 1000 bytes",
        UnpackConfig(max_bytes=1000),
    )


def _pax_bomb(header_bytes: int) -> bytes:
    """A tar.gz whose first entry is a pax header of ``header_bytes`` (tarfile reads it whole)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1) as out:
        header = tarfile.TarInfo("././@PaxHeader")
        header.type = tarfile.XHDTYPE
        header.size = header_bytes
        out.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        prefix = f"{header_bytes} comment=".encode()
        out.write(prefix)
        left = header_bytes - len(prefix) - 1
        chunk = b"a" * (1024 * 1024)
        while left > 0:
            out.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
        out.write(b"\n" + bytes(-header_bytes % 512))
        out.write(bytes(1024))
    return buf.getvalue()


def test_huge_tar_header_is_refused_without_reading_it_into_memory(tmp_path: Path) -> None:
    data = _pax_bomb(64 * 1024 * 1024)
    tracemalloc.start()
    try:
        refuse(tmp_path, data, f"a tar header larger than {MAX_TAR_READ_BYTES} bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_zip_link_member_is_not_read_whole(tmp_path: Path) -> None:
    # A "symlink" whose target is 64 MiB of zeros: only the first bytes may be read.
    data = zip_bomb("l", size=64 * 1024 * 1024, kind="symlink")
    tracemalloc.start()
    try:
        refuse(tmp_path, data, r"symbolic link 'l'")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


# -- corrupt and unknown data ----------------------------------------------------------


def test_garbage_is_not_an_archive(tmp_path: Path) -> None:
    refuse(tmp_path, os.urandom(4096), "not an archive herder can unpack")


def test_empty_file_is_not_an_archive(tmp_path: Path) -> None:
    refuse(tmp_path, b"", "not an archive herder can unpack")


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9])
def test_truncated_tar_gz_is_corrupt(tmp_path: Path, cut: float) -> None:
    data = tar_bytes([Member("Procfile", b"web: x\n"), Member("blob", os.urandom(50_000))], "gz")
    refuse(tmp_path, data[: int(len(data) * cut)], "corrupt archive")


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9])
def test_truncated_zip_is_corrupt(tmp_path: Path, cut: float) -> None:
    data = zip_bytes([Member("Procfile", b"web: x\n"), Member("blob", os.urandom(50_000))])
    refuse(tmp_path, data[: int(len(data) * cut)], "corrupt archive")


def test_truncated_plain_tar_is_corrupt(tmp_path: Path) -> None:
    data = tar_bytes([Member("Procfile", b"web: x\n"), Member("blob", os.urandom(50_000))])
    refuse(tmp_path, data[:20_000], "corrupt archive")


def test_zip_with_bad_crc_is_corrupt(tmp_path: Path) -> None:
    payload = b"web: echo this line is long enough to find\n"
    data = bytearray(zip_bytes([Member("Procfile", payload)], deflate=False))
    at = data.index(payload)
    data[at] ^= 0xFF
    refuse(tmp_path, bytes(data), "corrupt archive: Bad CRC-32")


def test_encrypted_zip_is_refused(tmp_path: Path) -> None:
    data = bytearray(zip_bytes([Member("Procfile", b"web: x\n")]))
    data[6] |= 1  # "encrypted" in the local header ...
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 1  # ... and in the central directory
    refuse(tmp_path, bytes(data), "'Procfile': it is encrypted")


def test_unknown_zip_compression_is_corrupt(tmp_path: Path) -> None:
    data = bytearray(zip_bytes([Member("Procfile", b"web: x\n")]))
    data[8:10] = (99).to_bytes(2, "little")
    central = data.index(b"PK\x01\x02")
    data[central + 10 : central + 12] = (99).to_bytes(2, "little")
    refuse(tmp_path, bytes(data), "corrupt archive: That compression method is not supported")


def test_corrupt_xz_is_corrupt(tmp_path: Path) -> None:
    data = bytearray(tar_bytes([Member("Procfile", b"web: x\n"), Member("blob", os.urandom(50_000))], "xz"))
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    refuse(tmp_path, bytes(data), "corrupt archive")


# -- through the API -----------------------------------------------------------------

HOSTILE = {
    "traversal.tar.gz": (
        lambda tmp: tar_bytes([*app_members(), Member("../../../escaped", b"pwned")], "gz"),
        "escapes the app directory",
    ),
    "symlink.tar": (
        lambda tmp: tar_bytes([*app_members(), Member("passwd", kind="symlink", link="/etc/passwd")]),
        "symbolic link 'passwd'",
    ),
    "bomb.zip": (lambda tmp: zip_bomb(size=24 * 1024 * 1024), "compression bomb"),
    "device.tar": (
        lambda tmp: tar_bytes([*app_members(), Member("null", kind="chr", mode=0o666)]),
        "device, FIFO or other special file",
    ),
    "absolute.zip": (
        lambda tmp: zip_bytes([*app_members(), Member(str(tmp / "escaped"), b"pwned")]),
        "absolute path",
    ),
    "hardlink.tar": (
        lambda tmp: tar_bytes([*app_members(), Member("h", kind="hardlink", link="/etc/shadow")]),
        "hard link 'h'",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_archive_through_the_api(
    agent: Agent, client: httpx.AsyncClient, tmp_path: Path, name: str
) -> None:
    make, expected = HOSTILE[name]
    bystander = await client.post(
        "/create-process", json={"app": "calm", "node": "n.0", "command": ["sleep", "1000"]}
    )
    assert bystander.status_code == 201
    calm = await wait_unit(agent.supervisor.units["calm.n.0"], lambda u: u.pid is not None)
    calm_pid = calm.pid
    assert calm_pid is not None

    archive = write(tmp_path / "uploads" / name, make(tmp_path))
    response = await client.post(
        "/create-process",
        json={"app": "evil", "node": "web.0", "source_url": archive.as_uri(), "process_type": "web"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["state"] in ("fetching", "starting", "failed")  # it answers at once
    doc = await wait_http(client, response.json()["details"], lambda d: d["state"] == "failed")
    assert expected in doc["error"]
    assert doc["pid"] is None

    # Nothing unpacked is left, nothing escaped, and everything else is as it was.
    data_dir = agent.config.data_dir
    assert not (data_dir / "run" / "evil.web.0" / "app").exists()
    for escaped in (tmp_path / "escaped", data_dir / "escaped", data_dir.parent / "escaped"):
        assert not escaped.exists()
    assert (await client.get("/")).status_code == 200
    status = (await client.get("/process-status/calm.n.0")).json()
    assert status["state"] == "running"
    assert status["pid"] == calm_pid
    assert status["restarts"] == 0
    assert pid_alive(calm_pid)

    # The failed process can be deleted like any other.
    deleted = await client.post(doc["delete"], content="{}")
    assert deleted.status_code == 200
    assert (await client.get(doc["details"])).status_code == 404


async def test_agent_runs_a_good_archive_after_hostile_ones(
    agent: Agent, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    for i, name in enumerate(sorted(HOSTILE)):
        make, _ = HOSTILE[name]
        archive = write(tmp_path / "uploads" / name, make(tmp_path))
        body = {"app": "evil", "node": f"web.{i}", "source_url": archive.as_uri(), "process_type": "web"}
        assert (await client.post("/create-process", json=body)).status_code == 201
    good = write(tmp_path / "uploads" / "good.tgz", tar_bytes(app_members(), "gz"))
    body = {"app": "good", "node": "worker.0", "source_url": good.as_uri(), "process_type": "worker"}
    created = (await client.post("/create-process", json=body)).json()
    await wait_http(client, created["details"], lambda d: d["state"] == "running")
    listing = (await client.get("/list-processes")).json()["processes"]
    states = {p["slug"]: p["state"] for p in listing}
    await wait_http(
        client,
        "/list-processes",
        lambda d: all(p["state"] == "failed" for p in d["processes"] if p["app"] == "evil"),
    )
    assert states["good.worker.0"] == "running"


# -- limits read ahead ------------------------------------------------------------------


def test_a_zip_is_refused_on_the_count_its_directory_gives(tmp_path: Path) -> None:
    members = [Member(f"f{i}", b"x") for i in range(10)]
    message = refuse(tmp_path, zip_bytes(members), r"its directory lists 10", UnpackConfig(max_files=5))
    assert "unpack.max_files" in message


def test_a_tar_read_ahead_once_unpacks_again_the_same(tmp_path: Path) -> None:
    # The second unpack of the same file skips the read-ahead (it kept the limits)
    # and still checks every member as it goes.
    archive = write(tmp_path / "in" / "app.tgz", tar_bytes([*app_members(), Member("d/x", b"y")], "gz"))
    first, second = tmp_path / "one", tmp_path / "two"
    unpack(archive, first, DEFAULT)
    unpack(archive, second, DEFAULT)
    assert tree(first) == tree(second)
    assert (second / "d" / "x").read_bytes() == b"y"
    # Other limits, other verdict: the same file is read ahead again, and refused.
    with pytest.raises(UnsafeArchive, match="more than 2 entries"):
        unpack(archive, tmp_path / "three", UnpackConfig(max_files=2))
    assert not (tmp_path / "three").exists()


def test_a_zip_over_the_count_is_refused_from_its_end_record(tmp_path: Path) -> None:
    # The directory is garbled past the limit: zipfile would call the archive corrupt
    # while parsing it, so this refusal came from the end record, before that parse.
    data = bytearray(zip_bytes([Member(f"f{i}", b"x") for i in range(10)]))
    at = -1
    for _ in range(8):
        at = data.index(b"PK\x01\x02", at + 1)
    data[at : at + 2] = b"XX"
    refuse(
        tmp_path,
        bytes(data),
        r"more than 5 entries \(at 'f5'\): its directory lists 10",
        UnpackConfig(max_files=5),
    )
    refuse(tmp_path, bytes(data), "corrupt archive", UnpackConfig(max_files=20))


def test_a_zip64_end_record_is_read_too(tmp_path: Path) -> None:
    # zipfile writes zip64 records past 65,535 entries; a lower threshold, while writing
    # only, makes a small one (the plain end record then says 0xFFFF entries).
    buf = io.BytesIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 5)
        with zipfile.ZipFile(buf, "w") as zf:
            for i in range(10):
                zf.writestr(f"f{i}", b"x")
    data = buf.getvalue()
    assert b"PK\x06\x06" in data
    refuse(
        tmp_path, data, r"more than 5 entries \(at 'f5'\): its directory lists 10", UnpackConfig(max_files=5)
    )
    unpack(write(tmp_path / "ok.zip", data), tmp_path / "ok", DEFAULT)
    assert len(tree(tmp_path / "ok")) == 10
