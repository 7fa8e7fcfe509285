"""The builder plugin API: what a language's builder offers the agent.

A builder is found through the entry points group ``herder.builders`` (``name = "module:Class"``,
the class called without arguments). Every builder whose ``detect`` accepts an app builds
it, in name order, into one build. A third party adds a language by
shipping a package with such an entry point: nothing in herder names the languages.

A build runs in a ``BuildContext``: its own copy of the app tree, its own directory in
the build cache (what it creates there stays with the build: a venv, node_modules), a
package cache shared by every build of the same builder (so a second app with the same
dependencies builds in seconds), and ``run`` for the commands, whose output goes line by
line to the build's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, runtime_checkable

from herder.agent.errors import BuildError as BuildError  # re-exported: builders raise it
from herder.agent.processes.descendants import TRACKER

ENTRY_POINT_GROUP = "herder.builders"
TAIL_LINES = 20
# Installers draw progress bars with carriage returns and no newline: a "line" may be long.
MAX_LINE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BuiltEnv:
    """What a build adds to its processes' environment: ``path`` entries go first on PATH."""

    path: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"path": list(self.path), "env": dict(self.env)}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> BuiltEnv:
        path = data.get("path", [])
        env = data.get("env", {})
        assert isinstance(path, list)
        assert isinstance(env, dict)
        return cls(path=tuple(str(p) for p in path), env={str(k): str(v) for k, v in env.items()})


@dataclass(frozen=True, slots=True)
class IndexSettings:
    """Where packages come from, when not the installers' defaults (air-gapped hosts, tests)."""

    find_links: tuple[str, ...] = ()
    index_url: str | None = None
    no_index: bool = False


@dataclass(slots=True)
class BuildContext:
    """One build's place and tools (see the module docstring)."""

    app_root: Path
    build_dir: Path
    cache_dir: Path
    env: dict[str, str]
    index: IndexSettings
    timeout_s: float
    log: Callable[[str], None]
    # Builders' settings from ``[builds]`` (``python_installer``...), part of the build's key.
    options: Mapping[str, str] = field(default_factory=dict)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))

    def note(self, line: str) -> None:
        """A line of the agent's own in the build log (``-----> `` as Heroku's buildpacks write)."""
        self.log(f"-----> {line}")

    async def run(
        self, argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        """Run ``argv`` (stdin closed, stderr merged), each output line to the log.

        Raises:
            BuildError: the command could not start or exited non-zero; the message names
                it and carries its last lines.
        """
        merged = {**self.env, **(env or {})}
        self.note(" ".join(argv))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd or self.app_root,
                env=merged,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                limit=MAX_LINE_BYTES,
            )
        except OSError as exc:
            raise BuildError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        # The agent's own child, not an orphan for its tree walk to kill (nor to reap).
        TRACKER.own(proc.pid)
        try:
            assert proc.stdout is not None
            while raw := await _next_line(proc.stdout):
                line = raw.decode(errors="replace").rstrip("\r\n").rsplit("\r", 1)[-1]
                self.tail.append(line)
                self.log(line)
            code = await proc.wait()
        except BaseException:
            # Timed out or cancelled: nothing the command started may go on writing the build.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await proc.wait()
            raise
        finally:
            TRACKER.disown(proc.pid)
        if code != 0:
            raise BuildError(f"{Path(argv[0]).name} exited with code {code}" + self.tail_text())

    def tail_text(self) -> str:
        """The last lines of output, for an error message ('' if none)."""
        lines = [line for line in self.tail if line.strip()]
        return (":\n" + "\n".join(lines)) if lines else ""


def run_for_output(argv: list[str], timeout_s: float) -> str:
    """The output of a short command the agent runs for itself (a version asked), in a
    worker thread, registered as the agent's own child so that its tree walk never takes
    it for an orphan.

    Raises:
        OSError: it could not start.
        subprocess.SubprocessError: it timed out (killed) or exited non-zero.
    """
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    TRACKER.own(proc.pid)
    try:
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    finally:
        TRACKER.disown(proc.pid)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv)
    return out.decode(errors="replace")


async def _next_line(stream: asyncio.StreamReader) -> bytes:
    """The next line, or a piece of one longer than ``MAX_LINE_BYTES``; b"" at the end."""
    try:
        return await stream.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial
    except asyncio.LimitOverrunError as exc:
        return await stream.readexactly(exc.consumed)


@runtime_checkable
class Builder(Protocol):
    """A language's builder (an entry point of ``herder.builders``)."""

    name: str

    def detect(self, app_root: Path) -> bool:
        """Whether the app declares what this builder builds (cheap: a few stats)."""
        ...

    def key(self, app_root: Path) -> str:
        """What a build depends on beyond the app's files (the interpreter's version, say).

        Raises:
            BuildError: the build cannot happen here (no matching interpreter); at once.
        """
        ...

    async def build(self, ctx: BuildContext) -> BuiltEnv:
        """Build the app in ``ctx.app_root``; what its processes' environment gains.

        Raises:
            BuildError: the build failed.
        """
        ...


def load_builders() -> list[Builder]:
    """The installed builders, in name order.

    A builder that fails to load is skipped with its error logged: one broken plugin must
    not stop the agent from building the others' apps.
    """
    import logging

    found: list[Builder] = []
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        try:
            builder = point.load()()
        except Exception:
            logging.getLogger(__name__).exception("builder %r cannot be loaded", point.name)
            continue
        found.append(builder)
    return found
