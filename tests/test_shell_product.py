"""The ``shell`` product's extensions (``fs``, ``proc``), driven directly, without an agent.

``Session`` below is a real implementation of ``SessionApi``, the contract a host
process gives its extensions: a directory, a confinement flag, an environment with
markers, and events collected in a list instead of sent to a client.
"""

from __future__ import annotations

import inspect
import io
import os
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop

from herder.products import load_extensions
from herder.products.shell.fs import MAX_CHUNK, MAX_HANDLES, Fs
from herder.products.shell.proc import MAX_LINE, MAX_PROCESSES, Proc
from tests.helpers import pid_alive, poll, wait_dead

OUTSIDE = "outside the session's directory"


@dataclass
class Session:
    """A session as the host process implements it, minus the channel to the client."""

    root: Path
    confined: bool = True
    id: str = "s-test"
    env: dict[str, str] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    releases: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))

    def on_close(self, release: Callable[[], Awaitable[None] | None]) -> None:
        self.releases.append(release)

    def of(self, pid_id: int) -> list[tuple[str, dict[str, Any]]]:
        """The events about process ``pid_id``, in order."""
        return [(k, d) for k, d in self.events if d.get("id") == pid_id]

    def lines(self, pid_id: int, stream: str = "stdout") -> list[str]:
        return [d["line"] for k, d in self.of(pid_id) if k == "proc.output" and d["stream"] == stream]


def make_session(tmp_path: Path, *, confined: bool = True) -> Session:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    env = dict(os.environ)
    env["HERDER_UNIT"] = "test:shell-product"
    return Session(root=root, confined=confined, env=env)


@pytest.fixture
def session(tmp_path: Path) -> Session:
    return make_session(tmp_path)


@pytest.fixture
async def fs(session: Session) -> AsyncIterator[Fs]:
    ext = Fs(session)
    yield ext
    await ext.shutdown()


@pytest.fixture
async def proc(session: Session) -> AsyncIterator[Proc]:
    ext = Proc(session)
    ext.term_grace_s = ext.kill_grace_s = 2.0
    yield ext
    await ext.shutdown()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file next to the session's directory, not in it."""
    path = tmp_path / "outside.txt"
    path.write_bytes(b"secret")
    return path


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- the product -------------------------------------------------------------------------


def test_shell_is_installed_with_fs_and_proc() -> None:
    assert load_extensions("shell") == {"fs": Fs, "proc": Proc}


def test_exposed_methods(session: Session) -> None:
    assert set(Fs(session).exposed()) == {"open", "read", "write", "close", "stat", "list", "remove", "mkdir"}
    assert set(Proc(session).exposed()) == {"launch", "wait", "kill", "list"}


# -- fs: whole files -----------------------------------------------------------------------


async def test_write_and_read_by_path(fs: Fs, session: Session) -> None:
    assert fs.write("a.bin", b"\x00\xffbytes") == 7
    assert fs.read("a.bin") == b"\x00\xffbytes"
    assert fs.write("b.txt", "héllo") == 6  # str is written as UTF-8
    assert fs.read("b.txt", encoding="utf-8") == "héllo"
    assert (session.root / "b.txt").read_bytes() == "héllo".encode()
    assert fs.write("b.txt", "x") == 1  # truncated, not overwritten in place
    assert fs.read("b.txt") == b"x"
    assert fs.write("empty", b"") == 0
    assert fs.read("empty") == b""
    assert fs.read(str(session.root / "b.txt")) == b"x"  # absolute, inside the root


async def test_whole_file_limits(fs: Fs, session: Session) -> None:
    with open(session.root / "big", "wb") as fh:
        fh.truncate(MAX_CHUNK + 1)  # sparse: instant
    with pytest.raises(ValueError, match="open it and read it in pieces"):
        fs.read("big")
    with pytest.raises(ValueError, match=r"^data has"):
        fs.write("big2", b"\0" * (MAX_CHUNK + 1))
    assert not (session.root / "big2").exists()
    with pytest.raises(ValueError, match="size and offset apply to handles"):
        fs.read("big", size=10)
    with pytest.raises(ValueError, match="offset applies to handles"):
        fs.write("x", b"data", offset=3)


async def test_bad_arguments_are_named(fs: Fs) -> None:
    with pytest.raises(FileNotFoundError, match="'missing'"):
        fs.read("missing")
    with pytest.raises(FileNotFoundError, match="'no/such/dir/file'"):  # the client's path, not the host's
        fs.write("no/such/dir/file", b"x")
    with pytest.raises(TypeError, match="target"):
        fs.read(["x"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data"):
        fs.write("x", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path"):
        fs.read("")
    fs.write("t", "x")
    with pytest.raises(ValueError, match="encoding"):
        fs.read("t", encoding="no-such-codec")
    with pytest.raises(ValueError, match="mode"):
        fs.open("t", "rw")
    with pytest.raises(IsADirectoryError):
        fs.read(".")


async def test_fifos_are_refused_without_blocking(fs: Fs, session: Session) -> None:
    os.mkfifo(session.root / "pipe")
    with pytest.raises(OSError, match="not a regular file"):
        fs.read("pipe")
    with pytest.raises(OSError, match="not a regular file"):
        fs.open("pipe", "w")


# -- fs: handles -------------------------------------------------------------------------------


async def test_handles_with_positions_and_offsets(fs: Fs, session: Session) -> None:
    h = fs.open("f", "w")
    assert fs.write(h, b"hello world") == 11
    assert fs.write(h, "W", offset=6) == 1  # at an offset: the position stays at the end
    assert fs.write(h, b"!") == 1
    await fs.close(h)
    assert (session.root / "f").read_bytes() == b"hello World!"

    r = fs.open("f")
    assert fs.read(r, 5) == b"hello"
    assert fs.read(r, offset=6) == b"World!"  # pread: the position is still 5
    assert fs.read(r, 3) == b" Wo"
    assert fs.read(r, encoding="ascii") == "rld!"
    assert fs.read(r) == b""  # the end
    assert fs.read(r, 0) == b""
    await fs.close(r)

    rw = fs.open("f", "r+")
    assert fs.write(rw, b"J", offset=0) == 1
    assert fs.read(rw, 5) == b"Jello"
    await fs.close(rw)

    a = fs.open("f", "a")
    assert fs.write(a, b"?") == 1
    with pytest.raises(ValueError, match="offset"):
        fs.write(a, b"x", offset=0)
    with pytest.raises(io.UnsupportedOperation, match="not readable"):
        fs.read(a)
    await fs.close(a)
    assert (session.root / "f").read_bytes() == b"Jello World!?"

    with pytest.raises(FileExistsError):
        fs.open("f", "x")
    x = fs.open("new", "xb")
    with pytest.raises(io.UnsupportedOperation, match="not writable"):
        fs.write(fs.open("new"), b"x")
    await fs.close(x)


async def test_handle_ids_limits_and_unknown_handles(fs: Fs, session: Session) -> None:
    assert fs.max_handles == MAX_HANDLES == 1024
    fs.write("f", b"data")
    h = fs.open("f")
    await fs.close(h)
    with pytest.raises(LookupError, match=f"handle {h} is not open"):
        fs.read(h)
    with pytest.raises(LookupError, match=f"handle {h} is not open"):
        await fs.close(h)
    with pytest.raises(LookupError, match="handle 999"):
        fs.write(999, b"x")
    with pytest.raises(TypeError, match="handle"):
        await fs.close("1")  # type: ignore[arg-type]
    assert fs.open("f") != h  # ids are not reused

    fs.max_handles = 4
    opened = [fs.open("f") for _ in range(3)]  # 4 with the one above
    with pytest.raises(OSError, match="4 open handles") as refused:
        fs.open("f")
    assert refused.value.errno == 24  # EMFILE
    await fs.close(opened[0])
    fs.open("f")  # room again


async def test_closing_the_extension_closes_every_handle(session: Session) -> None:
    fs = Fs(session)
    fs.write("f", b"data")
    before = open_fds()
    handles = [fs.open("f", mode) for mode in ("r", "a", "r+")]
    assert open_fds() == before + 3
    await fs.shutdown()
    assert open_fds() == before
    with pytest.raises(LookupError):
        fs.read(handles[0])


# -- fs: the tree ------------------------------------------------------------------------


async def test_stat_list_mkdir_remove(fs: Fs, session: Session) -> None:
    fs.mkdir("d")
    fs.mkdir("d/e/f", parents=True)
    fs.mkdir("d/e", parents=True)  # existing: fine with parents
    with pytest.raises(FileExistsError):
        fs.mkdir("d")
    fs.write("d/b.txt", b"12345")
    os.symlink("b.txt", session.root / "d" / "a-link")

    assert fs.list("d") == [
        {"name": "a-link", "type": "link", "size": len("b.txt")},
        {"name": "b.txt", "type": "file", "size": 5},
        {"name": "e", "type": "dir", "size": (session.root / "d" / "e").stat().st_size},
    ]
    assert [e["name"] for e in fs.list()] == ["d"]

    info = fs.stat("d/b.txt")
    assert info["path"] == "d/b.txt"
    assert (info["type"], info["size"]) == ("file", 5)
    assert info["mode"] == stat.S_IMODE((session.root / "d" / "b.txt").stat().st_mode)
    assert isinstance(info["mtime"], float)
    assert abs(info["mtime"] - time.time()) < 60
    assert fs.stat("d")["type"] == "dir"
    assert fs.stat("d/a-link")["type"] == "link"
    assert fs.stat(".")["type"] == "dir"

    fs.remove("d/a-link")  # the link, not what it points to
    assert (session.root / "d" / "b.txt").exists()
    with pytest.raises(OSError, match="not empty"):
        fs.remove("d/e")
    fs.remove("d/e/f")
    fs.remove("d/b.txt")
    assert [e["name"] for e in fs.list("d")] == ["e"]
    with pytest.raises(FileNotFoundError):
        fs.stat("d/b.txt")
    fs.write("file", b"x")
    with pytest.raises(NotADirectoryError):
        fs.list("file")


@pytest.mark.parametrize("path", [".", "", "d/..", "./"])
async def test_the_root_itself_cannot_be_removed(fs: Fs, session: Session, path: str) -> None:
    fs.mkdir("d")
    with pytest.raises((PermissionError, ValueError)):
        fs.remove(path)
    assert session.root.is_dir()


async def test_the_root_cannot_be_removed_by_its_own_name_either(tmp_path: Path) -> None:
    fs = Fs(make_session(tmp_path, confined=False))
    with pytest.raises(PermissionError, match="session's directory itself"):
        fs.remove("../root")
    with pytest.raises(PermissionError, match="session's directory itself"):
        fs.remove(str(tmp_path / "root"))


# -- fs: confinement --------------------------------------------------------------------


@pytest.fixture
def escapes(session: Session, tmp_path: Path, outside: Path) -> Session:
    """Links in the root that lead out: to /etc, to a file, to a directory."""
    os.symlink("/etc", session.root / "etc")
    os.symlink(outside, session.root / "file-link")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", session.root / "dir-link")
    return session


async def test_escapes_are_refused(fs: Fs, escapes: Session, outside: Path, tmp_path: Path) -> None:
    for path in (
        "../outside.txt",
        str(outside),
        "/etc/passwd",
        "etc/passwd",
        "file-link",
        "d/../../outside.txt",
    ):
        with pytest.raises(PermissionError, match=OUTSIDE):
            fs.read(path)
        with pytest.raises(PermissionError, match=OUTSIDE):
            fs.open(path)
        with pytest.raises(PermissionError, match=OUTSIDE):
            fs.write(path, b"overwritten")
    assert outside.read_bytes() == b"secret"
    for path in ("dir-link/new.txt", "dir-link/./sub/../new.txt"):  # through a linked directory
        with pytest.raises(PermissionError, match=OUTSIDE):
            fs.write(path, b"x")
    assert not (tmp_path / "elsewhere" / "new.txt").exists()
    with pytest.raises(PermissionError, match=OUTSIDE):
        fs.list("etc")
    with pytest.raises(PermissionError, match=OUTSIDE):
        fs.list("..")
    with pytest.raises(PermissionError, match=OUTSIDE):
        fs.stat("etc/passwd")
    with pytest.raises(PermissionError, match=OUTSIDE):
        fs.mkdir("dir-link/sub")
    with pytest.raises(PermissionError, match=OUTSIDE):
        fs.mkdir("../sibling")
    with pytest.raises(PermissionError, match=OUTSIDE):
        fs.remove("../outside.txt")
    with pytest.raises(PermissionError, match=OUTSIDE):
        fs.remove("dir-link/")  # a trailing slash means the directory it points to
    assert outside.exists()
    assert not (tmp_path / "sibling").exists()


async def test_links_themselves_live_inside(fs: Fs, escapes: Session, outside: Path) -> None:
    """A link in the root is the session's own: it can be described and removed."""
    assert fs.stat("file-link")["type"] == "link"
    assert {"name": "file-link", "type": "link", "size": len(str(outside))} in fs.list()
    fs.remove("file-link")
    assert outside.read_bytes() == b"secret"


async def test_links_within_the_root_are_followed(fs: Fs, session: Session) -> None:
    fs.mkdir("real")
    fs.write("real/f", b"data")
    os.symlink("real", session.root / "alias")
    os.symlink("real/f", session.root / "f-link")
    assert fs.read("alias/f") == b"data"
    assert fs.read("f-link") == b"data"
    assert fs.write("f-link", b"new") == 3
    assert fs.read("real/f") == b"new"
    assert [e["name"] for e in fs.list("alias")] == ["f"]


async def test_unconfined_sessions_reach_any_path(tmp_path: Path, outside: Path) -> None:
    session = make_session(tmp_path, confined=False)
    os.symlink(outside, session.root / "file-link")
    fs = Fs(session)
    try:
        assert fs.read("../outside.txt") == b"secret"
        assert fs.read(str(outside)) == b"secret"
        assert fs.read("file-link") == b"secret"
        h = fs.open("../outside.txt", "a")
        fs.write(h, b"!")
        await fs.close(h)
        assert outside.read_bytes() == b"secret!"
        assert "outside.txt" in [e["name"] for e in fs.list("..")]
        fs.mkdir("../made")
        assert (tmp_path / "made").is_dir()
    finally:
        await fs.shutdown()


# -- proc ------------------------------------------------------------------------------------


async def test_launch_streams_output_then_the_exit(proc: Proc, session: Session) -> None:
    started = await proc.launch(["sh", "-c", "echo a; echo b >&2; echo c; exit 3"])
    assert set(started) == {"id", "pid"}
    assert await proc.wait(started["id"], timeout=5) == 3
    events = session.of(started["id"])
    assert events[-1] == ("proc.exit", {"id": started["id"], "code": 3})
    assert [k for k, _ in events].count("proc.exit") == 1
    assert session.lines(started["id"]) == ["a", "c"]
    assert session.lines(started["id"], "stderr") == ["b"]
    assert await proc.wait(started["id"], timeout=0) == 3  # again, at once


async def test_environment_markers_are_forced(proc: Proc, session: Session) -> None:
    script = 'echo "$HERDER_UNIT|$MINE|${HOME-unset}|$HERDER_EXTRA"'
    started = await proc.launch(
        ["sh", "-c", script],
        env={"HERDER_UNIT": "evil", "MINE": "mine", "HOME": None, "HERDER_EXTRA": "ok"},  # type: ignore[dict-item]
    )
    assert await proc.wait(started["id"], timeout=5) == 0
    assert session.lines(started["id"]) == ["test:shell-product|mine|unset|ok"]

    started = await proc.launch(["sh", "-c", "echo $HERDER_UNIT"], env={"HERDER_UNIT": None})  # type: ignore[dict-item]
    assert await proc.wait(started["id"], timeout=5) == 0
    assert session.lines(started["id"]) == ["test:shell-product"]


async def test_stdin_and_working_directory(proc: Proc, session: Session) -> None:
    started = await proc.launch(["cat"], stdin="hello\nwörld")
    assert await proc.wait(started["id"], timeout=5) == 0
    assert session.lines(started["id"]) == ["hello", "wörld"]  # the last line had no newline

    (session.root / "sub").mkdir()
    started = await proc.launch(["pwd", "-P"], cwd="sub")
    assert await proc.wait(started["id"], timeout=5) == 0
    assert session.lines(started["id"]) == [str((session.root / "sub").resolve())]

    started = await proc.launch(["pwd", "-P"])
    assert await proc.wait(started["id"], timeout=5) == 0
    assert session.lines(started["id"]) == [str(session.root.resolve())]

    with pytest.raises(PermissionError, match=r"cwd '\.\.' is outside"):
        await proc.launch(["pwd"], cwd="..")
    with pytest.raises(FileNotFoundError, match="'missing'"):
        await proc.launch(["pwd"], cwd="missing")
    (session.root / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="'file'"):
        await proc.launch(["pwd"], cwd="file")


async def test_unconfined_working_directory(tmp_path: Path) -> None:
    session = make_session(tmp_path, confined=False)
    proc = Proc(session)
    try:
        started = await proc.launch(["pwd", "-P"], cwd="..")
        assert await proc.wait(started["id"], timeout=5) == 0
        assert session.lines(started["id"]) == [str(tmp_path.resolve())]
    finally:
        await proc.shutdown()


async def test_bad_launches(proc: Proc, session: Session) -> None:
    with pytest.raises(FileNotFoundError, match="'/no/such/program'"):
        await proc.launch(["/no/such/program"])
    with pytest.raises(FileNotFoundError, match="'no-such-program-here'"):
        await proc.launch(["no-such-program-here"])
    (session.root / "plain").write_text("not a program")
    with pytest.raises(PermissionError, match=r"'\./plain'"):
        await proc.launch(["./plain"])
    with pytest.raises(ValueError, match="argv"):
        await proc.launch([])
    with pytest.raises(TypeError, match="argv"):
        await proc.launch("sh -c true")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"argv\[1\]"):
        await proc.launch(["echo", 1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="env"):
        await proc.launch(["true"], env={"A=B": "x"})
    assert proc.list() == []  # failed launches leave nothing behind


async def test_long_lines_are_split(proc: Proc, session: Session) -> None:
    script = (
        "import sys; w = sys.stdout.buffer.write;"
        f" w(b'x' * ({MAX_LINE} * 2 + 10) + b'\\n'); w(b'y' * {MAX_LINE} + b'\\n');"
        " w(('a' + 'é' * 40000).encode()); sys.stdout.flush()"
    )
    started = await proc.launch([sys.executable, "-c", script])
    assert await proc.wait(started["id"], timeout=5) == 0
    lines = session.lines(started["id"])
    assert lines[:4] == ["x" * MAX_LINE, "x" * MAX_LINE, "x" * 10, "y" * MAX_LINE]
    # A long line of two-byte characters is cut between characters, never inside one.
    assert len(lines) == 6
    assert "".join(lines[4:]) == "a" + "é" * 40000
    assert len(lines[4].encode()) <= MAX_LINE


async def test_kill_by_name_and_number(proc: Proc) -> None:
    sleeper = await proc.launch(["sleep", "60"])
    proc.kill(sleeper["id"])
    assert await proc.wait(sleeper["id"], timeout=5) == -signal.SIGTERM
    proc.kill(sleeper["id"], "KILL")  # ended: nothing to do, no error

    sleeper = await proc.launch(["sleep", "60"])
    proc.kill(sleeper["id"], int(signal.SIGKILL))
    assert await proc.wait(sleeper["id"], timeout=5) == -signal.SIGKILL

    sleeper = await proc.launch(["sleep", "60"])
    proc.kill(sleeper["id"], "sigint")
    assert await proc.wait(sleeper["id"], timeout=5) == -signal.SIGINT

    with pytest.raises(LookupError, match="process 999"):
        proc.kill(999)
    with pytest.raises(ValueError, match="signal 'BOGUS'"):
        proc.kill(sleeper["id"], "BOGUS")
    with pytest.raises(ValueError, match="signal 12345"):
        proc.kill(sleeper["id"], 12345)


async def test_kill_reaches_the_whole_group(proc: Proc, session: Session) -> None:
    started = await proc.launch(["sh", "-c", "sleep 60 & echo $!; wait"])
    await poll(lambda: bool(session.lines(started["id"])), timeout_s=5)
    child = int(session.lines(started["id"])[0])
    assert pid_alive(child)
    proc.kill(started["id"])
    assert await proc.wait(started["id"], timeout=5) == -signal.SIGTERM
    await wait_dead([child], timeout_s=5)


async def test_a_background_child_holding_the_output_delays_the_exit(proc: Proc, session: Session) -> None:
    """The exit comes after the last line: a child left holding the pipe holds it back until killed."""
    started = await proc.launch(["sh", "-c", "sleep 60 & echo $!"])
    await poll(lambda: bool(session.lines(started["id"])), timeout_s=5)
    child = int(session.lines(started["id"])[0])
    with pytest.raises(TimeoutError):
        await proc.wait(started["id"], timeout=0.1)
    assert proc.list()[0]["running"]
    proc.kill(started["id"])  # the shell is gone, its group is not
    assert await proc.wait(started["id"], timeout=5) == 0  # the shell's own exit
    await wait_dead([child], timeout_s=5)


async def test_wait_timeout_and_list(proc: Proc) -> None:
    done = await proc.launch(["true"])
    assert await proc.wait(done["id"], timeout=5) == 0
    sleeper = await proc.launch(["sleep", "60"])
    with pytest.raises(TimeoutError, match=f"process {sleeper['id']} still runs after 0.05 s"):
        await proc.wait(sleeper["id"], timeout=0.05)
    with pytest.raises(ValueError, match="timeout"):
        await proc.wait(sleeper["id"], timeout=-1)
    with pytest.raises(LookupError, match="process 999"):
        await proc.wait(999)
    assert proc.list() == [
        {"id": done["id"], "pid": done["pid"], "argv": ["true"], "running": False, "code": 0},
        {"id": sleeper["id"], "pid": sleeper["pid"], "argv": ["sleep", "60"], "running": True, "code": None},
    ]


async def test_process_limit_forgets_finished_ones_first(proc: Proc) -> None:
    assert MAX_PROCESSES == 256
    proc.max_processes = 2
    first = await proc.launch(["true"])
    await proc.wait(first["id"], timeout=5)
    sleeper = await proc.launch(["sleep", "60"])
    second = await proc.launch(["sleep", "60"])  # the finished one makes room
    assert [p["id"] for p in proc.list()] == [sleeper["id"], second["id"]]
    with pytest.raises(OSError, match="already runs 2 processes") as refused:
        await proc.launch(["true"])
    assert refused.value.errno == 11  # EAGAIN
    with pytest.raises(LookupError):
        await proc.wait(first["id"])


async def test_close_terminates_everything(session: Session) -> None:
    proc = Proc(session)
    proc.term_grace_s = 0.5  # the stubborn one below needs SIGKILL after this
    sleeper = await proc.launch(["sleep", "60"])
    stubborn = await proc.launch(["sh", "-c", "trap '' TERM; echo ready; sleep 60 & wait; wait"])
    group = await proc.launch(["sh", "-c", "sleep 60 & echo $!; wait"])
    await poll(lambda: bool(session.lines(stubborn["id"]) and session.lines(group["id"])), timeout_s=5)
    grandchild = int(session.lines(group["id"])[0])
    pids = [sleeper["pid"], stubborn["pid"], group["pid"], grandchild]
    assert all(pid_alive(p) for p in pids)

    began = time.monotonic()
    await proc.shutdown()
    assert time.monotonic() - began < 3
    await wait_dead(pids, timeout_s=2)
    assert all(not p["running"] for p in proc.list())
    codes = {d["id"]: d["code"] for k, d in session.events if k == "proc.exit"}
    assert codes == {
        sleeper["id"]: -signal.SIGTERM,
        stubborn["id"]: -signal.SIGKILL,
        group["id"]: -signal.SIGTERM,
    }
    with pytest.raises(RuntimeError, match="closing"):
        await proc.launch(["true"])


async def test_output_events_all_come_before_the_exit(proc: Proc, session: Session) -> None:
    """Many lines on both pipes, the program exiting at once: nothing arrives after the exit."""
    script = "i=0; while [ $i -lt 300 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done; exit 7"
    started = await proc.launch(["sh", "-c", script])
    assert await proc.wait(started["id"], timeout=5) == 7
    kinds = [k for k, _ in session.of(started["id"])]
    assert kinds == ["proc.output"] * 600 + ["proc.exit"]
    assert session.lines(started["id"]) == [f"out{i}" for i in range(300)]
    assert session.lines(started["id"], "stderr") == [f"err{i}" for i in range(300)]


# The host process runs on uvloop, whose transports are not asyncio's: every proc test
# above runs there too (pytest-asyncio runs them on asyncio's loop).
ON_UVLOOP = [
    test_launch_streams_output_then_the_exit,
    test_environment_markers_are_forced,
    test_stdin_and_working_directory,
    test_unconfined_working_directory,
    test_bad_launches,
    test_long_lines_are_split,
    test_kill_by_name_and_number,
    test_kill_reaches_the_whole_group,
    test_a_background_child_holding_the_output_delays_the_exit,
    test_wait_timeout_and_list,
    test_process_limit_forgets_finished_ones_first,
    test_close_terminates_everything,
    test_output_events_all_come_before_the_exit,
]


@pytest.mark.parametrize("scenario", ON_UVLOOP, ids=lambda f: f.__name__.removeprefix("test_"))
def test_proc_on_uvloop(scenario: Callable[..., Awaitable[None]], tmp_path: Path) -> None:
    async def run() -> None:
        session = make_session(tmp_path)
        proc = Proc(session)
        proc.term_grace_s = proc.kill_grace_s = 2.0
        available: dict[str, Any] = {"proc": proc, "session": session, "tmp_path": tmp_path}
        try:
            await scenario(**{name: available[name] for name in inspect.signature(scenario).parameters})
        finally:
            await proc.shutdown()

    uvloop.run(run())
