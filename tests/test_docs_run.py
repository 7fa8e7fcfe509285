"""Every shell block of README.md and docs/*.md runs as pasted, in order (#16).

A newcomer pastes the blocks of a page one after the other into a terminal, from the
clone's directory. This test does the same, one page at a time, in a fresh directory
that looks like the clone (its top-level entries linked to this one's), with ``HOME``
and ``/tmp`` of its own and every port the page names replaced by a free one, so pages
run side by side and beside a developer's ``make up``.

The conventions the pages follow:

- `` ```sh `` and `` ```bash `` blocks run, in order, each in ``bash`` with ``set -e``:
  every command must succeed. A command that fails on purpose shows it
  (``... || echo "exit status $?"``). Expected output is written as ``#`` comments.
- `` ```console `` and `` ```text `` blocks are output: never run.
- `` ```python `` blocks run as whole programs (``python FILE``). One that is not a whole
  program is marked, like any block not meant to run, by ``<!-- not run: reason -->``
  on the line before it. The marker is for what cannot run here (hosts named
  ``example.com``, files in ``/etc``, two managers on one database, the test suite
  itself); it is used sparingly.
- ``<!-- needs pypi: why -->`` before a block that installs packages from PyPI: it runs
  when pypi.org answers, and is left out offline (the rest of the suite needs no network).
- ``<!-- daemon: PORT... -->`` before a block: it runs in the background, as in a
  terminal of its own, and the next block waits until every PORT listens. It is stopped
  (SIGINT to its process group, by pid, then SIGKILL after a grace) when the page ends.
- A line whose comment says ``Ctrl-C`` follows something live: it is interrupted after
  ``CTRL_C_AFTER_S`` seconds, and that interruption is its success.
- curl is checked too: an answer of 404, 405 or 5xx fails the block unless the block
  says that status (a 404 shown on purpose mentions ``404``).
- Every block calls the ``herder`` command as ``.venv/bin/herder`` (README's tour says
  so once); a bare ``herder`` is "command not found" in a fresh clone. Checked in blocks
  that do not run as well.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A page's blocks run one after another; the tour's builds and waits take ~30 s on a
# busy machine, so a page has this long in all.
PAGE_DEADLINE_S = 150.0
# One block: the longest (the tour's build of an app with a dependency) takes ~6 s.
BLOCK_DEADLINE_S = 60.0
# A daemon block (make up, a service) listens within this, even on a loaded machine.
DAEMON_START_S = 60.0
# Stopping a daemon: make up stops every process it started first, then exits.
DAEMON_GRACE_S = 20.0
# How long a "Ctrl-C" line runs before the test presses Ctrl-C.
CTRL_C_AFTER_S = 2.0
# Pause between two checks of a port that does not listen yet (each wait has a deadline).
POLL_S = 0.05
# The entries of the clone the copy does not link: its own data, git, and the Makefile
# (copied with the ports replaced: `make up` names them).
NOT_LINKED = {".git", ".herder", "Makefile"}
# Pages another session is rewriting now, with why: their blocks are checked once it is done.
NOT_YET: dict[str, str] = {}

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*(not run|daemon|needs pypi)\s*:([^<>]*)-->\s*$")  # right before the fence
# Where a "needs pypi" block gets its packages; the rest of the suite runs offline.
PYPI = ("pypi.org", 443)
PYPI_CONNECT_S = 3.0
# A port as the pages write it: after a loopback or example host, or an option naming it.
PORT = re.compile(r"(?:127\.0\.0\.1:|localhost:|example\.com:|port=|--port |-port |\"port\": )(\d{4,5})\b")
TMP = re.compile(r"(?<![\w.-])(?<!\w/)/tmp(?=[/\s\"']|$)", re.M)  # file:///tmp too
BARE_HERDER = re.compile(r"(?:^|[;&|(]\s*|\$\(|\S+=\S+\s+)\s*herder\s", re.M)
STATUS = re.compile(r"\b[45]\d\d\b")  # an HTTP error status a block shows on purpose

# Put before each block: curl records the status of its last answer, and one that the
# block does not announce is written to a file the test reads.
PRELUDE = r"""
curl() {
    command curl -D "$HERDER_DOCS_HEADERS" "$@"
    local rc=$?
    local status
    status=$(awk '/^HTTP\//{s=$2} END{print s}' "$HERDER_DOCS_HEADERS" 2>/dev/null)
    : > "$HERDER_DOCS_HEADERS"
    case " $HERDER_DOCS_ALLOWED " in *" $status "*) return $rc ;; esac
    if [ -n "$status" ] && { [ "$status" -ge 500 ] || [ "$status" = 404 ] || [ "$status" = 405 ]; }; then
        echo "curl $*: HTTP $status" >> "$HERDER_DOCS_BAD"
    fi
    return $rc
}
"""


@dataclass
class Block:
    """One fenced block of a page, and what the conventions say to do with it."""

    page: Path
    line: int
    lang: str
    text: str
    mode: str  # "run", "daemon", "pypi" (needs PyPI), "skip" (not run), "output"
    ports: list[int] = field(default_factory=list)
    reason: str = ""

    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    """The page's sh/bash/console/python blocks, in order, with their marker read."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        lang = match.group(1)
        if lang not in ("sh", "bash", "console", "text", "python"):
            continue
        before = text[: match.start()].rstrip()
        marker = MARKER.search(before[-300:])
        mode = "output" if lang in ("console", "text") else "run"
        ports: list[int] = []
        reason = ""
        if marker is not None:
            kind, reason = marker.group(1), marker.group(2).strip()
            mode = {"not run": "skip", "daemon": "daemon", "needs pypi": "pypi"}[kind]
            ports = [int(p) for p in re.findall(r"\b\d{4,5}\b", reason)]
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(page, line, lang, match.group(2), mode, ports, reason))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, where: str) -> None:
    deadline = time.monotonic() + DAEMON_START_S
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None:
            raise AssertionError(f"{where}: the daemon exited ({proc.returncode}):\n{log.read_text()}")
        time.sleep(POLL_S)
    raise AssertionError(f"{where}: nothing listens on {port} after {DAEMON_START_S} s:\n{log.read_text()}")


def ctrl_c_lines(text: str) -> str:
    """Lines whose comment says Ctrl-C, interrupted after CTRL_C_AFTER_S (exit 124: pressed)."""
    out = []
    for line in text.splitlines():
        code, sep, comment = line.partition(" #")
        if sep and "Ctrl-C" in comment and code.strip():
            line = f"timeout -s INT {CTRL_C_AFTER_S} {code.strip()} || test $? = 124  #{comment}"
        out.append(line)
    return "\n".join(out) + "\n"


class Page:
    """A page being run: its copy of the clone, its ports, the daemons it started."""

    def __init__(self, page: Path, root: Path) -> None:
        self.page = page
        self.clone = root / "clone"
        self.tmp = root / "tmp"
        self.home = root / "home"
        for d in (self.clone, self.tmp, self.home):
            d.mkdir()
        makefile = (REPO / "Makefile").read_text()
        self.ports: dict[str, int] = {
            port: free_port() for port in sorted({*PORT.findall(page.read_text()), *PORT.findall(makefile)})
        }
        for entry in REPO.iterdir():
            if entry.name not in NOT_LINKED:
                (self.clone / entry.name).symlink_to(entry)
        (self.clone / "Makefile").write_text(self.substitute(makefile))
        self.headers = root / "curl-headers"
        self.bad = root / "curl-bad"
        self.daemons: list[subprocess.Popen[bytes]] = []
        path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if ".venv" not in p]
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("HERDER_", "VIRTUAL_ENV"))},
            "PATH": os.pathsep.join(path),
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "HERDER_DOCS_HEADERS": str(self.headers),
            "HERDER_DOCS_BAD": str(self.bad),
            # The commands' defaults (127.0.0.1:8010 and :8020) moved with the ports.
            "HERDER_AGENT_URL": f"http://127.0.0.1:{self.ports['8010']}",
            "HERDER_MANAGER_URL": f"http://127.0.0.1:{self.ports['8020']}",
        }

    def substitute(self, text: str) -> str:
        for old, new in self.ports.items():
            text = re.sub(rf"\b{old}\b", str(new), text)
        return TMP.sub(str(self.tmp), text)

    def script(self, block: Block) -> str:
        allowed = " ".join(sorted(set(STATUS.findall(block.text)))) or "-"
        body = self.substitute(block.text if block.mode == "daemon" else ctrl_c_lines(block.text))
        return f"{PRELUDE}\nHERDER_DOCS_ALLOWED='{allowed}'\nset -e\n{body}"

    def command(self, block: Block, index: int) -> list[str]:
        if block.lang == "python":
            program = self.tmp / f"block-{index}.py"
            program.write_text(self.substitute(block.text))
            return [str(self.clone / ".venv" / "bin" / "python"), str(program)]
        return ["bash", "-c", self.script(block)]

    def run(self, block: Block, index: int, deadline: float) -> None:
        """Run one block to its end (or start it, for a daemon); fail naming the block."""
        where = block.where()
        if block.mode == "daemon":
            log = self.tmp / f"daemon-{index}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    self.command(block, index),
                    cwd=self.clone,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.daemons.append(proc)
            for port in block.ports:
                wait_listening(self.ports.get(str(port), port), proc, log, where)
            return
        proc = subprocess.Popen(
            self.command(block, index),
            cwd=self.clone,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=min(BLOCK_DEADLINE_S, max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            stop_group(proc)
            out, _ = proc.communicate()
            raise AssertionError(
                f"{where}: still running after {BLOCK_DEADLINE_S} s or at the page's deadline:\n"
                + out.decode(errors="replace")
            ) from None
        finally:
            kill_group(proc.pid)  # what the block left running in the background
        output = out.decode(errors="replace")
        assert proc.returncode == 0, f"{where}: exit status {proc.returncode}:\n{output}"
        if self.bad.exists() and (bad := self.bad.read_text()):
            self.bad.unlink()
            raise AssertionError(f"{where}: an HTTP error the block does not show:\n{bad}\n{output}")

    def stop(self) -> None:
        for proc in reversed(self.daemons):
            stop_group(proc)


def pypi_reachable() -> bool:
    """Whether PyPI answers a TCP connection (a block marked "needs pypi" runs then)."""
    try:
        socket.create_connection(PYPI, timeout=PYPI_CONNECT_S).close()
    except OSError:
        return False
    return True


def kill_group(pgid: int) -> None:
    """SIGKILL what is left of the process group ``pgid`` (its leader was our child)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C to the group of ``proc`` (by its pid), its grace, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=DAEMON_GRACE_S)
    kill_group(proc.pid)
    proc.wait(timeout=DAEMON_GRACE_S)


def runnable_pages() -> Iterator[Path]:
    for page in PAGES:
        if any(b.mode in ("run", "daemon") for b in blocks_of(page)):
            yield page


def skip_if_not_yet(page: Path) -> None:
    why = NOT_YET.get(str(page.relative_to(REPO)))
    if why is not None:
        pytest.skip(why)


@pytest.mark.slow
@pytest.mark.timeout(PAGE_DEADLINE_S + 2 * DAEMON_GRACE_S + 30)
@pytest.mark.parametrize("page", list(runnable_pages()), ids=lambda p: str(p.relative_to(REPO)))
def test_page_runs_as_pasted(page: Path, tmp_path: Path) -> None:
    skip_if_not_yet(page)
    assert shutil.which("curl"), "the pages use curl"
    stamp = REPO / ".venv" / ".installed-stamp"
    assert stamp.exists(), "make install first: the pages use .venv/bin/herder"
    # `make up` would install into the shared .venv from inside the test: make test's
    # own first step does it, before any test runs.
    newer = [
        f
        for f in ("pyproject.toml", "requirements.lock")
        if (REPO / f).stat().st_mtime > stamp.stat().st_mtime
    ]
    assert not newer, f"make install first: {', '.join(newer)} changed since .venv was installed"
    run = Page(page, tmp_path)
    deadline = time.monotonic() + PAGE_DEADLINE_S
    try:
        for index, block in enumerate(blocks_of(page)):
            if block.mode == "pypi" and not pypi_reachable():
                continue  # the one block that downloads: offline, the page runs without it
            if block.mode in ("run", "daemon", "pypi"):
                run.run(block, index, deadline)
    finally:
        run.stop()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_blocks_call_herder_from_the_venv(page: Path) -> None:
    """A bare ``herder`` is "command not found" in a fresh clone: blocks say .venv/bin/herder."""
    skip_if_not_yet(page)
    bare = [
        f"{b.where()}: {line.strip()}"
        for b in blocks_of(page)
        if b.lang in ("sh", "bash")
        for line in b.text.splitlines()
        if BARE_HERDER.search(line.split(" #")[0])
    ]
    assert not bare, "\n".join(bare)


def test_markers_are_read() -> None:
    """The conventions themselves, on a page written for this test."""
    page = REPO / "tests" / "fixtures" / "docs_conventions.md"
    modes = [(b.lang, b.mode, b.ports) for b in blocks_of(page)]
    assert modes == [
        ("sh", "run", []),
        ("sh", "skip", []),
        ("sh", "daemon", [8765]),
        ("console", "output", []),
        ("python", "run", []),
    ]
    assert ctrl_c_lines("herder logs -f x   # Ctrl-C when done\n").startswith(
        f"timeout -s INT {CTRL_C_AFTER_S} herder logs -f x || test $? = 124"
    )
