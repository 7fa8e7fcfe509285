"""Twelve-Factor apps: from a ``source_url`` and a ``process_type`` to a command to run.

An archive is unpacked afresh for each process into ``<data dir>/run/<slug>/app``, so
processes of one app never share a writable tree (a release is read-only in spirit,
but apps write caches and pid files). A ``file://`` directory is run in place, which
is what a developer pointing herder at a checkout expects.

Procfile commands run through ``/bin/sh -c`` so that ``$PORT`` and other variables
expand as they do under foreman or Heroku.

An app that declares dependencies (builders of ``herder.agent.builds`` detect it) or
has a ``release:`` process is built once, with the build's environment for each of its
processes: from an archive each process runs in its own copy of the built tree; a
directory app's processes share the built tree, as they share the directory unbuilt.
An app's ``.env`` file is read for every app; the request's ``env`` wins over both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herder.agent.apps.fetch import Fetcher
from herder.agent.apps.procfile import find_app_root, read_command
from herder.agent.builds.envfile import read_env_file
from herder.agent.config import UnpackConfig
from herder.agent.errors import ProcfileError

if TYPE_CHECKING:
    from herder.agent.builds import Builds

SHELL = "/bin/sh"


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start one process: its argv and working directory, and where it came from.

    ``env`` (the app's ``.env``, the build's variables) and ``path`` (the build's
    directories, first on PATH) go into the child's environment below the request's ``env``.
    """

    argv: list[str]
    cwd: Path
    archive_sha256: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    path: tuple[str, ...] = ()
    build_log: Path | None = None  # the build's log, if the app was built


def shell_command(command: str) -> list[str]:
    """The argv that runs ``command`` the way a Procfile line runs."""
    return [SHELL, "-c", command]


class Apps:
    """Prepares the source and the command of processes created from apps."""

    def __init__(
        self, fetcher: Fetcher, unpack_config: UnpackConfig, run_root: Path, builds: Builds | None = None
    ) -> None:
        self._fetcher = fetcher
        self._unpack = unpack_config
        self._run_root = run_root
        self._builds = builds

    @property
    def builds(self) -> Builds | None:
        """The build cache (None: apps run as they are, nothing is built)."""
        return self._builds

    def workdir(self, slug: str) -> Path:
        """The process's own directory under the data dir (created on demand)."""
        path = self._run_root / slug
        _make_dir(path)
        return path

    async def prepare(
        self,
        *,
        slug: str,
        source_url: str,
        process_type: str,
        prefer_sha256: str | None = None,
        on_building: Callable[[Path], None] | None = None,
        listener: Callable[[str], None] | None = None,
        rebuild: bool = False,
    ) -> Launch:
        """Fetch, unpack, read the Procfile and build if the app needs it; return what to run.

        ``on_building`` is called with the build's log file if a build must be made or
        waited for; ``listener`` then receives the build's output lines. ``rebuild``: a
        build of this app that failed before is made again (otherwise its failure stands).

        Raises:
            FetchError: the download failed (``transient`` says whether to retry).
            UnsafeArchive: the archive broke a rule; nothing of it is left on disk.
            ProcfileError: no Procfile, a bad line, or no such process type.
            BuildError: the build failed (now or before, for the same app).
        """
        fetched = await self._fetcher.fetch(source_url, prefer_sha256=prefer_sha256)
        if fetched.directory is not None:
            root = find_app_root(fetched.directory)
        else:
            assert fetched.archive is not None  # Fetched holds one or the other
            target = self.workdir(slug) / "app"
            await self._in_thread(self._fresh_unpack, fetched.archive, target)
            root = find_app_root(target)
        command = read_command(root, process_type)
        env = read_env_file(root)
        if self._builds is None:
            return Launch(argv=shell_command(command), cwd=root, archive_sha256=fetched.sha256, env=env)
        builders = self._builds.detect(root)
        # An app with a release phase is "built" too, by no builder: the release runs once.
        release = _release(root)
        if not builders and release is None:
            return Launch(argv=shell_command(command), cwd=root, archive_sha256=fetched.sha256, env=env)
        # A directory's content (fetched.sha256 None) is hashed by ensure, with the keys.
        built = await self._builds.ensure(
            builders,
            root,
            fetched.sha256,
            on_building=on_building,
            listener=listener,
            release=release,
            retry_failed=rebuild,
        )
        self._builds.use(built.key, slug)
        if fetched.directory is not None:
            # A directory app runs in place, shared by its processes; built, it runs in
            # place in its build's tree, shared as the directory was (and not copied at
            # each start: the start of a built app costs what a bare one does).
            target = built.slug
        else:
            # From an archive each process has a tree of its own, built or not.
            target = self.workdir(slug) / "app"
            await self._in_thread(_fresh_copy, built.slug, target)
        return Launch(
            argv=shell_command(command),
            cwd=target,
            archive_sha256=fetched.sha256,
            env={**built.env.env, **env},
            path=built.env.path,
            build_log=built.slug.parent / "build.log",
        )

    async def _in_thread(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` (unpacking, copying) in a worker thread, which cannot be cancelled: if
        the caller is (the process was deleted), let the thread finish first, so that the
        caller's cleanup (``remove``) does not race with files still being written."""
        work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await work
            raise

    def _fresh_unpack(self, archive: Path, target: Path) -> None:
        # Imported here: tarfile and zipfile cost the agent's start-up for processes
        # that may never come from an archive.
        from herder.agent.apps.archive import unpack

        if target.exists():
            shutil.rmtree(target)
        unpack(archive, target, self._unpack)

    def remove(self, slug: str) -> None:
        """Delete the process's directory (its unpacked app) once it is deleted."""
        if self._builds is not None:
            self._builds.drop(slug)
        shutil.rmtree(self._run_root / slug, ignore_errors=True)

    def remove_if_empty(self, slug: str) -> bool:
        """Delete the process's directory if it is empty (one system call); whether it is gone.

        Most units leave their directory empty (commands, tasks): removing it here costs
        less than handing ``remove`` to a thread and back, for every unit that ends.
        """
        if self._builds is not None:
            self._builds.drop(slug)
        try:
            os.rmdir(self._run_root / slug)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


def _make_dir(path: Path) -> None:
    """``path.mkdir(parents=True, exist_ok=True)``, in one call when its parent exists."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not path.is_dir():
            raise
    except FileNotFoundError:
        path.mkdir(parents=True, exist_ok=True)


def _release(app_root: Path) -> str | None:
    """The Procfile's ``release:`` command, if it has one (read after the process's own
    type, so any other Procfile error has been reported already)."""
    try:
        return read_command(app_root, "release")
    except ProcfileError:
        return None


def _fresh_copy(source: Path, target: Path) -> None:
    """A process's own copy of a built app tree (links kept as links)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, symlinks=True)
