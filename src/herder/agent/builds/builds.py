"""The build cache: each build once, shared, kept across restarts.

Every builder that detects an app builds it, in name order, into one build (a Django app
with a ``package.json`` for its assets gets both its venv and its ``node_modules``).
A build is keyed by ``sha256(app content + each builder's name and key)``: the app's
content is its archive's sha256, or a hash of a directory's tree (names, modes,
contents, link targets). It lives in ``<data dir>/builds/<key>/``:

* ``slug/``: the app tree as the build left it, copied for each process;
* what the builder made (``venv/``...), in place: venvs hold absolute paths, so a build
  cannot be made elsewhere and moved;
* ``build.log``: every line of the build;
* ``done`` (JSON: the environment the build adds) written last, atomically: a build dir
  without it is a build that was interrupted, wiped and made again;
* ``failed`` (the error): a failed build is not tried again until the app (its key) changes
  or a create asks for it (``rebuild: true``);
* ``used``: touched when a process takes or lets go of the build (see ``collect.py``).

Package caches shared by a builder's builds are in ``<data dir>/builds/cache/<builder>/``.
Two processes asking for the same build at once share one flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herder.agent.builds.builder import BuildContext, Builder, BuildError, BuiltEnv, IndexSettings
from herder.agent.builds.collect import TRASH, empty_trash, stale, touch
from herder.agent.config import BuildsConfig

log = logging.getLogger(__name__)

Listener = Callable[[str], None]
COLLECT_GRACE_S = 60.0


@dataclass(slots=True)
class _Flight:
    """A build under way, and who follows its lines."""

    task: asyncio.Task[BuiltEnv]
    listeners: list[Listener] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Built:
    """A finished build: its app tree and the environment its processes gain."""

    key: str
    slug: Path
    env: BuiltEnv


# Directory trees hashed before, by path: (their stat signature, their hash). Each start of
# a process of a built directory app needs its content hash; reading every file again
# when no name, size, mode, inode or mtime changed would cost each start for nothing.
_TREE_HASHES: dict[Path, tuple[tuple[object, ...], str]] = {}
_TREE_HASHES_MAX = 256
RACY_NS = 2_000_000_000
# A tree this small, hashed before, is checked again on the event loop (~0.1 ms) rather
# than in a worker thread, whose hop costs more than the walk under load.
INLINE_TREE_ENTRIES = 64


def small_known_tree(root: Path) -> bool:
    """Whether ``root`` was hashed before and had at most ``INLINE_TREE_ENTRIES`` entries."""
    known = _TREE_HASHES.get(root)
    return known is not None and len(known[0]) <= INLINE_TREE_ENTRIES


def tree_hash(root: Path) -> str:
    """A hash of a directory's tree: relative names, exec bits, contents, link targets.

    Remembered per tree with a signature of every entry's stat (name, mode, size, inode,
    mtime and ctime in ns): a file written or replaced changes its signature, so the
    contents are read again only then.
    """
    started = time.time_ns()
    entries = _walk(root)
    signature = tuple(
        (rel, info.st_mode, info.st_size, info.st_ino, info.st_mtime_ns, info.st_ctime_ns)
        for rel, _path, info in entries
    )
    known = _TREE_HASHES.get(root)
    if known is not None and known[0] == signature:
        return known[1]
    digest = hashlib.sha256()
    for rel, path, info in entries:
        name = rel.encode()
        if stat.S_ISLNK(info.st_mode):
            digest.update(b"L" + name + b"\0" + os.readlink(path).encode() + b"\0")
        elif stat.S_ISREG(info.st_mode):
            digest.update(b"F" + name + b"\0" + bytes([info.st_mode & 0o111 != 0]))
            with path.open("rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
    # A file changed within the clock's grain of its last write could keep its signature
    # (git's "racily clean" entries): a tree with one so recent is not remembered.
    if all(info.st_mtime_ns < started - RACY_NS for _rel, _path, info in entries):
        if len(_TREE_HASHES) >= _TREE_HASHES_MAX:
            _TREE_HASHES.clear()
        _TREE_HASHES[root] = (signature, digest.hexdigest())
    return digest.hexdigest()


def _walk(root: Path) -> list[tuple[str, Path, os.stat_result]]:
    """The tree's files and links (not followed), sorted as the hash reads them."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted([*filenames, *(d for d in dirnames if (base / d).is_symlink())]):
            path = base / name
            found.append((str(path.relative_to(root)), path, path.lstat()))
    return found


class Builds:
    """Builds apps with the installed builders, once per key."""

    def __init__(
        self,
        root: Path,
        config: BuildsConfig,
        base_env: dict[str, str],
        builders: list[Builder] | None = None,
    ) -> None:
        self._root = root
        self._config = config
        self._base_env = base_env
        # Loaded at the first app that could need one: reading the entry points costs the
        # agent's start-up otherwise, for agents that only ever run commands.
        self._builders = builders
        self._flights: dict[str, _Flight] = {}
        # Which processes (by slug) run from which build: those are never collected.
        self._users: dict[str, str] = {}
        self._collecting: asyncio.Task[list[str]] | None = None
        # Finished builds' environments, by key: a build never changes once done (it is
        # only deleted, by ``collect``), so each start need not read its ``done`` again.
        self._finished_envs: dict[str, BuiltEnv] = {}
        # App trees whose builders' keys were computed (the builders' own probes cached).
        self._keyed_roots: set[Path] = set()
        self.builds_run = 0  # builds actually made (not reused) since start: for tests and stats

    def detect(self, app_root: Path) -> list[Builder]:
        """The builders that detect the app, in name order; none: the app runs as it is."""
        if self._builders is None:
            from herder.agent.builds.builder import load_builders

            self._builders = load_builders()
        return [builder for builder in self._builders if builder.detect(app_root)]

    async def ensure(
        self,
        builders: list[Builder],
        app_root: Path,
        content: str | None,
        *,
        on_building: Callable[[Path], None] | None = None,
        listener: Listener | None = None,
        release: str | None = None,
        retry_failed: bool = False,
    ) -> Built:
        """The build of ``app_root`` (whose content hash is ``content``): reused, joined or made.

        ``content`` None: a directory's tree, hashed (``tree_hash``) in the same worker
        thread as the builders' keys: one hop to a thread per start, not two.

        ``on_building`` is called with the build's log file if the caller has to wait
        for a build (made now or by another caller); ``listener`` then receives the
        build's lines. ``release`` (the Procfile's ``release:`` command) runs once after
        the build, as part of it. A build that failed is not made again unless
        ``retry_failed`` (the user asked: ``rebuild``).

        Raises:
            BuildError: the build failed now or before, or cannot happen on this host;
                its ``log`` is the build's log file.
        """
        if content is None and app_root in self._keyed_roots and small_known_tree(app_root):
            key = self._key(builders, app_root, content)  # a start of a known small app: no hop
        else:
            key = await asyncio.to_thread(self._key, builders, app_root, content)
            if content is None:
                if len(self._keyed_roots) >= _TREE_HASHES_MAX:
                    self._keyed_roots.clear()
                self._keyed_roots.add(app_root)
        build_dir = self._root / key
        flight = self._flights.get(key)
        if flight is None:
            known = self._finished_envs.get(key)
            if known is not None:
                return Built(key, build_dir / "slug", known)
            # Read here, not in a thread: two small files, and no await may come between
            # this look and the flight's start, or two callers could both start it.
            reused = _finished(build_dir, retry_failed=retry_failed)
            if reused is not None:
                self._finished_envs[key] = reused
                return Built(key, build_dir / "slug", reused)
            flight = _Flight(asyncio.create_task(self._build(builders, app_root, build_dir, release)))
            self._flights[key] = flight
            flight.task.add_done_callback(lambda task: self._landed(key, task))
        if on_building is not None:
            on_building(build_dir / "build.log")
        if listener is not None:
            flight.listeners.append(listener)
        try:
            # Shielded: a process deleted while waiting must not cancel a build others share.
            env = await asyncio.shield(flight.task)
        finally:
            if listener is not None and listener in flight.listeners:
                flight.listeners.remove(listener)
        return Built(key, build_dir / "slug", env)

    def _key(self, builders: list[Builder], app_root: Path, content: str | None) -> str:
        """The build's key (in a worker thread: hashing a tree, builders' keys may stat or run)."""
        if content is None:
            content = tree_hash(app_root)
        builder_keys = [(b.name, b.key(app_root)) for b in builders]
        return hashlib.sha256(json.dumps([content, builder_keys, self._options()]).encode()).hexdigest()

    def _options(self) -> dict[str, str]:
        return {"python_installer": self._config.python_installer}

    def use(self, key: str, user: str) -> None:
        """``user`` (a process's slug) runs from the build ``key``: keep it."""
        self._users[user] = key
        touch(self._root / key)

    def drop(self, user: str) -> None:
        """``user`` no longer runs from its build (deleted): the build may age from now."""
        key = self._users.pop(user, None)
        if key is not None:
            touch(self._root / key)

    async def collect(self) -> list[str]:
        """Delete the builds unused for ``keep_unused_s``; their keys."""
        # Never a build used or made in the last minute: its waiters may not have taken it yet.
        unused_s = max(self._config.keep_unused_s, COLLECT_GRACE_S)
        candidates = await asyncio.to_thread(stale, self._root, time.time() - unused_s)
        in_use = set(self._users.copy().values())  # copy(): atomic, should a thread drop a user
        removed = []
        for key in candidates:
            if key in in_use or key in self._flights:
                continue
            self._finished_envs.pop(key, None)
            try:
                os.rename(self._root / key, self._root / f"{TRASH}{key}")
            except OSError:
                continue
            removed.append(key)
        await asyncio.to_thread(empty_trash, self._root)
        if removed:
            log.info("collected %d builds unused for %g s", len(removed), self._config.keep_unused_s)
        return removed

    def _collect_soon(self) -> None:
        """After a new build (when the disk grows), collect in the background."""
        if self._collecting is None or self._collecting.done():
            self._collecting = asyncio.get_running_loop().create_task(self.collect())

    async def close(self) -> None:
        """Cancel the builds under way (the agent stops): their commands are killed, and
        without a ``done`` marker they are made again next time."""
        tasks: list[asyncio.Task[Any]] = [flight.task for flight in self._flights.values()]
        if self._collecting is not None:
            tasks.append(self._collecting)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _landed(self, key: str, task: asyncio.Task[BuiltEnv]) -> None:
        self._flights.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone (processes deleted)

    async def _build(
        self, builders: list[Builder], app_root: Path, build_dir: Path, release: str | None
    ) -> BuiltEnv:
        flight_key = build_dir.name
        self.builds_run += 1
        await asyncio.to_thread(_fresh_dir, build_dir, app_root)
        log_file = (build_dir / "build.log").open("a", encoding="utf-8", errors="replace")

        def emit(line: str) -> None:
            log_file.write(line + "\n")
            flight = self._flights.get(flight_key)
            for listener in flight.listeners if flight else ():
                listener(line)

        cfg = self._config
        ctx = BuildContext(
            app_root=build_dir / "slug",
            build_dir=build_dir,
            cache_dir=self._root / "cache",
            env=dict(self._base_env),
            index=IndexSettings(tuple(cfg.find_links), cfg.index_url, cfg.no_index),
            timeout_s=cfg.timeout_s,
            log=emit,
            options=self._options(),
        )
        started = time.monotonic()
        names = ", ".join(b.name for b in builders) or "no builder (the release phase only)"
        ctx.note(f"building with {names} in {build_dir}")
        try:
            try:
                async with asyncio.timeout(cfg.timeout_s):
                    env = await _build_all(ctx, builders, self._root / "cache")
                    if release is not None:
                        await _release_phase(ctx, env, release)
            except TimeoutError:
                raise BuildError(f"build timed out after {cfg.timeout_s:g} s" + ctx.tail_text()) from None
        except BuildError as exc:
            ctx.note(f"build failed: {exc}")
            log_file.close()
            _write_atomically(build_dir / "failed", str(exc))
            log.warning("build %s failed: %s", build_dir.name, exc)
            exc.log = build_dir / "build.log"
            raise
        except OSError as exc:
            # The host's trouble (a full disk), not the app's: not recorded, tried again next time.
            log_file.close()
            raise BuildError(f"build failed: {exc}") from exc
        except BaseException:
            log_file.close()
            raise
        ctx.note(f"build done in {time.monotonic() - started:.1f} s")
        log_file.close()
        _write_atomically(build_dir / "done", json.dumps(env.to_json()))
        self._finished_envs[flight_key] = env
        self._collect_soon()
        return env


async def _build_all(ctx: BuildContext, builders: list[Builder], caches: Path) -> BuiltEnv:
    """Each builder in turn in the same build; their environments joined."""
    path: list[str] = []
    env: dict[str, str] = {}
    for builder in builders:
        ctx.cache_dir = caches / builder.name
        ctx.cache_dir.mkdir(parents=True, exist_ok=True)
        built = await builder.build(ctx)
        path += built.path
        env.update(built.env)
    return BuiltEnv(path=tuple(path), env=env)


async def _release_phase(ctx: BuildContext, built: BuiltEnv, command: str) -> None:
    """The Procfile's ``release:`` command, in the built tree with the build's environment
    and the app's ``.env`` (Heroku's release phase, once per build)."""
    from herder.agent.builds.envfile import read_env_file

    env = {**ctx.env, **built.env}
    if built.path:
        env["PATH"] = os.pathsep.join([*built.path, ctx.env.get("PATH", os.defpath)])
    env.update(read_env_file(ctx.app_root))
    ctx.note("release phase")
    try:
        await ctx.run(["/bin/sh", "-c", command], cwd=ctx.app_root, env=env)
    except BuildError as exc:
        raise BuildError(f"the release phase failed: {exc}") from None


def _finished(build_dir: Path, *, retry_failed: bool) -> BuiltEnv | None:
    """A finished build's environment; None if there is none to reuse; raises a recorded
    failure, unless ``retry_failed`` (then the failed build is made again)."""
    try:
        return BuiltEnv.from_json(json.loads((build_dir / "done").read_text()))
    except FileNotFoundError:
        pass
    try:
        message = (build_dir / "failed").read_text()
    except FileNotFoundError:
        return None
    if retry_failed:
        log.info("build %s failed before; made again as asked", build_dir.name)
        return None
    raise BuildError(message, log=build_dir / "build.log")


def _fresh_dir(build_dir: Path, app_root: Path) -> None:
    """An empty build dir (an interrupted build's leftovers wiped) holding a copy of the app."""
    if build_dir.exists():
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True)
    shutil.copytree(app_root, build_dir / "slug", symlinks=True)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
