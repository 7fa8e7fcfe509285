"""The ``fs`` extension of the ``shell`` product: files in the session's directory.

A client reads and writes files either whole, by path (one call, at most
``MAX_CHUNK`` bytes: the size of one message we are willing to build), or in pieces
through handles it opens and closes, like a file descriptor on the other end of the
wire. The session keeps the handles it opened so that closing the session closes them
all, even when the client forgot or vanished.

Confinement: when the session is confined (the agent's default), every path must
resolve, symlinks followed, to the session's root or below it. Resolution uses
``os.path.realpath`` (which handles paths that do not exist yet: what exists is
resolved, the rest is taken literally), the operation then runs on the resolved path,
and files are opened with ``O_NOFOLLOW`` so that a final component swapped for a
symlink between the check and the open is refused rather than followed. Intermediate
components could still be swapped in that window by a program of the session; this is
confinement of what a client may name through ``fs``, not a sandbox: the same session
can launch programs (``proc``) that are not confined at all.

Only regular files are opened: a FIFO would block the host on ``open`` or ``read``,
and a device like ``/dev/zero`` has no end to read to.

The methods are plain functions that do their I/O on the host's event loop, on
purpose: a host process serves one session, so a read or write of at most 8 MiB of a
local file delays only that session's own traffic by milliseconds, calls on one handle
happen in the order they arrive, and a descriptor is never closed under a worker
thread still using it (which a thread pool plus cancellable calls would allow).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from herder.products import Extension, SessionApi, expose

MiB = 1024 * 1024
# The most one call reads or writes: a whole-file read, a handle read, a write.
# Half the protocol's 16 MiB frame: a call carrying this much, or its answer, always fits.
MAX_CHUNK = 8 * MiB
# The most handles a session may hold open at once (each is a descriptor of the host).
MAX_HANDLES = 1024
# Reading a file whose size says nothing (``/proc`` files say 0) goes on in these steps.
_READ_STEP = 64 * 1024

Entry = dict[str, Any]
Entries = list[Entry]

# Open modes -> (flags, readable, writable). "b" is accepted and ignored: always binary.
_MODES: dict[str, tuple[int, bool, bool]] = {
    "r": (os.O_RDONLY, True, False),
    "r+": (os.O_RDWR, True, True),
    "w": (os.O_WRONLY | os.O_CREAT | os.O_TRUNC, False, True),
    "w+": (os.O_RDWR | os.O_CREAT | os.O_TRUNC, True, True),
    "a": (os.O_WRONLY | os.O_CREAT | os.O_APPEND, False, True),
    "a+": (os.O_RDWR | os.O_CREAT | os.O_APPEND, True, True),
    "x": (os.O_WRONLY | os.O_CREAT | os.O_EXCL, False, True),
    "x+": (os.O_RDWR | os.O_CREAT | os.O_EXCL, True, True),
}


def _within(path: str, root: str) -> bool:
    """Whether the absolute, resolved ``path`` is ``root`` or below it."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_path(path: object, name: str = "path") -> str:
    """``path`` as a usable str, or a ``TypeError``/``ValueError`` naming the argument."""
    if not isinstance(path, str):
        raise TypeError(f"{name} must be a str, not {type(path).__name__}")
    if not path:
        raise ValueError(f"{name} must not be empty")
    if "\0" in path:
        raise ValueError(f"{name} must not contain a NUL character")
    return path


def resolve_path(session: SessionApi, path: str, *, follow: bool = True, name: str = "path") -> str:
    """The absolute, resolved form of a client's ``path``, refused if it leaves the root.

    Relative paths are relative to the session's root; absolute ones stay as they are.
    With ``follow`` every symlink is resolved, the final component's included; without
    it the final component is kept as it is (``stat`` and ``remove`` act on a link, not
    on what it points to), only the directory holding it is resolved.

    Raises:
        PermissionError: the session is confined and the path resolves outside its root.
    """
    check_path(path, name)
    joined = os.path.join(os.fspath(session.root), path)
    parent, last = os.path.split(joined)
    if follow or last in ("", ".", ".."):  # "." and ".." are never links: resolve them
        resolved = os.path.realpath(joined)
    else:
        resolved = os.path.join(os.path.realpath(parent), last)
    if session.confined and not _within(resolved, os.path.realpath(session.root)):
        raise PermissionError(f"{name} {path!r} is outside the session's directory")
    return resolved


@contextlib.contextmanager
def _named(path: str) -> Iterator[None]:
    """Report an ``OSError`` on a resolved path with the client's own path instead.

    The client named ``path``; the absolute path the host resolved it to is an
    implementation detail (and, for the root, a directory layout the client has no
    use for).
    """
    try:
        yield
    except OSError as exc:
        if exc.errno is None or exc.filename is None:
            raise
        # OSError(errno, ...) builds the subclass that errno maps to (FileNotFoundError...).
        raise OSError(exc.errno, exc.strerror, path) from None


def _kind(mode: int) -> str:
    """The ``type`` of a stat result as clients see it."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def _as_bytes(data: object) -> bytes:
    """``data`` as bytes: str is written as UTF-8 (what JSON clients can send)."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"data must be bytes or str, not {type(data).__name__}")


def _check_int(value: object, name: str, *, minimum: int) -> int:
    """``value`` as an int no smaller than ``minimum`` (bool refused: it is no count)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


def _check_encoding(encoding: object) -> str | None:
    """A codec name Python knows, or None; checked before any I/O so errors name it."""
    if encoding is None:
        return None
    if not isinstance(encoding, str):
        raise TypeError(f"encoding must be a str or None, not {type(encoding).__name__}")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"encoding {encoding!r} is not a known text encoding") from None
    return encoding


def _read_fd(fd: int, size: int, offset: int | None) -> bytes:
    """Up to ``size`` bytes from ``fd``, at ``offset`` (``pread``) or its position."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = os.read(fd, remaining) if offset is None else os.pread(fd, remaining, offset)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
        if offset is not None:
            offset += len(chunk)
    return b"".join(chunks)


def _write_fd(fd: int, data: bytes, offset: int | None) -> int:
    """Write all of ``data`` to ``fd`` (writes may be partial), at ``offset`` or its position."""
    view = memoryview(data)
    written = 0
    while written < len(view):
        rest = view[written:]
        n = os.write(fd, rest) if offset is None else os.pwrite(fd, rest, offset + written)
        written += n
    return written


@dataclass(slots=True)
class _Handle:
    """One open file of the session."""

    id: int
    fd: int
    path: str  # as the client named it, for messages
    mode: str
    readable: bool
    writable: bool
    append: bool


class Fs(Extension):
    """Files in the session's directory: whole by path, or in pieces through handles."""

    def __init__(self, session: SessionApi) -> None:
        super().__init__(session)
        self._handles: dict[int, _Handle] = {}
        self._next_id = 1  # never reused: a stale id cannot reach a newer file
        self.max_handles = MAX_HANDLES

    # -- helpers -------------------------------------------------------------------

    def _open_fd(self, path: str, flags: int) -> int:
        """Open the regular file ``path`` (resolved, confined) and return its descriptor.

        ``O_NONBLOCK`` keeps a FIFO that slipped past the check from blocking the host;
        ``O_NOFOLLOW`` (when confined) refuses a final component that became a symlink
        after it was resolved. Descriptors are not inherited by launched programs.
        """
        real = resolve_path(self.session, path)
        if self.session.confined:
            flags |= os.O_NOFOLLOW
        with _named(path):
            with contextlib.suppress(FileNotFoundError):
                self._require_regular(path, os.stat(real).st_mode)
            fd = os.open(real, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
            try:
                self._require_regular(path, os.fstat(fd).st_mode)
                os.set_blocking(fd, True)
            except BaseException:
                os.close(fd)
                raise
        return fd

    @staticmethod
    def _require_regular(path: str, mode: int) -> None:
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            raise OSError(f"path {path!r} is not a regular file (fs opens only files)")

    def _handle(self, handle: object) -> _Handle:
        if not isinstance(handle, int) or isinstance(handle, bool):
            raise TypeError(f"handle must be an int, not {type(handle).__name__}")
        found = self._handles.get(handle)
        if found is None:
            raise LookupError(f"handle {handle} is not open in this session")
        return found

    @staticmethod
    def _target(target: object) -> str | int:
        if isinstance(target, str) or (isinstance(target, int) and not isinstance(target, bool)):
            return target
        raise TypeError(f"target must be a path (str) or a handle (int), not {type(target).__name__}")

    # -- handles -------------------------------------------------------------------

    @expose
    def open(self, path: str, mode: str = "r") -> int:
        """Open a file and return its handle (modes r, r+, w, w+, a, a+, x, x+; always binary)."""
        check_path(path)
        if not isinstance(mode, str) or mode.replace("b", "", 1) not in _MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(_MODES)}")
        if len(self._handles) >= self.max_handles:
            raise OSError(
                errno.EMFILE,
                f"this session already has {len(self._handles)} open handles, the most it may have:"
                " close some first",
            )
        mode = mode.replace("b", "", 1)
        flags, readable, writable = _MODES[mode]
        fd = self._open_fd(path, flags)
        handle = _Handle(self._next_id, fd, path, mode, readable, writable, append=mode.startswith("a"))
        self._next_id += 1
        self._handles[handle.id] = handle
        return handle.id

    @expose
    async def close(self, handle: int) -> None:
        """Close one handle."""
        found = self._handle(handle)
        del self._handles[found.id]
        os.close(found.fd)

    async def shutdown(self) -> None:
        """Close every handle still open (the session is closing)."""
        handles, self._handles = list(self._handles.values()), {}
        for open_handle in handles:
            with contextlib.suppress(OSError):
                os.close(open_handle.fd)

    # -- data ----------------------------------------------------------------------

    @expose
    def read(
        self,
        target: str | int,
        size: int = -1,
        offset: int | None = None,
        encoding: str | None = None,
    ) -> bytes | str:
        """Read a whole file by path, or up to ``size`` bytes of a handle.

        A handle is read from its position (which moves on), or at ``offset`` (which
        leaves the position alone, like ``pread``). ``size`` -1 means as much as one call
        returns, 8 MiB. With ``encoding`` the text is returned, decoded, instead of bytes.
        """
        target = self._target(target)
        encoding = _check_encoding(encoding)
        size = _check_int(size, "size", minimum=-1)
        if size > MAX_CHUNK:
            raise ValueError(f"size {size} is over the {MAX_CHUNK} bytes one read returns")
        if offset is not None:
            offset = _check_int(offset, "offset", minimum=0)
        if isinstance(target, str):
            if size != -1 or offset is not None:
                raise ValueError("size and offset apply to handles: a path is read whole")
            data = self._read_path(target)
        else:
            handle = self._handle(target)
            if not handle.readable:
                raise io.UnsupportedOperation(
                    f"handle {handle.id} was opened with mode {handle.mode!r}: not readable"
                )
            with _named(handle.path):
                data = _read_fd(handle.fd, MAX_CHUNK if size == -1 else size, offset)
        return data if encoding is None else data.decode(encoding)

    def _read_path(self, path: str) -> bytes:
        fd = self._open_fd(path, os.O_RDONLY)
        try:
            with _named(path):
                size = os.fstat(fd).st_size
                if size > MAX_CHUNK:
                    raise ValueError(self._too_big(path, size))
                chunks = [_read_fd(fd, size, None)] if size else []
                total = size
                while chunk := os.read(fd, _READ_STEP):  # grew meanwhile, or says size 0
                    chunks.append(chunk)
                    total += len(chunk)
                    if total > MAX_CHUNK:
                        raise ValueError(self._too_big(path, total))
                return b"".join(chunks)
        finally:
            os.close(fd)

    @staticmethod
    def _too_big(path: str, size: int) -> str:
        return (
            f"file {path!r} has {size} bytes, over the {MAX_CHUNK // MiB} MiB one read returns:"
            " open it and read it in pieces"
        )

    @expose
    def write(self, target: str | int, data: bytes | str, offset: int | None = None) -> int:
        """Write ``data`` (str as UTF-8) and return the bytes written.

        By path the file is created or truncated and holds ``data`` afterwards; through
        a handle ``data`` goes at its position (which moves on) or at ``offset`` (which
        leaves it alone, like ``pwrite``). At most 8 MiB per call.
        """
        target = self._target(target)
        payload = _as_bytes(data)
        if len(payload) > MAX_CHUNK:
            raise ValueError(
                f"data has {len(payload)} bytes, over the {MAX_CHUNK // MiB} MiB one write takes:"
                " open the file and write it in pieces"
            )
        if offset is not None:
            offset = _check_int(offset, "offset", minimum=0)
        if isinstance(target, str):
            if offset is not None:
                raise ValueError("offset applies to handles: a path is written whole")
            fd = self._open_fd(target, _MODES["w"][0])
            try:
                with _named(target):
                    return _write_fd(fd, payload, None)
            finally:
                os.close(fd)
        handle = self._handle(target)
        if not handle.writable:
            raise io.UnsupportedOperation(
                f"handle {handle.id} was opened with mode {handle.mode!r}: not writable"
            )
        if handle.append and offset is not None:
            raise ValueError(f"offset: handle {handle.id} was opened to append, it writes only at the end")
        with _named(handle.path):
            return _write_fd(handle.fd, payload, offset)

    # -- the tree ------------------------------------------------------------------

    @expose
    def stat(self, path: str) -> Entry:
        """Describe ``path`` itself (a link is reported as a link, not followed)."""
        real = resolve_path(self.session, path, follow=False)
        with _named(path):
            st = os.lstat(real)
        return {
            "path": path,
            "type": _kind(st.st_mode),
            "size": st.st_size,
            "mode": stat.S_IMODE(st.st_mode),
            "mtime": st.st_mtime,
        }

    @expose
    def list(self, path: str = ".") -> Entries:
        """The entries of a directory, sorted by name (links reported as links)."""
        real = resolve_path(self.session, path)
        entries: Entries = []
        with _named(path), os.scandir(real) as scan:
            for entry in scan:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # removed since the directory was read
                    continue
                entries.append({"name": entry.name, "type": _kind(st.st_mode), "size": st.st_size})
        entries.sort(key=lambda e: str(e["name"]))
        return entries

    @expose
    def remove(self, path: str) -> None:
        """Remove a file, a link (not what it points to) or an empty directory.

        The session's directory itself is refused: the session lives in it.
        """
        real = resolve_path(self.session, path, follow=False)
        if real == os.path.realpath(self.session.root):
            raise PermissionError(f"path {path!r} is the session's directory itself: it cannot be removed")
        with _named(path):
            if stat.S_ISDIR(os.lstat(real).st_mode):
                os.rmdir(real)
            else:
                os.unlink(real)

    @expose
    def mkdir(self, path: str, parents: bool = False) -> None:
        """Create a directory; with ``parents``, also its missing parents (an existing one is fine)."""
        real = resolve_path(self.session, path)
        with _named(path):
            if parents:
                os.makedirs(real, exist_ok=True)
            else:
                os.mkdir(real)


__all__ = ["MAX_CHUNK", "MAX_HANDLES", "Fs", "check_path", "resolve_path"]
